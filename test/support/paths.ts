/** Locations shared by tests, benchmarks and examples. */
import { fileURLToPath } from 'node:url';
import { join, resolve } from 'node:path';

/** Repository root. */
export const repoRoot = resolve(fileURLToPath(new URL('../..', import.meta.url)));

/** Third-party test models (`../shared/models` beside the checkout unless REASONPLUG_TEST_MODELS says otherwise). */
export const sharedModels = process.env.REASONPLUG_TEST_MODELS ?? resolve(repoRoot, '..', 'shared', 'models');

/** Paths of the individual shared models. */
export const models = {
  llamaFp16: join(sharedModels, 'tiny-random-llama-fp16'),
  gpt2Legacy: join(sharedModels, 'tiny-random-gpt2-legacy-kv'),
  stories260K: join(sharedModels, 'stories260K', 'stories260K.gguf'),
};

/** Node flags that run a TypeScript entry point from the repository's sources: tsx, and the export condition that
 * points `@reasonplug/*` at `src/` (npm scripts get it from .npmrc; a child started with process.execPath does not). */
export const fromSources = ['--import', 'tsx', '--conditions=@reasonplug/source'];
