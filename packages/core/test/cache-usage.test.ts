import { expect } from 'chai';
import { copyFile, cp, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Engine } from '../src/engine.js';
import { ggufModuleDir } from '../src/gguf/gguf-module.js';
import { cacheUsage, clearCache, type CacheUsage } from '../src/modules/cache-usage.js';
import { pullModule } from '../src/registry/pull.js';
import { pushModule } from '../src/registry/push.js';
import { models } from '../../../test/support/paths.js';
import { runReasonplug } from './support/cli.js';
import { GGML } from './support/ggml-quantize.js';
import { requantizedGguf, STORIES } from './support/gguf-models.js';
import { testDir } from './support/models.js';
import { age } from './support/owners.js';
import { makeRegistryModule, startOurRegistry, type OurRegistry } from './support/registries.js';

const partsOf = (usage: CacheUsage) => usage.entries.map((e) => `${e.part}: ${e.name}`);

describe('reasonplug cache: what the cache holds, and clearing parts of it', function () {
  this.timeout(120_000);
  let registry: OurRegistry;
  before(async () => (registry = await startOurRegistry()));
  after(() => registry?.close());

  it('lists conversions, pulled modules, prepared graphs and saved sessions with their sizes, and clears each part alone', async () => {
    const root = testDir('cache-usage');
    // a conversion, a pulled module (its files hard links to blobs), a prepared graph with its saved session
    const gguf = join(testDir('cache-usage-gguf'), 'story.gguf');
    await copyFile(models.stories260K, gguf);
    const converted = await ggufModuleDir(gguf, { cacheDir: root });
    // what a conversion killed part-way leaves (the next conversion removes it): not written to for long
    await cp(converted, `${converted}.4194303-0a1b.tmp`, { recursive: true });
    await age(`${converted}.4194303-0a1b.tmp`);
    const original = await makeRegistryModule({ name: 'listed', files: { 'weights.bin': 300_000 } });
    const ref = `${registry.host}/acme/listed:1.0.0`;
    await pushModule(original, ref);
    await pullModule(ref, { cacheDir: root });
    const engine = await Engine.load({ model: converted, cacheDir: join(root, 'prepared'), sessionCache: true });
    await engine.dispose();

    const usage = await cacheUsage(root);
    expect(partsOf(usage)).to.include.members(['gguf: story@0.1.0 (from story.gguf) [kv16-v8]', 'gguf: a conversion in progress or broken off', 'modules: listed@1.0.0', `sessions: ${join(converted, 'model.onnx')}`, 'prepared: 1 prepared graph(s)']);
    for (const e of usage.entries) expect(e.bytes, `${e.part}: ${e.name}`).to.be.above(0);
    // a pulled module's files are counted once: its directory's links and its blobs are the same files
    const pulled = usage.entries.find((e) => e.part === 'modules' && e.name === 'listed@1.0.0')!;
    expect(pulled.bytes).to.be.within(300_000, 310_000);
    expect(usage.bytes.modules).to.be.below(2 * 300_000);

    // the CLI reads the same, from $REASONPLUG_CACHE
    const listed = await runReasonplug(['cache', '--json'], { REASONPLUG_CACHE: root });
    expect(listed.code, listed.stderr).to.equal(0);
    expect(JSON.parse(listed.stdout)).to.deep.equal(JSON.parse(JSON.stringify(usage)));
    // and as a table: a header, a row per entry with its size, the total by part
    const table = (await runReasonplug(['cache'], { REASONPLUG_CACHE: root })).stdout.split('\n');
    expect(table[0]).to.match(/^PART +SIZE +ENTRY$/);
    expect(table.slice(1, 1 + usage.entries.length).map((l) => l.split(/ {2,}/)[0])).to.deep.equal(usage.entries.map((e) => e.part));
    expect(table.find((l) => l.startsWith('modules'))).to.match(/^modules +0\.3 MiB +listed@1\.0\.0$/);
    expect(table.at(-2)).to.match(new RegExp(`^${root}: [\\d.]+ MiB \\(gguf [\\d.]+ MiB, modules`));

    // clearing the saved sessions leaves every other part, and the engine loads again (writing the session anew)
    const cleared = await runReasonplug(['cache', 'clear', 'sessions'], { REASONPLUG_CACHE: root });
    expect(cleared.code, cleared.stderr).to.equal(0);
    expect(cleared.stderr).to.match(/^removed sessions: \d+\.\d MiB freed/);
    const after = await cacheUsage(root);
    expect(after.bytes.sessions).to.equal(0);
    for (const part of ['gguf', 'modules', 'prepared'] as const) expect(after.bytes[part], part).to.equal(usage.bytes[part]);

    await clearCache(['gguf', 'modules'], root);
    expect(partsOf(await cacheUsage(root)).filter((p) => p.startsWith('gguf') || p.startsWith('modules'))).to.deep.equal([]);
    expect(await readdir(root)).to.not.include.members(['gguf', 'modules', 'blobs', 'refs']);
    const all = await runReasonplug(['cache', 'clear', '--all'], { REASONPLUG_CACHE: root });
    expect(all.code, all.stderr).to.equal(0);
    expect(await readdir(root)).to.deep.equal([]);
  });

  it("lists a model's int8 prompt session (int8Prompts) apart from its own saved session, as `[int8 prompts]`", async () => {
    const root = testDir('cache-usage-int8');
    const gguf = await requantizedGguf(STORIES, join(testDir('cache-usage-int8-gguf'), 'story-q8.gguf'), () => GGML.Q8_0);
    const converted = await ggufModuleDir(gguf, { cacheDir: root });
    const listed: string[][] = [];
    for (const int8Prompts of [false, true]) {
      const engine = await Engine.load({ model: converted, cacheDir: join(root, 'prepared'), sessionCache: true, int8Prompts });
      await engine.dispose();
      listed.push((await cacheUsage(root)).entries.filter((e) => e.part === 'sessions').map((e) => e.name));
    }
    // (the model's own session is listed as before, where its saved form is kept; the int8 one joins it, labelled)
    const int8Row = `${join(converted, 'model.onnx')} [int8 prompts]`;
    expect(listed[0]).to.not.include(int8Row);
    expect([...listed[1]!].sort()).to.deep.equal([...listed[0]!, int8Row].sort());
    // and so in the CLI's table
    const table = (await runReasonplug(['cache'], { REASONPLUG_CACHE: root })).stdout.split('\n');
    expect(table.filter((l) => l.startsWith('sessions ') && l.endsWith(` ${int8Row}`))).to.have.length(1);
  });

  it('refuses an unknown part by name, and a clear that names none', async () => {
    const root = testDir('cache-usage-bad');
    const bad = await runReasonplug(['cache', 'clear', 'gguf', 'models'], { REASONPLUG_CACHE: root });
    expect(bad.code).to.equal(1);
    expect(bad.stderr).to.contain('unknown cache part models; the parts are gguf, modules, ollama, prepared, sessions, digests');
    const none = await runReasonplug(['cache', 'clear'], { REASONPLUG_CACHE: root });
    expect(none.code).to.equal(1);
    expect(none.stderr).to.contain('or --all');
  });
});
