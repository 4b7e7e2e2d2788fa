/**
 * `reasonplug serve`'s ready line names what every registry reference it loaded resolved to, each by what it was
 * given as (the backbone, a reasoner by its name, given or found by task, the projector, the draft model), so that an
 * operator pinning replicas sees the bytes each runs. A real registry on loopback holding the example modules; the CLI
 * as a child.
 */
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { repoRoot } from '../../../test/support/paths.js';
import { within } from './support/assertions.js';
import { cliPath } from './support/cli.js';
import { testDir } from './support/models.js';
import { startOurRegistry, type OurRegistry } from './support/registries.js';
import { pushModule } from '../src/registry/push.js';
import { startServer } from '../src/serve/server.js';
import { ModuleNotFoundError } from '../src/registry/errors.js';
import { ModelNotFoundError } from '../src/modules/locate.js';
import { DeviceUnavailableError } from '../src/runtime/devices.js';
import { readdir } from 'node:fs/promises';
import { GGML } from './support/ggml-quantize.js';
import { requantizedGguf, STORIES } from './support/gguf-models.js';

const example = (name: string) => join(repoRoot, 'examples', 'modules', name);

/** Runs `reasonplug serve --port 0 …args` until its ready line, and gives that line and what stderr had before it (stopping the server). */
async function serveUntilReady(args: string[], env: Record<string, string>): Promise<{ ready: string; before: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', cliPath, 'serve', '--port', '0', ...args], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...env } });
  let stderr = '';
  try {
    const ready = new Promise<{ ready: string; before: string }>((resolve, reject) => {
      child.stderr.on('data', (d) => {
        stderr += d;
        const line = /^.*ready;.*\n/m.exec(stderr);
        if (line) resolve({ ready: line[0].trimEnd(), before: stderr.slice(0, line.index) });
      });
      child.on('exit', () => reject(new Error(`serve exited before it was ready: ${stderr}`)));
    });
    return await within(ready, 90_000, 'the ready line');
  } finally {
    child.kill('SIGKILL');
  }
}

/** The ready line of `reasonplug serve --port 0 …args`. */
const readyLineOf = async (args: string[], env: Record<string, string>): Promise<string> => (await serveUntilReady(args, env)).ready;

describe("serve's ready line: what each registry reference resolved to", function () {
  this.timeout(180_000);
  let registry: OurRegistry;
  const pushed: Record<string, { version: string; digest: string }> = {};

  before(async () => {
    registry = await startOurRegistry();
    for (const name of ['toy-backbone-s', 'toy-math-reasoner', 'toy-math-projector']) {
      pushed[name] = await pushModule(example(name), `${registry.host}/acme/${name}:1.0.0`);
    }
  });
  after(() => registry?.close());

  const from = (name: string) => `${registry.host}/acme/${name}@${pushed[name]!.digest} (version ${pushed[name]!.version})`;

  it('names the backbone as model and a reasoner by its name, each after the served ids', async () => {
    const line = await readyLineOf(['--model', 'acme/toy-backbone-s@^1', '--reasoner', 'math=acme/toy-math-reasoner@^1.0', '--registry', registry.host], {
      REASONPLUG_CACHE: testDir('ready-line-text'),
    });
    expect(line).to.include(`; serving toy-backbone-s, toy-backbone-s+math; model from ${from('toy-backbone-s')}; math from ${from('toy-math-reasoner')}; context length `);
  });

  it('with a local backbone: the reasoner, the projector and the draft model, in the text and as `resolved` in JSON', async () => {
    const line = await readyLineOf(
      [
        '--model', example('toy-math-policy'),
        '--reasoner', `math=${registry.host}/acme/toy-math-reasoner@1.0.0`,
        '--projector', 'acme/toy-math-projector@^1',
        '--draft-model', 'acme/toy-backbone-s@~1.0',
        '--registry', registry.host,
        '--request-log', 'json',
      ],
      { REASONPLUG_CACHE: testDir('ready-line-json') },
    );
    const ready = JSON.parse(line) as { msg: string; resolved: unknown; pulled?: unknown };
    expect(ready.msg).to.include(
      `; serving toy-math-policy, toy-math-policy+math; math from ${from('toy-math-reasoner')}; projector from ${from('toy-math-projector')}; draft model from ${from('toy-backbone-s')}; context length `,
    );
    const entry = (name: string) => ({ version: '1.0.0', digest: pushed[name]!.digest, pinned: `${registry.host}/acme/${name}@${pushed[name]!.digest}` });
    expect(ready.resolved).to.deep.equal([
      { role: 'reasoner', name: 'math', ...entry('toy-math-reasoner') },
      { role: 'projector', ...entry('toy-math-projector') },
      { role: 'draftModel', ...entry('toy-backbone-s') },
    ]);
    // (`pulled` is the backbone's alone, and this one is a path)
    expect(ready).to.not.have.property('pulled');
  });

  it('names a reasoner found by task as one given: by its served name, the pinned reference and version', async () => {
    const line = await readyLineOf(['--model', example('toy-backbone-s'), '--reasoner-task', 'math=1', '--registry', registry.host, '--request-log', 'json'], {
      REASONPLUG_CACHE: testDir('ready-line-task'),
    });
    const ready = JSON.parse(line) as { msg: string; resolved: unknown };
    expect(ready.msg).to.include(`; serving toy-backbone-s, toy-backbone-s+math; math from ${from('toy-math-reasoner')}; context length `);
    expect(ready.resolved).to.deep.equal([
      { role: 'reasoner', name: 'math', version: '1.0.0', digest: pushed['toy-math-reasoner']!.digest, pinned: `${registry.host}/acme/toy-math-reasoner@${pushed['toy-math-reasoner']!.digest}` },
    ]);
  });

  it('names a mistake in the options before it pulls anything, and pulls nothing more once the backbone cannot be had', async () => {
    const cacheDir = testDir('ready-line-order');
    const registryOptions = { registry: registry.host, cacheDir };
    const misspelt = await startServer({ engine: { model: example('toy-backbone-s'), reasoners: [{ model: 'acme/toy-math-reasoner@^1', wieght: 1 } as never], registry: registryOptions }, port: 0 });
    const err = await misspelt.ready.catch((e: unknown) => e);
    await misspelt.close();
    expect(err).to.be.instanceOf(TypeError).with.property('message').that.matches(/unknown Engine\.load option "reasoners\[0\]\.wieght"/);
    const unknown = await startServer({ engine: { model: 'acme/nope@^1', reasoners: [{ model: 'acme/toy-math-reasoner@^1' }], registry: registryOptions }, port: 0 });
    expect(await unknown.ready.catch((e: unknown) => e)).to.be.instanceOf(ModuleNotFoundError);
    await unknown.close();
    const missing = await startServer({ engine: { model: join(cacheDir, 'no-such-model'), reasoners: [{ model: 'acme/toy-math-reasoner@^1' }], registry: registryOptions }, port: 0 });
    expect(await missing.ready.catch((e: unknown) => e)).to.be.instanceOf(ModelNotFoundError).with.property('message').that.matches(/model path not found/);
    await missing.close();
    const tasks = await startServer({ engine: { model: example('toy-backbone-s'), reasonerTasks: 'math' as never, registry: registryOptions }, port: 0 });
    expect(await tasks.ready.catch((e: unknown) => e)).to.have.property('message').that.matches(/reasonerTasks must be a list of \{ task, weight\? \}/);
    await tasks.close();
    const device = await startServer({ engine: { model: example('toy-backbone-s'), reasoners: [{ model: 'acme/toy-math-reasoner@^1' }], device: 'gpu', registry: registryOptions }, port: 0 });
    expect(await device.ready.catch((e: unknown) => e))
      .to.be.instanceOf(DeviceUnavailableError)
      .with.property('message', 'unknown device "gpu"; expected one of cpu, cuda, tensorrt, webgpu, coreml, dml');
    await device.close();
    expect((await readdir(cacheDir).catch(() => [])).length, 'nothing pulled into the cache').to.equal(0);
  });
});

describe("serve's ready line: int8 prompts", function () {
  this.timeout(300_000);

  it('says `int8 prompts` where --int8-prompts rewrote the backbone; where it rewrote nothing, a line of its own before the ready line says so and why (text and JSON)', async () => {
    const dir = testDir('ready-line-q8');
    const env = { REASONPLUG_CACHE: join(dir, 'cache') };
    const q8 = await requantizedGguf(STORIES, join(dir, 'stories-q8_0.gguf'), () => GGML.Q8_0);
    const unusedText = '--int8-prompts: no block-quantized products to rewrite; prompts run as without the option';

    const on = await serveUntilReady(['--model', q8, '--int8-prompts'], env);
    const products = Number(/; context length \d+; int8 prompts \((\d+) products\); cache /.exec(on.ready)?.[1]);
    expect(products, on.ready).to.be.above(0);
    expect(on.before).to.not.include('--int8-prompts');
    const onJson = await serveUntilReady(['--model', q8, '--int8-prompts', '--request-log', 'json'], env);
    expect(JSON.parse(onJson.ready)).to.have.property('int8Prompts').that.deep.equals({ products });

    // the float model (stories260K is F32): its prompts run as without the option, and serve says so once
    const off = await serveUntilReady(['--model', STORIES, '--int8-prompts'], env);
    expect(off.before.split('\n').filter((l) => /int8/i.test(l))).to.deep.equal([`reasonplug serve: ${unusedText}`]);
    expect(off.ready).to.not.match(/int8/i);
    const offJson = await serveUntilReady(['--model', STORIES, '--int8-prompts', '--request-log', 'json'], env);
    const lines = offJson.before.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    const unused = { products: 0, unused: 'no-products' };
    expect(lines.filter((l) => /int8/i.test(JSON.stringify(l))).map(({ time: _, ...l }) => l)).to.deep.equal([{ level: 'warn', msg: unusedText, int8Prompts: unused }]);
    expect(JSON.parse(offJson.ready)).to.have.property('int8Prompts').that.deep.equals(unused);

    // and nothing without the flag
    const plain = await serveUntilReady(['--model', STORIES, '--request-log', 'json'], env);
    expect(plain.before + plain.ready).to.not.match(/int8/i);
  });
});
