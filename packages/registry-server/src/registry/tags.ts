/**
 * Tags: `tag -> digest` links. Exact-version tags (`1.2.3`, `1.2.3-rc.1`, `1.2.3_build.7`) are
 * immutable: the digest each is first set to is recorded with an atomic create-if-absent, and setting it to
 * another digest is DENIED. So is a version under other build metadata (`1.2.3_build.8` beside `1.2.3`): semver
 * ranges and npm ignore build metadata, so two such manifests would be one version that resolves to either.
 * Deleting an exact-version tag yanks it (OCI clients and gc rely on `DELETE`) but keeps that record, so the
 * version can come back only with the same digest: like npm, a published version never changes bytes.
 * Moving tags (`latest`, `1`, `1.2`) are plain overwrites.
 */
import semver from 'semver';
import { denied } from '../errors.js';
import { KeyedMutex } from '../keyed-mutex.js';
import { exactVersionOfTag } from '../names.js';
import type { StorageDriver } from '../storage/driver.js';
import { tagCurrentDir, tagDir, tagLink, tagReleaseLink, tagsDir } from '../storage/layout.js';

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
      for (const other of await this.versionTags(name, version)) {
        if (other === tag) continue;
        const at = await this.released(name, other);
        if (at !== undefined && at !== digest) {
          const where = (await this.get(name, other)) === undefined ? `was published as tag ${other} (since deleted)` : `already exists as tag ${other}`;
          throw denied(`version ${version} ${where}, pointing to another manifest; build metadata does not make another version`, {
            tag,
            existing: other,
            current: at,
            pushed: digest,
          });
        }
      }
      let released = await this.released(name, tag);
      let created = false;
      if (released === undefined) {
        created = await this.storage.put(tagReleaseLink(name, tag), link, { ifAbsent: true });
        released = created ? digest : await this.released(name, tag);
      }
      if (released !== digest) {
        const why = (await this.get(name, tag)) === undefined ? 'was deleted, and a version is never reused for another manifest' : 'already points to another manifest';
        throw denied(`tag ${tag} is an exact version and ${why}`, { tag, current: released, pushed: digest });
      }
      try {
        if ((await this.get(name, tag)) !== digest) await this.storage.put(tagLink(name, tag), link);
      } catch (err) {
        // A version whose tag never appeared (a full disk) was never published: its record must not refuse the push
        // that comes once the fault is gone. Only the record this call made goes; an earlier push's stays.
        if (created) await this.storage.delete(tagReleaseLink(name, tag)).catch(() => {});
        throw err;
      }
    });
  }

  /** False when the tag does not exist. An exact-version tag keeps its release record (see the module comment). */
  async delete(name: string, tag: string): Promise<boolean> {
    const digest = await this.get(name, tag);
    if (digest === undefined) return false;
    if (exactVersionOfTag(tag) === undefined) {
      await this.storage.delete(tagDir(name, tag));
      return true;
    }
    // A tag set before releases were recorded has only its current link: record it before that goes.
    await this.storage.put(tagReleaseLink(name, tag), Buffer.from(digest), { ifAbsent: true });
    await this.storage.delete(tagCurrentDir(name, tag));
    await this.retargetLatest(name, digest);
    return true;
  }

  /**
   * Where `latest` named a version just yanked (`digest`, under no exact-version tag any more), it moves to the newest
   * release left, else the newest prerelease, and is deleted where none is left: as npm moves `latest` off a version
   * unpublished, so that `@*` and clients that read `latest` never get a yanked version.
   */
  private async retargetLatest(name: string, digest: string): Promise<void> {
    const entries = await this.entries(name);
    if (entries.get('latest') !== digest) return;
    const versions = [...entries].flatMap(([tag, at]) => {
      const version = exactVersionOfTag(tag);
      return version === undefined ? [] : [{ version, at }];
    });
    if (versions.some((v) => v.at === digest)) return;
    const releases = versions.filter((v) => semver.prerelease(v.version) === null);
    const newest = (releases.length > 0 ? releases : versions).sort((a, b) => semver.rcompare(a.version, b.version))[0];
    if (newest) await this.storage.put(tagLink(name, 'latest'), Buffer.from(newest.at));
    else await this.storage.delete(tagDir(name, 'latest'));
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

  /** The digest exact-version tag `tag` was published as, whether or not it was deleted since. */
  private async released(name: string, tag: string): Promise<string | undefined> {
    // (a tag set before releases were recorded has only its current link, which then says the same)
    return (await this.storage.get(tagReleaseLink(name, tag)))?.toString() ?? (await this.get(name, tag));
  }

  /** The tags, deleted ones included, whose exact version is `version` under any build metadata. */
  private async versionTags(name: string, version: string): Promise<Set<string>> {
    const dir = tagsDir(name) + '/';
    const tags = new Set<string>();
    // Each such tag starts with the version itself, so only tags of that prefix are listed, not every tag (a
    // repository's hundreds of versions made each push walk them all); `1.2.30` still starts with `1.2.3`.
    for await (const o of this.storage.list(tagsDir(name), version)) {
      const tag = o.key.slice(dir.length, o.key.indexOf('/', dir.length));
      if (semver.parse(exactVersionOfTag(tag) ?? '')?.version === version) tags.add(tag);
    }
    return tags;
  }
}
