/**
 * Module references: `[registry/]namespace/name` followed by `@range`, `:tag` or `@sha256:<hex>`
 * (none means `:latest`), and the tag spelling of versions (`+` is not allowed in OCI tags, so
 * `1.0.0+build.7` is tagged `1.0.0_build.7`).
 */
import semver from 'semver';
import { InvalidReferenceError } from './errors.js';

/** What a reference asks for: a tag, a semver range (npm semantics), or a manifest digest. */
export type Selector = { type: 'tag'; tag: string } | { type: 'range'; range: string } | { type: 'digest'; digest: string };

/** A parsed module reference (see {@link parseRef}, {@link formatRef}). */
export interface ModuleRef {
  /** `host[:port]`, e.g. `ghcr.io` or `127.0.0.1:5000`. */
  registry: string;
  /** `namespace/name` (more components are allowed, as registries nest them). */
  repository: string;
  /** The version asked for: a tag (`latest` when the reference names none), a semver range or a digest. */
  selector: Selector;
}

/** One OCI repository path component. */
const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
/** An OCI tag (distribution's grammar). */
export const TAG = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;
const DIGEST = /^sha256:[0-9a-f]{64}$/;
const REGISTRY = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::\d{1,5})?$/;

const FORMS = 'expected [registry/]namespace/name followed by @range, :tag or @sha256:<hex>, e.g. ghcr.io/acme/math-reasoner@^1.2';

/** Whether `name` is a repository as references name them: `namespace/name`, or more components. */
export function isRepository(name: string): boolean {
  const parts = name.split('/');
  return parts.length >= 2 && parts.every((p) => COMPONENT.test(p));
}

/** The tag an exact version is pushed under. */
export const versionTag = (version: string): string => version.replace('+', '_');

/** The exact version a tag stands for (`1.2.3_build.1` → `1.2.3+build.1`), or undefined for moving tags. */
export function tagVersion(tag: string): string | undefined {
  const text = tag.replace('_', '+');
  const v = semver.parse(text);
  // semver also takes "v1.2.3" and "=1.2.3", and drops build metadata; an exact version round-trips.
  const full = v && (v.build.length > 0 ? `${v.version}+${v.build.join('.')}` : v.version);
  return full === text ? text : undefined;
}

function fail(text: string, why: string): never {
  throw new InvalidReferenceError(`invalid module reference ${JSON.stringify(text)}: ${why}`);
}

function parseSelector(text: string, sel: string): Selector {
  if (sel.startsWith('sha256:')) {
    if (!DIGEST.test(sel)) fail(text, 'a digest is "sha256:" and 64 lower-case hex characters');
    return { type: 'digest', digest: sel };
  }
  if (/^[a-z0-9]+:/.test(sel)) fail(text, `only sha256 digests are supported, not ${sel.slice(0, sel.indexOf(':'))}`);
  if (sel.trim() !== '' && semver.validRange(sel) !== null) return { type: 'range', range: sel.trim() };
  // npm lets `name@beta` name a dist-tag; a moving tag works the same way here.
  if (TAG.test(sel)) return { type: 'tag', tag: sel };
  return fail(text, `${JSON.stringify(sel)} after "@" is neither a semver range, a tag nor a sha256 digest`);
}

/**
 * The `scheme://` a registry or reference given as a URL starts with: as docker's and oras's, a registry is named by
 * its host, and how it is reached (HTTPS, or plain HTTP for loopback and `--plain-http`) is the client's choice.
 */
export function urlScheme(text: string): string | undefined {
  return /^[a-z][a-z0-9+.-]*:\/\//i.exec(text)?.[0];
}

/** How to name a registry instead of `scheme://…`. */
export const BY_HOST = 'loopback registries are reached over plain HTTP, others with --plain-http';

/**
 * Parses a module reference. `defaultRegistry` (from `--registry` / `REASONPLUG_REGISTRY`) applies when
 * the reference names none; the first component names a registry when it holds a "." or ":" or is
 * `localhost`, as in Docker references. No selector means `:latest`. Throws `InvalidReferenceError`
 * (also for a `scheme://` prefix, or no registry at all).
 */
export function parseRef(text: string, defaultRegistry?: string): ModuleRef {
  const scheme = urlScheme(text);
  if (scheme) {
    throw new InvalidReferenceError(`invalid module reference ${JSON.stringify(text)}: name the registry by its host, without ${scheme} (e.g. ${text.slice(scheme.length)}); ${BY_HOST}`);
  }
  const at = text.indexOf('@');
  let selector = at >= 0 ? parseSelector(text, text.slice(at + 1)) : undefined;
  const parts = (at >= 0 ? text.slice(0, at) : text).split('/');

  const first = parts[0]!;
  const named = parts.length > 1 && (first.includes('.') || first.includes(':') || first === 'localhost');
  const registry = named ? parts.shift()! : defaultRegistry;

  const last = parts.length - 1;
  const colon = parts[last]!.indexOf(':');
  if (colon >= 0) {
    const tag = versionTag(parts[last]!.slice(colon + 1));
    parts[last] = parts[last]!.slice(0, colon);
    if (!TAG.test(tag)) fail(text, `${JSON.stringify(tag)} is not a valid tag (letters, digits, ".", "_", "-"; at most 128)`);
    // `name:tag@sha256:...` is Docker's pinned form: the digest decides.
    if (selector && selector.type !== 'digest') fail(text, 'give either :tag or @range, not both');
    selector ??= { type: 'tag', tag };
  }

  if (parts.length < 2) fail(text, `the repository needs a namespace and a name; ${FORMS}`);
  const bad = parts.find((p) => !COMPONENT.test(p));
  if (bad !== undefined) {
    fail(text, `${JSON.stringify(bad)} is not a valid repository component (lower-case letters and digits, separated by ".", "_", "__" or "-")`);
  }
  if (registry === undefined) {
    fail(text, 'no registry given; write REGISTRY/namespace/name, pass --registry, or set REASONPLUG_REGISTRY');
  }
  if (!REGISTRY.test(registry)) fail(text, `${JSON.stringify(registry)} is not a registry host[:port]`);
  const port = /:(\d+)$/.exec(registry)?.[1];
  if (port !== undefined && !(Number(port) >= 1 && Number(port) <= 65535)) fail(text, `port ${port} of ${JSON.stringify(registry)} is not a port (1 to 65535)`);
  return { registry, repository: parts.join('/'), selector: selector ?? { type: 'tag', tag: 'latest' } };
}

/** The reference as text, in the form `parseRef` reads. */
export function formatRef(ref: ModuleRef): string {
  const s = ref.selector;
  const suffix = s.type === 'tag' ? `:${s.tag}` : s.type === 'range' ? `@${s.range}` : `@${s.digest}`;
  return `${ref.registry}/${ref.repository}${suffix}`;
}

/** Whether a registry host is this machine (`localhost`, `127.0.0.0/8`, `[::1]`). */
export function isLoopback(registry: string): boolean {
  const host = registry.startsWith('[') ? registry.slice(0, registry.indexOf(']') + 1) : registry.replace(/:\d+$/, '');
  return host === 'localhost' || host === '[::1]' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

/** Base URL of a registry: plain HTTP on loopback or with `plainHttp`, HTTPS otherwise. */
export function registryUrl(registry: string, plainHttp = false): string {
  return `${plainHttp || isLoopback(registry) ? 'http' : 'https'}://${registry}`;
}
