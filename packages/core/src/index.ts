/**
 * @reasonplug/core — run ONNX causal LMs with onnxruntime-node; build, convert and prepare decoder graphs.
 */
export { Engine, EngineClosedError, EngineError, QueueFullError, type EmbedOptions, type EngineOptions, type GenerationStream, type PromptLogprobsOptions, type StreamOptions } from './engine.js';
export type { WireError } from './runtime/spawn-worker.js';
export { KvBudgetError, type BatchStats } from './generate/continuous-batch.js';
export type { KvCounters, RowCache } from './runtime/batch-kv.js';
export type { PrefixCache, PrefixCacheStats } from './runtime/prefix-cache.js';
export type { RowShardStats } from './runtime/row-shards.js';
export type { SessionCacheSpec } from './runtime/session-cache.js';
export type { PromptLookupOptions } from './generate/prompt-lookup.js';
export { DraftModelError, type DraftModelOptions } from './generate/draft-model.js';
export type { EmbedInput, EmbedResult, ModelInfo, PromptInput } from './runtime/protocol.js';
export type { PromptLogprobsResult, ScoredPrompt } from './runtime/prompt-logprobs.js';
export { EmbedInputError, EmbeddingsUnavailableError } from './runtime/embed.js';
export { unitLength } from './runtime/unit-length.js';
export type { FinishReason, GenerateOptions, GenerationResult, GrammarTiming, RowResult, StageFigure, TokenEvent, TokenLogprob, TokenLogprobs, ThinkingBudget, Timing, Usage } from './generate/types.js';
export { GenerateOptionsError, nearestName, validateGenerateOptions } from './generate/options.js';
export { CompositionOptionsError, FUSION_MODES } from './compose/composition-options.js';
export { DecoderSession, ModelRunError, type DecoderSource, type Int8PromptsOutcome, type RuntimeOptions } from './runtime/decoder-session.js';
export { ShardError } from './runtime/row-shards.js';
export { PLACEMENTS, PlacementError, ThreadCountError, maxIntraOpThreads, type Placement, type PlacementChoice } from './runtime/thread-budget.js';
export { DEVICES, DeviceUnavailableError, executionProvidersFor, ModelMemoryError, type Device } from './runtime/devices.js';
export { locateModel, ModelNotFoundError, type LocateOptions, type ModelLocation } from './modules/locate.js';
export type { ModelDefaults, SamplingDefaults } from './modules/model-defaults.js';
export { ContextLengthError, declaredContextLength } from './modules/context-length.js';
export { ModuleCompatError } from './modules/vocab-compat.js';
export { DTYPES, DTYPE_CHOICES, DtypeError, validateDtype, listVariants, type Dtype, type ModelVariant } from './modules/hub-variants.js';
export { quantizeModel, type QuantizeResult } from './modules/quantize-module.js';
export { quantizeGraph, QuantizeError, type QuantizeOptions, type QuantizeReport } from './onnx/quantize/quantize-graph.js';
export type { BlockSearch } from './onnx/quantize/quantize-matrix.js';
export { buildGenaiLlamaModel, type GenaiBuildOptions } from './onnx/genai-builder.js';
export {
  MANIFEST_FILE,
  MODULE_KINDS,
  ManifestError,
  ModuleManifestSchema,
  SCHEMA_VERSIONS,
  formatFieldPath,
  parseManifest,
  schemaVersionFor,
  type ManifestIssue,
  type ModuleFileEntry,
  type ModuleKind,
  type ModuleManifest,
  type SchemaVersion,
} from './modules/manifest.js';
export {
  loadModuleDir,
  ModuleIntegrityError,
  tokenizerFingerprintOfDir,
  writeModuleDir,
  type IntegrityProblem,
  type LoadedModule,
  type ModuleDirInit,
} from './modules/module-dir.js';
export { ChatTemplateUnsupportedError, TextTokenizer, TokenizerError, type ChatMessage, type ChatTemplateOptions } from './tokenizer/tokenizer.js';
export { withToolsInPrompt, toolsShown, GENERIC_REPLY, type FunctionTool, type ToolsPrompt } from './tokenizer/tools-in-prompt.js';
export { StreamDecoder, type DecodeFn } from './tokenizer/stream-decoder.js';
export type { FimTokens } from './tokenizer/fill-in-middle.js';
export type { VocabularyKind } from './tokenizer/token-bytes.js';
export {
  FrequencyPresencePenaltyProcessor,
  LogitBiasProcessor,
  MinPProcessor,
  NoCandidatesError,
  RepetitionPenaltyProcessor,
  Sampler,
  SamplingOptionsError,
  TemperatureProcessor,
  TopKProcessor,
  TopPProcessor,
  applyBitmask,
  argmaxAllowed,
  checkLogitBiasIds,
  createRng,
  drawFromLogits,
  randomSeed,
  samplingForRow,
  validateSamplingOptions,
  type CandidateFilter,
  type LogitProcessor,
  type SamplingContext,
  type SamplingOptions,
} from './sampling/index.js';
export { UnsupportedModelError, type DecoderSignature, type FloatType, type IdType, type KvNames, type StateNames } from './onnx/signature.js';
export { OnnxFormatError, type ModelProto, type TensorProto } from './onnx/proto.js';
export { PreparedCacheError } from './onnx/prepared-cache-error.js';
export * from './onnx/llama-spec.js';
export * from './onnx/llama-builder.js';
export type { AdaptOptions } from './onnx/adapt.js';
export type { GraphFacts } from './onnx/graph-facts.js';
export { defaultPreparedCacheDir, findPreparedDecoder, prepareDecoder, type PreparedDecoder, type PrepareOptions } from './onnx/prepared-cache.js';
export {
  ConversionError,
  SUPPORTED_ARCHITECTURES,
  convertGguf,
  moduleName,
  type ConvertedManifest,
  type ConvertGgufOptions,
  type ConvertGgufResult,
  type GgufArchitecture,
  type ManifestFile,
} from './gguf/convert.js';
export { GgufError, type GgufValue } from './gguf/reader.js';
export { ggufModuleDir, isGgufFile, isGgufPath, type GgufModuleOptions } from './gguf/gguf-module.js';
export { OllamaModelError, ollamaModelFile } from './modules/ollama-store.js';
export { HfCacheError, hfCachePath } from './modules/hf-cache.js';
export { LmStudioModelError, lmStudioModelFile } from './modules/lmstudio-models.js';
export { isLocalModelName, localModelPath } from './modules/local-names.js';
export {
  tokenizerFromGguf,
  BPE_PRE_TOKENIZERS,
  type GgufTokenizer,
  type HfAddedToken,
  type HfTokenizerConfig,
  type HfTokenizerJson,
  type SpecialTokenIds,
  type TokenizerFromGgufOptions,
} from './gguf/tokenizer-from-gguf.js';
export { validateWeightSpec, weightAt, WeightScheduleError, type WeightSegment, type WeightSpec } from './compose/weights.js';
export { fusionModes, type FusionMode, type FusionModes } from './compose/fusion.js';
export { VocabularyMismatchError } from './compose/vocabulary.js';
export { ReasonerSelectionError, type TokenTrace, type TraceCandidate } from './compose/composed-source.js';
export { ReasonerError } from './compose/reasoner-group.js';
export { ProjectorError } from './runtime/projector-session.js';
export { buildIdentityProjector, buildProjectorModel, randomProjectorWeights, writeProjectorModel, type ProjectorConfig, type SwiGluWeights } from './onnx/projector-builder.js';
export { LatentPolicyError, PromptError, parseLatentPolicy, type LatentPolicy } from './generate/decode-loop.js';
export type { MarkerSpec } from './generate/latent-marker.js';
export type { CompositionOptions, GenerateRequestOptions, ReasonerSpec } from './runtime/protocol.js';
export type { ConstraintOptions } from './runtime/protocol.js';
export { ConstraintError, XGrammarFactory, grammarVocabulary, type Constraint, type ConstraintFactory, type GrammarVocabulary, type JsonSchema, type ResponseFormat, type ThoughtFirst, type ToolChoice, type ToolSpec } from './constrain/index.js';
export type { AnswerFormat } from './constrain/types.js';
export type { StageClock } from './constrain/timing.js';
export * from './registry/index.js';
export type { BlobState, ModuleFile } from './registry/cache.js';
export type { BlobStream, ClientOptions } from './registry/client.js';
export type { RequestOptions, Transport, TransportOptions } from './registry/transport.js';
export { startServer, type ResolvedReference, type RunningServer, type ServedInfo, type ServeOptions } from './serve/server.js';
export type { TlsFiles } from './serve/listener.js';
export type { Histogram, ServerMetrics } from './serve/metrics.js';
export type { RequestRecord } from './serve/request-log.js';
export { HttpError } from './serve/errors.js';
export { TOOL_CALL_SYNTAX, toolCallSyntaxOf, type ToolCallForm, type ToolCallSyntax, type XmlCallForm } from './constrain/tool-syntax.js';
export { ToolCallTextSplitter, parseToolCall, parseToolCalls, toolCallId, type ParsedToolCall, type SplitToolText, type ToolParameters } from './chat/tool-calls.js';
export { GenericReplySplitter } from './chat/generic-reply.js';
export { HARMONY_TOKENS, HarmonyReplySplitter, isHarmonyTemplate, type SplitHarmony } from './chat/harmony.js';
export { ReasoningTextSplitter, opensThought, reasoningTagsOf, reasoningTokens, type ReasoningFormat, type ReasoningTags, type SplitReasoning } from './chat/reasoning.js';
export { cutAfterFinalMessage } from './chat/continuation.js';
export { ChatReplySplitter, keptTokens, replyFormat, replyParsing, splitReply, thinkingBudgetFor, thoughtFirst, toolsRead, type ReplyParsing, type SplitReply } from './chat/reply.js';
