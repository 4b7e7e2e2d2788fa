/**
 * Modules the LangChain examples run on until trained reasoners come from the registry: the real TinyStories model
 * (stories260K, converted from its GGUF) as backbone, and stand-in reasoners over its tokenizer whose logits are a
 * fixed preference for a few words. The stand-ins are real modules (ONNX graph, tokenizer, manifest with task
 * tags), so the engine loads, checks and composes them like any other, and their pull on a story is easy to see.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import {
  MANIFEST_FILE,
  convertGguf,
  tokenizerFingerprintOfDir,
  writeLlamaModel,
  writeModuleDir,
  type LlamaConfig,
  type LlamaWeights,
} from '@reasonplug/core';
import { models, repoRoot } from '../../test/support/paths.js';

/** Where the examples keep their modules (ignored by git, like the demo's). */
export const examplesDir = join(repoRoot, '.cache', 'examples');

/**
 * Makes the module directory `dir` unless it exists: `write` fills a process-unique sibling, which is then renamed
 * into place, so examples running at once never read a half-written module (the loser's copy is the same).
 */
async function once(dir: string, write: (into: string) => Promise<void>): Promise<string> {
  if (existsSync(join(dir, MANIFEST_FILE))) return dir;
  const into = `${dir}.${process.pid}.tmp`;
  await rm(into, { recursive: true, force: true });
  await write(into);
  try {
    await rename(into, dir);
  } catch (err) {
    await rm(into, { recursive: true, force: true });
    if (!existsSync(join(dir, MANIFEST_FILE))) throw err;
  }
  return dir;
}

/** The converted stories260K module. */
export function storiesBackbone(): Promise<string> {
  return once(join(examplesDir, 'stories260K'), (into) => convertGguf(models.stories260K, into, { name: 'stories260k' }).then(() => {}));
}

/** A stand-in reasoner: a name, task tags, and the logit it adds to words of the stories vocabulary. */
export interface PreferenceSpec {
  name: string;
  tasks: string[];
  description: string;
  /** Word (a whole-word token of the vocabulary, e.g. "happy" for "▁happy") → logit added. */
  prefer: Record<string, number>;
}

/** The stand-ins the examples use. */
export const STAND_INS: readonly PreferenceSpec[] = [
  { name: 'joy-r', tasks: ['mood'], description: 'favours happy endings', prefer: { happy: 8 } },
  { name: 'family-r', tasks: ['characters'], description: 'brings Tim and his mom in', prefer: { Tim: 6, mom: 6 } },
  { name: 'play-r', tasks: ['play'], description: 'favours play with friends', prefer: { play: 5, friend: 6 } },
];

/**
 * A Llama graph whose logits are `bias` whatever the input: every embedding is the first unit vector and every
 * layer adds nothing, so the normalized hidden state is √H on that axis, and the head's first column, bias/√H,
 * becomes the logits.
 */
function preferenceWeights(config: LlamaConfig, bias: Float32Array): LlamaWeights {
  const { vocabSize: V, hiddenSize: H, intermediateSize: I } = config;
  const zeros = (n: number) => new Float32Array(n);
  const ones = (n: number) => new Float32Array(n).fill(1);
  const embed = zeros(V * H);
  const lmHead = zeros(V * H);
  for (let v = 0; v < V; v++) {
    embed[v * H] = 1;
    lmHead[v * H] = bias[v]! / Math.sqrt(H);
  }
  const layer = {
    attnNorm: ones(H), wq: zeros(H * H), wk: zeros(H * H), wv: zeros(H * H), wo: zeros(H * H),
    mlpNorm: ones(H), wGate: zeros(I * H), wUp: zeros(I * H), wDown: zeros(H * I),
  };
  return { embed, layers: [layer], finalNorm: ones(H), lmHead };
}

/** The module of a stand-in reasoner, written once per spec (its directory name carries a hash of the spec). */
export async function standInReasoner(spec: PreferenceSpec): Promise<string> {
  const backbone = await storiesBackbone();
  const hash = createHash('sha256').update(JSON.stringify(spec)).digest('hex').slice(0, 12);
  return once(join(examplesDir, `${spec.name}-${hash}`), async (dir) => {
    await mkdir(dir, { recursive: true });
    for (const f of ['tokenizer.json', 'tokenizer_config.json']) await copyFile(join(backbone, f), join(dir, f));
    const vocab = (JSON.parse(await readFile(join(dir, 'tokenizer.json'), 'utf8')) as { model: { vocab: Record<string, number> } }).model.vocab;
    const config: LlamaConfig = { vocabSize: 512, hiddenSize: 8, numLayers: 1, numHeads: 1, intermediateSize: 8 };
    const bias = new Float32Array(config.vocabSize);
    for (const [word, logit] of Object.entries(spec.prefer)) {
      const id = vocab[`▁${word}`];
      if (id === undefined) throw new Error(`"${word}" is not a whole-word token of the stories260K vocabulary`);
      bias[id] = logit;
    }
    await writeLlamaModel(join(dir, 'model.onnx'), config, preferenceWeights(config, bias));
    await writeModuleDir(dir, {
      name: spec.name,
      version: '1.0.0',
      kind: 'logit-reasoner',
      tasks: spec.tasks,
      description: spec.description,
      license: 'MIT',
      compat: { tokenizer: (await tokenizerFingerprintOfDir(dir))!, vocabSize: config.vocabSize, hiddenSize: config.hiddenSize },
      composition: { defaultWeight: 1, mode: 'logits' },
      generation: { bosTokenId: 1, eosTokenIds: [2] },
      files: { model: 'model.onnx', tokenizer: 'tokenizer.json', tokenizerConfig: 'tokenizer_config.json' },
    });
  });
}
