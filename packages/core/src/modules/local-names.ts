/**
 * Names of models that other tools keep on this machine, taken wherever a model is: Ollama's (`ollama://name:tag`,
 * ollama-store.ts) and the Hugging Face hub cache's (`hf://org/repo[:QUANT]`, hf-cache.ts).
 */
import { hfCachePath, isHfRef } from './hf-cache.js';
import { isOllamaRef, ollamaModelFile } from './ollama-store.js';

/** Whether `spec` is such a name. */
export function isLocalModelName(spec: string): boolean {
  return isOllamaRef(spec) || isHfRef(spec);
}

/** The file or directory such a name stands for (throwing what is missing); any other spec unchanged. */
export function localModelPath(spec: string): string {
  if (isOllamaRef(spec)) return ollamaModelFile(spec);
  if (isHfRef(spec)) return hfCachePath(spec);
  return spec;
}
