/**
 * Embeddings: the same documents (token ids of the serving benchmark's random ~125M Q4_0 Llama, BOS first) embedded
 * by reasonplug (`Engine.embed`, one call for all of them) and by llama.cpp (node-llama-cpp's embedding context, one
 * document after another as its API takes them), 2 threads each. Reported: milliseconds per document and tokens/s
 * (medians over rounds, contenders alternating which goes first), and the cosine between the two contenders'
 * vectors (the smallest over the documents) as a check that both compute the same thing.
 *
 *   npm run bench:embed [-- --rounds 5 --docs 32 --tokens 64]
 */
import { parseArgs } from 'node:util';
import { Engine } from '../packages/core/src/engine.js';
import { createRng } from '../packages/core/src/sampling/index.js';
import { servingGguf } from './support/models.js';
import { median, printTable } from './support/stats.js';

const THREADS = 2;
const BOS = 1;

type Embedder = (docs: number[][]) => Promise<number[][]>;

async function llamaCppEmbedder(gguf: string, contextSize: number): Promise<{ embed: Embedder; dispose: () => Promise<void> }> {
  const { getLlama, LlamaLogLevel } = await import('node-llama-cpp');
  const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
  const model = await llama.loadModel({ modelPath: gguf });
  const context = await model.createEmbeddingContext({ contextSize, threads: THREADS, batchSize: contextSize });
  const embed: Embedder = async (docs) => {
    const out: number[][] = [];
    for (const d of docs) out.push([...(await context.getEmbeddingFor(d as never[])).vector]);
    return out;
  };
  return { embed, dispose: async () => (await context.dispose(), await model.dispose()) };
}

function cosine(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let [dot, na, nb] = [0, 0, 0];
  for (let i = 0; i < a.length; i++) {
    dot += a[i]! * b[i]!;
    na += a[i]! ** 2;
    nb += b[i]! ** 2;
  }
  return dot / Math.sqrt(na * nb);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { rounds: { type: 'string', default: '5' }, docs: { type: 'string', default: '32' }, tokens: { type: 'string', default: '64' } },
  });
  const [rounds, docs, tokens] = [values.rounds, values.docs, values.tokens].map(Number) as [number, number, number];
  const gguf = await servingGguf();
  const engine = await Engine.load({ model: gguf, intraOpThreads: THREADS, embeddings: true });
  const llama = await llamaCppEmbedder(gguf, Math.max(512, tokens + 8));
  const ours: Embedder = async (d) => (await engine.embed({ ids: d }, { normalize: false })).vectors.map((v) => Array.from(v));
  const contenders: [string, Embedder][] = [['reasonplug', ours], ['llama.cpp', llama.embed]];
  const vocab = engine.info.sharedVocabSize;
  const rng = createRng(7);
  const times = new Map<string, number[]>(contenders.map(([name]) => [name, []]));
  let minCosine = 1;
  for (let round = 0; round < rounds; round++) {
    // Fresh documents every round (no cache helps either side), BOS first as llama.cpp's embedding context adds it.
    const batch = Array.from({ length: docs }, () => [BOS, ...Array.from({ length: tokens - 1 }, () => 3 + Math.floor(rng() * (vocab - 3)))]);
    const order = round % 2 === 0 ? contenders : [...contenders].reverse();
    const vectors = new Map<string, number[][]>();
    for (const [name, embed] of order) {
      const t0 = performance.now();
      vectors.set(name, await embed(batch));
      times.get(name)!.push(performance.now() - t0);
    }
    vectors.get('reasonplug')!.forEach((v, i) => (minCosine = Math.min(minCosine, cosine(v, vectors.get('llama.cpp')![i]!))));
  }
  await Promise.all([engine.dispose(), llama.dispose()]);
  const perDoc = (name: string) => median(times.get(name)!) / docs;
  const rows = contenders.map(([name]) => [name, perDoc(name).toFixed(2), ((docs * tokens) / (median(times.get(name)!) / 1000)).toFixed(0)]);
  rows.push(['reasonplug / llama.cpp', `${(perDoc('reasonplug') / perDoc('llama.cpp')).toFixed(2)}x`, '']);
  console.log(JSON.stringify({ bench: 'embed', docs, tokens, rounds, msPerDoc: Object.fromEntries(contenders.map(([n]) => [n, perDoc(n)])), minCosine }));
  printTable(
    `Embeddings, Q4_0 llama ~125M, ${docs} documents of ${tokens} tokens, ${THREADS} threads, medians of ${rounds} rounds; smallest cosine between the two: ${minCosine.toFixed(6)}`,
    ['contender', 'ms / document', 'tokens / s'],
    rows,
  );
}

await main();
