/**
 * Bad input to the CLI and the engine gets a clear error naming the thing, before anything runs; a generation
 * that reaches the model's context stops there with its text, as llama.cpp does.
 */
import { expect } from 'chai';
import { ModuleCompatError } from '../src/modules/vocab-compat.js';
import { execFile } from 'node:child_process';
import { copyFile, cp, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { InvalidArgumentError } from 'commander';
import { Engine } from '../src/engine.js';
import { startServer } from '../src/serve/server.js';
import { buildProgram } from '../src/cli/main.js';
import { decimalFlag, promptIdsFlag, safeIntegerFlag } from '../src/cli/flags.js';
import { maxIntraOpThreads } from '../src/runtime/thread-budget.js';
import { MANIFEST_FILE, type ModuleManifest } from '../src/modules/manifest.js';
import { writeModuleDir } from '../src/modules/module-dir.js';
import { buildProjectorModel, randomProjectorWeights, writeProjectorModel } from '../src/onnx/projector-builder.js';
import { models, repoRoot } from '../../../test/support/paths.js';
import { builtModel, cacheDir, smallConfig, testDir } from './support/models.js';
import { makeModule, storiesConfig, storiesModule } from './support/modules.js';
import { runReasonplug } from './support/cli.js';

/** The error commander reports for `reasonplug ...args`, parsed in this process (the action never runs). */
async function flagError(...args: string[]): Promise<string> {
  const program = buildProgram();
  for (const command of [program, ...program.commands]) command.exitOverride().configureOutput({ writeErr: () => {}, writeOut: () => {} });
  try {
    await program.parseAsync(['node', 'reasonplug', ...args]);
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error(`reasonplug ${args.join(' ')} parsed without an error`);
}

/** A rejection's error (fails the test when the promise resolves). */
async function rejection(p: Promise<unknown>): Promise<Error> {
  return p.then(
    () => {
      throw new Error('expected a rejection');
    },
    (e: Error) => e,
  );
}

/** Rewrites a module's manifest with `edit` applied (files re-hashed by writeModuleDir). */
async function editManifest(dir: string, edit: (m: ModuleManifest) => void): Promise<void> {
  const { schemaVersion: _, ...manifest } = JSON.parse(await readFile(join(dir, MANIFEST_FILE), 'utf8')) as ModuleManifest;
  edit(manifest as ModuleManifest);
  const files = Object.fromEntries(Object.entries(manifest.files).map(([key, f]) => [key, f.path]));
  await writeModuleDir(dir, { ...manifest, files });
}

/** A latent-projector module for stories-config backbones, declaring `vocabSize`. */
async function projectorModule(vocabSize: number, dir = join(testDir('projector'), 'projector')): Promise<string> {
  await mkdir(dir, { recursive: true });
  const hiddenSize = storiesConfig().hiddenSize;
  await writeProjectorModel(join(dir, 'model.onnx'), buildProjectorModel({ hiddenSize }, randomProjectorWeights({ hiddenSize }, 3)));
  await writeModuleDir(dir, {
    name: 'test-projector',
    version: '1.0.0',
    kind: 'latent-projector',
    tasks: ['test'],
    description: 'projector for the input checks',
    license: 'MIT',
    compat: { tokenizer: `sha256:${'0'.repeat(64)}`, vocabSize, hiddenSize },
    latent: { open: '<implicit_thought>', close: '</implicit_thought>', maxSteps: 4 },
    files: { model: 'model.onnx' },
  });
  return dir;
}

describe('CLI flag values', function () {
  this.timeout(60_000);
  const generate = (...flags: string[]) => flagError('generate', '--model', 'unused', ...flags);

  it('--prompt-ids takes only non-empty lists of decimal non-negative integers', async () => {
    expect(promptIdsFlag('1,2,3')).to.deep.equal([1, 2, 3]);
    expect(promptIdsFlag(' 1, 22 ,0')).to.deep.equal([1, 22, 0]);
    for (const [text, why] of [
      ['1,,2', /empty item in "1,,2"/],
      ['', /is empty/],
      [',', /empty item/],
      ['1,', /empty item/],
      ['0x10', /"0x10", not a token id/],
      ['1e3', /"1e3", not a token id/],
      ['-1', /"-1", not a token id/],
      ['1.5', /"1.5", not a token id/],
      ['99999999999999999999', /not a token id/],
    ] as const) {
      expect(() => promptIdsFlag(text), text).to.throw(InvalidArgumentError, why);
      expect(await generate('--prompt-ids', text), text).to.match(why);
    }
  });

  it('numeric flags take whole decimal text only, and each error names the flag and its rule', async () => {
    const cases: [string, string, RegExp][] = [
      ['--max-tokens', '-1', /--max-tokens must be a whole number >= 1 \(got "-1"\)/],
      ['--max-tokens', '', /--max-tokens must be a whole number >= 1 \(got ""\)/],
      ['--max-tokens', '0', /--max-tokens must be a whole number >= 1/],
      ['--max-tokens', '1e3', /--max-tokens must be a whole number/],
      ['--max-tokens', '0x10', /--max-tokens must be a whole number/],
      ['--max-tokens', '2.5', /--max-tokens must be a whole number/],
      ['--top-k', '-1', /--top-k must be a whole number >= 0/],
      ['--top-k', ' ', /--top-k must be a whole number >= 0/],
      ['--seed', '1e3', /--seed must be a whole number between/],
      ['--seed', '9007199254740993', /--seed must be a whole number between/],
      ['--trace', '0', /--trace must be a whole number >= 1/],
      ['--temperature', '', /--temperature must be a decimal number/],
      ['--temperature', '0x1', /--temperature must be a decimal number/],
      ['--temperature', 'Infinity', /--temperature must be a decimal number/],
      ['--top-p', '1e999', /--top-p must be a decimal number/],
      ['--min-p', 'abc', /--min-p must be a decimal number/],
      ['--repetition-penalty', '', /--repetition-penalty must be a decimal number/],
      ['--threads', '0', /--threads must be a whole number from 1 to/],
      ['--threads', '', /--threads must be a whole number from 1 to/],
    ];
    for (const [flag, value, why] of cases) expect(await generate('--prompt-ids', '1', flag, value), `${flag} ${JSON.stringify(value)}`).to.match(why);
    expect(safeIntegerFlag('--seed')('-5')).to.equal(-5);
    expect(decimalFlag('--temperature')('.5')).to.equal(0.5);
    expect(decimalFlag('--min-p')('1e-3')).to.equal(0.001);
  });

  it("serve refuses an API key no request could send, an empty --host and a CORS origin that is not one, from the CLI and in startServer", async () => {
    expect(await flagError('serve', '--model', 'm', '--api-key', '')).to.match(/--api-key must be a key without surrounding spaces/);
    expect(await flagError('serve', '--model', 'm', '--api-key', 'k1', '--api-key', ' k2')).to.match(/--api-key must be a key without surrounding spaces/);
    expect(await flagError('serve', '--model', 'm', '--host', '')).to.match(/--host must name an address \(0\.0\.0\.0 or :: to listen on every interface\)/);
    expect(await flagError('serve', '--model', 'm', '--cors-origin', 'app.example.com')).to.match(/--cors-origin: "app\.example\.com" is not an origin: write scheme:\/\/host\[:port\]/);
    expect(await flagError('serve', '--model', 'm', '--cors-origin', 'https://app.example.com/chat')).to.match(/--cors-origin: .* no path, query or user \(https:\/\/app\.example\.com\)/);
    expect(await flagError('serve', '--model', 'm', '--cors-origin', 'ftp://files.example.com')).to.match(/--cors-origin: .* is not an http or https origin/);
    for (const apiKeys of [[''], ['ok', 'padded '], ['\t']]) {
      const err = await rejection(startServer({ engine: { model: 'never-loaded' }, port: 0, apiKeys }));
      expect(err, JSON.stringify(apiKeys)).to.be.instanceOf(RangeError);
      expect(err.message).to.match(/apiKeys must be non-empty strings without surrounding whitespace/);
    }
  });

  it('--threads is bounded at 4 per CPU, and the error says the bound', async () => {
    const max = maxIntraOpThreads();
    expect(await generate('--prompt-ids', '1', '--threads', '100000')).to.include(`--threads must be a whole number from 1 to ${max} (4 threads per CPU`);
    expect(await generate('--prompt-ids', '1', '--threads', String(max + 1))).to.include(`from 1 to ${max}`);
  });

  it('--stop refuses an empty string, and --reasoner weights are decimal', async () => {
    expect(await generate('--prompt-ids', '1', '--stop', '.', '--stop', '')).to.match(/--stop must not be empty/);
    expect(await generate('--prompt-ids', '1', '--reasoner', 'no-such-dir=0x10')).to.match(/the weight after "=" must be a number/);
    // serve names the reasoner first: generate's REF=WEIGHT there would read the weight as the model's path
    expect(await flagError('serve', '--model', 'unused', '--reasoner', 'examples/modules/toy-math-reasoner=0.8')).to.include(
      '--reasoner examples/modules/toy-math-reasoner=0.8: expected NAME=REF[=WEIGHT], and "0.8" is a weight, not a model: name the reasoner, e.g. --reasoner r=examples/modules/toy-math-reasoner=0.8',
    );
  });

  it('--reasoner takes a path ending in "=<number>" as a path where that path is there and the part before is not (a folder named r=1)', async () => {
    const example = (name: string) => join(repoRoot, 'examples', 'modules', name);
    const dir = join(testDir('reasoner-eq'), 'r=1');
    await cp(example('toy-math-reasoner'), dir, { recursive: true });
    const run = (reasoner: string) => runReasonplug(['generate', '--model', example('toy-backbone-s'), '--reasoner', reasoner, '--prompt-ids', '1', '--max-tokens', '2', '--json']);
    for (const reasoner of [dir, `${dir}=0.5`]) {
      const r = await run(reasoner);
      expect(r.code, `${reasoner}: ${r.stderr}`).to.equal(0);
    }
  });

  it('from a shell: exit code 1, one line naming the flag, before the model is even looked for', async () => {
    const cli = fileURLToPath(new URL('../src/cli/reasonplug.ts', import.meta.url));
    const run = async (...flags: string[]) =>
      promisify(execFile)(process.execPath, ['--import', 'tsx', cli, 'generate', '--model', '/no/such/model', ...flags]).then(
        () => ({ code: 0, stderr: '' }),
        (e: { code: number; stderr: string }) => e,
      );
    const r = await run('--prompt-ids', '1,,2', '--max-tokens', '5');
    expect(r.code).to.equal(1);
    expect(r.stderr).to.include('--prompt-ids has an empty item in "1,,2"').and.not.match(/not found|ModelNotFound/);
    expect(r.stderr.trim().split('\n')).to.have.length(1);
  });
});

describe('engine options and prompts', function () {
  this.timeout(60_000);
  let engine: Engine;
  before(async () => {
    engine = await Engine.load({ model: await builtModel('validation'), cacheDir });
  });
  after(() => engine?.dispose());

  it('refuses maxTokens that is not a whole number >= 1 and empty stop strings, naming the option', async () => {
    for (const maxTokens of [-1, 0, 2.5, NaN, Infinity, '3' as unknown as number]) {
      expect(() => engine.stream({ promptIds: [1] }, { maxTokens }), String(maxTokens))
        .to.throw(/generation option maxTokens must be a whole number >= 1/)
        .with.property('name', 'GenerateOptionsError');
    }
    expect(() => engine.stream({ promptIds: [1] }, { stop: ['a', ''] }))
      .to.throw(/generation option stop\[1\] must not be empty/)
      .with.property('option', 'stop[1]');
    expect(() => engine.stream({ promptIds: [1] }, { eosTokenIds: [2, -1] })).to.throw(/eosTokenIds\[1\] must be a whole number >= 0/);
    expect(() => engine.stream({ promptIds: [1] }, { keepTokens: ['[THINK]', ''] })).to.throw(/keepTokens\[1\] must be a non-empty string/);
    const ok = await engine.generate({ promptIds: [1, 2] }, { maxTokens: 1 });
    expect(ok.rows[0]!.ids).to.have.length(1);
  });

  it('refuses prompt ids outside the vocabulary naming the id and the size, and malformed prompt lists', async () => {
    const V = smallConfig.vocabSize;
    const outside = await rejection(engine.generate({ promptIds: [[1, 2], [3, V]] }));
    expect(outside.name).to.equal('PromptError');
    expect(outside.message).to.equal(`prompt 1 has token id ${V}, outside this model's vocabulary of ${V} tokens (ids 0 to ${V - 1})`);
    expect((await rejection(engine.generate({ promptIds: [1, -2] }))).message).to.include('token id -2');
    expect((await rejection(engine.generate({ promptIds: [1, 2.5] }))).message).to.include('token id 2.5');
    const mixed = await rejection(engine.generate({ promptIds: [[1, 2], 3] as unknown as number[][] }));
    expect(mixed.message).to.equal('prompt 1 is not a list of token ids (got 3)');
    const ok = await engine.generate({ promptIds: [V - 1] }, { maxTokens: 2 });
    expect(ok.rows[0]!.ids).to.have.length(2);
  });

  it('refuses intraOpThreads beyond 4 per CPU before anything loads', async () => {
    const t0 = performance.now();
    const err = await rejection(Engine.load({ model: await builtModel('validation'), cacheDir, intraOpThreads: 100_000 }));
    expect(err.name).to.equal('ThreadCountError');
    expect(err.message).to.include(`from 1 to ${maxIntraOpThreads()}`).and.include('got 100000');
    expect((await rejection(Engine.load({ model: await builtModel('validation'), cacheDir, intraOpThreads: 0 }))).name).to.equal('ThreadCountError');
    expect(performance.now() - t0).to.be.below(2000);
  });
});

describe('context length', function () {
  this.timeout(120_000);

  it('stops an onnxruntime-genai export at its 2048 positions with finishReason length, keeping every token and its text', async () => {
    const engine = await Engine.load({ model: models.llamaFp16, cacheDir });
    try {
      expect(engine.info.contextLength).to.equal(2048);
      const stream = engine.stream({ promptIds: [1, 15043, 3186] }, { maxTokens: 5000, ignoreEos: true });
      const streamed: number[] = [];
      let text = '';
      for await (const t of stream) {
        streamed.push(t.id);
        text += t.text;
      }
      const row = (await stream.result).rows[0]!;
      expect(row.finishReason).to.equal('length');
      // Positions 0..2047 are fed; the token sampled from the last of them is kept but never fed.
      expect(row.ids).to.have.length(2048 - 3 + 1);
      expect(streamed).to.deep.equal(row.ids);
      expect(row.text).to.equal(text);
      expect(row.text.length).to.be.greaterThan(0);

      const tooLong = await rejection(engine.generate({ promptIds: Array.from({ length: 2049 }, (_, i) => 1 + (i % 100)) }));
      expect(tooLong.name).to.equal('PromptError');
      expect(tooLong.message).to.equal('prompt 0 has 2049 tokens, more than the context length of 2048 positions; shorten the prompt, or load the model with a larger contextLength (--context-length) where it allows more');
      const full = await engine.generate({ promptIds: Array.from({ length: 2048 }, (_, i) => 1 + (i % 100)) }, { maxTokens: 10 });
      expect(full.rows[0]!.ids).to.have.length(1);
      expect(full.rows[0]!.finishReason).to.equal('length');
    } finally {
      await engine.dispose();
    }
  });

  it('where the context is not declared, a model failing mid-run still streams every token it generated', async () => {
    const dir = testDir('undeclared');
    await copyFile(join(models.llamaFp16, 'model.onnx'), join(dir, 'model.onnx'));
    await copyFile(join(models.llamaFp16, 'model.onnx.data'), join(dir, 'model.onnx.data'));
    const engine = await Engine.load({ model: join(dir, 'model.onnx'), cacheDir });
    try {
      expect(engine.info.contextLength).to.equal(undefined);
      const stream = engine.stream({ promptIds: [1, 15043, 3186] }, { maxTokens: 5000, ignoreEos: true });
      let streamed = 0;
      const err = await (async () => {
        for await (const _ of stream) streamed++;
      })().then(
        () => undefined,
        (e: Error) => e,
      );
      expect(err?.name).to.equal('ModelRunError');
      expect(err?.message).to.include('position 2048');
      expect(streamed).to.equal(2048 - 3 + 1);
    } finally {
      await engine.dispose();
    }
  });

  it("reads config.json's max_position_embeddings; each row of a batch counts its own positions", async () => {
    const dir = testDir('config-context');
    await copyFile(await builtModel('validation'), join(dir, 'model.onnx'));
    await writeFile(join(dir, 'config.json'), JSON.stringify({ model_type: 'llama', max_position_embeddings: 12 }));
    const engine = await Engine.load({ model: dir, cacheDir });
    try {
      expect(engine.info.contextLength).to.equal(12);
      const alone = await engine.generate({ promptIds: [1, 2, 3] }, { maxTokens: 100, ignoreEos: true });
      expect(alone.rows[0]!.ids).to.have.length(12 - 3 + 1);
      expect(alone.rows[0]!.finishReason).to.equal('length');
      const batch = await engine.generate({ promptIds: [[1, 2, 3], [4, 5, 6, 7, 8]] }, { maxTokens: 100, ignoreEos: true });
      // Continuous batching pads no row's positions: the shorter prompt gets what it gets alone.
      expect(batch.rows.map((r) => [r.ids.length, r.finishReason])).to.deep.equal([
        [12 - 3 + 1, 'length'],
        [12 - 5 + 1, 'length'],
      ]);
      expect(batch.rows[0]!.ids).to.deep.equal(alone.rows[0]!.ids);
      // maxTokens below the context still wins.
      expect((await engine.generate({ promptIds: [1, 2, 3] }, { maxTokens: 4, ignoreEos: true })).rows[0]!.ids).to.have.length(4);
    } finally {
      await engine.dispose();
    }
  });

  it('contextLength lowers the declared context (never raises it) and limits a model that declares none; the CLI and server take it', async () => {
    const stories = await storiesModule();
    const lowered = await Engine.load({ model: stories, cacheDir, contextLength: 12 });
    try {
      expect(lowered.info.contextLength).to.equal(12);
      const r = await lowered.generate({ promptIds: [1, 403, 407] }, { maxTokens: 100, ignoreEos: true });
      expect(r.rows[0]!.ids).to.have.length(12 - 3 + 1);
      expect(r.rows[0]!.finishReason).to.equal('length');
    } finally {
      await lowered.dispose();
    }
    // stories260K declares 2048 positions (its GGUF's context_length).
    const raised = await Engine.load({ model: stories, cacheDir, contextLength: 4096 }).catch((e: Error) => e);
    expect((raised as Error).name).to.equal('ContextLengthError');
    expect((raised as Error).message).to.match(/contextLength 4096 is more than the 2048 positions the model declares/);
    const zero = await Engine.load({ model: stories, cacheDir, contextLength: 0 }).catch((e: Error) => e);
    expect(zero).to.be.instanceOf(RangeError);
    expect((zero as Error).message).to.match(/contextLength must be a whole number >= 1/);
    // A graph that declares nothing runs to the limit given.
    const dir = testDir('limit-undeclared');
    await copyFile(await builtModel('validation'), join(dir, 'model.onnx'));
    const limited = await Engine.load({ model: join(dir, 'model.onnx'), cacheDir, contextLength: 9 });
    try {
      expect(limited.info.contextLength).to.equal(9);
      expect((await limited.generate({ promptIds: [1, 2] }, { maxTokens: 100, ignoreEos: true })).rows[0]!.ids).to.have.length(9 - 2 + 1);
    } finally {
      await limited.dispose();
    }
    const cli = await runReasonplug(['generate', '--model', stories, '--prompt-ids', '1,403,407', '--max-tokens', '100', '--context-length', '10', '--json'], { REASONPLUG_CACHE: join(cacheDir, '..', 'cli-cache') });
    expect(cli.code, cli.stderr).to.equal(0);
    expect((JSON.parse(cli.stdout) as { ids: number[] }).ids).to.have.length(10 - 3 + 1);
    const server = await startServer({ engine: { model: stories, cacheDir, contextLength: 64 }, port: 0 });
    try {
      await server.ready;
      const { data } = (await (await fetch(`${server.url}/v1/models`)).json()) as { data: { max_model_len: number }[] };
      expect(data[0]!.max_model_len).to.equal(64);
    } finally {
      await server.close();
    }
  });

  it("reads the model_max_length GGUF conversion writes, and a composition takes its shortest model's", async () => {
    const stories = await storiesModule();
    const reasoner = await makeModule({ name: 'ctx-r', seed: 4 });
    const config = JSON.parse(await readFile(join(reasoner, 'tokenizer_config.json'), 'utf8'));
    await writeFile(join(reasoner, 'tokenizer_config.json'), JSON.stringify({ ...config, model_max_length: 40 }));
    await editManifest(reasoner, () => {});
    const alone = await Engine.load({ model: stories, cacheDir });
    const composed = await Engine.load({ model: stories, reasoners: [{ model: reasoner }], cacheDir, placement: 'inline' });
    try {
      expect(alone.info.contextLength).to.equal(2048);
      expect(composed.info.contextLength).to.equal(40);
      const r = await composed.generate({ promptIds: [1, 403] }, { maxTokens: 100, ignoreEos: true });
      expect(r.rows[0]!.ids).to.have.length(40 - 2 + 1);
      expect(r.rows[0]!.finishReason).to.equal('length');
    } finally {
      await Promise.all([alone.dispose(), composed.dispose()]);
    }
  });
});

describe('context length with latent steps', function () {
  this.timeout(60_000);

  it('counts latent steps as positions: fixed:K past the context is refused, up to it the first token is the last', async () => {
    const backbone = await makeModule({ name: 'latent-ctx', kind: 'backbone', seed: 8 });
    const config = JSON.parse(await readFile(join(backbone, 'tokenizer_config.json'), 'utf8'));
    await writeFile(join(backbone, 'tokenizer_config.json'), JSON.stringify({ ...config, model_max_length: 10 }));
    await editManifest(backbone, () => {});
    const engine = await Engine.load({ model: backbone, projector: await projectorModule(512), cacheDir });
    try {
      expect(engine.info.contextLength).to.equal(10);
      const over = await rejection(engine.generate({ promptIds: [1, 2, 3] }, { latent: 'fixed:8', maxTokens: 5 }));
      expect(over.name).to.equal('PromptError');
      expect(over.message).to.include('prompt 0 has 3 tokens and 8 latent steps follow it').and.include('context length of 10 positions').and.include('shorten the prompt or ask for fewer latent steps');
      // steps that fill the context by themselves: no prompt is short enough
      const steps = await rejection(engine.generate({ promptIds: [1] }, { latent: 'fixed:10', maxTokens: 5 }));
      expect(steps.message).to.include('ask for fewer latent steps (fixed:K with K below 10)').and.not.include('shorten the prompt');
      const fits = await engine.generate({ promptIds: [1, 2, 3] }, { latent: 'fixed:7', maxTokens: 5, ignoreEos: true });
      expect(fits.usage.latentSteps).to.equal(7);
      expect(fits.rows[0]!.ids).to.have.length(1);
      expect(fits.rows[0]!.finishReason).to.equal('length');
      const discrete = await engine.generate({ promptIds: [1, 2, 3] }, { latent: 'never', maxTokens: 50, ignoreEos: true });
      expect(discrete.rows[0]!.ids).to.have.length(10 - 3 + 1);
    } finally {
      await engine.dispose();
    }
  });
});

describe('compat.vocabSize', function () {
  this.timeout(120_000);

  it("accepts the logit width or a padded model's tokenizer size, and refuses any other naming both numbers", async () => {
    // 520 logits over the 512-token stories tokenizer.
    const padded = await makeModule({ name: 'padded-vocab', kind: 'backbone', config: storiesConfig({ vocabSize: 520 }), seed: 5 });
    // (The tokenizer's 512 loads too: compose.test.ts composes this layout as makeModule writes it.)
    await editManifest(padded, (m) => (m.compat.vocabSize = 520));
    await (await Engine.load({ model: padded, cacheDir })).dispose();
    await editManifest(padded, (m) => (m.compat.vocabSize = 516));
    const wrong = await rejection(Engine.load({ model: padded, cacheDir }));
    expect(wrong.name).to.equal('ModuleCompatError');
    expect(wrong.message).to.include(`${join(padded, MANIFEST_FILE)}: compat.vocabSize is 516, but the model produces 520 logits over a tokenizer of 512 tokens`);

    const plain = await makeModule({ name: 'plain-vocab', kind: 'backbone', seed: 6 });
    await editManifest(plain, (m) => (m.compat.vocabSize = 32000));
    const reasoner = await rejection(Engine.load({ model: await storiesModule(), reasoners: [{ model: plain }], cacheDir, placement: 'inline' }));
    expect(reasoner.message).to.include('plain-vocab').and.include('compat.vocabSize is 32000, but the model produces 512 logits;');
  });

  it("checks a projector's compat.vocabSize against the backbone", async () => {
    const backbone = await makeModule({ name: 'projected', kind: 'backbone', seed: 7 });
    const projector = await projectorModule(512);
    await (await Engine.load({ model: backbone, projector, cacheDir })).dispose();
    await projectorModule(256, projector);
    const err = await rejection(Engine.load({ model: backbone, projector, cacheDir }));
    expect(err).to.be.instanceOf(ModuleCompatError);
    expect(err.message).to.include('compat.vocabSize is 256, but the backbone produces 512 logits; the projector was trained beside another backbone: use a projector trained for this one');
  });
});
