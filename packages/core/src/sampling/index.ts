export type { LogitProcessor, SamplingContext } from './types.js';
export { SamplingOptionsError, checkLogitBiasIds, samplingForRow, validateSamplingOptions, type SamplingOptions } from './options.js';
export { createRng, randomSeed } from './rng.js';
export { argmax, heapKthLargest, quickselectKthLargest } from './select.js';
export { applyBitmask, argmaxAllowed, gatherAllowed } from './bitmask.js';
export {
  FrequencyPresencePenaltyProcessor,
  LogitBiasProcessor,
  MinPProcessor,
  RepetitionPenaltyProcessor,
  TemperatureProcessor,
  TopKProcessor,
  TopPProcessor,
} from './processors.js';
export {
  CandidateBuffer,
  gatherFinite,
  maskToCandidates,
  type CandidateFilter,
} from './candidates.js';
export { expNeg } from './math.js';
export { drawFromLogits, NoCandidatesError, Sampler } from './sampler.js';
