/**
 * One rule for picking a version, wherever it is picked: reasonplug-registry's `_reasonplug/resolve` (npm's rule), the
 * client's tags/list fallback on a plain OCI registry (CNCF distribution), an exact version that was pushed with build
 * metadata, and the reasoner `--reasoner-task` pins.
 */
import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { cp, readFile, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import type { ModuleManifest } from '../src/modules/manifest.js';
import { ModuleNotFoundError } from '../src/registry/errors.js';
import { reasonerForTask, resolveModule } from '../src/registry/lookup.js';
import { pullModule } from '../src/registry/pull.js';
import { pushModule } from '../src/registry/push.js';
import { pickVersion } from '../src/registry/resolve.js';
import { versionTag } from '../src/registry/reference.js';
import { repoRoot } from '../../../test/support/paths.js';
import { rejection } from './support/assertions.js';
import { testDir } from './support/models.js';
import { distributionMissing, makeRegistryModule, startDistribution, startOurRegistry, type RegistryModuleSpec, type RunningRegistry } from './support/registries.js';

const reasoner = join(repoRoot, 'examples', 'modules', 'toy-math-reasoner');
const reasonerTokenizer = (JSON.parse(readFileSync(join(reasoner, 'reasonplug.json'), 'utf8')) as ModuleManifest).compat.tokenizer;

/** The example logit-reasoner, as version `version` (its files unchanged). */
async function reasonerAt(version: string): Promise<string> {
  const dir = join(testDir(`reasoner-${version}`), 'toy-math-reasoner');
  await cp(reasoner, dir, { recursive: true });
  const manifest = JSON.parse(await readFile(join(dir, 'reasonplug.json'), 'utf8')) as ModuleManifest;
  await writeFile(join(dir, 'reasonplug.json'), JSON.stringify({ ...manifest, version }, null, 2));
  return dir;
}

describe('registry version rules, alike on reasonplug-registry and a plain OCI registry', function () {
  this.timeout(60_000);
  const registries: Record<'extension' | 'plain', RunningRegistry> = {} as Record<'extension' | 'plain', RunningRegistry>;

  before(async function () {
    const missing = distributionMissing();
    if (missing) {
      console.log(`      skipping the version rule tests: ${missing}`);
      this.skip();
    }
    registries.extension = await startOurRegistry();
    registries.plain = await startDistribution();
  });
  after(() => Promise.all(Object.values(registries).map((r) => r.close())));

  /** Pushes a module directory of `version` to `acme/NAME` on both registries; returns its manifest digest. */
  async function pushDir(dir: string, version: string, opts: { latest?: boolean } = {}): Promise<string> {
    const name = basename(dir);
    const digests = await Promise.all(Object.values(registries).map(async (r) => (await pushModule(dir, `${r.host}/acme/${name}:${versionTag(version)}`, opts)).digest));
    expect(digests[1]).to.equal(digests[0]);
    return digests[0]!;
  }
  const push = async (spec: RegistryModuleSpec & { version: string }, opts: { latest?: boolean } = {}) => pushDir(await makeRegistryModule(spec), spec.version, opts);

  it('an exact version finds the module pushed with build metadata, and its own tag where it has one', async () => {
    const built = await push({ name: 'built', version: '1.1.1+build.7', seed: 1 });
    await push({ name: 'built', version: '1.0.0', seed: 2 });
    for (const r of Object.values(registries)) {
      expect(await resolveModule(`${r.host}/acme/built@1.1.1`), r.host).to.deep.include({ version: '1.1.1+build.7', tag: '1.1.1_build.7', digest: built });
      const pulled = await pullModule(`${r.host}/acme/built@1.1.1`, { cacheDir: testDir('built-cache') });
      expect(pulled, r.host).to.deep.include({ version: '1.1.1+build.7', digest: built });
      expect(await resolveModule(`${r.host}/acme/built@1.0.0`), r.host).to.deep.include({ version: '1.0.0', tag: '1.0.0' });
      expect(await rejection(resolveModule(`${r.host}/acme/built@1.1.2`)), r.host).to.be.instanceOf(ModuleNotFoundError);
    }
  });

  it("'*' takes latest even as a prerelease on both, other ranges only when latest satisfies them", async () => {
    await push({ name: 'pre', version: '1.0.0', seed: 3 });
    const rc = await push({ name: 'pre', version: '2.0.0-rc.1', seed: 4 }, { latest: true });
    for (const r of Object.values(registries)) {
      expect(await resolveModule(`${r.host}/acme/pre@*`), r.host).to.deep.include({ version: '2.0.0-rc.1', digest: rc });
      expect((await resolveModule(`${r.host}/acme/pre@>=1`)).version, r.host).to.equal('1.0.0');
    }
  });

  it('--reasoner-task pins what @* resolves to among the versions that compose: not a prerelease latest is not on', async () => {
    const release = await pushDir(await reasonerAt('1.0.0'), '1.0.0');
    await pushDir(await reasonerAt('1.1.0-beta.1'), '1.1.0-beta.1');
    for (const r of Object.values(registries)) {
      expect((await resolveModule(`${r.host}/acme/toy-math-reasoner@*`)).digest, r.host).to.equal(release);
      const picked = await reasonerForTask('math', reasonerTokenizer, { registry: r.host });
      expect(picked, r.host).to.deep.equal({ ref: `${r.host}/acme/toy-math-reasoner@${release}`, name: 'acme/toy-math-reasoner', version: '1.0.0' });
    }
    const beta = await pushDir(await reasonerAt('1.1.0-beta.2'), '1.1.0-beta.2', { latest: true });
    for (const r of Object.values(registries)) {
      expect((await reasonerForTask('math', reasonerTokenizer, { registry: r.host })).ref, r.host).to.equal(`${r.host}/acme/toy-math-reasoner@${beta}`);
    }
  });
});

describe('registry version picking from tags, as reasonplug-registry picks', () => {
  it("'*' takes latest as a prerelease; a version's plain tag stands for it beside build-metadata tags", () => {
    expect(pickVersion(['1.0.0', '2.0.0-rc.1', 'latest'], '*', '2.0.0-rc.1')).to.deep.equal({ tag: '2.0.0-rc.1', version: '2.0.0-rc.1' });
    expect(pickVersion(['1.0.0', '2.0.0-rc.1', 'latest'], '>=1', '2.0.0-rc.1')).to.deep.equal({ tag: '1.0.0', version: '1.0.0' });
    for (const tags of [['1.2.3_b.1', '1.2.3'], ['1.2.3', '1.2.3_b.1']]) {
      expect(pickVersion(tags, '^1'), tags.join()).to.deep.equal({ tag: '1.2.3', version: '1.2.3' });
    }
    expect(pickVersion(['1.2.3_b.1', '1.2.3', 'latest'], '*', '1.2.3+b.1')).to.deep.equal({ tag: '1.2.3_b.1', version: '1.2.3+b.1' });
  });
});
