/**
 * `reasonplug embed`: embeddings on the command line, as llama.cpp's `llama-embedding` gives them: each text (the
 * arguments, else each non-empty line of the input) becomes one JSON line with its index, token count and vector,
 * the backbone's final hidden state at its last token, unit length unless `--raw`.
 */
import { createInterface } from 'node:readline';
import { InvalidArgumentError, Option, type Command } from 'commander';
import { Engine } from '../engine.js';
import { DTYPE_CHOICES } from '../modules/hub-variants.js';
import { DEVICES } from '../runtime/devices.js';
import { unitLength } from '../runtime/unit-length.js';
import { positiveIntegerFlag, threadsFlag } from './flags.js';
import { engineOptions, int8PromptsOption, noteInt8PromptsUnused, sessionCacheOption, type ModelFlags } from './model-flags.js';

interface EmbedFlags extends Pick<ModelFlags, 'model' | 'dtype' | 'device' | 'threads' | 'sessionCache' | 'int8Prompts'> {
  dimensions?: number;
  raw?: boolean;
}

/** Adds `embed` to the command tree. */
export function addEmbedCommand(program: Command): void {
  program
    .command('embed')
    .description("embed texts: one JSON line each with the model's final hidden state at the text's last token")
    .argument('[texts...]', 'texts to embed (default: each non-empty line of the input)')
    .requiredOption('--model <path>', 'module directory, plain export directory, .onnx file, GGUF file (converted once into the cache; also as ollama://name:tag, hf://org/repo:QUANT or lmstudio://publisher/model), or registry reference')
    .addOption(new Option('--dtype <t>', 'graph of a hub export directory (transformers.js names)').choices([...DTYPE_CHOICES]))
    .addOption(new Option('--device <d>', 'execution provider').choices([...DEVICES]).default('cpu'))
    .option('--threads <n>', 'intra-op threads (at most 4 per CPU)', threadsFlag)
    .option('--dimensions <n>', 'keep the first n components (at unit length again)', positiveIntegerFlag('--dimensions'))
    .option('--raw', 'the hidden state as it is, not scaled to unit length')
    .addOption(sessionCacheOption())
    .addOption(int8PromptsOption())
    .action((texts: string[], flags: EmbedFlags) => embedTexts(texts, flags));
}

async function embedTexts(given: string[], flags: EmbedFlags): Promise<void> {
  const texts = given.length > 0 ? given : await inputLines();
  if (texts.length === 0) throw new InvalidArgumentError('embed: give texts as arguments or as lines of the input');
  const engine = await Engine.load({ ...(await engineOptions(flags)), embeddings: true });
  try {
    noteInt8PromptsUnused(engine.info.int8Prompts);
    const size = engine.info.embeddingSize!;
    if (flags.dimensions !== undefined && flags.dimensions > size) throw new InvalidArgumentError(`--dimensions ${flags.dimensions} is more than the model's ${size}`);
    const { vectors, promptTokens } = await engine.embed({ texts }, { normalize: !flags.raw });
    vectors.forEach((v, index) => {
      const cut = flags.dimensions === undefined ? v : flags.raw ? v.slice(0, flags.dimensions) : unitLength(v.slice(0, flags.dimensions));
      process.stdout.write(`${JSON.stringify({ index, tokens: promptTokens[index], embedding: Array.from(cut) })}\n`);
    });
  } finally {
    await engine.dispose();
  }
}

/** The non-empty lines of the input. */
async function inputLines(): Promise<string[]> {
  const lines: string[] = [];
  for await (const line of createInterface({ input: process.stdin, crlfDelay: Infinity })) if (line.trim() !== '') lines.push(line);
  return lines;
}
