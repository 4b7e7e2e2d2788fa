/**
 * What an upgrade leaves in the cache: a GGUF's conversions of earlier layouts and prepared graphs of earlier formats
 * are removed once a successor is written, but for a conversion an older version still writes; what remains is listed
 * as stale.
 */
import { expect } from 'chai';
import { cp, mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { models } from '../../../test/support/paths.js';
import { Engine } from '../src/engine.js';
import { ggufModuleDir } from '../src/gguf/gguf-module.js';
import { cacheUsage, type CacheUsage } from '../src/modules/cache-usage.js';
import { PREPARED_FORMAT_VERSION, prepareDecoder } from '../src/onnx/prepared-cache.js';
import { testDir } from './support/models.js';
import { invisiblePid, suffixOf } from './support/owners.js';

const SHA = '270cba1bd5109f42d03350f60406024560464db173c0e387d91f0426d3bd256d';
const listed = (usage: CacheUsage, part: string) => usage.entries.filter((e) => e.part === part);

describe('caches after an upgrade', function () {
  this.timeout(120_000);

  it("a GGUF's conversion named before the options infix (<sha>-v4) goes; one an older version still converts into stays, listed as stale", async () => {
    const cacheDir = testDir('leftovers-gguf');
    const current = await ggufModuleDir(models.stories260K, { cacheDir });
    expect(basename(current)).to.equal(`${SHA}-kv16-v8`);
    const root = join(cacheDir, 'gguf');
    // a whole conversion of an earlier build, as it named the default one
    await cp(current, join(root, `${SHA}-v4`), { recursive: true });
    // an entry an older build (a live process) is converting into again
    await cp(current, join(root, `${SHA}-v6`), { recursive: true });
    const converting = join(root, `${SHA}-v6.${suffixOf(process.ppid)}.tmp`);
    await mkdir(converting);
    await writeFile(join(converting, '.converting'), '');
    // what an older build killed mid-conversion left
    const killed = join(root, `${SHA}-v5.${suffixOf(invisiblePid())}.tmp`);
    await mkdir(killed);
    const before = listed(await cacheUsage(cacheDir), 'gguf').find((e) => e.path.endsWith('-v4'))!;
    expect(before.name).to.equal('stories260k@0.1.0 (from stories260K.gguf) [v4, stale: no longer read]');

    await rm(current, { recursive: true });
    expect(await ggufModuleDir(models.stories260K, { cacheDir })).to.equal(current);
    expect((await readdir(root)).sort()).to.deep.equal([basename(current), `${SHA}-v6`, basename(converting)].sort());
    const usage = listed(await cacheUsage(cacheDir), 'gguf');
    expect(usage.map((e) => e.name)).to.have.members([
      'stories260k@0.1.0 (from stories260K.gguf) [kv16-v8]',
      'stories260k@0.1.0 (from stories260K.gguf) [v6, stale: no longer read]',
      'a conversion in progress or broken off',
    ]);
  });

  it("an intact conversion found at load leaves the earlier layouts: an older build sharing the cache keeps its own entry", async () => {
    const cacheDir = testDir('leftovers-intact');
    const current = await ggufModuleDir(models.stories260K, { cacheDir });
    const root = join(cacheDir, 'gguf');
    // the entry an older build converted after this one (removed at each load, it would be converted again each time)
    const older = join(root, `${SHA}-kv16-v7`);
    await cp(current, older, { recursive: true });
    const { ino } = await stat(older);

    expect(await ggufModuleDir(models.stories260K, { cacheDir })).to.equal(current);
    expect((await stat(older)).ino).to.equal(ino);
  });

  it("keeps a conversion whose manifest is of schemaVersion 2 under a layout no build reading only version 1 owns (theirs ends at -v7)", async () => {
    const dir = await ggufModuleDir(models.stories260K, { cacheDir: testDir('leftovers-schema2') });
    const manifest = JSON.parse(await readFile(join(dir, 'reasonplug.json'), 'utf8')) as { schemaVersion: number };
    expect(manifest.schemaVersion).to.equal(2);
    expect(Number(/-v(\d+)$/.exec(basename(dir))![1])).to.be.above(7);
  });

  it("removes no file of a prepared-graph directory that is not a cache entry's, nor lists one as stale", async () => {
    const root = testDir('leftovers-foreign');
    const module = await ggufModuleDir(models.stories260K, { cacheDir: root });
    // a directory of the user's own, given as cacheDir, holding their files beside an earlier format's entry
    const mine = testDir('leftovers-foreign-dir');
    await writeFile(join(mine, 'export.json'), JSON.stringify({ format: 1, note: 'my export settings' }));
    await cp(join(module, 'model.onnx'), join(mine, 'export.onnx'));
    const old = 'c'.repeat(64);
    await writeFile(join(mine, `${old}.json`), JSON.stringify({ format: PREPARED_FORMAT_VERSION - 1 }));
    await writeFile(join(mine, `${old}.onnx`), 'a graph of an earlier format');
    await prepareDecoder(join(module, 'model.onnx'), { cacheDir: mine, lastLogitsOnly: true });
    const left = await readdir(mine);
    expect(left).to.include.members(['export.json', 'export.onnx']);
    expect(left).not.to.include.members([`${old}.json`]);
    expect(left).not.to.include.members([`${old}.onnx`]);

    // the cache root's own directory: such a file there is no prepared graph, stale or not
    const prepared = join(root, 'prepared');
    await mkdir(prepared, { recursive: true });
    await cp(join(mine, 'export.json'), join(prepared, 'export.json'));
    await cp(join(mine, 'export.onnx'), join(prepared, 'export.onnx'));
    expect(listed(await cacheUsage(root), 'prepared').map((e) => e.name)).to.deep.equal(['0 prepared graph(s)']);
  });

  it('prepared graphs of earlier formats, listed as stale, go once a graph is prepared in the current one (a newer version\'s stay)', async () => {
    const root = testDir('leftovers-prepared');
    const module = await ggufModuleDir(models.stories260K, { cacheDir: root });
    const prepared = join(root, 'prepared');
    const story = async () => {
      const engine = await Engine.load({ model: module, cacheDir: prepared, sessionCache: false });
      try {
        return (await engine.generate({ promptIds: [1] }, { maxTokens: 4 })).rows[0]!.ids;
      } finally {
        await engine.dispose();
      }
    };
    const ids = await story();
    const [sidecar] = (await readdir(prepared)).filter((f) => f.endsWith('.json'));
    const key = sidecar!.slice(0, -'.json'.length);
    const meta = JSON.parse(await readFile(join(prepared, sidecar!), 'utf8')) as { format: number; digest: string };
    expect(meta.format).to.equal(PREPARED_FORMAT_VERSION);
    // earlier formats' copies of this graph and of another source (the graph of a conversion in an earlier layout), and
    // a newer version's of this one (a cache shared with it)
    const craft = async (name: string, format: number, digest: string) => {
      await writeFile(join(prepared, `${name}.json`), JSON.stringify({ ...meta, format, digest }));
      await cp(join(prepared, `${key}.onnx`), join(prepared, `${name}.onnx`));
    };
    await craft('8'.repeat(64), 8, meta.digest);
    await craft('9'.repeat(64), 9, meta.digest);
    await craft('a'.repeat(64), 8, `sha256:${'0'.repeat(64)}`);
    await craft('b'.repeat(64), PREPARED_FORMAT_VERSION + 1, meta.digest);
    const graph = (await stat(join(prepared, `${key}.onnx`))).size;
    const before = listed(await cacheUsage(root), 'prepared');
    expect(before.map((e) => e.name)).to.deep.equal(['2 prepared graph(s)', '3 prepared graph(s) of an earlier format, stale: no longer read']);
    expect(before[1]!.bytes).to.be.above(3 * graph);
    expect(before[0]!.bytes).to.be.within(2 * graph, 3 * graph);

    // an upgrade: this version's graph is not there yet
    await rm(join(prepared, `${key}.json`));
    await rm(join(prepared, `${key}.onnx`));
    expect(await story()).to.deep.equal(ids);
    const kept = (await readdir(prepared)).filter((f) => f.endsWith('.json') || f.endsWith('.onnx'));
    expect(kept.sort()).to.deep.equal([key, 'b'.repeat(64)].flatMap((k) => [`${k}.json`, `${k}.onnx`]).sort());
    const after = listed(await cacheUsage(root), 'prepared');
    expect(after.map((e) => e.name)).to.deep.equal(['2 prepared graph(s)']);
    expect(after[0]!.bytes).to.be.within(2 * graph, 3 * graph);
  });
});
