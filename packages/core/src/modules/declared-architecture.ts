/** What architecture a model is, as the files beside it say (for clients that show or key on a model's family). */
import { firstBeside } from './context-length.js';
import type { ModelLocation } from './locate.js';

/**
 * The architecture a located model declares, as its source names it (`llama`, `qwen2`, `gemma3`, …): `model_type` in the
 * `config.json` of a hub export, else the GGUF architecture a converted module's manifest records.
 */
export async function declaredArchitecture(location: ModelLocation): Promise<string | undefined> {
  const converted = location.manifest?.provenance?.convertedFrom;
  const recorded = typeof converted === 'object' ? converted.architecture : undefined;
  return (await firstBeside(location, 'config.json', (j) => asName(j.model_type))) ?? asName(recorded);
}

const asName = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);
