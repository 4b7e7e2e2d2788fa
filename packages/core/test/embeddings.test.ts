/**
 * Embeddings: the backbone's final hidden state at an input's last token, judged against llama.cpp's embedding of
 * the same GGUF (node-llama-cpp's embedding context: for a causal model without a pooling type, the last token's
 * normed hidden state); through the engine (beside a running generation) and `reasonplug serve --embeddings`
 * with @langchain/openai's OpenAIEmbeddings (the OpenAI SDK asks for base64) and plain fetch.
 */
import { expect } from 'chai';
import { OpenAIEmbeddings } from '@langchain/openai';
import { Engine } from '../src/engine.js';
import { startServer, type RunningServer } from '../src/serve/server.js';
import { models } from '../../../test/support/paths.js';
import { cacheDir } from './support/models.js';
import { llamaCppEmbeddings, storiesTokenizerMeta, writeRandomGguf } from './support/gguf-models.js';
import { testDir } from './support/models.js';
import { convertGguf } from '../src/gguf/convert.js';
import { declaredPooling } from '../src/modules/pooling.js';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

const TEXTS = [
  'Once upon a time',
  'The cat sat on the mat.',
  // Longer than the prefill chunk below: embedded in several runs.
  'Lily liked to play with her ball in the park every day. One day she saw a big dog and she was scared, but the dog was kind.',
];

/** Cosine similarity, and the largest difference of two vectors relative to the second's length. */
function compare(a: ArrayLike<number>, b: ArrayLike<number>): { cosine: number; relative: number } {
  let [dot, na, nb, max] = [0, 0, 0, 0];
  for (let i = 0; i < a.length; i++) {
    dot += a[i]! * b[i]!;
    na += a[i]! ** 2;
    nb += b[i]! ** 2;
    max = Math.max(max, Math.abs(a[i]! - b[i]!));
  }
  return { cosine: dot / Math.sqrt(na * nb), relative: max / Math.sqrt(nb) };
}

const norm = (v: ArrayLike<number>) => Math.sqrt(Array.from(v).reduce((s, x) => s + x * x, 0));

describe('embeddings', function () {
  this.timeout(180_000);
  let engine: Engine;
  /** llama.cpp's embedding of each text (BOS prepended, as ours), unnormalized. */
  let reference: number[][];

  before(async () => {
    engine = await Engine.load({ model: models.stories260K, cacheDir, embeddings: true, prefillChunk: 8 });
    reference = await llamaCppEmbeddings(models.stories260K, TEXTS);
  });
  after(async () => {
    await engine?.dispose();
  });

  it("equal llama.cpp's embeddings of the same GGUF, long inputs prefilled in chunks", async () => {
    expect(engine.info.embeddingSize).to.equal(64);
    const { vectors, promptTokens } = await engine.embed({ texts: TEXTS }, { normalize: false });
    expect(promptTokens[2]).to.be.greaterThan(16); // three runs of 8
    vectors.forEach((v, i) => {
      expect(v.length).to.equal(reference[i]!.length);
      const { cosine, relative } = compare(v, reference[i]!);
      expect(cosine, TEXTS[i]).to.be.greaterThan(0.99999);
      expect(relative, TEXTS[i]).to.be.lessThan(1e-3);
    });
    // Distinct texts, distinct vectors.
    expect(compare(vectors[0]!, vectors[1]!).cosine).to.be.lessThan(0.999);
  });

  it('are unit length by default, and the same for the texts\' token ids', async () => {
    const ids = await Promise.all(TEXTS.map((t) => engine.tokenize(t)));
    const [byText, byIds] = await Promise.all([engine.embed({ texts: TEXTS }), engine.embed({ ids })]);
    byText.vectors.forEach((v, i) => {
      expect(norm(v)).to.be.closeTo(1, 1e-5);
      expect(Array.from(byIds.vectors[i]!)).to.deep.equal(Array.from(v));
    });
    expect(byIds.promptTokens).to.deep.equal(ids.map((p) => p.length));
  });

  it('run beside a generation, which gives what it gives alone', async () => {
    const prompt = { prompt: 'Once upon a time' };
    const alone = await engine.generate(prompt, { maxTokens: 40 });
    const stream = engine.stream(prompt, { maxTokens: 40 });
    const seen: string[] = [];
    let embedded: Promise<unknown> | undefined;
    for await (const token of stream) {
      seen.push(token.text);
      // Several embeddings, asked while the row decodes.
      if (seen.length === 5) embedded = engine.embed({ texts: TEXTS }, { normalize: false });
    }
    expect((await stream.result).rows[0]!.ids).to.deep.equal(alone.rows[0]!.ids);
    const { vectors } = (await embedded) as { vectors: Float32Array[] };
    vectors.forEach((v, i) => expect(compare(v, reference[i]!).cosine).to.be.greaterThan(0.99999));
  });

  it('refuse what cannot be embedded, by name, and an engine loaded without them', async () => {
    const failure = (p: Promise<unknown>) => p.then(() => undefined, (e: Error) => e);
    const empty = await failure(engine.embed({ ids: [[1, 2], []] }));
    expect(empty?.name).to.equal('EmbedInputError');
    expect(empty?.message).to.match(/input 1 has no tokens/);
    const outside = await failure(engine.embed({ ids: [[1, 9999]] }));
    expect(outside?.message).to.match(/token id 9999, outside the vocabulary \(0 to 511\)/);
    expect((await failure(engine.embed({ texts: [] })))?.name).to.equal('EmbedInputError');
    // (a number embedded as the empty text: its vector came back for it)
    for (const [text, what] of [[42, 'number'], [null, 'null'], [{ text: 'x' }, 'object']] as const) {
      const wrong = await failure(engine.embed({ texts: ['hi', text as never] }));
      expect([wrong?.name, wrong?.message]).to.deep.equal(['EmbedInputError', `embed: input 1 is ${what}, not a text`]);
    }
    const plain = await Engine.load({ model: models.stories260K, cacheDir });
    try {
      expect(plain.info.embeddingSize).to.equal(undefined);
      const refused = await failure(plain.embed({ texts: ['hi'] }));
      expect(refused?.name).to.equal('EmbeddingsUnavailableError');
      expect(refused?.message).to.match(/load it with `embeddings: true`/);
    } finally {
      await plain.dispose();
    }
  });

  it("follow a GGUF's pooling type: last-token pooling as llama.cpp pools it; mean pooling and bidirectional attention refused by name", async () => {
    const dir = testDir('pooling');
    const gguf = (name: string) => join(dir, `${name}.gguf`);
    const spec = { arch: 'llama', hidden: 64, layers: 2, heads: 4, kvHeads: 2, ff: 96, seed: 31 };
    const tokenizer = await storiesTokenizerMeta();
    const u32 = (v: number) => ({ t: 'u32' as const, v });
    await writeRandomGguf(gguf('last'), { ...spec, meta: { pooling_type: u32(3) } }, tokenizer);
    await writeRandomGguf(gguf('mean'), { ...spec, meta: { pooling_type: u32(1) } }, tokenizer);
    await writeRandomGguf(gguf('bidirectional'), { ...spec, meta: { 'attention.causal': { t: 'bool', v: false } } }, tokenizer);

    const last = await Engine.load({ model: gguf('last'), cacheDir, embeddings: true });
    try {
      const reference = await llamaCppEmbeddings(gguf('last'), TEXTS);
      const { vectors } = await last.embed({ texts: TEXTS }, { normalize: false });
      vectors.forEach((v, i) => expect(compare(v, reference[i]!).cosine, TEXTS[i]).to.be.greaterThan(0.99999));
    } finally {
      await last.dispose();
    }
    // The converted module keeps the pooling as sentence-transformers does, listed in its manifest.
    const module = join(dir, 'mean-module');
    const { manifest } = await convertGguf(gguf('mean'), module);
    expect(manifest.files.pooling?.path).to.equal('1_Pooling/config.json');
    expect(JSON.parse(await readFile(join(module, '1_Pooling/config.json'), 'utf8'))).to.include({ word_embedding_dimension: 64, pooling_mode_mean_tokens: true, pooling_mode_lasttoken: false });
    expect(await declaredPooling(module)).to.equal('mean');
    const refused = await Engine.load({ model: module, cacheDir, embeddings: true }).then(() => undefined, (e: Error) => e);
    expect(refused?.name).to.equal('EmbeddingsUnavailableError');
    expect(refused?.message).to.match(/pools its embeddings by mean \(its 1_Pooling\/config\.json, or the GGUF's pooling_type\); the engine gives last-token embeddings only/);
    // Loaded to generate, it generates: its pooling matters to embeddings only.
    const plain = await Engine.load({ model: module, cacheDir });
    try {
      expect(plain.info.embeddingSize).to.equal(undefined);
      expect((await plain.generate({ prompt: 'Once' }, { maxTokens: 2 })).rows[0]!.ids).to.have.length(2);
    } finally {
      await plain.dispose();
    }
    const bidirectional = await convertGguf(gguf('bidirectional'), join(dir, 'bidirectional')).then(() => undefined, (e: Error) => e);
    expect(bidirectional?.message).to.match(/uses bidirectional attention \("llama\.attention\.causal" = false\); only causal decoders are supported/);
  });

  describe('reasonplug serve --embeddings', () => {
    let server: RunningServer;
    let plain: RunningServer;
    const post = (s: RunningServer, body: unknown) =>
      fetch(`${s.url}/v1/embeddings`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });

    before(async () => {
      server = await startServer({ engine: { model: models.stories260K, cacheDir, embeddings: true }, name: 'stories', port: 0 });
      plain = await startServer({ engine: { model: models.stories260K, cacheDir }, name: 'stories', port: 0 });
      await Promise.all([server.ready, plain.ready]);
    });
    after(async () => {
      await Promise.all([server?.close(), plain?.close()]);
    });

    it("OpenAIEmbeddings (base64, as the OpenAI SDK asks) gets llama.cpp's vectors at unit length, and dimensions cut them", async () => {
      const embeddings = new OpenAIEmbeddings({ model: 'stories', apiKey: 'none', configuration: { baseURL: `${server.url}/v1` }, maxRetries: 0 });
      const documents = await embeddings.embedDocuments(TEXTS);
      const query = await embeddings.embedQuery(TEXTS[0]!);
      documents.forEach((v, i) => {
        expect(norm(v)).to.be.closeTo(1, 1e-5);
        expect(compare(v, reference[i]!).cosine).to.be.greaterThan(0.99999);
      });
      expect(query).to.deep.equal(documents[0]);
      const cut = await new OpenAIEmbeddings({ model: 'stories', apiKey: 'none', dimensions: 16, configuration: { baseURL: `${server.url}/v1` }, maxRetries: 0 }).embedQuery(TEXTS[1]!);
      expect(cut).to.have.length(16);
      expect(norm(cut)).to.be.closeTo(1, 1e-5);
      expect(compare(cut, reference[1]!.slice(0, 16)).cosine).to.be.greaterThan(0.99999);
    });

    it('answers floats in OpenAI\'s shape with usage, token ids too, and refuses what it cannot do', async () => {
      const res = await post(server, { model: 'stories', input: TEXTS.slice(0, 2), encoding_format: 'float' });
      expect(res.status).to.equal(200);
      const body = (await res.json()) as { object: string; data: { object: string; index: number; embedding: number[] }[]; model: string; usage: { prompt_tokens: number; total_tokens: number } };
      expect(body.object).to.equal('list');
      expect(body.model).to.equal('stories');
      expect(body.data.map((d) => [d.object, d.index, d.embedding.length])).to.deep.equal([['embedding', 0, 64], ['embedding', 1, 64]]);
      const tokens = (await Promise.all(TEXTS.slice(0, 2).map((t) => engine.tokenize(t)))).map((t) => t.length);
      expect(body.usage).to.deep.equal({ prompt_tokens: tokens[0]! + tokens[1]!, total_tokens: tokens[0]! + tokens[1]! });
      const ids = (await (await post(server, { model: 'stories', input: await engine.tokenize(TEXTS[1]!) })).json()) as typeof body;
      expect(ids.data[0]!.embedding).to.deep.equal(body.data[1]!.embedding);

      const error = async (r: Response) => [r.status, ((await r.json()) as { error: { message: string; param: string | null } }).error] as const;
      const [disabled, why] = await error(await post(plain, { model: 'stories', input: 'hi' }));
      expect([disabled, why.message]).to.deep.equal([501, 'this server gives no embeddings: start it with --embeddings']);
      for (const [body, param] of [
        [{ model: 'stories', input: '' }, 'input'],
        [{ model: 'stories', input: [] }, 'input'],
        [{ model: 'stories', input: [1, -2] }, 'input'],
        [{ model: 'stories', input: 'hi', encoding_format: 'hex' }, 'encoding_format'],
        [{ model: 'stories', input: 'hi', dimensions: 65 }, 'dimensions'],
        [{ model: 'stories', input: 'hi', dimensions: 0 }, 'dimensions'],
      ] as const) {
        const [status, e] = await error(await post(server, body));
        expect([status, e.param], JSON.stringify(body)).to.deep.equal([400, param]);
      }
      // A request slot like a completion's: with every slot taken it waits, then answers.
      const one = await startServer({ engine: { model: models.stories260K, cacheDir, embeddings: true }, name: 'stories', port: 0, maxBatch: 1 });
      try {
        await one.ready;
        const long = fetch(`${one.url}/v1/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ model: 'stories', prompt: 'Once', max_tokens: 200, ignore_eos: true }) });
        await new Promise((r) => setTimeout(r, 50));
        const queued = await post(one, { model: 'stories', input: TEXTS[0] });
        expect(queued.status).to.equal(200);
        expect(((await queued.json()) as typeof body).data[0]!.embedding).to.have.length(64);
        expect((await long).status).to.equal(200);
      } finally {
        await one.close();
      }
      const [outside, message] = await error(await post(server, { model: 'stories', input: [[1, 600]] }));
      expect([outside, message.message]).to.deep.equal([400, 'EmbedInputError: embed: input 0 holds token id 600, outside the vocabulary (0 to 511)']);
      expect((await error(await post(server, { model: 'nope', input: 'hi' })))[0]).to.equal(404);
    });
  });
});
