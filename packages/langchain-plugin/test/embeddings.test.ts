import { readdirSync } from 'node:fs';
/**
 * `BackboneEmbeddings`: LangChain's Embeddings over the backbone's final hidden state, judged against llama.cpp's
 * embedding of the same GGUF (node-llama-cpp's embedding context).
 */
import { expect } from 'chai';
import { BackboneEmbeddings, ReasonerOptionsError } from '../src/index.js';
import { cacheDir } from './support/modules.js';
import { llamaCppEmbeddings } from '../../core/test/support/gguf-models.js';
import { models } from '../../../test/support/paths.js';

const TEXTS = ['Once upon a time', 'The little dog ran to the tree and barked at the bird.'];

function cosine(a: number[], b: number[]): number {
  let [dot, na, nb] = [0, 0, 0];
  a.forEach((x, i) => {
    dot += x * b[i]!;
    na += x * x;
    nb += b[i]! ** 2;
  });
  return dot / Math.sqrt(na * nb);
}

describe('BackboneEmbeddings', function () {
  this.timeout(120_000);
  let embeddings: BackboneEmbeddings;
  let reference: number[][];

  before(async () => {
    embeddings = await BackboneEmbeddings.create({ backbone: models.stories260K, cacheDir, maxConcurrency: 1 });
    reference = await llamaCppEmbeddings(models.stories260K, TEXTS);
  });
  after(async () => {
    await embeddings?.dispose();
  });

  it("embeds documents and queries as llama.cpp does, at unit length", async () => {
    expect(embeddings.info.embeddingSize).to.equal(64);
    const documents = await embeddings.embedDocuments(TEXTS);
    expect(documents).to.have.length(2);
    documents.forEach((v, i) => {
      expect(Math.hypot(...v)).to.be.closeTo(1, 1e-5);
      expect(cosine(v, reference[i]!)).to.be.greaterThan(0.99999);
    });
    expect(await embeddings.embedQuery(TEXTS[1]!)).to.deep.equal(documents[1]);
    expect(await embeddings.embedDocuments([])).to.deep.equal([]);
  });

  it('cuts vectors to dimensions, and refuses options it cannot take', async () => {
    const cut = await BackboneEmbeddings.create({ backbone: models.stories260K, cacheDir, dimensions: 8 });
    try {
      const [v] = await cut.embedDocuments([TEXTS[0]!]);
      expect(v).to.have.length(8);
      expect(Math.hypot(...v!)).to.be.closeTo(1, 1e-5);
      expect(cosine(v!, reference[0]!.slice(0, 8))).to.be.greaterThan(0.99999);
    } finally {
      await cut.dispose();
    }
    const refused = await BackboneEmbeddings.create({ backbone: models.stories260K, cacheDir, reasoners: [] } as never).then(() => undefined, (e: Error) => e);
    expect(refused).to.be.instanceOf(ReasonerOptionsError);
    expect(refused?.message).to.match(/reasoners: unknown option/);
    // (LangChain's retries of remote calls: a local engine's refusal is the same on every try, as the models say)
    const retried = await BackboneEmbeddings.create({ backbone: models.stories260K, cacheDir, maxRetries: 3 } as never).then(() => undefined, (e: Error) => e);
    expect(retried).to.be.instanceOf(ReasonerOptionsError);
    expect(retried?.message).to.match(/maxRetries: is LangChain's retry of remote calls/);
    const tooWide = await BackboneEmbeddings.create({ backbone: models.stories260K, cacheDir, dimensions: 65 }).then(() => undefined, (e: Error) => e);
    expect(tooWide?.message).to.equal("BackboneEmbeddings.create: dimensions is 65, more than the model's 64");
    // LangChain's own refusal comes after the engine loaded: the engine is freed, its threads with it
    const threads = () => readdirSync('/proc/self/task').length;
    const before = threads();
    const langchain = await BackboneEmbeddings.create({ backbone: models.stories260K, cacheDir, maxConcurrency: 0 }).then(() => undefined, (e: Error) => e);
    expect(langchain).to.be.instanceOf(Error);
    // (until they have ended, 10 s at most: a loaded machine may take longer than a fixed pause to reap them)
    for (let i = 0; i < 500 && threads() > before; i++) await new Promise((r) => setTimeout(r, 20));
    expect(threads(), 'threads left by the failed create').to.be.at.most(before);
  });

  it("gives the engine's refusals at once, without LangChain's retries (a text past the context, a disposed engine)", async () => {
    const engine = await BackboneEmbeddings.create({ backbone: models.stories260K, cacheDir, dimensions: 8 });
    let t0 = performance.now();
    const long = await engine.embedQuery('Once upon a time '.repeat(3000)).catch((e: Error) => e);
    expect((long as Error).message).to.match(/(more|longer) than the context length of/);
    expect(performance.now() - t0, 'six tries with backoff took 80-105 s').to.be.below(5000);
    await engine.dispose();
    t0 = performance.now();
    expect(((await engine.embedQuery('x').catch((e: Error) => e)) as Error).message).to.match(/closed/);
    expect(performance.now() - t0).to.be.below(1000);
  });

  it('refuses a document that is not a text at once, without retrying it', async () => {
    const t0 = performance.now();
    const err = await embeddings.embedDocuments(['a', null as never]).catch((e: Error) => e);
    expect(err).to.be.instanceOf(TypeError);
    expect((err as Error).message).to.match(/document 1 is null, not a text/);
    expect(performance.now() - t0).to.be.below(1000);
  });
});
