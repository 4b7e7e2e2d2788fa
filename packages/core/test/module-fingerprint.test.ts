/**
 * A module's `compat.tokenizer` against the tokenizer.json it ships: what composes with what is decided by the
 * declared fingerprint (search, --reasoner-task, the engine's checks), so a module may not declare another one.
 */
import { expect } from 'chai';
import { cp, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { loadModuleDir, ModuleIntegrityError, tokenizerFingerprintOfDir } from '../src/modules/module-dir.js';
import { fingerprintRecordStats } from '../src/tokenizer/recorded-fingerprint.js';
import { repoRoot } from '../../../test/support/paths.js';
import { rejection } from './support/assertions.js';
import { testDir } from './support/models.js';
import { useTempCache } from './support/temp-cache.js';

const examples = join(repoRoot, 'examples', 'modules');

describe("module tokenizer fingerprint against the module's tokenizer.json", () => {
  it('refuses a module declaring another fingerprint than its tokenizer.json has, naming both, with or without verification', async () => {
    const dir = join(testDir('lying-fingerprint'), 'module');
    await cp(join(examples, 'toy-math-reasoner'), dir, { recursive: true });
    const manifestPath = join(dir, 'reasonplug.json');
    const manifest = JSON.parse(await readFile(manifestPath, 'utf8')) as { compat: { tokenizer: string } };
    const actual = (await tokenizerFingerprintOfDir(dir))!;
    const declared = `sha256:${'1'.repeat(64)}`;
    manifest.compat.tokenizer = declared;
    // The manifest lists no digest of itself: every file still verifies.
    await writeFile(manifestPath, JSON.stringify(manifest, null, 2));
    for (const verify of [true, false]) {
      const err = await rejection(loadModuleDir(dir, { verify }));
      expect(err, err.message).to.be.instanceOf(ModuleIntegrityError);
      expect(err).to.include({ file: 'tokenizer', path: join(dir, 'tokenizer.json'), problem: 'tokenizer', expected: declared, actual });
      expect(err.message).to.include(declared).and.include(actual);
    }
  });

  it('loads every example module: each declares the tokenizer it ships', async () => {
    const names = await readdir(examples);
    expect(names).to.not.be.empty;
    for (const name of names) {
      const loaded = await loadModuleDir(join(examples, name));
      expect(loaded.manifest.compat.tokenizer, name).to.equal(await tokenizerFingerprintOfDir(join(examples, name)));
    }
  });
});

describe('module tokenizer fingerprints remembered by the digest of tokenizer.json', () => {
  const scratch = useTempCache('fingerprint-records-');
  /** A copy of the example reasoner module, its tokenizer.json written now (a file of this content is not yet recorded). */
  const copy = async (name: string) => {
    const dir = join(scratch.dir, name);
    await cp(join(examples, 'toy-math-reasoner'), dir, { recursive: true });
    return dir;
  };
  const records = async () => (await readdir(join(scratch.cache, 'digests'))).filter((n) => n.startsWith('tokenizer-')).map((n) => join(scratch.cache, 'digests', n));
  const counts = () => ({ ...fingerprintRecordStats });

  it('computes a fingerprint once: later loads of a module with that tokenizer.json, verified or not, read the record', async () => {
    const dir = await copy('once');
    const before = counts();
    const { manifest } = await loadModuleDir(dir);
    expect(fingerprintRecordStats.computed, 'the first load computes it').to.equal(before.computed + 1);
    expect(await records()).to.have.length(1);
    expect(JSON.parse(await readFile((await records())[0]!, 'utf8'))).to.deep.equal({ fingerprint: manifest.compat.tokenizer });
    await loadModuleDir(dir);
    await loadModuleDir(await copy('same-tokenizer'), { verify: false });
    expect(fingerprintRecordStats.computed, 'no later load computes it').to.equal(before.computed + 1);
    expect(fingerprintRecordStats.recorded).to.equal(before.recorded + 2);
  });

  it('still refuses a module declaring another fingerprint where the true one is recorded', async () => {
    const dir = await copy('lying-after-record');
    const actual = (await loadModuleDir(dir)).manifest.compat.tokenizer;
    const manifestPath = join(dir, 'reasonplug.json');
    const manifest = JSON.parse(await readFile(manifestPath, 'utf8')) as { compat: { tokenizer: string } };
    const declared = `sha256:${'1'.repeat(64)}`;
    manifest.compat.tokenizer = declared;
    await writeFile(manifestPath, JSON.stringify(manifest, null, 2));
    const err = await rejection(loadModuleDir(dir));
    expect(err, err.message).to.be.instanceOf(ModuleIntegrityError);
    expect(err).to.include({ problem: 'tokenizer', expected: declared, actual });
  });

  it('does not believe a record that disagrees with the manifest: computes the fingerprint again and mends the record', async () => {
    const dir = await copy('damaged-record');
    const { manifest } = await loadModuleDir(dir);
    const [record] = await records();
    await writeFile(record!, JSON.stringify({ fingerprint: `sha256:${'2'.repeat(64)}` }));
    const before = counts();
    await loadModuleDir(dir);
    expect(fingerprintRecordStats.computed).to.equal(before.computed + 1);
    expect(JSON.parse(await readFile(record!, 'utf8'))).to.deep.equal({ fingerprint: manifest.compat.tokenizer });
  });

  it("keys a record by the file's bytes: a tokenizer.json changed in place (same size, unverified) is fingerprinted again and refused", async () => {
    const dir = await copy('changed-in-place');
    const declared = (await loadModuleDir(dir)).manifest.compat.tokenizer;
    const recorded = (await records()).length;
    const path = join(dir, 'tokenizer.json');
    await writeFile(path, (await readFile(path, 'utf8')).replace('"<pad>"', '"<paq>"'));
    const actual = (await tokenizerFingerprintOfDir(dir))!;
    expect(actual).to.not.equal(declared);
    const err = await rejection(loadModuleDir(dir, { verify: false }));
    expect(err, err.message).to.be.instanceOf(ModuleIntegrityError);
    expect(err).to.include({ problem: 'tokenizer', expected: declared, actual });
    expect(await records(), 'a record of the new bytes beside the old one').to.have.length(recorded + 1);
  });
});
