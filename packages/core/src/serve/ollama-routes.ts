/**
 * Ollama's API (`/api/*`) over the same engine: chat, generate (a chat turn, text as given, or fill-in-the-middle)
 * and embed, and what its listings (`tags`, `ps`, `show`, `version`) say of the served models.
 */
import type { ServerResponse } from 'node:http';
import { createHash } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { TokenLogprobs } from '../generate/types.js';
import type { PromptInput } from '../runtime/protocol.js';
import type { TextTokenizer } from '../tokenizer/tokenizer.js';
import { isHarmonyTemplate } from '../chat/harmony.js';
import { reasoningTagsOf } from '../chat/reasoning.js';
import { loadModuleDir } from '../modules/module-dir.js';
import { MANIFEST_FILE } from '../modules/manifest.js';
import { JsonLines, sendJson } from './answer-writers.js';
import { chatTurn, toolSyntax } from './chat-turn.js';
import { ChatChoice, finishReason, type ChatDelta } from './choices.js';
import { noFillInMiddle } from './completions-route.js';
import { ollamaOptionsOf, ollamaParameters, withOllamaDefaults } from './defaults-request.js';
import { embedded } from './embeddings-route.js';
import { badRequest } from './errors.js';
import { chatLogprobs, HeldEntries, shownEntries } from './logprobs.js';
import { ollamaListedName } from './models.js';
import { ollamaDone, ollamaDoneReason, ollamaLoadReason, ollamaLogprobs, ollamaMessage, type ChatFields } from './ollama-output.js';
import { ollamaChatLoad, ollamaModelName, parseOllamaChat, parseOllamaEmbed, parseOllamaGenerate, type OllamaEmbedRequest } from './ollama-request.js';
import { isObject, type ChatRequest, type CompletionRequest, type EmbeddingsRequest } from './requests.js';
import { sampling, type ChatModel, type Loaded, type Served } from './served.js';

/** Ollama's POST routes by path, each given the request's JSON body. */
export const OLLAMA_ROUTES: Readonly<Record<string, ((l: Served, body: unknown, res: ServerResponse) => Promise<void>) | undefined>> = {
  // (`name` is the field's older spelling, which Ollama still reads when `model` is left out)
  '/api/show': async (l, body, res) => sendJson(res, 200, await ollamaShow(l, isObject(body) ? body.model || body.name : undefined)),
  '/api/chat': async (l, body, res) => {
    const load = ollamaChatLoad(body);
    if (load === undefined) return ollamaTurn(l, thoughtServed(l, parseOllamaChat(withOllamaDefaults(body, sampling(l))), body), res, 'chat');
    // No messages load the model (loaded already here), or unload it: the answer says so.
    l.models.resolve(load);
    const reason = ollamaLoadReason((body as { keep_alive?: unknown }).keep_alive);
    sendJson(res, 200, { model: load, created_at: new Date().toISOString(), message: { role: 'assistant', content: '' }, done: true, done_reason: reason });
  },
  '/api/generate': async (l, body, res) => {
    const request = parseOllamaGenerate(withOllamaDefaults(body, sampling(l)), (l.options.chatTemplate ?? l.tokenizer?.chatTemplate) !== undefined);
    if (request.kind === 'chat') return ollamaTurn(l, thoughtServed(l, request.chat, body), res, 'generate');
    if (request.kind === 'text') return ollamaText(l, request.completion, res);
    // An empty prompt loads the model (loaded already here), or unloads it: the answer says so.
    l.models.resolve(request.model);
    const reason = ollamaLoadReason((body as { keep_alive?: unknown }).keep_alive);
    sendJson(res, 200, { model: request.model, created_at: new Date().toISOString(), response: '', done: true, done_reason: reason });
  },
  '/api/embed': (l, body, res) => ollamaEmbed(l, parseOllamaEmbed(body, false), res, false),
  '/api/embeddings': (l, body, res) => ollamaEmbed(l, parseOllamaEmbed(body, true), res, true),
};

/**
 * What `/api/version` says: the Ollama release whose API this server speaks (`think` came with 0.9.0), since Ollama's
 * clients read it as that, and editors refuse a server below their minimum (VS Code's Copilot: 0.6.4); the package's
 * own version beside it.
 */
export const OLLAMA_API_VERSION = '0.9.0';

/** When Ollama's `/api/ps` says a served model unloads: never, while the server runs (a date far enough ahead). */
const FOREVER = '2318-01-01T00:00:00Z';

/**
 * The served models as Ollama lists them (each with a tag, as Ollama's clients expect), with the bytes of the files
 * each runs (a composition's, its backbone's and reasoners') and a digest of them (Ollama's CLI prints its first 12
 * characters, and fails on a shorter one).
 */
export async function ollamaModels(l: Loaded, running: boolean): Promise<object[]> {
  const backbone = await ollamaFiles(l.engine.info.modelPath, l.models.backbone);
  const reasoners = new Map(await Promise.all(l.engine.info.reasoners.map(async (r) => [r.name, await ollamaFiles(r.modelPath, r.name)] as const)));
  return l.models.list().map((card) => {
    const parts = [backbone, ...card.reasoners.map((r) => reasoners.get(r)!)];
    return {
      name: ollamaListedName(card.id),
      model: ollamaListedName(card.id),
      modified_at: new Date(card.created * 1000).toISOString(),
      size: parts.reduce((n, p) => n + p.size, 0),
      // (a composition's: a digest of its parts', as an Ollama manifest's digest covers its layers')
      digest: parts.length === 1 ? backbone.digest : sha256Hex(parts.map((p) => p.digest).join(',')),
      details: ollamaDetails(l, card.parent),
      // (`/api/ps`: served models stay loaded until the server stops; Ollama's clients read both fields)
      ...(running ? { expires_at: FOREVER, size_vram: 0, context_length: card.max_model_len ?? l.contextLength } : {}),
    };
  });
}

/** Ollama's `details` of a served model: its family is the architecture its files declare. */
function ollamaDetails(l: Loaded, parent: string | null | undefined): object {
  const family = l.engine.info.architecture;
  return { parent_model: parent ?? '', format: 'onnx', family: family ?? '', families: family ? [family] : null, parameter_size: '', quantization_level: '' };
}

/** Whether a served model's template writes a thought apart from the answer (Ollama's `thinking` capability). */
function writesThought(l: ChatModel): boolean {
  const template = l.options.chatTemplate ?? l.tokenizer?.chatTemplate;
  return reasoningTagsOf(template) !== undefined || isHarmonyTemplate(template);
}

/**
 * A thought asked for (`think` true or a level) of a served model that writes none is Ollama's 400, which its clients
 * read to ask again without `think`; a reply without the thought would pass for the model's whole thinking.
 */
function thoughtServed(l: ChatModel, request: ChatRequest, body: unknown): ChatRequest {
  const think = (body as { think?: unknown }).think;
  l.models.resolve(request.model);
  if ((think === true || typeof think === 'string') && !writesThought(l)) throw badRequest(`"${request.model}" does not support thinking`, 'think');
  return request;
}

/** `/api/show`: a served model's template, its own defaults (license, system prompt, options, messages) and what it can do (Ollama's capabilities). */
async function ollamaShow(l: ChatModel, model: unknown): Promise<object> {
  // (404 unless served; any spelling resolve takes: `:latest` or not, another case)
  const reasoners = l.models.resolve(ollamaModelName(model));
  const template = l.options.chatTemplate ?? l.tokenizer?.chatTemplate;
  const capabilities = [
    'completion',
    // Shown by the template, or described in the system message (generic); a model without a tokenizer takes no chat.
    ...(template && l.tokenizer && (toolSyntax(l) === 'generic' || l.tokenizer.rendersTools(l.options.chatTemplate)) ? ['tools'] : []),
    ...(l.tokenizer?.fimTokens ? ['insert'] : []),
    ...(writesThought(l) ? ['thinking'] : []),
    ...(l.engine.info.embeddingSize !== undefined ? ['embedding'] : []),
  ];
  // (every card has the backbone's context)
  const backbone = l.models.list()[0]!;
  const defaults = l.engine.info.defaults;
  // (a hub export's generation_config.json shown as the Ollama options it amounts to)
  const parameters = defaults?.parameters ?? (defaults?.sampling ? ollamaOptionsOf(defaults.sampling) : {});
  return {
    license: (defaults?.license ?? []).join('\n'),
    modelfile: '',
    parameters: ollamaParameters(parameters),
    template: template ?? '',
    ...(defaults?.system ? { system: defaults.system } : {}),
    ...(defaults?.messages ? { messages: defaults.messages } : {}),
    details: ollamaDetails(l, reasoners.length ? l.models.backbone : null),
    model_info: ollamaModelInfo(l.engine.info.architecture, backbone.max_model_len, await embeddingLength(l)),
    capabilities,
  };
}

/**
 * An Ollama chat turn (`/api/chat`, or `/api/generate` with the prompt as the user's message): the chat endpoint's
 * turn, each delta a line of Ollama's stream (`message`, or generate's `response` and `thinking`) and a closing
 * line with the counts, or the whole answer in one.
 */
async function ollamaTurn(l: Served, request: ChatRequest, res: ServerResponse, shape: 'chat' | 'generate'): Promise<void> {
  const { prompt, parsing } = chatTurn(l, request);
  // (Ollama's calls carry their arguments as objects: one cut off by the token limit is left out)
  const choice = new ChatChoice(parsing, request.logprobs, false);
  const chunk = (fields: ChatFields, logprobs: ChatDelta['logprobs']) => {
    const message = ollamaMessage(fields);
    const lp = ollamaLogprobs(logprobs);
    return {
      model: request.model,
      created_at: new Date().toISOString(),
      ...(shape === 'chat' ? { message } : { response: message.content, ...(message.thinking ? { thinking: message.thinking } : {}) }),
      ...(lp ? { logprobs: lp } : {}),
    };
  };
  await l.runner.run(l, request, { promptIds: prompt.ids }, res, async (stream, first, rest, clock) => {
    if (!request.stream) {
      const result = await l.runner.drain(stream, first, rest, clock);
      const { choice: answer, finish } = choice.message(result.rows[0]!);
      const { message, logprobs } = answer as { message: ChatFields; logprobs: ChatDelta['logprobs'] };
      sendJson(res, 200, { ...chunk(message, logprobs), ...ollamaDone(result, ollamaDoneReason(finish)) });
      return finish;
    }
    const lines = new JsonLines(res);
    const send = ({ delta, logprobs }: ChatDelta) => lines.send({ ...chunk(delta as ChatFields, logprobs), done: false });
    const result = await l.runner.drain(stream, first, rest, clock, (e) => choice.push(e.text, e.logprobs).forEach(send));
    const deltas = choice.end(result.rows[0]!.finishReason);
    const last = deltas.pop()!;
    deltas.forEach(send);
    lines.end({ ...chunk(last.delta as ChatFields, last.logprobs), ...ollamaDone(result, ollamaDoneReason(last.finish!)) });
    return last.finish!;
  });
}

/** `/api/generate` on text as given (`raw`, a model without a chat template) or around a `suffix` (fill-in-the-middle). */
async function ollamaText(l: Served, request: CompletionRequest, res: ServerResponse): Promise<void> {
  request.options.maxTokens ??= l.contextLength;
  if (request.suffix !== undefined && !l.tokenizer?.fimTokens) throw noFillInMiddle(l);
  const input: PromptInput = { prompt: request.prompt as string, ...(request.suffix !== undefined ? { suffix: request.suffix } : {}) };
  const chunk = (response: string, entries?: readonly TokenLogprobs[]) => {
    const lp = entries && request.logprobs ? ollamaLogprobs(chatLogprobs(entries)) : undefined;
    return { model: request.model, created_at: new Date().toISOString(), response, ...(lp ? { logprobs: lp } : {}) };
  };
  await l.runner.run(l, request, input, res, async (stream, first, rest, clock) => {
    if (!request.stream) {
      const result = await l.runner.drain(stream, first, rest, clock);
      const row = result.rows[0]!;
      const finish = finishReason(row.finishReason);
      // (the shown tokens' entries, as on the chat turn: an end-of-sequence token or a stop string's tokens show nothing)
      sendJson(res, 200, { ...chunk(row.text, shownEntries(row.logprobs ?? [], row.text.length)), ...ollamaDone(result, ollamaDoneReason(finish)) });
      return finish;
    }
    const lines = new JsonLines(res);
    // Tokens not given out yet, each with the first text after its own has started.
    const held = new HeldEntries();
    const result = await l.runner.drain(stream, first, rest, clock, ({ text, logprobs }) => {
      held.push(text, logprobs);
      if (!text) return;
      const out = held.released();
      lines.send({ ...chunk(text, out.length ? out : undefined), done: false });
    });
    const row = result.rows[0]!;
    const finish = finishReason(row.finishReason);
    lines.end({ ...chunk('', held.end()), ...ollamaDone(result, ollamaDoneReason(finish)) });
    return finish;
  });
}

/**
 * `/api/embed` (unit vectors, as Ollama's) and the older `/api/embeddings` (one vector: the hidden state as it is, as Ollama gives it);
 * with nothing to embed, an empty answer once the model is known (Ollama's warm-up).
 */
async function ollamaEmbed(l: Served, request: OllamaEmbedRequest, res: ServerResponse, legacy: boolean): Promise<void> {
  const t0 = performance.now();
  if (request.kind === 'load') {
    l.models.resolve(request.model); // 404 unless served
    return sendJson(res, 200, legacy ? { embedding: [] } : { model: request.model, embeddings: [], total_duration: 0, load_duration: 0, prompt_eval_count: 0 });
  }
  const limit = l.engine.info.contextLength;
  // (`truncate`: Ollama's way with an input past the context; without it, the engine's refusal names the input)
  const embed = request.truncate && limit !== undefined && l.tokenizer ? { ...request.embed, input: { ids: withinContext(l.tokenizer, request.embed.input, limit) } } : request.embed;
  const { vectors, tokens } = await embedded(l, embed, res, !legacy);
  if (legacy) return sendJson(res, 200, { embedding: Array.from(vectors[0]!) });
  sendJson(res, 200, { model: request.embed.model, embeddings: vectors.map((v) => Array.from(v)), total_duration: Math.round((performance.now() - t0) * 1e6), load_duration: 0, prompt_eval_count: tokens });
}

/**
 * Ollama's `model_info`: the architecture, its context length and its hidden size as GGUF keys name them
 * (`general.architecture`, `<arch>.context_length`, `<arch>.embedding_length`; `ollama show` reads them under the
 * architecture's name, other clients `general.context_length` too). A model whose files declare no architecture goes
 * by `onnx`, the format it runs in (as `details.format` says), so that its keys are still found.
 */
function ollamaModelInfo(architecture: string | undefined, contextLength: number | undefined, embeddingLength: number | undefined): Record<string, string | number> {
  const arch = architecture ?? 'onnx';
  return {
    'general.architecture': arch,
    ...(contextLength !== undefined ? { 'general.context_length': contextLength, [`${arch}.context_length`]: contextLength } : {}),
    ...(embeddingLength !== undefined ? { [`${arch}.embedding_length`]: embeddingLength } : {}),
  };
}

/** What Ollama's listings say of a model's files: a digest (64 hex digits), their bytes, the hidden size they declare. */
interface OllamaFiles {
  digest: string;
  size: number;
  hiddenSize?: number;
}

/**
 * The files of the graph at `modelPath`, for Ollama's listings: a module's from its manifest (its digest the GGUF's it
 * was converted from, as Ollama names a model's blob by it, else its graph's); a bare graph's bytes (with its external
 * data) and a digest of the name it is served as, since hashing a multi-GB file to list it is not worth the wait.
 */
async function ollamaFiles(modelPath: string, name: string): Promise<OllamaFiles> {
  const dir = dirname(modelPath);
  if (existsSync(join(dir, MANIFEST_FILE))) {
    const { manifest } = await loadModuleDir(dir, { verify: false });
    const from = manifest.provenance?.convertedFrom;
    const gguf = typeof from === 'object' && typeof from['sha256'] === 'string' ? from['sha256'] : undefined;
    const size = Object.values(manifest.files).reduce((n, f) => n + f.size, 0);
    return { digest: gguf ?? manifest.files.model.sha256, size, ...(manifest.compat.hiddenSize !== undefined ? { hiddenSize: manifest.compat.hiddenSize } : {}) };
  }
  const size = [modelPath, `${modelPath}.data`].filter((p) => existsSync(p)).reduce((n, p) => n + statSync(p).size, 0);
  return { digest: sha256Hex(name), size };
}

/** The backbone's hidden size (its embeddings' length), where its graph or its manifest gives it. */
async function embeddingLength(l: Loaded): Promise<number | undefined> {
  const { embeddingSize, signature } = l.engine.info;
  return embeddingSize ?? signature.hiddenState?.hiddenSize ?? signature.inputsEmbeds?.hiddenSize ?? (await ollamaFiles(l.engine.info.modelPath, l.models.backbone)).hiddenSize;
}

function sha256Hex(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/**
 * Each input cut to the context's `limit` positions, as Ollama's `/api/embed` cuts one (`truncate`): its first tokens,
 * and the token the tokenizer ends every input with (an EOS that last-token pooling reads) kept last.
 */
function withinContext(tokenizer: TextTokenizer, input: EmbeddingsRequest['input'], limit: number): number[][] {
  const added = tokenizer.encode('', true);
  return ('ids' in input ? input.ids : input.texts.map((t) => encodedPrefix(tokenizer, t, limit))).map((ids) => {
    if (ids.length <= limit) return ids;
    // (a tokenizer that adds one token only adds it first, BOS, unless it ends the input)
    const ends = added.length > 0 && ids.at(-1) === added.at(-1) && !(added.length === 1 && ids[0] === added[0]);
    return ends ? [...ids.slice(0, limit - 1), ids.at(-1)!] : ids.slice(0, limit);
  });
}

/**
 * The tokens of `text`, or of a prefix of it long enough to give more than `limit` of them (a few more, so that where
 * the prefix is cut does not change the ones kept): an 8 MB input encoded whole would hold the server's thread for a minute.
 */
function encodedPrefix(tokenizer: TextTokenizer, text: string, limit: number): number[] {
  for (let chars = limit * 4; ; chars *= 4) {
    const ids = tokenizer.encode(text.slice(0, chars), true);
    if (chars >= text.length || ids.length > limit + 16) return ids;
  }
}
