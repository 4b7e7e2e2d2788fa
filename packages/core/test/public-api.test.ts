/**
 * The package's entry point as a user imports it: the types its public signatures use can be named from it (the
 * typecheck of this file fails where one cannot), and implementation details stay out of it.
 */
import { expect } from 'chai';
import * as core from '../src/index.js';
import {
  Engine,
  type BlobStream,
  type BlockSearch,
  type ClientOptions,
  type EmbedOptions,
  type FimTokens,
  type KvCounters,
  type LocateOptions,
  type ModelDefaults,
  type PrefixCacheStats,
  type PromptLogprobsOptions,
  type RequestRecord,
  type RowShardStats,
  type ServerMetrics,
  type TlsFiles,
  type Transport,
  type WireError,
} from '../src/index.js';
import { models } from '../../../test/support/paths.js';
import { cacheDir } from './support/models.js';

/** Each type as one of its uses, so that a name missing from the entry point fails the typecheck. */
export type PublicSignatureTypes = [
  BlobStream,
  BlockSearch,
  ClientOptions,
  EmbedOptions,
  FimTokens,
  KvCounters,
  LocateOptions,
  ModelDefaults,
  PrefixCacheStats,
  PromptLogprobsOptions,
  RequestRecord,
  RowShardStats,
  ServerMetrics,
  TlsFiles,
  Transport,
  WireError,
];

describe('public API', function () {
  this.timeout(120_000);

  it('exports what the plugin, the examples and the tests import, and no sampling internals, test counters, decode loop or GGUF-file helpers', () => {
    const used = [
      'Engine',
      'Sampler',
      'SamplingOptionsError',
      'UnsupportedModelError',
      'convertGguf',
      'moduleName',
      'prepareDecoder',
      'tokenizerFromGguf',
      'keptTokens',
      'replyFormat',
      'replyParsing',
      'thinkingBudgetFor',
      'resolveModelPath',
      'writeLlamaModel',
      'randomLlamaWeights',
    ];
    const internal = [
      'preparedCacheStats',
      'PREPARED_FORMAT_VERSION',
      'isEarlierFormat',
      'heapKthLargest',
      'quickselectKthLargest',
      'expNeg',
      'argmax',
      'gatherAllowed',
      'allowedShare',
      'maskToCandidates',
      'gatherFinite',
      'drawCandidates',
      'CandidateBuffer',
      'generalNameOf',
      'ggufArchitecture',
      'llamaConfigFromGguf',
      'llamaWeightsFromGguf',
      'conversionFailure',
      'kebabName',
      'runDecodeLoop',
      'adaptDecoder',
      'detectSignature',
    ];
    expect(used.filter((name) => !(name in core)), 'missing').to.deep.equal([]);
    expect(internal.filter((name) => name in core), 'internal').to.deep.equal([]);
  });

  it('takes the options named by EmbedOptions and PromptLogprobsOptions on a real model', async () => {
    const engine = await Engine.load({ model: models.stories260K, cacheDir, embeddings: true });
    try {
      const raw: EmbedOptions = { normalize: false };
      const [vector] = (await engine.embed({ texts: ['Once upon a time'] }, raw)).vectors;
      const [unit] = (await engine.embed({ texts: ['Once upon a time'] })).vectors;
      const norm = (v: Float32Array) => Math.hypot(...v);
      expect(norm(unit!)).to.be.closeTo(1, 1e-4);
      expect(norm(vector!)).to.not.be.closeTo(1, 1e-2);

      const scoring: PromptLogprobsOptions = { topLogprobs: 2 };
      const [scored] = (await engine.promptLogprobs({ texts: ['Once upon a time'] }, scoring)).prompts;
      expect(scored!.logprobs).to.have.length(scored!.ids.length - 1);
      for (const step of scored!.logprobs) expect(step.top).to.have.length(2);
    } finally {
      await engine.dispose();
    }
  });
});
