import { expect } from 'chai';
import { readdir, readFile, rm, stat, utimes } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { createHash } from 'node:crypto';
import { models } from '../../../test/support/paths.js';
import { ggufModuleDir } from '../src/gguf/gguf-module.js';
import { Engine } from '../src/engine.js';
import { startServer } from '../src/serve/server.js';
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

  it('converts again an entry that lost its reasonplug.json, instead of failing every later load on the rename into its place', async () => {
    const cacheDir = testDir('gguf-cache-no-manifest');
    const dir = await ggufModuleDir(models.stories260K, { cacheDir });
    await rm(join(dir, 'reasonplug.json'));
    for (let load = 0; load < 2; load++) expect(await ggufModuleDir(models.stories260K, { cacheDir })).to.equal(dir);
    await locateModel(dir);
    expect((await readdir(dirname(dir))).filter((n) => n.endsWith('.tmp')), 'nothing left beside it').to.deep.equal([]);
  });

  it("keeps a float32-KV conversion (Engine.load's ggufKvCache, --kv-cache) apart from the default float16 one, and loads it", async () => {
    const cacheDir = testDir('gguf-cache-kv16');
    const plain = await ggufModuleDir(models.stories260K, { cacheDir });
    const kv32 = await ggufModuleDir(models.stories260K, { cacheDir, convert: { kvCache: 'float32' } });
    expect(kv32).to.not.equal(plain);
    expect(await ggufModuleDir(models.stories260K, { cacheDir, convert: { kvCache: 'float16' } })).to.equal(plain);
    // a .gguf given to the engine takes the default entry: half the bytes a position of float32's, the same greedy story
    const [half, full] = await Promise.all([Engine.load({ model: models.stories260K, cacheDir }), Engine.load({ model: models.stories260K, cacheDir, ggufKvCache: 'float32' })]);
    try {
      expect((await half.stats()).bytesPerPosition * 2).to.equal((await full.stats()).bytesPerPosition);
      const [a, b] = await Promise.all([half, full].map((e) => e.generate({ promptIds: [1] }, { maxTokens: 31 })));
      expect(a!.rows[0]!.ids).to.deep.equal(b!.rows[0]!.ids);
    } finally {
      await Promise.all([half.dispose(), full.dispose()]);
    }
    // and so does the server (reasonplug serve --kv-cache float32): its KV capacity at twice the bytes
    const capacity = async (ggufKvCache?: 'float32') => {
      const server = await startServer({ engine: { model: models.stories260K, cacheDir, ...(ggufKvCache ? { ggufKvCache } : {}) }, port: 0 });
      try {
        await server.ready;
        const text = await (await fetch(`${server.url}/metrics`)).text();
        return Number(/^reasonplug:kv_cache_capacity_bytes\{[^}]*\} (\S+)$/m.exec(text)![1]);
      } finally {
        await server.close();
      }
    };
    expect((await capacity()) * 2).to.equal(await capacity('float32'));
  });
});
