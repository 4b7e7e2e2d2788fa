/** `/tokenize` and `/detokenize` (vLLM's, and llama.cpp's): the ids a request would run, and the text of ids. */
import type { ServerResponse } from 'node:http';
import type { TextTokenizer } from '../tokenizer/tokenizer.js';
import { sendJson } from './answer-writers.js';
import { chatPrompt } from './chat-turn.js';
import { badRequest } from './errors.js';
import type { TokenizeRequest } from './requests.js';
import type { ChatModel, Loaded } from './served.js';

/**
 * `/tokenize` (vLLM's, and llama.cpp's): the ids a completion or chat request would run, their count and the
 * context; with vLLM's `return_token_strs` each token as the vocabulary spells it, with llama.cpp's `with_pieces`
 * each id beside its piece.
 */
export function tokenize(l: ChatModel, request: TokenizeRequest, res: ServerResponse): void {
  if (request.model !== undefined) l.models.resolve(request.model); // 404 unless served
  const tokenizer = l.tokenizer;
  if (!tokenizer) throw badRequest('this model has no tokenizer.json beside it, so it cannot tokenize text');
  const ids =
    'prompt' in request
      ? tokenizer.encode(request.prompt, request.addSpecialTokens ?? true, l.engine.info.contextLength)
      : chatPrompt(l, request, request.addSpecialTokens ?? false).ids;
  sendJson(res, 200, {
    count: ids.length,
    max_model_len: l.contextLength,
    tokens: request.withPieces ? ids.map((id) => ({ id, piece: tokenPiece(tokenizer, id) })) : ids,
    ...(request.returnTokenStrs ? { token_strs: ids.map((id) => tokenizer.piece(id) ?? '') } : {}),
  });
}

/** `/detokenize` (vLLM's, and llama.cpp's): the text of token ids, special tokens included, as `prompt` (vLLM's) and `content` (llama.cpp's). */
export function detokenize(l: Loaded, request: { model?: string; tokens: number[] }, res: ServerResponse): void {
  if (request.model !== undefined) l.models.resolve(request.model);
  const tokenizer = l.tokenizer;
  if (!tokenizer) throw badRequest('this model has no tokenizer.json beside it, so it cannot detokenize');
  const outside = request.tokens.find((t) => t >= tokenizer.vocabSize);
  if (outside !== undefined) throw badRequest(`token ${outside} is not in the vocabulary (${tokenizer.vocabSize} tokens)`, 'tokens');
  const text = tokenizer.decode(request.tokens, false);
  sendJson(res, 200, { prompt: text, content: text });
}

/** Text decoding that refuses bytes which are not UTF-8 (a BOM kept as the character it is). */
const STRICT_UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** llama.cpp's piece of token `id` (`with_pieces`): its text, or its bytes where they are not UTF-8 (part of a character). */
function tokenPiece(tokenizer: TextTokenizer, id: number): string | number[] {
  const bytes = tokenizer.tokenBytes(id) ?? [];
  try {
    return STRICT_UTF8.decode(Uint8Array.from(bytes));
  } catch {
    return bytes;
  }
}
