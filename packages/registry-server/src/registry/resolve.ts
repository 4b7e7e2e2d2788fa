/**
 * `resolve?name=&range=`: npm's version picking (npm-pick-manifest) over a repository's exact-version
 * tags. Moving tags that point at a versioned manifest act as dist-tags, so `latest` is preferred when
 * it satisfies the range, exactly as npm does.
 */
import pickManifest from 'npm-pick-manifest';
import semver from 'semver';
import { manifestUnknown, RegistryError } from '../errors.js';
import { exactVersionOfTag } from '../names.js';
import type { RepositoryIndex } from './module-index.js';

export interface Resolved {
  name: string;
  version: string;
  tag: string;
  digest: string;
}

export function resolveVersion(repo: RepositoryIndex, range: string): Resolved {
  const versions: Record<string, Resolved> = {};
  const distTags: Record<string, string> = {};
  for (const m of repo.manifests) {
    const exact = m.tags.find((t) => exactVersionOfTag(t) !== undefined);
    if (exact === undefined) continue;
    for (const tag of m.tags) {
      const full = exactVersionOfTag(tag);
      // npm keys versions without build metadata; the first tag of a version wins.
      const key = full && semver.parse(full)!.version;
      if (key) versions[key] ??= { name: repo.name, version: key, tag, digest: m.digest };
      else distTags[tag] = semver.parse(exactVersionOfTag(exact))!.version;
    }
  }
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
  return { name: repo.name, version: picked.version, tag: picked.tag, digest: picked.digest };
}
