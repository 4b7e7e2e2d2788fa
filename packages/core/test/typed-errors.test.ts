/** Bad input reached through the public API and the CLI is refused with a typed error, not a plain Error. */
import { expect } from 'chai';
import { mkdir, rename, rm, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import {
  buildGenaiLlamaModel,
  buildLlamaModel,
  convertGguf,
  Engine,
  LlamaConfigError,
  LlamaWeightsError,
  moduleName,
  prepareDecoder,
  PreparedCacheError,
  randomLlamaWeights,
  writeLlamaModel,
  type ConvertGgufOptions,
  type PreparedDecoder,
} from '../src/index.js';
import { chatTemplateFile } from '../src/cli/flags.js';
import { InvalidArgumentError } from 'commander';
import { runReasonplug } from './support/cli.js';
import { STORIES } from './support/gguf-models.js';
import { builtModel, smallConfig, testDir } from './support/models.js';
import { useTempCache } from './support/temp-cache.js';

/** What `run` rejects with (failing the test where it resolves). */
async function rejection(run: () => Promise<unknown>): Promise<Error> {
  try {
    await run();
  } catch (err) {
    return err as Error;
  }
  expect.fail('expected a rejection');
}

/** What `run` throws (failing the test where it returns). */
function thrown(run: () => unknown): Error {
  try {
    run();
  } catch (err) {
    return err as Error;
  }
  expect.fail('expected an error');
}

const ADAPT = { lastLogitsOnly: true, logitsFloat32: true } as const;

describe('typed errors for bad input', function () {
  this.timeout(120_000);
  const scratch = useTempCache('typed-errors-');

  describe('convertGguf options', () => {
    const bad: [keyof ConvertGgufOptions, string, RegExp][] = [
      ['dtype', 'bfloat16', /dtype must be 'float32' or 'float16', got bfloat16/],
      ['kvCache', 'int8', /unknown kvCache int8; float32 or float16/],
      ['kvOutput', 'both', /unknown kvOutput both; joined or new/],
      ['attention', 'flash', /unknown attention flash; ops or gqa/],
      ['gqaRotary', 'outside', /unknown gqaRotary outside; inside or ops/],
    ];
    for (const [option, value, message] of bad) {
      it(`an unknown ${option} is a RangeError naming it`, async () => {
        const out = join(scratch.dir, `convert-${option}`);
        const err = await rejection(() => convertGguf(STORIES, out, { [option]: value } as ConvertGgufOptions));
        expect(err).to.be.instanceOf(RangeError);
        expect(err.message).to.match(message);
      });
    }

    it('a module name with no Latin letters or digits is a RangeError', () => {
      const err = thrown(() => moduleName('x.gguf', 'Qwen', '模型', 'a'.repeat(64)));
      expect(err).to.be.instanceOf(RangeError);
      expect(err.message).to.match(/"模型" has no Latin letters or digits/);
    });

    it('Engine.load of a GGUF with an unknown ggufKvCache rejects with the RangeError', async () => {
      const err = await rejection(() => Engine.load({ model: STORIES, ggufKvCache: 'int8' as 'float16' }));
      expect(err).to.be.instanceOf(RangeError);
      expect(err.message).to.match(/unknown kvCache int8/);
    });
  });

  describe('Llama builders', () => {
    const weights = randomLlamaWeights(smallConfig, 1);

    it('a config the builder cannot write is a LlamaConfigError (a RangeError)', () => {
      const err = thrown(() => buildLlamaModel({ ...smallConfig, numKvHeads: 3 }, weights));
      expect(err).to.be.instanceOf(LlamaConfigError).and.instanceOf(RangeError);
      expect(err.name).to.equal('LlamaConfigError');
      expect(err.message).to.match(/numHeads \(4\) must be a multiple of numKvHeads \(3\)/);
    });

    it('weights that do not fit the config are a LlamaWeightsError', () => {
      const err = thrown(() => buildLlamaModel(smallConfig, { ...weights, embed: new Float32Array(5) }));
      expect(err).to.be.instanceOf(LlamaWeightsError).and.instanceOf(RangeError);
      expect(err.message).to.match(/embed has 5 values, the config needs 3072/);
    });

    it('an unknown build option is a RangeError', () => {
      const err = thrown(() => buildLlamaModel(smallConfig, weights, { kvDtype: 'int8' as 'float16' }));
      expect(err).to.be.instanceOf(RangeError);
      expect(err.message).to.match(/unknown kvDtype int8/);
    });

    it('writeLlamaModel rejects with the same class', async () => {
      const err = await rejection(() => writeLlamaModel(join(scratch.dir, 'bad.onnx'), { ...smallConfig, ropeStyle: 'twisted' as 'half' }, weights));
      expect(err).to.be.instanceOf(LlamaConfigError);
      expect(err.message).to.match(/unknown ropeStyle twisted/);
    });

    it('a variant the genai layout does not write is a LlamaConfigError', () => {
      const err = thrown(() => buildGenaiLlamaModel({ ...smallConfig, qkNorm: true }, weights));
      expect(err).to.be.instanceOf(LlamaConfigError);
      expect(err.message).to.match(/does not write qkNorm/);
    });
  });

  describe('prepared-graph cache writes', () => {
    /** Prepares `model` into a fresh cache, then puts a directory where its graph goes: renaming onto it fails with EISDIR. */
    async function blockedCache(model: string): Promise<{ cacheDir: string; first: PreparedDecoder }> {
      const cacheDir = join(testDir('blocked-cache'), 'prepared');
      const first = await prepareDecoder(model, { ...ADAPT, cacheDir });
      await rm(first.preparedPath);
      await rm(first.preparedPath.replace(/\.onnx$/, '.json'));
      await mkdir(first.preparedPath);
      return { cacheDir, first };
    }

    it('a graph that cannot be written for another reason than an unwritable cache is a PreparedCacheError with its cause', async () => {
      const model = await builtModel('typed-errors-small');
      const { cacheDir, first } = await blockedCache(model);
      const err = await rejection(() => prepareDecoder(model, { ...ADAPT, cacheDir }));
      expect(err).to.be.instanceOf(PreparedCacheError);
      expect(err.message).to.include(`cannot write the prepared graph of ${model} to ${cacheDir}`);
      expect((err.cause as NodeJS.ErrnoException).code).to.equal('EISDIR');
      expect(first.graph).to.equal(undefined);
    });

    it('so is a relocated graph that cannot be written', async () => {
      const dir = testDir('typed-errors-linked');
      const model = join(dir, 'model.onnx');
      await writeLlamaModel(model, smallConfig, randomLlamaWeights(smallConfig, 3, 0.08), { externalData: true });
      // The Hugging Face cache's layout: the data file a link to a blob elsewhere, so the graph is relocated there.
      const blobs = testDir('typed-errors-blobs');
      await rename(join(dir, 'model.onnx.data'), join(blobs, '9f3c'));
      await symlink(join(blobs, '9f3c'), join(dir, 'model.onnx.data'));
      const { cacheDir, first } = await blockedCache(model);
      expect(first.externalDataDir).to.equal(blobs);
      const err = await rejection(() => prepareDecoder(model, { ...ADAPT, cacheDir }));
      expect(err).to.be.instanceOf(PreparedCacheError);
      expect(err.message).to.match(/cannot write the relocated graph of .* to .*: /);
      expect((err.cause as NodeJS.ErrnoException).code).to.equal('EISDIR');
    });
  });

  describe('CLI input', () => {
    it('a --chat-template file that is missing or no Jinja template is an InvalidArgumentError', () => {
      expect(thrown(() => chatTemplateFile(join(scratch.dir, 'missing.jinja')))).to.be.instanceOf(InvalidArgumentError);
      expect(thrown(() => chatTemplateFile(scratch.dir))).to.be.instanceOf(InvalidArgumentError);
    });

    it('cache clear of an unknown part, embed without texts, search --for and chat with a model without a tokenizer name their error class', async () => {
      const env = { REASONPLUG_CACHE: scratch.cache };
      const model = await builtModel('typed-errors-small');
      const [cache, embed, search, chat] = await Promise.all([
        runReasonplug(['cache', 'clear', 'models'], env),
        runReasonplug(['embed', '--model', model], env, ''),
        runReasonplug(['search', '--for', model], env),
        runReasonplug(['chat', '--model', model], env, 'hello\n'),
      ]);
      expect(cache.stderr).to.match(/^reasonplug: InvalidArgumentError: unknown cache part models/);
      expect(embed.stderr).to.match(/^reasonplug: InvalidArgumentError: embed: give texts/);
      expect(search.stderr).to.match(/^reasonplug: InvalidArgumentError: --for .*: the model has no tokenizer.json/);
      expect(chat.stderr).to.match(/^reasonplug: TokenizerError: .* has no tokenizer.json beside it/);
      for (const r of [cache, embed, search, chat]) expect(r.code).to.equal(1);
    });
  });
});
