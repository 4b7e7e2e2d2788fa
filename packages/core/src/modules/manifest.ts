/**
 * The module manifest, `reasonplug.json` (ARCHITECTURE.md, "Module format"): its zod schema, its type,
 * and `parseManifest`, which turns every violation into one readable line naming the field.
 *
 * Objects are strict — an unknown field is refused rather than ignored, so a typo such as `compat.hiddensize`
 * cannot silently drop a requirement; new fields, and new graph conventions, come with a new schemaVersion.
 * `provenance` is the exception: it is free-form record keeping.
 */
// Only `valid`: the whole of semver costs every model worker ~0.1 s of start-up, and this is all it needs here.
import validSemver from 'semver/functions/valid.js';
import { z } from 'zod';
import { MANIFEST_FILE } from './manifest-file.js';

export { MANIFEST_FILE };

/** What a module is: the model others compose onto, a UniR logit reasoner, or a LiteReason latent projector. */
export const MODULE_KINDS = ['backbone', 'logit-reasoner', 'latent-projector'] as const;
/** One of {@link MODULE_KINDS}. */
export type ModuleKind = (typeof MODULE_KINDS)[number];

/** An OCI repository path component (distribution's grammar, minus `__` and repeated dashes). */
const NAME_RE = /^[a-z0-9]+(?:[._-][a-z0-9]+)*$/;
const NAME_MAX = 128;
const HEX64_RE = /^[0-9a-f]{64}$/;

/** Why `path` cannot name a file inside a module directory, or undefined when it can. */
function relativePathProblem(path: string): string | undefined {
  const shown = JSON.stringify(path);
  if (path === '') return 'must not be empty';
  if (path.includes('\0')) return `${shown} contains a NUL character`;
  if (path.includes('\\')) return `${shown} contains a backslash; separate directories with "/"`;
  // A drive letter makes a path absolute on Windows even with forward slashes.
  if (path.startsWith('/') || /^[A-Za-z]:/.test(path)) return `${shown} is absolute; paths are relative to the module directory`;
  const segments = path.split('/');
  if (segments.includes('..')) return `${shown} leaves the module directory (".." is not allowed)`;
  if (segments.some((s) => s === '' || s === '.')) return `${shown} is not normalized (empty or "." segment)`;
  if (path === MANIFEST_FILE) return `${shown} is the manifest itself and cannot be listed as a module file`;
  return undefined;
}

/** Strict semver, as written in tags: no leading "v" or "=", no surrounding spaces (semver.valid allows those). */
export function isExactSemver(v: string): boolean {
  return /^\d\S*$/.test(v) && validSemver(v) !== null;
}

const RelativePath = z.string().superRefine((path, ctx) => {
  const problem = relativePathProblem(path);
  if (problem) ctx.addIssue({ code: 'custom', message: problem, input: path });
});

// A factory so that files.model can carry its own message for "missing"; an entry that is no object (a bare path,
// as a hand-written manifest may give it) is told the shape.
const fileEntry = (missing?: string) =>
  z.strictObject(
    {
      path: RelativePath,
      sha256: z.string().regex(HEX64_RE, "expected 64 hex characters (the file's SHA-256, lower-case)"),
      size: z.int().nonnegative(),
    },
    {
      error: (iss) =>
        iss.input === undefined && missing !== undefined
          ? missing
          : iss.code === 'invalid_type'
            ? `expected { path, sha256, size } (the file's path in the module, its SHA-256 and its size in bytes), got ${JSON.stringify(iss.input)}`
            : undefined,
    },
  );
/** One file of a module: where it lies in the directory, its SHA-256 (hex) and size in bytes. */
export type ModuleFileEntry = z.infer<ReturnType<typeof fileEntry>>;

const Tag = z.string().regex(NAME_RE, 'expected a lower-case tag such as "math" or "tool-use"');

/**
 * The manifest versions this reasonplug reads. Both have the same fields; they differ in what the graph may return.
 * 1: the ONNX decoder conventions of ARCHITECTURE.md, whose decoders return the past joined with the run's keys and
 * values (`present.{i}.key|value`). 2: the graph may instead return only the run's new keys and values
 * (`new_key_values.{i}.key|value`, LlamaBuildOptions.kvOutput 'new'), which the caller appends; a reader that knows
 * only 1, given such a module, refuses it by its version, not as a broken decoder (in a GGUF cache it shares it meets
 * none: conversions with such manifests are entries of a layout of their own, gguf-module.ts `LAYOUT` v8). Version 1
 * stays accepted with such outputs too: modules converted before version 2 existed have them, and the engine reads the
 * convention from the graph.
 */
export const SCHEMA_VERSIONS = [1, 2] as const;
/** A manifest `schemaVersion` this version reads: one of {@link SCHEMA_VERSIONS}. */
export type SchemaVersion = (typeof SCHEMA_VERSIONS)[number];

/** The version a module's manifest declares: 2 where its graph returns new keys and values only, else 1. */
export function schemaVersionFor(kvOutput: 'joined' | 'new' | undefined): SchemaVersion {
  return kvOutput === 'new' ? 2 : 1;
}

/** The `reasonplug.json` schema. Prefer `parseManifest`, which words its errors for people. */
export const ModuleManifestSchema = z
  .strictObject({
    schemaVersion: z.literal(SCHEMA_VERSIONS, {
      error: (iss) =>
        iss.input === undefined
          ? 'missing; expected 1 or 2'
          : `is ${JSON.stringify(iss.input)}, but this reasonplug reads only schemaVersion 1 and 2; upgrade reasonplug or re-pack the module`,
    }),
    name: z
      .string()
      .max(NAME_MAX)
      .regex(NAME_RE, 'expected lower-case letters and digits, separated by single ".", "_" or "-" (e.g. "math-reasoner")'),
    version: z.string().refine(isExactSemver, {
      error: (iss) => `${JSON.stringify(iss.input)} is not a semantic version (e.g. "1.0.0", "2.1.0-beta.1")`,
    }),
    kind: z.enum(MODULE_KINDS),
    tasks: z.array(Tag),
    description: z.string(),
    license: z.string(),
    compat: z.strictObject({
      tokenizer: z
        .string()
        .regex(/^sha256:[0-9a-f]{64}$/, 'expected "sha256:" and 64 lower-case hex characters (the tokenizer fingerprint)'),
      vocabSize: z.int().positive(),
      hiddenSize: z.int().positive().optional(),
    }),
    composition: z
      .strictObject({
        defaultWeight: z.number(),
        mode: z.enum(['logits', 'logprobs']),
      })
      .optional(),
    latent: z
      .strictObject({
        open: z.string().min(1),
        close: z.string().min(1),
        maxSteps: z.int().min(1).max(1024),
        /** Discrete tokens one latent step stood for in training (for `usage.reasoningTokensSaved`). */
        tokensPerStep: z.number().positive().optional(),
      })
      .optional(),
    generation: z
      .strictObject({
        bosTokenId: z.int().nonnegative().optional(),
        eosTokenIds: z.array(z.int().nonnegative()).optional(),
      })
      .optional(),
    files: z
      .object({
        model: fileEntry('missing; every module lists its ONNX graph as files.model'),
      })
      .catchall(fileEntry()),
    provenance: z
      .looseObject({
        trainedWith: z.string().optional(),
        backbone: z.string().optional(),
        reward: z.string().optional(),
        dataset: z.string().optional(),
        convertedFrom: z.union([z.string(), z.record(z.string(), z.unknown())], { error: 'expected a string or an object' }).optional(),
      })
      .optional(),
  })
  .superRefine(
    (m, ctx) => {
      // Runs even when fields failed (`when` below) so one pass reports every problem; hence the defensive reads.
      if (typeof m !== 'object' || m === null) return;
      const need = (key: string, what: string) => ctx.addIssue({ code: 'custom', path: [key], message: what });
      if (m.kind === 'logit-reasoner' && m.composition === undefined) {
        need('composition', 'required for kind "logit-reasoner", e.g. { "defaultWeight": 1, "mode": "logits" }');
      }
      if (m.kind === 'latent-projector') {
        if (m.latent === undefined) {
          need('latent', 'required for kind "latent-projector", e.g. { "open": "<implicit_thought>", "close": "</implicit_thought>", "maxSteps": 32 }');
        }
        if (typeof m.compat === 'object' && m.compat !== null && m.compat.hiddenSize === undefined) {
          ctx.addIssue({ code: 'custom', path: ['compat', 'hiddenSize'], message: 'required for kind "latent-projector" (the backbone hidden size it projects into)' });
        }
      }
      // Each file becomes one OCI layer titled by its path, so two entries cannot share one.
      if (typeof m.files === 'object' && m.files !== null) {
        const seen = new Map<string, string>();
        for (const [key, entry] of Object.entries(m.files)) {
          const path = (entry as { path?: unknown } | undefined)?.path;
          if (typeof path !== 'string') continue;
          const first = seen.get(path);
          if (first !== undefined) {
            ctx.addIssue({ code: 'custom', path: ['files', key, 'path'], message: `${JSON.stringify(path)} is already listed as files.${first}` });
          } else seen.set(path, key);
        }
      }
    },
    { when: () => true },
  );

/** A validated `reasonplug.json`. */
export type ModuleManifest = z.infer<typeof ModuleManifestSchema>;

/** One problem in a manifest: the field path (e.g. `files.model.sha256`, empty for the whole file) and what is wrong. */
export interface ManifestIssue {
  path: string;
  message: string;
}

/** Raised when a manifest is missing, is not JSON, or breaks the schema; one message line per problem. */
export class ManifestError extends Error {
  override name = 'ManifestError';

  constructor(
    /** The manifest file (or whatever the JSON came from). */
    readonly source: string,
    readonly issues: readonly ManifestIssue[],
  ) {
    super(issues.map((i) => `${source}: ${i.path ? `${i.path}: ` : ''}${i.message}`).join('\n'));
  }
}

/** A zod issue path as users write it: `files.model.sha256`, `tasks[2]`, `files["odd key"]`. */
export function formatFieldPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else if (typeof seg === 'string' && /^[A-Za-z_$][\w$-]*$/.test(seg)) out += out ? `.${seg}` : seg;
    else out += `[${JSON.stringify(String(seg))}]`;
  }
  return out;
}

function describeValue(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'object') return 'an object';
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v);
  return String(v);
}

const TYPE_WORDS: Record<string, string> = { int: 'an integer', object: 'an object', array: 'an array', number: 'a number', string: 'a string' };

/** Messages for the issues the schema leaves to zod's defaults, which read like `Invalid input: expected string, received number`. */
const errorMap: z.core.$ZodErrorMap = (iss) => {
  const bound = (b: number | bigint, inclusive: boolean | undefined, op: string) => `${op}${inclusive ? '=' : ''} ${b}`;
  switch (iss.code) {
    case 'invalid_type': {
      const expected = TYPE_WORDS[iss.expected] ?? iss.expected;
      return iss.input === undefined ? `missing; expected ${expected}` : `expected ${expected}, got ${describeValue(iss.input)}`;
    }
    case 'invalid_value': {
      const values = iss.values.map((v) => JSON.stringify(v));
      return `expected ${values.length > 1 ? `one of ${values.join(', ')}` : values[0]}, got ${describeValue(iss.input)}`;
    }
    case 'too_small':
      if (iss.origin === 'string' && Number(iss.minimum) === 1) return 'must not be empty';
      if (iss.origin === 'string') return `must be at least ${iss.minimum} characters`;
      return `must be ${bound(iss.minimum, iss.inclusive, '>')}, got ${describeValue(iss.input)}`;
    case 'too_big':
      if (iss.origin === 'string') return `must be at most ${iss.maximum} characters, got ${(iss.input as string).length}`;
      return `must be ${bound(iss.maximum, iss.inclusive, '<')}, got ${describeValue(iss.input)}`;
    default:
      return undefined;
  }
};

/**
 * Validates manifest JSON. `source` names where it came from in error messages (usually the file path).
 * Throws `ManifestError` listing every offending field.
 */
export function parseManifest(json: unknown, source: string): ModuleManifest {
  const result = ModuleManifestSchema.safeParse(json, { error: errorMap });
  if (result.success) return result.data;
  const issues: ManifestIssue[] = [];
  for (const iss of result.error.issues) {
    if (iss.code === 'unrecognized_keys') {
      for (const key of iss.keys) {
        issues.push({ path: formatFieldPath([...iss.path, key]), message: 'unknown field; schemaVersion 1 and 2 do not define it (check the spelling)' });
      }
    } else {
      issues.push({ path: formatFieldPath(iss.path), message: iss.message });
    }
  }
  throw new ManifestError(source, issues);
}
