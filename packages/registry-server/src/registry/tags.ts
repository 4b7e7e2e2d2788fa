/**
 * Tags: `tag -> digest` links. Exact-version tags (`1.2.3`, `1.2.3-rc.1`, `1.2.3_build.7`) are
 * immutable: they are created with an atomic create-if-absent, and re-pushing one with another digest is
 * DENIED. So is a version under other build metadata (`1.2.3_build.8` beside `1.2.3`): semver ranges and
 * npm ignore build metadata, so two such manifests would be one version that resolves to either.
 * Moving tags (`latest`, `1`, `1.2`) are plain overwrites.
 */
import semver from 'semver';
import { denied } from '../errors.js';
import { KeyedMutex } from '../keyed-mutex.js';
import { exactVersionOfTag } from '../names.js';
import type { StorageDriver } from '../storage/driver.js';
import { tagDir, tagLink, tagsDir } from '../storage/layout.js';

export class TagStore {
  /** Covers backends whose create-if-absent is not atomic, for writes from this process. */
  private readonly locks = new KeyedMutex();

  constructor(private readonly storage: StorageDriver) {}

  async get(name: string, tag: string): Promise<string | undefined> {
    return (await this.storage.get(tagLink(name, tag)))?.toString();
  }

  async set(name: string, tag: string, digest: string): Promise<void> {
    const link = Buffer.from(digest);
    const exact = exactVersionOfTag(tag);
    if (exact === undefined) {
      await this.storage.put(tagLink(name, tag), link);
      return;
    }
    // Keyed by the version without build metadata: its tags are checked against each other here. (Across
    // processes the same tag stays atomic; two build variants pushed at the same instant are not.)
    const version = semver.parse(exact)!.version;
    await this.locks.run(`${name}:${version}`, async () => {
      // (only the tags of this version are read: a repository's others need no request each)
      const siblings = (await this.list(name)).filter((other) => other !== tag && semver.parse(exactVersionOfTag(other) ?? '')?.version === version);
      for (const other of siblings) {
        const at = await this.get(name, other);
        if (at !== undefined && at !== digest) {
          throw denied(`version ${version} already exists as tag ${other}, pointing to another manifest; build metadata does not make another version`, {
            tag,
            existing: other,
            current: at,
            pushed: digest,
          });
        }
      }
      let current = await this.get(name, tag);
      if (current === undefined) {
        const created = await this.storage.put(tagLink(name, tag), link, { ifAbsent: true });
        current = created ? digest : await this.get(name, tag);
      }
      if (current !== digest) {
        throw denied(`tag ${tag} is an exact version and already points to another manifest`, { tag, current, pushed: digest });
      }
    });
  }

  /** False when the tag does not exist. */
  async delete(name: string, tag: string): Promise<boolean> {
    if ((await this.get(name, tag)) === undefined) return false;
    await this.storage.delete(tagDir(name, tag));
    return true;
  }

  /** Every tag of the repository and the digest it points to. */
  async entries(name: string): Promise<Map<string, string>> {
    const dir = tagsDir(name) + '/';
    const out = new Map<string, string>();
    for await (const o of this.storage.list(tagsDir(name))) {
      if (!o.key.endsWith('/current/link')) continue;
      const tag = o.key.slice(dir.length, -'/current/link'.length);
      const digest = await this.get(name, tag);
      if (digest !== undefined) out.set(tag, digest);
    }
    return out;
  }

  /** Tag names in lexical order. */
  async list(name: string): Promise<string[]> {
    const dir = tagsDir(name) + '/';
    const tags: string[] = [];
    for await (const o of this.storage.list(tagsDir(name))) {
      if (o.key.endsWith('/current/link')) tags.push(o.key.slice(dir.length, -'/current/link'.length));
    }
    return tags.sort();
  }
}
