import { expect } from 'chai';
import { copyFile, mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Engine } from '../src/engine.js';
import { locateModel, ModelNotFoundError } from '../src/modules/locate.js';
import { DtypeError, listVariants } from '../src/modules/hub-variants.js';
import { randomLlamaWeights, writeLlamaModel, type LlamaBuildOptions, type ExternalDataLayout } from '../src/onnx/llama-builder.js';
import { cacheDir, testDir } from './support/models.js';
import { quantizeModel } from '../src/modules/quantize-module.js';
import { bareGreedy } from './support/bare-loop.js';
import { storiesConfig, storiesModule } from './support/modules.js';

const config = storiesConfig();
const weights = randomLlamaWeights(config, 3, 0.1);
const PROMPT = [1, 72, 19, 301, 44];
const TEMPLATE = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}";

/** A transformers.js-style hub directory: config files and tokenizer at the root, graphs under onnx/. */
async function hubDir(name: string, variants: Record<string, LlamaBuildOptions & { externalData?: ExternalDataLayout }>): Promise<string> {
  const dir = testDir(name);
  const stories = await storiesModule();
  await mkdir(join(dir, 'onnx'));
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) await copyFile(join(stories, f), join(dir, f));
  await writeFile(join(dir, 'config.json'), JSON.stringify({ model_type: 'llama', eos_token_id: 2 }));
  await writeFile(join(dir, 'generation_config.json'), JSON.stringify({ bos_token_id: 1, eos_token_id: [2, 7] }));
  await writeFile(join(dir, 'chat_template.jinja'), TEMPLATE);
  for (const [file, options] of Object.entries(variants)) await writeLlamaModel(join(dir, 'onnx', file), config, weights, options);
  return dir;
}

async function greedy(options: Parameters<typeof Engine.load>[0]): Promise<{ ids: number[]; engine: Engine['info'] }> {
  const engine = await Engine.load({ cacheDir, ...options });
  try {
    const ids = (await engine.generate({ promptIds: PROMPT }, { maxTokens: 8 })).rows[0]!.ids;
    return { ids, engine: engine.info };
  } finally {
    await engine.dispose();
  }
}

describe('hub export directories (onnx/model_<dtype>.onnx)', function () {
  this.timeout(60_000);
  let several: string;
  before(async () => {
    several = await hubDir('hub-several', {
      // Chunks as the hub splits them: model.onnx_data, model.onnx_data_1, ...
      'model.onnx': { externalData: { location: 'model.onnx_data', chunkBytes: 64 * 1024 } },
      'model_fp16.onnx': { dtype: 'float16', externalData: { location: 'model_fp16.onnx_data' } },
    });
  });

  it('lists the variants present, most precise first, with their data chunks beside them', async () => {
    expect(listVariants(several).map((v) => v.dtype)).to.deep.equal(['fp32', 'fp16']);
    const files = await readdir(join(several, 'onnx'));
    expect(files).to.include.members(['model.onnx_data', 'model.onnx_data_1', 'model_fp16.onnx_data']);
  });

  it('without dtype loads fp32; dtype picks the variant; both decode like the graph file itself', async () => {
    const fp32File = await greedy({ model: join(several, 'onnx', 'model.onnx') });
    const fp16File = await greedy({ model: join(several, 'onnx', 'model_fp16.onnx') });
    const byDefault = await greedy({ model: several });
    const fp16 = await greedy({ model: several, dtype: 'fp16' });
    expect(byDefault.engine.modelPath).to.equal(join(several, 'onnx', 'model.onnx'));
    expect(fp16.engine.modelPath).to.equal(join(several, 'onnx', 'model_fp16.onnx'));
    expect(byDefault.ids).to.deep.equal(fp32File.ids);
    expect(fp16.ids).to.deep.equal(fp16File.ids);
    expect(byDefault.ids).to.have.length(8);
    // generation_config.json's EOS ids and chat_template.jinja are read from the root.
    expect(byDefault.engine.tokenizer?.eosTokenIds).to.include.members([2, 7]);
    expect(byDefault.engine.tokenizer?.hasChatTemplate).to.equal(true);
  });

  it("without dtype (or with auto) takes the variant config.json's transformers.js_config names, as transformers.js does; generation_config's EOS ids replace config.json's", async () => {
    const dir = await hubDir('hub-configured', { 'model.onnx': {}, 'model_fp16.onnx': { dtype: 'float16' } });
    const named = (dtype: unknown) => writeFile(join(dir, 'config.json'), JSON.stringify({ model_type: 'llama', eos_token_id: 9, 'transformers.js_config': { dtype } }));
    await named('fp16');
    expect((await locateModel(dir)).dtype).to.equal('fp16');
    expect((await locateModel(dir, { dtype: 'auto' })).dtype).to.equal('fp16');
    expect((await locateModel(dir, { dtype: 'fp32' })).dtype).to.equal('fp32');
    // a map by graph name, and a dtype the directory does not hold (the most precise present, then)
    await named({ model: 'fp16' });
    expect((await locateModel(dir)).dtype).to.equal('fp16');
    await named('q4');
    expect((await locateModel(dir)).dtype).to.equal('fp32');
    // auto asks nothing of a single graph or a module
    expect((await locateModel(join(dir, 'onnx', 'model.onnx'), { dtype: 'auto' })).modelPath).to.equal(join(dir, 'onnx', 'model.onnx'));
    const loaded = await greedy({ model: dir });
    expect(loaded.engine.tokenizer?.eosTokenIds).to.include.members([2, 7]).and.not.include(9);
  });

  it('a directory with a single variant needs no dtype', async () => {
    const dir = await hubDir('hub-single', { 'model_fp16.onnx': { dtype: 'float16', externalData: { location: 'model_fp16.onnx_data' } } });
    const loc = await locateModel(dir);
    expect(loc.modelPath).to.equal(join(dir, 'onnx', 'model_fp16.onnx'));
    expect(loc.dtype).to.equal('fp16');
    expect(loc.tokenizerDir).to.equal(dir);
  });

  it('a dtype that is not present names the variants that are', async () => {
    const err = await locateModel(several, { dtype: 'q4' }).catch((e: Error) => e);
    expect(err).to.be.instanceOf(DtypeError);
    expect((err as Error).message).to.match(/no q4 variant \(model_q4\.onnx\)/);
    expect((err as Error).message).to.contain('fp32 (onnx/model.onnx), fp16 (onnx/model_fp16.onnx)');
    const engineErr = await Engine.load({ model: several, dtype: 'int8', cacheDir }).catch((e: Error) => e);
    expect((engineErr as Error).name).to.equal('DtypeError');
    expect((engineErr as Error).message).to.contain('no int8 variant');
  });

  it('a q4 variant (made by reasonplug quantize) is chosen by dtype and decodes as onnxruntime does on that file', async () => {
    const dir = await hubDir('hub-q4', { 'model.onnx': {} });
    await quantizeModel(join(dir, 'onnx', 'model.onnx'), join(dir, 'onnx', 'model_q4.onnx'), { bits: 4, blockSize: 16 });
    expect(listVariants(dir).map((v) => v.dtype)).to.deep.equal(['fp32', 'q4']);
    const q4 = await greedy({ model: dir, dtype: 'q4' });
    expect(q4.engine.modelPath).to.equal(join(dir, 'onnx', 'model_q4.onnx'));
    expect(q4.ids).to.deep.equal(await bareGreedy(join(dir, 'onnx', 'model_q4.onnx'), PROMPT, 8));
  });

  it('refuses unknown dtype names and a dtype for a single graph', async () => {
    const bad = await Engine.load({ model: several, dtype: 'fp8' }).catch((e: Error) => e);
    expect(bad).to.be.instanceOf(DtypeError);
    expect((bad as Error).message).to.contain('fp32, fp16, q8, int8, uint8, q4, q4f16, bnb4');
    const file = await locateModel(join(several, 'onnx', 'model.onnx'), { dtype: 'fp16' }).catch((e: Error) => e);
    expect(file).to.be.instanceOf(DtypeError);
    expect((file as Error).message).to.contain('is a file');
  });

  it('a folder holding GGUF files names them, the file being what to give', async () => {
    const folder = testDir('hub-gguf-folder');
    await mkdir(join(folder, 'Q8_0'), { recursive: true });
    await writeFile(join(folder, 'model-Q4_K_M.gguf'), 'GGUF');
    await writeFile(join(folder, 'Q8_0', 'model-Q8_0-00001-of-00002.gguf'), 'GGUF');
    await writeFile(join(folder, 'mmproj-model-f16.gguf'), 'GGUF');
    const err = await locateModel(folder).catch((e: Error) => e);
    expect(err).to.be.instanceOf(ModelNotFoundError);
    expect((err as Error).message).to.equal(
      `${folder} is a folder of GGUF files, not a model directory: give the GGUF file itself as the model (${join(folder, 'Q8_0', 'model-Q8_0-00001-of-00002.gguf')}, ${join(folder, 'model-Q4_K_M.gguf')})`,
    );
  });
});
