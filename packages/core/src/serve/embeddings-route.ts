/** `/v1/embeddings`, and the embedding of any route's inputs (Ollama's too): the backbone's hidden states, admitted as any request. */
import type { ServerResponse } from 'node:http';
import { unitLength } from '../runtime/unit-length.js';
import { sendJson } from './answer-writers.js';
import { HttpError, badRequest } from './errors.js';
import type { EmbeddingsRequest } from './requests.js';
import type { Served } from './served.js';

/**
 * `/v1/embeddings`: the backbone's final hidden state at each input's last token, unit length (as OpenAI's and
 * llama.cpp's server give them). It takes a slot as a completion does, and runs beside the decode batch.
 */
export async function embeddings(l: Served, request: EmbeddingsRequest, res: ServerResponse): Promise<void> {
  const { vectors, tokens } = await embedded(l, request, res);
  const data = vectors.map((v, index) => ({
    object: 'embedding',
    index,
    embedding: request.encoding === 'base64' ? Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64') : Array.from(v),
  }));
  sendJson(res, 200, { object: 'list', data, model: request.model, usage: { prompt_tokens: tokens, total_tokens: tokens } });
}

/** An embeddings request's unit vectors (cut to its `dimensions`), admitted as any request, and the tokens they took. */
export async function embedded(l: Served, request: EmbeddingsRequest, res: ServerResponse, normalize = true): Promise<{ vectors: Float32Array[]; tokens: number }> {
  if (l.models.resolve(request.model).length > 0) {
    throw badRequest(`embeddings come from the backbone alone, reasoners take no part: ask for model "${l.models.backbone}"`, 'model');
  }
  const size = l.engine.info.embeddingSize;
  if (size === undefined) throw new HttpError(501, 'this server gives no embeddings: start it with --embeddings', 'invalid_request_error', 'embeddings_disabled');
  if (request.dimensions !== undefined && request.dimensions > size) {
    throw badRequest(`dimensions is ${request.dimensions}, more than the model's ${size}`, 'dimensions');
  }
  l.runner.note(res, { model: request.model });
  const { vectors, promptTokens } = await l.runner.admitted(res, () => l.engine.embed(request.input, { normalize }));
  const tokens = promptTokens.reduce((a, b) => a + b, 0);
  l.runner.metrics.promptTokens += tokens;
  l.runner.note(res, { promptTokens: tokens });
  const cut = (v: Float32Array) => (normalize ? unitLength(v.slice(0, request.dimensions)) : v.slice(0, request.dimensions));
  return { vectors: vectors.map((v) => (request.dimensions !== undefined ? cut(v) : v)), tokens };
}
