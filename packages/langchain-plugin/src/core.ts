/**
 * This package's one door into @reasonplug/core.
 *
 * It imports core's sources by relative path rather than `@reasonplug/core` because core's package `exports`
 * point at `dist/`, which neither the tests (mocha through tsx) nor the root type-check (`tsc --noEmit`) build.
 * Every other module imports core through here, so once core's exports gain a source condition (or the build
 * compiles core first) this file becomes `export … from '@reasonplug/core'` and nothing else changes.
 */
export { Engine, TextTokenizer, formatFieldPath, loadModuleDir, MANIFEST_FILE, PLACEMENTS, DTYPES, resolveModelPath } from '../../core/src/index.js';
export type {
  ChatMessage,
  EngineOptions,
  FinishReason,
  GenerationResult,
  ModelInfo,
  PromptInput,
  StreamOptions,
} from '../../core/src/index.js';
