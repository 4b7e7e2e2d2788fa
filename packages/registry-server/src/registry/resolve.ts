/**
 * `resolve?name=&range=`: npm's version picking (npm-pick-manifest) over the exact-version tags of a
 * repository's modules (other artifacts tagged beside them are not modules to pull). Moving tags that point at a
 * versioned module act as dist-tags, so `latest` is preferred when it satisfies the range, exactly as npm does.
 */
import pickManifest from 'npm-pick-manifest';
import semver from 'semver';
import { manifestUnknown, RegistryError } from '../errors.js';
import { exactVersionOfTag } from '../names.js';
import { MODULE_ARTIFACT_TYPE, type RepositoryIndex } from './module-index.js';

/** The module version a range resolved to (the `_reasonplug/resolve` answer). */
export interface Resolved {
  /** Repository name. */
  name: string;
  /** The exact version picked. */
  version: string;
  /** The exact-version tag it is pushed under (`+` written `_`). */
  tag: string;
  /** Its manifest digest. */
  digest: string;
}

export function resolveVersion(repo: RepositoryIndex, range: string): Resolved {
  // (no prototypes: a tag may be named "__proto__")
  const versions: Record<string, Resolved> = Object.create(null) as Record<string, Resolved>;
  const distTags: Record<string, string> = Object.create(null) as Record<string, string>;
  /** The manifest each moving tag points at, by its own exact-version tag. */
  const targets = new Map<string, Resolved>();
  for (const m of repo.manifests) {
    if (m.artifactType !== MODULE_ARTIFACT_TYPE) continue;
    const exact = m.tags.find((t) => exactVersionOfTag(t) !== undefined);
    if (exact === undefined) continue;
    // (keyed as npm keys it; answered with its build metadata, as search gives it)
    const ownFull = exactVersionOfTag(exact)!;
    const own = semver.parse(ownFull)!.version;
    for (const tag of m.tags) {
      const full = exactVersionOfTag(tag);
      // npm keys versions without build metadata. Repositories from before the push refused other build
      // metadata may hold several manifests of one version: the plain tag's wins over the others.
      const key = full && semver.parse(full)!.version;
      if (key) {
        if (versions[key] === undefined || tag === key) versions[key] = { name: repo.name, version: key, tag, digest: m.digest };
      } else {
        distTags[tag] = own;
        targets.set(tag, { name: repo.name, version: ownFull, tag: exact, digest: m.digest });
      }
    }
  }
  // A moving tag asked for by name is the manifest it points at, even where another manifest holds its version
  // with other build metadata (3.0.0 and 3.0.0_b.1 are one version to npm).
  const target = targets.get(range);
  if (target) return target;
  // `latest` wins when it satisfies the range: its own manifest, whichever build of its version it is.
  const latest = targets.get('latest');
  if (latest) versions[semver.parse(latest.version)!.version] = latest;
  let picked: Resolved;
  try {
    // The packument name only appears in npm's messages; repository names are not npm names.
    picked = pickManifest({ name: 'module', versions, 'dist-tags': distTags }, range);
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'ETARGET' || code === 'ENOVERSIONS') {
      throw manifestUnknown(range, `no version of ${repo.name} matches ${JSON.stringify(range)}`);
    }
    throw new RegistryError('UNSUPPORTED', 400, `not a version, range or tag: ${JSON.stringify(range)}`, { range });
  }
  return { name: repo.name, version: exactVersionOfTag(picked.tag) ?? picked.version, tag: picked.tag, digest: picked.digest };
}
