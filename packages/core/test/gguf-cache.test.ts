import { expect } from 'chai';
import { readFile, stat, utimes } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { models } from '../../../test/support/paths.js';
import { ggufModuleDir } from '../src/gguf/gguf-module.js';
import { locateModel } from '../src/modules/locate.js';
import { loadModuleDir, ModuleIntegrityError } from '../src/modules/module-dir.js';
import { rejection } from './support/assertions.js';
import { testDir } from './support/models.js';
import { flipKeepingStat } from './support/tamper.js';

const sha = async (path: string) => createHash('sha256').update(await readFile(path)).digest('hex');

describe('GGUF conversion cache', function () {
  this.timeout(60_000);

  it('converts again an entry whose file was damaged (size, inode and mtime kept), instead of refusing it forever', async () => {
    const cacheDir = testDir('gguf-cache');
    const dir = await ggufModuleDir(models.stories260K, { cacheDir });
    const { files, manifest } = await loadModuleDir(dir);
    const model = files['model']!;
    const good = await sha(model);
    await utimes(model, 1_700_000_000, 1_700_000_000);
    await flipKeepingStat(model, Math.floor((await stat(model)).size / 2));
    expect(await rejection(locateModel(dir)), 'the engine refuses the damaged entry').to.be.instanceOf(ModuleIntegrityError);

    expect(await ggufModuleDir(models.stories260K, { cacheDir })).to.equal(dir);
    expect(await sha(model)).to.equal(good);
    expect(manifest.files.model.sha256).to.equal(good);
    await locateModel(dir);
  });
});
