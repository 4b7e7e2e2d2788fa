/**
 * Models in the Hugging Face hub cache (what `hf download`, `huggingface-cli download`, transformers and
 * huggingface_hub leave on a machine), named as llama.cpp's `-hf` and `llama-run` name them: `hf://org/repo` (its
 * GGUF file, or the export directory of a repository without one), `hf://org/repo:Q4_K_M` (the GGUF file of that
 * quantization; a split one by its first shard), `hf://org/repo/path/file.gguf`, and any of these at a revision
 * (`hf://org/repo@v1.0:Q8_0`: a branch or tag under `refs/`, or a commit). `huggingface://` is the same.
 * Nothing is written into this cache: a repository or file not in it is refused with the command that fetches it, and
 * a GGUF file of the main revision is then pulled through the hub's Ollama registry instead (modules/local-names.ts).
 *
 * The cache is `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else
 * `~/.cache/huggingface/hub`. A repository is `models--<org>--<repo>`; `refs/<revision>` holds a commit, whose files
 * are `snapshots/<commit>/…` (links into `blobs/`; a link whose blob is missing counts as not downloaded).
 */
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { byId, entryOf, namesIn, type StoredModel } from './dir-entries.js';
import { chooseGguf, ggufModels } from './gguf-pick.js';

const SCHEMES = ['hf://', 'huggingface://'];

/** A model name the hub cache cannot answer: not a name, a repository, revision or file not downloaded, no single GGUF. */
export class HfCacheError extends Error {
  override name = 'HfCacheError';
  constructor(
    message: string,
    /**
     * Where the name asks for a GGUF file the cache lacks at the main revision: the repository and the tag (the
     * quantization, else `latest`) the hub's Ollama registry serves it under (modules/local-names.ts pulls it there).
     */
    readonly fromHub?: { repository: string; tag: string },
  ) {
    super(message);
  }
}

/** Whether a model spec names a model in the Hugging Face cache (`hf://…`, `huggingface://…`). */
export function isHfRef(spec: string): boolean {
  return SCHEMES.some((s) => spec.startsWith(s));
}

/** The hub cache folder, found as huggingface_hub finds it. */
export function hfCacheRoot(env: NodeJS.ProcessEnv = process.env): string {
  if (env.HF_HUB_CACHE) return env.HF_HUB_CACHE;
  if (env.HF_HOME) return join(env.HF_HOME, 'hub');
  return join(env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'huggingface', 'hub');
}

interface HfName {
  org: string;
  repo: string;
  revision: string;
  quant?: string;
  file?: string;
}

function parseName(spec: string): HfName {
  const rest = spec.slice(SCHEMES.find((s) => spec.startsWith(s))!.length);
  const [org = '', repoPart = '', ...path] = rest.split('/');
  const m = /^([A-Za-z0-9][A-Za-z0-9._-]*)(?:@([A-Za-z0-9][A-Za-z0-9._-]*))?(?::([A-Za-z0-9][A-Za-z0-9._-]*))?$/.exec(repoPart);
  const file = path.join('/');
  const badPath = path.some((p) => p === '' || p === '.' || p === '..');
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(org) || !m || (path.length > 0 && (badPath || m[3] !== undefined))) {
    throw new HfCacheError(`${spec} is not a Hugging Face model name: write hf://org/repo[@revision][:QUANT] or hf://org/repo[@revision]/path/file.gguf`);
  }
  return { org, repo: m[1]!, revision: m[2] ?? 'main', ...(m[3] ? { quant: m[3] } : {}), ...(file ? { file } : {}) };
}

/** The repositories of models in the cache: `org/repo`, and its folder. */
function cachedRepos(root: string): { id: string; dir: string }[] {
  return namesIn(root)
    .filter((n) => n.startsWith('models--'))
    .map((n) => ({ id: n.slice('models--'.length).split('--').join('/'), dir: join(root, n) }))
    .sort(byId);
}

/** The folder of a repository's files at `revision` (a name under `refs/`, or a commit); undefined when not downloaded. */
function snapshotOf(repoDir: string, revision: string): string | undefined {
  const ref = join(repoDir, 'refs', revision);
  const commit = existsSync(ref) ? readFileSync(ref, 'utf8').trim() : /^[0-9a-f]{40}$/.test(revision) ? revision : undefined;
  const snapshot = commit === undefined ? undefined : join(repoDir, 'snapshots', commit);
  return snapshot !== undefined && existsSync(snapshot) ? snapshot : undefined;
}

/**
 * The models of the cache's repositories at their main revision: `hf://org/repo` for a repository's one GGUF file
 * or its folder of other files (an export directory, or no model at all), `hf://org/repo/<file>` for each of several
 * GGUF files.
 */
export function hfCachedModels(root: string = hfCacheRoot()): StoredModel[] {
  return cachedRepos(root).flatMap(({ id, dir }): StoredModel[] => {
    const snapshot = snapshotOf(dir, 'main');
    if (snapshot === undefined) return [{ name: `hf://${id}`, refused: 'no main revision in the cache' }];
    const ggufs = ggufModels(snapshot);
    if (ggufs.length === 0) return [{ name: `hf://${id}`, path: snapshot }];
    if (ggufs.length === 1) return [{ name: `hf://${id}`, path: join(snapshot, ggufs[0]!) }];
    return ggufs.map((f) => ({ name: `hf://${id}/${f}`, path: join(snapshot, f) }));
  });
}

/**
 * The GGUF file, or export directory, the Hugging Face model name `spec` stands for, in the cache at `root`. Throws
 * HfCacheError naming what is missing, with what the cache has instead.
 */
export function hfCachePath(spec: string, root: string = hfCacheRoot()): string {
  const name = parseName(spec);
  const id = `${name.org}/${name.repo}`;
  // Ollama's names have neither revisions nor paths: only a GGUF of the main revision can come from the hub's registry.
  const fromHub = name.revision === 'main' && name.file === undefined ? { repository: id, tag: name.quant ?? 'latest' } : undefined;
  const repoDir = entryOf(root, `models--${name.org}--${name.repo}`);
  if (!repoDir) {
    const repos = cachedRepos(root).map((r) => r.id);
    const listed = repos.length > 20 ? `${repos.slice(0, 20).join(', ')} and ${repos.length - 20} more` : repos.join(', ') || 'no models';
    throw new HfCacheError(`${spec}: ${id} is not in the Hugging Face cache at ${root} (hf download ${id}); it has ${listed}`, fromHub);
  }
  const snapshot = snapshotOf(repoDir, name.revision);
  if (snapshot === undefined) {
    const refs = namesIn(join(repoDir, 'refs'));
    throw new HfCacheError(
      `${spec}: revision ${name.revision} of ${id} is not in the cache (it has ${refs.length ? refs.join(', ') : 'no revisions'}); hf download ${id} --revision ${name.revision}`,
      fromHub,
    );
  }
  if (name.file !== undefined) {
    const file = join(snapshot, name.file);
    if (!existsSync(file)) throw new HfCacheError(`${spec}: ${name.file} of ${id} is not in the cache (hf download ${id} ${name.file})`);
    return file;
  }
  const ggufs = ggufModels(snapshot);
  if (ggufs.length === 0 && name.quant === undefined) return snapshot; // an export directory (config.json, tokenizer files, onnx/…)
  const { file, candidates } = chooseGguf(ggufs, name.quant);
  if (file !== undefined) return join(snapshot, file);
  if (name.quant === undefined) {
    throw new HfCacheError(`${spec}: ${id} has ${ggufs.length} GGUF files in the cache (${ggufs.join(', ')}); choose one with hf://${id}:<QUANT> or hf://${id}/<file>`);
  }
  throw new HfCacheError(
    `${spec}: ${candidates.length ? `${candidates.length} GGUF files of ${id} are ${name.quant} (${candidates.join(', ')}); name one: hf://${id}/<file>` : `no GGUF file of ${id} in the cache is ${name.quant}`}; it has ${ggufs.join(', ') || 'none'}`,
    candidates.length ? undefined : fromHub,
  );
}
