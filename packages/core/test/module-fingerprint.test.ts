/**
 * A module's `compat.tokenizer` against the tokenizer.json it ships: what composes with what is decided by the
 * declared fingerprint (search, --reasoner-task, the engine's checks), so a module may not declare another one.
 */
import { expect } from 'chai';
import { cp, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { loadModuleDir, ModuleIntegrityError, tokenizerFingerprintOfDir } from '../src/modules/module-dir.js';
import { repoRoot } from '../../../test/support/paths.js';
import { rejection } from './support/assertions.js';
import { testDir } from './support/models.js';

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
