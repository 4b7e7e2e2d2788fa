/**
 * Models in the Hugging Face hub cache (what `hf download`, `huggingface-cli download`, transformers and
 * huggingface_hub leave on a machine), named as llama.cpp's `-hf` and `llama-run` name them: `hf://org/repo` (its
 * GGUF file, or the export directory of a repository without one), `hf://org/repo:Q4_K_M` (the GGUF file of that
 * quantization; a split one by its first shard), `hf://org/repo/path/file.gguf`, and any of these at a revision
 * (`hf://org/repo@v1.0:Q8_0`, `hf://org/repo@refs/pr/1`: a branch, tag or other ref, or a commit). `huggingface://`
 * is the same, the scheme in any case; `hf://repo` names a repository of no organization (`gpt2`).
 * Nothing is written into this cache: a repository or file not in it is refused with the command that fetches it, and
 * a GGUF file of the main revision is then pulled through the hub's Ollama registry instead (modules/local-names.ts).
 *
 * The cache is found as huggingface_hub finds it ({@link hfCacheRoot}). A repository is `models--<org>--<repo>`;
 * `refs/<revision>` holds a commit, whose files are `snapshots/<commit>/…` (links into `blobs/`; a GGUF file whose
 * blob is missing is refused when chosen, not passed over for another).
 */
import { lstatSync, readFileSync, statSync, type Stats } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { byId, entryOf, namesIn, type StoredModel } from './dir-entries.js';
import { chooseGguf, ggufModels, ggufPath, storedGguf } from './gguf-pick.js';
import { exists } from './locate.js';

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

/** The scheme `spec` begins with, in any case (RFC 3986 §3.1: `HF://` is `hf://`); undefined when none of ours. */
function schemeOf(spec: string): string | undefined {
  return SCHEMES.find((s) => spec.slice(0, s.length).toLowerCase() === s);
}

/** Whether a model spec names a model in the Hugging Face cache (`hf://…`, `huggingface://…`, in any case). */
export function isHfRef(spec: string): boolean {
  return schemeOf(spec) !== undefined;
}

/**
 * The hub cache folder, found as huggingface_hub finds it (constants.py): `$HF_HUB_CACHE`, else the older
 * `$HUGGINGFACE_HUB_CACHE`, else `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else
 * `~/.cache/huggingface/hub`; a `~` and `$VAR` or `${VAR}` in them expanded as Python does.
 */
export function hfCacheRoot(env: NodeJS.ProcessEnv = process.env): string {
  const cache = env.HF_HUB_CACHE || env.HUGGINGFACE_HUB_CACHE;
  if (cache) return expandPath(cache, env);
  const home = env.HF_HOME || join(env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'huggingface');
  return join(expandPath(home, env), 'hub');
}

/**
 * `path` as Python's `os.path.expandvars(os.path.expanduser(path))` gives it on POSIX: a leading `~` is the home
 * directory (`$HOME`), `$NAME` and `${NAME}` the variables of `env`, left as written where unset.
 */
function expandPath(path: string, env: NodeJS.ProcessEnv): string {
  const user = /^~(?=\/|$)/.test(path) ? (env.HOME ?? homedir()).replace(/\/+$/, '') + path.slice(1) : path;
  return user.replace(/\$(\w+|\{[^}]*\})/g, (written, name: string) => env[name.replace(/^\{(.*)\}$/, '$1')] ?? written);
}

/** One way of reading a name: the repository, and what it names in it. */
interface HfName {
  /** `org/repo`, or a bare `repo` as the hub's oldest models are named (`gpt2`: `models--gpt2`). */
  id: string;
  /** What follows `@`: a revision and perhaps a file's path, as segments ({@link revisionAndFile} splits them). */
  at?: string[];
  quant?: string;
  file?: string;
}

const PART = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
/** A name part with the quantization it may end in (`repo:Q4_K_M`). */
const WITH_QUANT = /^([A-Za-z0-9][A-Za-z0-9._-]*)(?::([A-Za-z0-9][A-Za-z0-9._-]*))?$/;

/** The refusal of text that is no name of ours. */
function notAName(spec: string): HfCacheError {
  return new HfCacheError(`${spec} is not a Hugging Face model name: write hf://[org/]repo[@revision][:QUANT] or hf://[org/]repo[@revision]/path/file.gguf`);
}

/** Whether `segments` make a path inside a snapshot: some, none empty, `.` or `..`. */
const pathSegments = (segments: string[]) => segments.length > 0 && segments.every((p) => p !== '' && p !== '.' && p !== '..');

/**
 * The readings of `spec`, the likelier first: without `@`, `hf://a/b/c` is file `c` of `a/b`, or file `b/c` of the
 * org-less repository `a` (the cache decides); with it, the repository is what precedes it.
 */
function parseName(spec: string): HfName[] {
  const rest = spec.slice(schemeOf(spec)!.length);
  const sep = rest.indexOf('@');
  if (sep >= 0) {
    const id = rest.slice(0, sep).split('/');
    const at = rest.slice(sep + 1).split('/');
    const quant = /^(.+):([A-Za-z0-9][A-Za-z0-9._-]*)$/.exec(at.at(-1)!);
    if (quant) at[at.length - 1] = quant[1]!;
    if (id.length > 2 || !id.every((p) => PART.test(p)) || !pathSegments(at) || !PART.test(at[0]!)) throw notAName(spec);
    return [{ id: id.join('/'), at, ...(quant ? { quant: quant[2]! } : {}) }];
  }
  const [first = '', second, ...path] = rest.split('/');
  const readings: HfName[] = [];
  const named = WITH_QUANT.exec(second ?? first);
  if (second === undefined) {
    if (named) readings.push({ id: named[1]!, ...(named[2] ? { quant: named[2] } : {}) });
  } else if (PART.test(first)) {
    if (named && (path.length === 0 || (named[2] === undefined && pathSegments(path)))) {
      readings.push({ id: `${first}/${named[1]}`, ...(named[2] ? { quant: named[2] } : {}), ...(path.length ? { file: path.join('/') } : {}) });
    }
    if (!second.includes(':') && pathSegments([second, ...path])) readings.push({ id: first, file: [second, ...path].join('/') });
  }
  if (readings.length === 0) throw notAName(spec);
  return readings;
}

/** A repository's folder in the cache (`models--org--repo`, `models--repo`). */
const folderOf = (id: string) => `models--${id.replace('/', '--')}`;

/** The repositories of models in the cache: `org/repo` (or `repo`), and its folder. */
function cachedRepos(root: string): { id: string; dir: string }[] {
  return namesIn(root)
    .filter((n) => n.startsWith('models--'))
    .map((n) => ({ id: n.slice('models--'.length).split('--').join('/'), dir: join(root, n) }))
    .sort(byId);
}

/** What is at `path`, following links; undefined where nothing is (or a part of it is a file: ENOTDIR). */
function statOf(path: string): Stats | undefined {
  try {
    return statSync(path);
  } catch {
    return undefined;
  }
}
const isFile = (path: string) => statOf(path)?.isFile() === true;
const isDirectory = (path: string) => statOf(path)?.isDirectory() === true;

/**
 * A name's `@` segments as a revision and a file's path in it. Branch names may hold `/` (huggingface_hub writes
 * `refs/<revision>`, so `refs/refs/pr/1`): the longest leading segments naming a ref of the repository, else a pull
 * request's or conversion's ref (`refs/pr/1`, `refs/convert/parquet`, as huggingface_hub's file system reads them),
 * else the first segment (a commit).
 */
function revisionAndFile(repoDir: string | undefined, at: string[]): { revision: string; file?: string } {
  const isRef = (n: number) => repoDir !== undefined && isFile(join(repoDir, 'refs', ...at.slice(0, n)));
  let n = at.length;
  while (n > 0 && !isRef(n)) n--;
  if (n === 0) n = /^refs\/(?:pr\/\d+|convert\/\w+)(?:\/|$)/.test(at.join('/')) ? 3 : 1;
  return { revision: at.slice(0, n).join('/'), ...(n < at.length ? { file: at.slice(n).join('/') } : {}) };
}

/** A repository's refs (`main`, `v1.0`, `refs/pr/1`), each with the commit it names. */
function refsOf(repoDir: string, prefix = ''): { name: string; commit: string }[] {
  return namesIn(join(repoDir, 'refs', prefix))
    .flatMap((entry) => {
      const name = prefix ? `${prefix}/${entry}` : entry;
      const path = join(repoDir, 'refs', name);
      // (Only folders of its own: a link to one could loop.)
      if (lstatSync(path).isDirectory()) return refsOf(repoDir, name);
      return isFile(path) ? [{ name, commit: readFileSync(path, 'utf8').trim() }] : [];
    })
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** The commits a repository has files of (`snapshots/<commit>`). */
function snapshotsOf(repoDir: string): string[] {
  return namesIn(join(repoDir, 'snapshots'))
    .filter((c) => isDirectory(join(repoDir, 'snapshots', c)))
    .sort();
}

/** The folder of a repository's files at `revision` (a ref, or a commit); undefined when not downloaded. */
function snapshotOf(repoDir: string, revision: string): string | undefined {
  const ref = join(repoDir, 'refs', revision);
  const commit = isFile(ref) ? readFileSync(ref, 'utf8').trim() : /^[0-9a-f]{40}$/.test(revision) ? revision : undefined;
  const snapshot = commit === undefined ? undefined : join(repoDir, 'snapshots', commit);
  return snapshot !== undefined && isDirectory(snapshot) ? snapshot : undefined;
}

/** The models of one snapshot under `name`: its one GGUF file or its folder (an export directory) by `name`, several GGUF files each by path. */
function snapshotModels(name: string, snapshot: string): StoredModel[] {
  const ggufs = ggufModels(snapshot);
  if (ggufs.length === 0) return [{ name, path: snapshot }];
  if (ggufs.length === 1) return [storedGguf(name, snapshot, ggufs[0]!)];
  return ggufs.map((f) => storedGguf(`${name}/${f}`, snapshot, f));
}

/**
 * The models of the cache's repositories: at their main revision as `hf://org/repo` (`hf://org/repo/<file>` for each of
 * several GGUF files), and at each commit downloaded that no ref names (`hf download --revision <commit>`, or a ref
 * since moved on) as `hf://org/repo@<commit>`; a repository whose main revision is not there is listed as refused by
 * `hf://org/repo` where it has a `main` ref, or nothing else.
 */
export function hfCachedModels(root: string = hfCacheRoot()): StoredModel[] {
  return cachedRepos(root).flatMap(({ id, dir }): StoredModel[] => {
    const refs = refsOf(dir);
    const named = new Set(refs.map((r) => r.commit));
    const main = snapshotOf(dir, 'main');
    const models = [
      ...(main !== undefined ? snapshotModels(`hf://${id}`, main) : []),
      ...snapshotsOf(dir)
        .filter((c) => !named.has(c))
        .flatMap((c) => snapshotModels(`hf://${id}@${c}`, join(dir, 'snapshots', c))),
    ];
    const mainRef = refs.find((r) => r.name === 'main');
    if (main === undefined && (mainRef !== undefined || models.length === 0)) {
      const others = refs.filter((r) => r !== mainRef).map((r) => r.name);
      const refused = mainRef
        ? `main names commit ${mainRef.commit}, which is not in the cache`
        : `no main revision in the cache${others.length ? ` (it has ${others.join(', ')}: hf://${id}@<revision>)` : ''}`;
      models.unshift({ name: `hf://${id}`, refused });
    }
    return models;
  });
}

/** Whether the cache has repository `id` (`org/repo`). */
export function hfCacheHas(id: string, root: string = hfCacheRoot()): boolean {
  return entryOf(root, folderOf(id)) !== undefined;
}

/** The refusal of a revision the cache has no files of, with the commits it has and the refs that name them. */
function missingRevision(spec: string, id: string, repoDir: string, revision: string, fromHub: HfCacheError['fromHub']): HfCacheError {
  const refs = refsOf(repoDir);
  const asked = refs.find((r) => r.name === revision);
  const commits = snapshotsOf(repoDir);
  const described = commits.map((c) => `${c} (${refs.filter((r) => r.commit === c).map((r) => r.name).join(', ') || 'no ref names it'})`);
  const has = commits.length
    ? `it has ${commits.length === 1 ? 'commit' : 'commits'} ${described.join(', ')}, loaded as hf://${id}@${commits.length === 1 ? commits[0] : '<commit>'}`
    : 'it has no snapshots';
  return new HfCacheError(
    `${spec}: revision ${revision} of ${id} is not in the cache${asked ? ` (${revision} names commit ${asked.commit}, whose files are not there)` : ''}; ${has}; hf download ${id} --revision ${revision}`,
    fromHub,
  );
}

/**
 * The GGUF file, or export directory, the Hugging Face model name `spec` stands for, in the cache at `root`. Throws
 * HfCacheError naming what is missing, with what the cache has instead; ModelNotFoundError for a file that is a link
 * to a blob not there.
 */
export function hfCachePath(spec: string, root: string = hfCacheRoot()): string {
  const readings = parseName(spec);
  const found = readings.map((n) => ({ name: n, dir: entryOf(root, folderOf(n.id)) })).find((r) => r.dir !== undefined);
  const { name, dir: repoDir } = found ?? { name: readings[0]!, dir: undefined };
  const id = name.id;
  const { revision, file } = name.at ? revisionAndFile(repoDir, name.at) : { revision: 'main', file: name.file };
  if (file !== undefined && name.quant !== undefined) throw notAName(spec);
  // Ollama's names have neither revisions nor paths, and the hub serves org/repo ones: only a GGUF of such a
  // repository's main revision can come from its registry.
  const fromHub = id.includes('/') && revision === 'main' && file === undefined ? { repository: id, tag: name.quant ?? 'latest' } : undefined;
  if (!repoDir) {
    const repos = cachedRepos(root).map((r) => r.id);
    const listed = repos.length > 20 ? `${repos.slice(0, 20).join(', ')} and ${repos.length - 20} more` : repos.join(', ') || 'no models';
    throw new HfCacheError(`${spec}: ${id} is not in the Hugging Face cache at ${root} (hf download ${id}); it has ${listed}`, fromHub);
  }
  const snapshot = snapshotOf(repoDir, revision);
  if (snapshot === undefined) throw missingRevision(spec, id, repoDir, revision, fromHub);
  if (file !== undefined) {
    const path = join(snapshot, file);
    if (!exists(path)) throw new HfCacheError(`${spec}: ${file} of ${id} is not in the cache (hf download ${id} ${file})`);
    return path;
  }
  const ggufs = ggufModels(snapshot);
  if (ggufs.length === 0 && name.quant === undefined) return snapshot; // an export directory (config.json, tokenizer files, onnx/…)
  const { file: chosen, candidates } = chooseGguf(ggufs, name.quant);
  if (chosen !== undefined) return ggufPath(snapshot, chosen);
  if (name.quant === undefined) {
    throw new HfCacheError(`${spec}: ${id} has ${ggufs.length} GGUF files in the cache (${ggufs.join(', ')}); choose one with hf://${id}:<QUANT> or hf://${id}/<file>`);
  }
  throw new HfCacheError(
    `${spec}: ${candidates.length ? `${candidates.length} GGUF files of ${id} are ${name.quant} (${candidates.join(', ')}); name one: hf://${id}/<file>` : `no GGUF file of ${id} in the cache is ${name.quant}`}; it has ${ggufs.join(', ') || 'none'}`,
    candidates.length ? undefined : fromHub,
  );
}
