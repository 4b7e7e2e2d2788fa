/**
 * The backbone's embeddings as a LangChain `Embeddings` (for vector stores and retrievers beside a `ChatReasoner`):
 * each text's final hidden state at its last token, unit length (core's `Engine.embed`), in an engine of its own.
 */
import { Embeddings, type EmbeddingsParams } from '@langchain/core/embeddings';
import { stampRetryable } from '@langchain/core/errors';
import { z } from 'zod';
import { Engine, unitLength, type ModelInfo } from './core.js';
import { ModelOptionsSchema, parseOptions, schemaOf, splitOptions } from './options.js';
import type { ModelOptions } from './option-types.js';

/**
 * What `BackboneEmbeddings.create` takes: the model options that load a backbone, and LangChain's `maxConcurrency`
 * (its retries are refused, as the models refuse them).
 */
export interface EmbeddingsOptions
  extends Pick<ModelOptions, 'backbone' | 'dtype' | 'registry' | 'onProgress' | 'device' | 'intraOpThreads' | 'cacheDir' | 'maxRetries' | 'onFailedAttempt'>,
    Pick<EmbeddingsParams, 'maxConcurrency'> {
  /** The vectors cut to their first this many components and scaled to unit length again (as OpenAI's `dimensions`). */
  dimensions?: number;
}

/** The field of LangChain's `Embeddings` taken: its caller's concurrency. */
const CALLER_FIELDS: ReadonlySet<string> = new Set(['maxConcurrency']);

/** Parses `EmbeddingsOptions` but its caller's field (LangChain's). */
export const EmbeddingsOptionsSchema = schemaOf<Omit<EmbeddingsOptions, 'maxConcurrency'>>()(
  ModelOptionsSchema.pick({ backbone: true, dtype: true, registry: true, onProgress: true, device: true, intraOpThreads: true, cacheDir: true, maxRetries: true, onFailedAttempt: true }).extend({
    dimensions: z.int().positive().optional(),
  }),
);

/**
 * A backbone's embeddings:
 * ```ts
 * const embeddings = await BackboneEmbeddings.create({ backbone: './Qwen3-Embedding-0.6B-Q8_0.gguf' });
 * const store = await MemoryVectorStore.fromTexts(texts, metadatas, embeddings);
 * await embeddings.dispose();
 * ```
 */
export class BackboneEmbeddings extends Embeddings {
  private constructor(
    private readonly engine: Engine,
    private readonly dimensions: number | undefined,
    fields: EmbeddingsParams,
  ) {
    super(fields);
  }

  /** Loads the backbone with its hidden state as an output. Throws `ReasonerOptionsError` for invalid options. */
  static async create(options: EmbeddingsOptions): Promise<BackboneEmbeddings> {
    // LangChain's own fields are its caller's; any other key is a mistake the schema names (e.g. `reasoners`).
    const { ours, rest } = splitOptions(EmbeddingsOptionsSchema, options, CALLER_FIELDS);
    const { backbone, registry, dimensions, maxRetries: _r, onFailedAttempt: _f, ...engine } = parseOptions(EmbeddingsOptionsSchema, ours, 'BackboneEmbeddings.create');
    const loaded = await Engine.load({ model: backbone, ...(registry ? { registry } : {}), ...engine, embeddings: true });
    const size = loaded.info.embeddingSize!;
    if (dimensions !== undefined && dimensions > size) {
      await loaded.dispose();
      throw new RangeError(`BackboneEmbeddings.create: dimensions is ${dimensions}, more than the model's ${size}`);
    }
    try {
      return new BackboneEmbeddings(loaded, dimensions, rest);
    } catch (err) {
      // (LangChain's own checks, e.g. maxConcurrency: the engine loaded for nothing is not left running)
      await loaded.dispose();
      throw err;
    }
  }

  /** What was loaded (`embeddingSize`: the length of the vectors before `dimensions` cuts them). */
  get info(): ModelInfo {
    return this.engine.info;
  }

  /** One vector per document, in order. */
  async embedDocuments(documents: string[]): Promise<number[][]> {
    if (!Array.isArray(documents)) throw new TypeError(`embedDocuments takes a list of texts, not ${typeof documents}`);
    if (documents.length === 0) return [];
    // (checked before LangChain's caller, which retries what fails: six tries of a mistake took 84 s)
    const bad = documents.findIndex((d) => typeof d !== 'string');
    if (bad !== -1) throw new TypeError(`embedDocuments: document ${bad} is ${documents[bad] === null ? 'null' : typeof documents[bad]}, not a text`);
    // An engine's refusal (a text past the context, a closed engine) is the same on every try: not retried.
    const { vectors } = await this.caller.call(() => this.engine.embed({ texts: documents }).catch((err: unknown) => Promise.reject(stampRetryable(err, false))));
    return vectors.map((v) => Array.from(this.dimensions !== undefined ? unitLength(v.slice(0, this.dimensions)) : v));
  }

  /** The vector of one query. */
  async embedQuery(query: string): Promise<number[]> {
    return (await this.embedDocuments([query]))[0]!;
  }

  /** Frees the engine. */
  dispose(): Promise<void> {
    return this.engine.dispose();
  }
}
