/**
 * What tells two models apart (`_identifyingParams`), of which LangChain makes its cache keys: every creation option
 * that changes replies is in it, so two models that answer differently never share a cache entry. Real engines on
 * the converted stories260K model (ONNX and GGUF) and a transformers.js-style export with fp32 and fp16 graphs.
 */
import { expect } from 'chai';
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { InMemoryCache } from '@langchain/core/caches';
import { HumanMessage } from '@langchain/core/messages';
import { ChatReasoner, ReasonerLLM } from '../src/index.js';
import { randomLlamaWeights, writeLlamaModel } from '../../core/src/onnx/llama-builder.js';
import { testDir } from '../../core/test/support/models.js';
import { models as shared } from '../../../test/support/paths.js';
import { TOOLS_TEMPLATE, cacheDir, storiesConfig, storiesModule, withChatTemplate } from './support/modules.js';

const ADD_TOOL = {
  type: 'function',
  function: { name: 'add', description: 'Add two integers', parameters: { type: 'object', properties: { a: { type: 'integer' }, b: { type: 'integer' } }, required: ['a', 'b'] } },
};

/** A transformers.js-style export of one random model: tokenizer at the root, its fp32 and fp16 graphs under onnx/. */
async function hubExport(): Promise<string> {
  const dir = testDir('hub-identity');
  const stories = await storiesModule();
  const config = storiesConfig();
  const weights = randomLlamaWeights(config, 5, 0.1);
  await mkdir(join(dir, 'onnx'));
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) await copyFile(join(stories, f), join(dir, f));
  await writeFile(join(dir, 'config.json'), JSON.stringify({ model_type: 'llama', eos_token_id: 2 }));
  await writeLlamaModel(join(dir, 'onnx', 'model.onnx'), config, weights);
  await writeLlamaModel(join(dir, 'onnx', 'model_fp16.onnx'), config, weights, { dtype: 'float16' });
  return dir;
}

function usageOf(m: { usage_metadata?: { input_tokens: number; output_tokens: number; total_tokens: number } }) {
  const { input_tokens, output_tokens, total_tokens } = m.usage_metadata!;
  return { input_tokens, output_tokens, total_tokens };
}

/** The key LangChain files a model's replies under in its cache (beside the prompt), for a call without options. */
const cacheKey = (model: ChatReasoner | ReasonerLLM) => model._getSerializedCacheKeyParametersForCall({} as never);

describe('identity: the cache keys of models created differently', function () {
  this.timeout(120_000);
  const models: { dispose(): Promise<void> }[] = [];
  const track = <M extends { dispose(): Promise<void> }>(m: M) => (models.push(m), m);

  after(() => Promise.all(models.map((m) => m.dispose())));

  it('chat models whose contextLength or toolCallSyntax differ answer from one shared LangChain cache each as without it', async () => {
    const backbone = await withChatTemplate(await storiesModule(), 'stories-identity', TOOLS_TEMPLATE);
    const cache = new InMemoryCache();
    const base = track(await ChatReasoner.create({ backbone, cacheDir, maxTokens: 24, cache }));
    const question = [new HumanMessage('Tell me a story')];
    const full = await base.invoke(question);
    expect(full.usage_metadata?.output_tokens).to.equal(24);

    // A context that ends 5 positions into the reply cuts it there (the last token written takes none).
    const contextLength = full.usage_metadata!.input_tokens + 5;
    const short = track(await ChatReasoner.create({ backbone, cacheDir, maxTokens: 24, contextLength, cache }));
    const cut = await short.invoke(question);
    expect(cut.usage_metadata?.output_tokens).to.equal(6);
    expect(cut.response_metadata.finish_reason).to.equal('length');
    expect(full.text.startsWith(cut.text)).to.equal(true);
    expect(short._identifyingParams()).to.include({ context_length: contextLength });

    // The generic syntax describes the tools in the system message where the template would render them: another prompt.
    // (LangChain gives a reply from its cache zero usage, and zeroes the cached message's own)
    const [generic, uncached] = [
      track(await ChatReasoner.create({ backbone, cacheDir, maxTokens: 24, toolCallSyntax: 'generic', cache })),
      track(await ChatReasoner.create({ backbone, cacheDir, maxTokens: 24, toolCallSyntax: 'generic' })),
    ];
    const rendered = (await base.bindTools([ADD_TOOL]).invoke(question, { maxTokens: 1 })).usage_metadata!.input_tokens;
    const alone = usageOf(await uncached.bindTools([ADD_TOOL]).invoke(question, { maxTokens: 1 }));
    expect(alone.input_tokens).to.not.equal(rendered);
    expect(usageOf(await generic.bindTools([ADD_TOOL]).invoke(question, { maxTokens: 1 }))).to.deep.equal(alone);
    expect(generic._identifyingParams()).to.include({ tool_call_syntax: 'generic' });
    expect(base._identifyingParams()).to.not.have.property('tool_call_syntax');
  });

  it("the graphs chosen (dtype, a reasoner's dtype) and a GGUF's KV cache type are in the identifying params, so in the cache key", async () => {
    const hub = await hubExport();
    const [fp32, fp16, fp32Reasoner, fp16Reasoner] = await Promise.all([
      ReasonerLLM.create({ backbone: hub, cacheDir }),
      ReasonerLLM.create({ backbone: hub, dtype: 'fp16', cacheDir }),
      ReasonerLLM.create({ backbone: hub, reasoners: [{ module: hub, name: 'r', dtype: 'fp32' }], cacheDir }),
      ReasonerLLM.create({ backbone: hub, reasoners: [{ module: hub, name: 'r', dtype: 'fp16' }], cacheDir }),
    ]).then((loaded) => loaded.map(track));
    expect(fp16._identifyingParams()).to.include({ dtype: 'fp16' });
    expect(cacheKey(fp16)).to.not.equal(cacheKey(fp32!));
    expect((fp16Reasoner!._identifyingParams().reasoners as unknown[])[0]).to.deep.equal({ name: 'r', module: join(hub, 'onnx', 'model_fp16.onnx'), dtype: 'fp16', weight: 1 });
    expect(cacheKey(fp16Reasoner!)).to.not.equal(cacheKey(fp32Reasoner!));

    const [half, full] = await Promise.all([
      ReasonerLLM.create({ backbone: shared.stories260K, cacheDir }),
      ReasonerLLM.create({ backbone: shared.stories260K, ggufKvCache: 'float32', cacheDir }),
    ]).then((loaded) => loaded.map(track));
    expect(full!._identifyingParams()).to.include({ gguf_kv_cache: 'float32' });
    expect(cacheKey(full!)).to.not.equal(cacheKey(half!));
  });
});
