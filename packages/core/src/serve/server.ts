/**
 * `reasonplug serve`: an OpenAI-compatible HTTP server (node:http, or node:https with `tls`) over one engine, which
 * also answers OpenAI's Responses API, Anthropic's Messages API and Ollama's API (`/api/*`) through the same chat turn.
 * Concurrent requests are concurrent `engine.stream` calls; the server's own admission keeps at most `maxBatch` of
 * them in the engine and `maxQueue` more waiting, and answers 429 with `Retry-After` beyond that. The socket listens
 * before the model loads, so `/health` can say 503 while it does. Browser pages of other origins are let in or refused
 * first (cors.ts); each answered request's record goes to `onRequest` (request-log.ts).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { listener, type TlsFiles } from './listener.js';
import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import type { AddressInfo } from 'node:net';
import { Engine, type EngineOptions, type GenerationStream, type StreamOptions } from '../engine.js';
import { PACKAGE_VERSION } from '../package-version.js';
import type { GenerationResult, TokenEvent, TokenLogprobs } from '../generate/types.js';
import type { PromptInput } from '../runtime/protocol.js';
import { DECODE_LOOK_BEHIND, TextTokenizer, TokenizerError, type ChatMessage } from '../tokenizer/tokenizer.js';
import { resolveModelPath } from '../registry/resolve-model.js';
import { loadModuleDir } from '../modules/module-dir.js';
import { ggufModuleName } from '../gguf/gguf-module.js';
import { MANIFEST_FILE } from '../modules/manifest.js';
import { ChatChoice, finishReason, type ChatDelta } from './choices.js';
import { keptTokens, replyFormat, replyParsing, thinkingBudgetFor, thoughtFirst, toolsRead, type ReplyParsing } from '../chat/reply.js';
import { cutAfterFinalMessage } from '../chat/continuation.js';
import { parseResponsesRequest, type ResponsesRequest } from './responses-request.js';
import { ResponseOutput, type ResponseUsage } from './responses-output.js';
import { ResponseItems } from './response-items.js';
import { itemId, NamedEvents, type BlockOutput, type Event } from './reply-blocks.js';
import { parseMessagesRequest } from './messages-request.js';
import { MessageOutput, stopReason } from './messages-output.js';
import { toolCallSyntaxOf, type ToolCallSyntax } from '../constrain/tool-syntax.js';
import { toolsShown } from '../tokenizer/tools-in-prompt.js';
import type { ReasoningFormat } from '../chat/reasoning.js';
import { HttpError, badRequest, toHttpError } from './errors.js';
import { jsonDepth, MAX_BODY_DEPTH } from './json-depth.js';
import { ServerMetrics } from './metrics.js';
import { chatLogprobs, completionLogprobs, joinLegacy, promptLegacyLogprobs, shownEntries, type LegacyLogprobs } from './logprobs.js';
import { ollamaChatLoad, ollamaModelName, parseOllamaChat, parseOllamaEmbed, parseOllamaGenerate, type OllamaEmbedRequest } from './ollama-request.js';
import { ollamaDone, ollamaDoneReason, ollamaLoadReason, ollamaLogprobs, ollamaMessage, type ChatFields } from './ollama-output.js';
import { reasoningTagsOf } from '../chat/reasoning.js';
import { isHarmonyTemplate } from '../chat/harmony.js';
import { ollamaListedName, ollamaServedName, ServedModels } from './models.js';
import { unitLength } from '../runtime/unit-length.js';
import { checkHost, CorsPolicy } from './cors.js';
import { isOllamaRef, ollamaDisplayName } from '../modules/ollama-store.js';
import { withModelMessages, type SamplingDefaults } from '../modules/model-defaults.js';
import { CHAT_FIELDS, MESSAGES_FIELDS, ollamaOptionsOf, ollamaParameters, RESPONSES_FIELDS, withOllamaDefaults, withSamplingDefaults } from './defaults-request.js';
import type { RequestRecord } from './request-log.js';
import type { TransferProgress } from '../registry/download.js';
import {
  isObject,
  parseChatRequest,
  parseCompletionRequest,
  parseDetokenizeRequest,
  parseEmbeddingsRequest,
  parseTokenizeRequest,
  toolCallFormat,
  type ChatPromptSpec,
  type ChatRequest,
  type CompletionRequest,
  type EmbeddingsRequest,
  type ParsedRequest,
  type TokenizeRequest,
} from './requests.js';

/** How to run the server. */
export interface ServeOptions {
  /** What to load (model, reasoners, projector, registry, device, …), as for `Engine.load`. */
  engine: EngineOptions;
  /** The backbone's served name; default: a model Ollama has pulled, its Ollama name; else its module name, else its file or directory name. */
  name?: string;
  /** Extra model names: alias → `<backbone>+<reasoner>+…`. */
  aliases?: Record<string, string>;
  /** Bearer tokens accepted on `/v1/*`; none: no authentication. */
  apiKeys?: string[];
  host?: string;
  /** 0 picks a free port. Default 8000. */
  port?: number;
  /** Requests let into the engine at once (default 8). */
  maxBatch?: number;
  /** Requests waiting beyond those (default 64); more get 429. */
  maxQueue?: number;
  /** A chat template to use instead of the model's. */
  chatTemplate?: string;
  /** Template variables every chat request renders with (its `chat_template_kwargs` override them by key). */
  chatTemplateKwargs?: Record<string, unknown>;
  /**
   * How the model writes tool calls (`hermes`, Llama 3's `json`, …, or `generic`: tools described in the system message
   * and calls as a JSON reply); default: as its chat template renders them, `generic` where it renders none.
   */
  toolCallSyntax?: ToolCallSyntax;
  /** Whether a reply's thought (`<think>…</think>`) is given out as `reasoning_content` (`auto`, the default) or left in the content (`none`); a request's `reasoning_format` overrides it. */
  reasoningFormat?: ReasoningFormat;
  /** Tokens a chat reply's thought may take before its closing tag is written (a request's `thinking_token_budget` overrides it); default: no limit. */
  thinkingBudget?: number;
  /** Largest request body in bytes (default 8 MiB). */
  maxBodyBytes?: number;
  /**
   * Milliseconds a request's body may go without a byte arriving, from its headers on (default 30 000); a body stalled
   * that long is refused with 408 and its connection closed, so that a client trickling it cannot hold a request open.
   */
  bodyTimeoutMs?: number;
  /**
   * Milliseconds a streamed answer may wait for its client to take what was written (default 60 000, as nginx's
   * send_timeout); a client that reads nothing for that long is cut off, its row stopped and its place freed.
   */
  sendTimeoutMs?: number;
  /**
   * Milliseconds `close()` waits for admitted and queued requests to finish (default 30 000, as Kubernetes' default
   * grace period); then it closes their connections (their rows stop at their next step) and stops waiting for the engine.
   */
  shutdownTimeoutMs?: number;
  /**
   * Origins of browser pages allowed to call besides loopback ones (`https://app.example.com`; `*`: any). Requests
   * from other origins get 403; requests without an `Origin` header are not affected (see serve/cors.ts).
   */
  corsOrigins?: string[];
  /** Called with each request's record when its answer ends (`reasonplug serve` writes it as a line; see request-log.ts). */
  onRequest?: (record: RequestRecord) => void;
  /** Serve HTTPS with this PEM key and certificate (chain) instead of plain HTTP. */
  tls?: TlsFiles;
}

/** A listening server. */
export interface RunningServer {
  /** `http://host:port`. */
  readonly url: string;
  /** Settles once the model is loaded (rejects when loading fails; the server then answers 503). */
  readonly ready: Promise<void>;
  readonly metrics: ServerMetrics;
  /**
   * Stops accepting, refuses the requests still sending their bodies, finishes every admitted and queued request
   * (those still running after `shutdownTimeoutMs` are cut off), frees the engine, closes the socket.
   */
  close(): Promise<void>;
}

/** What serving needs once the model is loaded. */
interface Loaded {
  engine: Engine;
  models: ServedModels;
  tokenizer?: TextTokenizer;
  /** Positions one row may use (the model's context length, else 2048), for the KV capacity without a budget. */
  contextLength: number;
}

/** One admitted or waiting request. */
interface Slot {
  admit?: () => void;
  /** The engine rows its call runs (its prompts × choices). */
  rows: number;
}

/** The rows a call of `input` runs in the engine: one per prompt (a call's n choices are listed as prompts of their own). */
function rowsOf(input: PromptInput): number {
  if ('promptIds' in input) return typeof input.promptIds[0] === 'number' ? 1 : input.promptIds.length;
  if ('prompt' in input) return Array.isArray(input.prompt) ? input.prompt.length : 1;
  return 1;
}

/**
 * Whether a request could present `key`: requests' keys are read trimmed, so an empty or space-padded key would
 * never match and every request would get 401.
 */
export function usableApiKey(key: unknown): key is string {
  return typeof key === 'string' && key !== '' && key === key.trim();
}

/** Starts the server: listens at once, loads the model behind it. */
export async function startServer(options: ServeOptions): Promise<RunningServer> {
  const maxBatch = options.maxBatch ?? 8;
  const maxQueue = options.maxQueue ?? 64;
  if (!(Number.isSafeInteger(maxBatch) && maxBatch >= 1)) throw new RangeError(`maxBatch must be a whole number >= 1 (got ${maxBatch})`);
  if (!(Number.isSafeInteger(maxQueue) && maxQueue >= 0)) throw new RangeError(`maxQueue must be a whole number >= 0 (got ${maxQueue})`);
  if (!(options.apiKeys ?? []).every(usableApiKey)) throw new RangeError('apiKeys must be non-empty strings without surrounding whitespace');
  const bodyTimeoutMs = options.bodyTimeoutMs ?? 30_000;
  const sendTimeoutMs = options.sendTimeoutMs ?? 60_000;
  const shutdownTimeoutMs = options.shutdownTimeoutMs ?? 30_000;
  for (const [name, ms] of [['bodyTimeoutMs', bodyTimeoutMs], ['sendTimeoutMs', sendTimeoutMs], ['shutdownTimeoutMs', shutdownTimeoutMs]] as const) {
    // (setTimeout fires at once past 2^31 - 1 ms)
    if (!(Number.isSafeInteger(ms) && ms >= 1 && ms < 2 ** 31)) throw new RangeError(`${name} must be a whole number of milliseconds from 1 to ${2 ** 31 - 1} (got ${ms})`);
  }
  const cors = new CorsPolicy(options.corsOrigins);
  const metrics = new ServerMetrics();
  const running = new Set<Slot>();
  const waiting: Slot[] = [];
  const keys = (options.apiKeys ?? []).map((k) => Buffer.from(k));
  let loaded: Loaded | undefined;
  let loadError: Error | undefined;
  let loading: TransferProgress | undefined;
  let draining = false;
  /** Requests being handled (read, queued, running, answering): what a shutdown waits for. */
  let active = 0;
  let idle: (() => void) | undefined;
  /** The refusals of the bodies being read, each ending its read (called as the server shuts down). */
  const reading = new Set<(err: HttpError) => void>();

  const admit = (slot: Slot, signal: AbortSignal): Promise<void> => {
    if (running.size < maxBatch) {
      running.add(slot);
      return Promise.resolve();
    }
    if (waiting.length >= maxQueue) {
      metrics.rejected++;
      throw new HttpError(429, `the server is full: ${running.size} requests running and ${waiting.length} waiting (max_queue ${maxQueue}); retry later`, 'rate_limit_error', 'queue_full', {
        'Retry-After': String(retryAfter()),
      });
    }
    return new Promise<void>((resolve, reject) => {
      slot.admit = resolve;
      waiting.push(slot);
      signal.addEventListener('abort', () => {
        const at = waiting.indexOf(slot);
        if (at >= 0) {
          waiting.splice(at, 1);
          reject(new Error('client went away while queued'));
        }
      }, { once: true });
    });
  };
  const release = (slot: Slot) => {
    if (!running.delete(slot)) return;
    const next = waiting.shift();
    if (next) {
      running.add(next);
      next.admit!();
    }
  };
  /** Seconds until a slot is likely free: the mean request time so far × the queue's depth in batches. */
  const retryAfter = () => {
    const { sum, count } = metrics.e2e.totals();
    const mean = count ? sum / count : 1;
    return Math.max(1, Math.ceil((mean * (waiting.length + 1)) / maxBatch));
  };

  /** Each request's record while it is answered, filled in as it goes (given to `onRequest` at its end). */
  const records = new WeakMap<ServerResponse, RequestRecord>();
  const server = listener(options.tls, (req, res) => {
    const sent = requestPath(req.url);
    // llama.cpp's server answers the OpenAI routes without `/v1` too, for clients whose base URL leaves it out.
    const path = UNPREFIXED.has(sent) ? `/v1${sent}` : sent;
    // The request's id, a proxy's own where one sent it: OpenAI's SDKs read it as `x-request-id`, Anthropic's as
    // `request-id` (each gives it as `_request_id` for logs).
    const given = req.headers['x-request-id'];
    const requestId = typeof given === 'string' && REQUEST_ID.test(given) ? given : `req_${randomUUID().replaceAll('-', '')}`;
    res.setHeader('x-request-id', requestId);
    res.setHeader('request-id', requestId);
    // Anthropic's and Ollama's clients read their own error shapes.
    const dialect = path.startsWith('/v1/messages') ? 'anthropic' : path.startsWith('/api/') ? 'ollama' : 'openai';
    const answered = handle(req, res, path).catch((err) => {
      const error = toHttpError(err, path);
      note(res, { error: error.message });
      sendError(res, error, dialect);
    });
    if (options.onRequest) track(req, res, sent, answered, options.onRequest);
  });

  /** Adds what a handler learnt to its request's record, when requests are recorded. */
  const note = (res: ServerResponse, fields: Partial<RequestRecord>) => {
    const record = records.get(res);
    if (record) Object.assign(record, fields);
  };

  /**
   * Records a request: its status and time as the connection closes, given to `onRequest` once its handler is done
   * too (a client gone mid-generation closes first; its row's finish and tokens are noted as the row stops).
   */
  function track(req: IncomingMessage, res: ServerResponse, path: string, answered: Promise<void>, onRequest: (record: RequestRecord) => void): void {
    const arrival = performance.now();
    const record: RequestRecord = { time: new Date(), method: req.method ?? '', path, status: 0, ms: 0, aborted: false };
    records.set(res, record);
    res.once('close', () => {
      record.aborted = !res.writableFinished;
      // 499 (nginx's "client closed request") for a client gone before any answer was written.
      record.status = res.headersSent || !record.aborted ? res.statusCode : 499;
      record.ms = performance.now() - arrival;
      void answered.then(() => onRequest(record));
    });
  }

  async function handle(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    checkHost(req, options.host ?? '127.0.0.1');
    // First, so that a page allowed to call can read every answer, errors included; a preflight ends here.
    if (cors.apply(req, res)) return;
    const method = routedMethod(req);
    // (`/v1/health`: llama.cpp's alias, which its clients probe under their `/v1` base URL)
    if (method === 'GET' && (path === '/health' || path === '/v1/health')) {
      if (loaded && !draining) return sendJson(res, 200, { status: 'ok' });
      if (draining) return sendJson(res, 503, { status: 'draining' });
      if (loadError) return sendJson(res, 503, { status: `failed: ${loadError.message}` });
      return sendJson(res, 503, { status: 'loading', ...(loading ? { progress: { file: loading.file, bytes: loading.bytes, size: loading.size } } : {}) });
    }
    if (method === 'GET' && path === '/metrics') {
      // (a call of more rows than --max-batch runs when the batch is empty: the rows it holds are then the capacity;
      // counted before the engine is asked, so that a call ending meanwhile leaves its rows in the capacity, as its
      // bytes may still be in the engine's answer)
      const held = [...running].reduce((n, slot) => n + slot.rows, 0);
      // The engine's count of the KV bytes it holds, against its budget or maxBatch rows of full context.
      const kv = loaded ? await loaded.engine.stats().catch(() => undefined) : undefined;
      const rows = Math.max(kv?.maxBatch ?? 0, held);
      const capacity = kv ? (kv.kvBudgetBytes ?? rows * loaded!.contextLength * kv.bytesPerPosition) : 0;
      res.writeHead(200, { 'Content-Type': 'text/plain; version=0.0.4; charset=utf-8' });
      res.end(
        metrics.render(loaded?.models.backbone ?? options.name ?? 'loading', {
          running: running.size,
          waiting: waiting.length,
          kvUsage: capacity > 0 ? Math.min(1, kv!.kvBytes / capacity) : 0,
          kvBytes: kv?.kvBytes ?? 0,
          kvCapacityBytes: capacity,
          prefixCache: kv?.prefixCache,
          drafts: kv?.drafts,
        }),
      );
      return;
    }
    if (method === 'POST' && (path === '/tokenize' || path === '/detokenize')) {
      authorize(req);
      if (!loaded) throw notLoaded();
      const body = await readJson(req);
      return path === '/tokenize' ? tokenize(loaded, parseTokenizeRequest(body), res) : detokenize(loaded, parseDetokenizeRequest(body), res);
    }
    if (path.startsWith('/api/')) return ollama(req, res, path);
    // Ollama answers its root with 200, which its clients and editors' providers probe before anything else.
    if (method === 'GET' && path === '/') {
      res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8' });
      res.end('reasonplug is running (OpenAI, Anthropic and Ollama APIs)');
      return;
    }
    if (!path.startsWith('/v1/')) throw noRoute(req, path);
    const l = servable(req);
    if (method === 'GET' && path === '/v1/models') return sendJson(res, 200, { object: 'list', data: l.models.list() });
    if (method === 'GET' && path.startsWith('/v1/models/')) {
      const id = modelIdOf(path.slice('/v1/models/'.length));
      const reasoners = l.models.resolve(id); // 404 unless served
      // Any composition is served, listed or not (`b+r2+r1` is not among the cards).
      const listed = l.models.list().find((m) => m.id === id);
      return sendJson(res, 200, listed ?? { ...l.models.list()[0]!, id, parent: l.models.backbone, reasoners });
    }
    if (method === 'POST' && path === '/v1/messages/count_tokens') {
      const request = parseMessagesRequest(await readJson(req), true);
      l.models.resolve(request.model); // 404 unless served
      return sendJson(res, 200, { input_tokens: chatPrompt(l, request).ids.length });
    }
    const endpoint =
      method === 'POST' ? ({ '/v1/chat/completions': chat, '/v1/completions': completion, '/v1/embeddings': embeddings, '/v1/responses': responses, '/v1/messages': messages } as const)[path] : undefined;
    if (endpoint) {
      active++;
      try {
        const body = await readJson(req);
        if (endpoint === embeddings) return await embeddings(l, parseEmbeddingsRequest(body), res);
        if (endpoint === responses) {
          const scope = itemScope(req);
          const held = { get: (id: string) => responseItems.get(id, scope) };
          return await responses(l, parseResponsesRequest(withSamplingDefaults(body, sampling(l), RESPONSES_FIELDS), held), res, scope);
        }
        if (endpoint === messages) return await messages(l, parseMessagesRequest(withSamplingDefaults(body, sampling(l), MESSAGES_FIELDS)), res);
        const defaulted = withSamplingDefaults(body, sampling(l), CHAT_FIELDS);
        return await (endpoint === chat ? chat(l, parseChatRequest(defaulted), res) : completion(l, parseCompletionRequest(defaulted), res));
      } finally {
        if (--active === 0) idle?.();
      }
    }
    throw noRoute(req, path);
  }

  /** The served model's own sampling defaults, which a request's body gets where it says nothing (defaults-request.ts). */
  function sampling(l: Loaded): SamplingDefaults | undefined {
    return l.engine.info.defaults?.sampling;
  }

  /** The loaded model for an API request: the caller authorized, the server not shutting down, the model loaded. */
  function servable(req: IncomingMessage): Loaded {
    authorize(req);
    if (draining) throw new HttpError(503, 'the server is shutting down', 'server_error', 'shutting_down', { Connection: 'close' });
    if (!loaded) throw notLoaded();
    return loaded;
  }

  /**
   * The 503 of a request before the model is loaded: while it loads, with `Retry-After` (the OpenAI SDKs wait that
   * long, up to a minute, where their own backoff gave up within 2 s); once it failed, with OpenAI's
   * `x-should-retry: false`, since no retry can succeed.
   */
  function notLoaded(): HttpError {
    if (loadError) return new HttpError(503, `the model failed to load: ${loadError.message}`, 'server_error', 'loading', { 'x-should-retry': 'false' });
    return new HttpError(503, 'the model is still loading', 'server_error', 'loading', { 'Retry-After': String(LOADING_RETRY_SECONDS) });
  }

  /** The API key a request presents (Anthropic's clients send it as x-api-key). */
  function presentedKey(req: IncomingMessage): string | undefined {
    const m = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? '');
    const header = req.headers['x-api-key'];
    return m?.[1]?.trim() ?? (typeof header === 'string' ? header.trim() : undefined);
  }

  /**
   * Whose stored Responses items a request may name: those answered to the same API key (a digest of it), or, on a
   * server without keys, everyone's.
   */
  function itemScope(req: IncomingMessage): string {
    return keys.length === 0 ? '' : createHash('sha256').update(presentedKey(req) ?? '').digest('hex');
  }

  function authorize(req: IncomingMessage): void {
    if (keys.length === 0) return;
    const key = presentedKey(req);
    const given = key ? Buffer.from(key) : undefined;
    if (!given || !keys.some((k) => k.length === given.length && timingSafeEqual(k, given))) {
      throw new HttpError(401, given ? 'Incorrect API key provided' : 'Missing API key: send Authorization: Bearer <key> (or x-api-key)', 'invalid_request_error', 'invalid_api_key');
    }
  }

  async function readJson(req: IncomingMessage): Promise<unknown> {
    const text = (await readBody(req)).toString('utf8');
    let body: unknown;
    try {
      // (a byte order mark before the JSON is allowed to be ignored, RFC 8259 §8.1, and Python's json.loads does)
      body = JSON.parse(text.startsWith('\uFEFF') ? text.slice(1) : text);
    } catch (err) {
      throw badRequest(`the request body is not JSON: ${(err as Error).message}`, null, 'invalid_json');
    }
    if (jsonDepth(body, MAX_BODY_DEPTH) > MAX_BODY_DEPTH) throw badRequest(`the request body nests arrays and objects more than ${MAX_BODY_DEPTH} levels deep`, null, 'too_deep');
    return body;
  }

  /**
   * A request's body, refused once larger than the limit (413), once `bodyTimeoutMs` has passed (408), or as the
   * server shuts down (503). A refused body is left unread, not destroyed (which would close the connection before
   * the refusal is written): the refusal says `Connection: close`, so the connection ends after it.
   */
  async function readBody(req: IncomingMessage): Promise<Buffer> {
    const limit = options.maxBodyBytes ?? 8 * 2 ** 20;
    let refuse!: (err: HttpError) => void;
    const refused = new Promise<never>((_, reject) => (refuse = reject));
    // (the time between two reads, as nginx's client_body_timeout: a large body sent steadily takes what it takes)
    let timer: NodeJS.Timeout | undefined;
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(
        () => refuse(new HttpError(408, `no part of the request body arrived for ${bodyTimeoutMs / 1000} s`, 'invalid_request_error', 'request_timeout', { Connection: 'close' })),
        bodyTimeoutMs,
      );
    };
    arm();
    reading.add(refuse);
    const chunks = req[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
    const body: Buffer[] = [];
    try {
      for (let size = 0; ; ) {
        const next = await Promise.race([chunks.next(), refused]);
        if (next.done) return Buffer.concat(body);
        arm();
        size += next.value.length;
        if (size > limit) throw new HttpError(413, `the request body is larger than ${limit} bytes`, 'invalid_request_error', 'body_too_large', { Connection: 'close' });
        body.push(next.value);
      }
    } finally {
      clearTimeout(timer);
      reading.delete(refuse);
    }
  }

  /** Runs one request: admission, the engine call, its metrics; `consume` reads the stream and answers. */
  async function run(
    l: Loaded,
    request: ParsedRequest,
    input: PromptInput,
    res: ServerResponse,
    consume: (stream: GenerationStream, first: IteratorResult<TokenEvent>, rest: AsyncIterator<TokenEvent>, clock: TokenClock) => Promise<string>,
  ): Promise<void> {
    note(res, { model: request.model });
    // The model name is checked even when the extension lists the reasoners itself.
    const named = l.models.resolve(request.model).map((name) => ({ name }));
    if (request.reasoners) l.models.checkExtension(request.reasoners);
    const reasoners = request.reasoners ?? named;
    const arrival = performance.now();
    const controller = new AbortController();
    res.on('close', () => {
      if (!res.writableFinished) controller.abort();
    });
    const slot: Slot = { rows: rowsOf(input) };
    await admit(slot, controller.signal).catch((err: unknown) => {
      // A client gone while queued finished too, aborted (as the metrics' reasons and the request log have it).
      if (controller.signal.aborted) {
        note(res, { finishReason: 'abort' });
        metrics.countFinished('abort');
        metrics.e2e.observe((performance.now() - arrival) / 1000);
      }
      throw err;
    });
    let reason = 'error';
    try {
      if (controller.signal.aborted) return void (reason = 'abort');
      // (vLLM's `skip_special_tokens: false`: every special token's text stays in the reply, beside those it is read by)
      const keepTokens = request.keepSpecialTokens && l.tokenizer ? [...new Set([...(request.options.keepTokens ?? []), ...specialTokenTexts(l.tokenizer)])] : request.options.keepTokens;
      const callOptions: StreamOptions = { ...request.options, ...(keepTokens ? { keepTokens } : {}), reasoners, signal: controller.signal };
      const stream = l.engine.stream(input, callOptions);
      const iterator = stream[Symbol.asyncIterator]();
      // Faults of the request (a bad schema, an unknown reasoner, a prompt too long) surface before the
      // first token: waiting for it lets them be a 400 rather than a broken stream.
      const first = await iterator.next();
      const clock = new TokenClock(arrival, metrics);
      if (!first.done) clock.tick(first.value.row);
      // A streamed answer takes its next event only once what was written has gone out to the client; one that reads
      // nothing for the send deadline is cut off (its row stops and frees its place), as nginx's send_timeout does.
      const rest: AsyncIterator<TokenEvent> = {
        next: async () => {
          await flowing(res, sendTimeoutMs);
          return iterator.next();
        },
      };
      reason = await consume(stream, first, rest, clock);
      clock.end();
      const result = await stream.result;
      // (the engine counts the prompt once per row; the n rows of one prompt share its prefill)
      const promptTokens = result.usage.promptTokens / request.n;
      metrics.promptTokens += promptTokens;
      note(res, { promptTokens, completionTokens: result.usage.completionTokens });
    } finally {
      const finishReason = controller.signal.aborted ? 'abort' : reason;
      note(res, { finishReason });
      metrics.countFinished(finishReason);
      metrics.e2e.observe((performance.now() - arrival) / 1000);
      release(slot);
    }
  }

  /**
   * A chat's prompt: the messages (and tools) rendered with the chat template, and its ids (the tokenizer's BOS/EOS
   * added around them with `addSpecialTokens`; only the last `keep` of them with one). Continuing the final message,
   * the prompt ends where that message's text does (the template's end of turn cut off).
   */
  function chatPrompt(l: Loaded, spec: ChatPromptSpec & Partial<Pick<ChatRequest, 'options'>>, addSpecialTokens = false, keep?: number): { text: string; ids: number[] } {
    const tokenizer = l.tokenizer;
    if (!tokenizer) throw badRequest('this model has no tokenizer.json beside it, so it cannot take chat messages', 'messages');
    if (!options.chatTemplate && !tokenizer.chatTemplate) {
      throw badRequest(`the model ${l.models.backbone} has no chat template; start the server with --chat-template, or use /v1/completions`, 'messages', 'no_chat_template');
    }
    const template = options.chatTemplate ? { template: options.chatTemplate } : {};
    const extra = { ...options.chatTemplateKwargs, ...spec.templateKwargs };
    const generic = toolSyntax(l) === 'generic';
    if (spec.tools && !generic && !tokenizer.rendersTools(options.chatTemplate)) {
      throw badRequest(
        `the chat template of ${l.models.backbone} does not show tools to the model, so it cannot call them in the ${toolSyntax(l)} syntax the server was started with; start it without --tool-call-syntax (or with generic) to describe the tools in the system message`,
        'tools',
        'tools_not_supported',
      );
    }
    // With tool_choice none a template that renders tools still shows them; a generic prompt does not describe them.
    const calls = spec.toolChoice ? { choice: spec.toolChoice, parallel: spec.parallelToolCalls } : undefined;
    // (a request's own response format, which under auto the reply may answer in: the description says so)
    const shown = toolsShown(generic, spec.tools, calls, spec.options?.responseFormat);
    // (a prompt cut to its last tokens, vLLM's truncate_prompt_tokens, may be rendered longer than the context)
    if (keep === undefined) refuseBeyondContext(l, spec.messages);
    // A chat without a system message of its own gets the model's (and its example messages), as Ollama's does.
    const messages = withModelMessages(spec.messages, l.engine.info.defaults);
    let text = tokenizer.applyChatTemplate(messages, { ...template, addGenerationPrompt: spec.addGenerationPrompt, extra, ...shown });
    if (spec.continueFinalMessage) {
      const cut = cutAfterFinalMessage(text, spec.messages[spec.messages.length - 1]!.content);
      if (cut === undefined) throw badRequest(`the chat template of ${l.models.backbone} does not write the last message as given, so it cannot be continued`, 'continue_final_message');
      text = cut;
    }
    const encode = (t: string, within?: number) => (addSpecialTokens ? tokenizer.encode(t, true, within) : tokenizer.encodeChat(t, within));
    return { text, ids: keep === undefined ? encode(text, l.engine.info.contextLength) : lastTokens(encode, text, keep) };
  }

  /**
   * Refuses, before they are rendered, messages that cannot fit the context: more messages and tool calls than it has
   * positions, since any real template writes each with one token at least (280,000 empty messages held the
   * server's thread 2.4 s in the template before the prompt was found too long). Content parts are not counted: they
   * are joined into their message's text first, and may be empty. A TokenizerError, as the prompt's own overflow is.
   */
  function refuseBeyondContext(l: Loaded, messages: readonly ChatMessage[]): void {
    const calls = messages.reduce((n, m) => n + (Array.isArray(m.tool_calls) ? m.tool_calls.length : 0), 0);
    if (messages.length + calls <= l.contextLength) return;
    const counted = `${messages.length} messages${calls ? ` and ${calls} tool calls` : ''}`;
    throw new TokenizerError(`the chat's ${counted} are more than the context length of ${l.contextLength} tokens (each takes one token at least); send fewer`);
  }

  /** How many of its prompt's last tokens a request runs (vLLM's `truncate_prompt_tokens`, -1 the context's); undefined: all. */
  function keptPromptTokens(l: Loaded, request: ParsedRequest): number | undefined {
    return request.truncatePromptTokens === -1 ? l.contextLength : request.truncatePromptTokens;
  }

  /**
   * How the model is shown tools and writes its calls: the server's `toolCallSyntax`, else the syntax the chat
   * template teaches, or `generic` (tools described in the system message, calls as a JSON reply) where it shows none.
   */
  function toolSyntax(l: Loaded): ToolCallSyntax {
    return options.toolCallSyntax ?? toolCallSyntaxOf(options.chatTemplate ?? l.tokenizer!.toolUseTemplate ?? l.tokenizer!.chatTemplate, l.tokenizer!.rendersTools(options.chatTemplate));
  }

  /**
   * `/tokenize` (vLLM's, and llama.cpp's): the ids a completion or chat request would run, their count and the
   * context; with vLLM's `return_token_strs` each token as the vocabulary spells it, with llama.cpp's `with_pieces`
   * each id beside its piece.
   */
  function tokenize(l: Loaded, request: TokenizeRequest, res: ServerResponse): void {
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
  function detokenize(l: Loaded, request: { model?: string; tokens: number[] }, res: ServerResponse): void {
    if (request.model !== undefined) l.models.resolve(request.model);
    const tokenizer = l.tokenizer;
    if (!tokenizer) throw badRequest('this model has no tokenizer.json beside it, so it cannot detokenize');
    const outside = request.tokens.find((t) => t >= tokenizer.vocabSize);
    if (outside !== undefined) throw badRequest(`token ${outside} is not in the vocabulary (${tokenizer.vocabSize} tokens)`, 'tokens');
    const text = tokenizer.decode(request.tokens, false);
    sendJson(res, 200, { prompt: text, content: text });
  }

  /**
   * `/v1/embeddings`: the backbone's final hidden state at each input's last token, unit length (as OpenAI's and
   * llama.cpp's server give them). It takes a slot as a completion does, and runs beside the decode batch.
   */
  async function embeddings(l: Loaded, request: EmbeddingsRequest, res: ServerResponse): Promise<void> {
    const { vectors, tokens } = await embedded(l, request, res);
    const data = vectors.map((v, index) => ({
      object: 'embedding',
      index,
      embedding: request.encoding === 'base64' ? Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64') : Array.from(v),
    }));
    sendJson(res, 200, { object: 'list', data, model: request.model, usage: { prompt_tokens: tokens, total_tokens: tokens } });
  }

  /** An embeddings request's unit vectors (cut to its `dimensions`), admitted as any request, and the tokens they took. */
  async function embedded(l: Loaded, request: EmbeddingsRequest, res: ServerResponse, normalize = true): Promise<{ vectors: Float32Array[]; tokens: number }> {
    if (l.models.resolve(request.model).length > 0) {
      throw badRequest(`embeddings come from the backbone alone, reasoners take no part: ask for model "${l.models.backbone}"`, 'model');
    }
    const size = l.engine.info.embeddingSize;
    if (size === undefined) throw new HttpError(501, 'this server gives no embeddings: start it with --embeddings', 'invalid_request_error', 'embeddings_disabled');
    if (request.dimensions !== undefined && request.dimensions > size) {
      throw badRequest(`dimensions is ${request.dimensions}, more than the model's ${size}`, 'dimensions');
    }
    note(res, { model: request.model });
    const { vectors, promptTokens } = await admitted(res, () => l.engine.embed(request.input, { normalize }));
    const tokens = promptTokens.reduce((a, b) => a + b, 0);
    metrics.promptTokens += tokens;
    note(res, { promptTokens: tokens });
    const cut = (v: Float32Array) => (normalize ? unitLength(v.slice(0, request.dimensions)) : v.slice(0, request.dimensions));
    return { vectors: vectors.map((v) => (request.dimensions !== undefined ? cut(v) : v)), tokens };
  }

  /** Runs `work` once the request is admitted (a slot of its own, as any request takes), freeing the slot after. */
  async function admitted<T>(res: ServerResponse, work: () => Promise<T>): Promise<T> {
    const controller = new AbortController();
    res.on('close', () => {
      if (!res.writableFinished) controller.abort();
    });
    const slot: Slot = { rows: 1 };
    await admit(slot, controller.signal);
    try {
      return await work();
    } finally {
      release(slot);
    }
  }

  /**
   * A chat request's turn: its prompt rendered, its engine options completed (token limit, constraint, thought,
   * kept tokens, thinking budget), and how its reply is read. Shared by chat completions, responses and messages.
   */
  function chatTurn(l: Loaded, request: ChatRequest): { prompt: { text: string; ids: number[] }; parsing: ReplyParsing } {
    // A model not served is a 404 before the prompt's own faults (no chat template, tools not shown) are found.
    l.models.resolve(request.model);
    const prompt = chatPrompt(l, request, request.addSpecialTokens, keptPromptTokens(l, request));
    // Without max_tokens a chat reply may run to the end of the context (where the engine stops a row), as
    // OpenAI's and vLLM's do, not to the engine's 256: a long answer would be cut with nothing asked for.
    request.options.maxTokens ??= l.contextLength;
    const chatTemplate = options.chatTemplate ?? l.tokenizer!.chatTemplate;
    const syntax = toolSyntax(l);
    // (a response format of the request's own beside its tools: forced calls win, `auto` calls or answers in it)
    const format = replyFormat(request.options.responseFormat, toolCallFormat(request, syntax));
    const parsing = replyParsing({
      format: request.reasoningFormat ?? options.reasoningFormat ?? 'auto',
      chatTemplate,
      prompt: prompt.text,
      constrained: format !== undefined,
      ...(request.tools !== undefined && request.toolChoice !== undefined ? toolsRead(syntax, format) : {}),
      toolSpecs: request.tools?.map((t) => ({ name: t.function.name, parameters: t.function.parameters })),
    });
    if (format) request.options.responseFormat = thoughtFirst(format, parsing);
    const kept = keptTokens(parsing);
    if (kept.length) request.options.keepTokens = kept;
    const budget = request.thinkingBudget ?? options.thinkingBudget;
    if (budget !== undefined) request.options.thinkingBudget = thinkingBudgetFor(budget, parsing, chatTemplate, prompt.text);
    return { prompt, parsing };
  }

  async function chat(l: Loaded, request: ChatRequest, res: ServerResponse): Promise<void> {
    const { prompt, parsing } = chatTurn(l, request);
    const id = `chatcmpl-${randomUUID()}`;
    const created = Math.floor(Date.now() / 1000);
    const base = { id, created, model: request.model, system_fingerprint: 'reasonplug' };
    // vLLM's `echo`: the content opens with the text of a last message in the reply's role (the one continued).
    const last = request.messages.at(-1);
    const echoed = request.echo && last?.role === 'assistant' ? last.content : '';
    const withEcho = (choice: object) => {
      if (!echoed) return choice;
      const { message } = choice as { message: { content: string | null } };
      return { ...choice, message: { ...message, content: echoed + (message.content ?? '') } };
    };

    // n choices are n rows of one call (row j samples from seed + j).
    const input: PromptInput = { promptIds: request.n === 1 ? prompt.ids : Array.from({ length: request.n }, () => prompt.ids) };
    await run(l, request, input, res, async (stream, first, rest, clock) => {
      const choices = Array.from({ length: request.n }, () => new ChatChoice(parsing, request.logprobs));
      // (special tokens kept: a thought's tags may be special tokens, harmony's are)
      const decode = (ids: number[]) => l.tokenizer!.decode(ids, false);
      const usage = (result: GenerationResult) => {
        const reasoning = result.rows.reduce((sum, row, index) => sum + choices[index]!.reasoningTokens(row, decode), 0);
        const details = usageJson(result, request.n);
        return { ...details, completion_tokens_details: { reasoning_tokens: reasoning, ...details.completion_tokens_details } };
      };
      if (!request.stream) {
        const result = await drain(stream, first, rest, clock);
        const answers = result.rows.map((row, index) => choices[index]!.message(row));
        sendJson(res, 200, { ...base, object: 'chat.completion', choices: answers.map(({ choice }, index) => ({ index, ...withEcho(choice) })), usage: usage(result) });
        return answers[0]!.finish;
      }
      const sse = new Sse(res);
      const send = (index: number, { delta, logprobs, finish }: ChatDelta) =>
        sse.send({ ...base, object: 'chat.completion.chunk', choices: [{ index, delta, logprobs, finish_reason: finish }], ...(request.includeUsage ? { usage: null } : {}) });
      choices.forEach((choice, index) => send(index, choice.start()));
      // (as vLLM streams it: a delta of its own after the role's)
      if (echoed) choices.forEach((_, index) => send(index, { delta: { content: echoed }, logprobs: null, finish: null }));
      for (let next = first; !next.done; next = await rest.next()) {
        if (next !== first) clock.tick(next.value.row);
        const { row, text, logprobs } = next.value;
        for (const delta of choices[row]!.push(text, logprobs)) send(row, delta);
      }
      const result = await stream.result;
      countGenerated(result);
      result.rows.forEach((row, index) => choices[index]!.end(row.finishReason).forEach((delta) => send(index, delta)));
      if (request.includeUsage) sse.send({ ...base, object: 'chat.completion.chunk', choices: [], usage: usage(result) });
      sse.done();
      return choices[0]!.finish(result.rows[0]!.finishReason);
    });
  }

  /** The output items of this server's Responses answers, which later requests' `item_reference`s name. */
  const responseItems = new ResponseItems();

  /**
   * `/v1/responses`: the chat turn the request amounts to, answered as a response object or its event stream; its
   * output items are kept for later references once it is finished, whole or streamed (unless `store: false`).
   */
  async function responses(l: Loaded, request: ResponsesRequest, res: ServerResponse, scope: string): Promise<void> {
    const chatRequest = request.chat;
    const { prompt, parsing } = chatTurn(l, chatRequest);
    const output = new ResponseOutput(parsing, chatRequest.logprobs);
    const base = { id: itemId('resp'), object: 'response', created_at: Math.floor(Date.now() / 1000), model: chatRequest.model, ...request.echo };
    const response = (result?: GenerationResult) => {
      const cut = result && result.rows[0]!.finishReason === 'length';
      return {
        ...base,
        status: !result ? 'in_progress' : cut ? 'incomplete' : 'completed',
        incomplete_details: cut ? { reason: 'max_output_tokens' } : null,
        error: null,
        output: result ? output.items : [],
        // (the effort the template was given, as the request set it)
        reasoning: { effort: typeof chatRequest.templateKwargs?.reasoning_effort === 'string' ? chatRequest.templateKwargs.reasoning_effort : null, summary: null },
        store: request.store,
        truncation: 'disabled',
        usage: result ? responseUsage(result, output.reasoningTokens(result.rows[0]!.ids, (ids) => l.tokenizer!.decode(ids, false))) : null,
      };
    };
    const finished = (result: GenerationResult) => {
      if (request.store) responseItems.keep(output.items, scope);
      return response(result);
    };
    await answerInBlocks(l, chatRequest, prompt.ids, res, output, {
      whole: finished,
      opening: () => [
        { type: 'response.created', response: response() },
        { type: 'response.in_progress', response: response() },
      ],
      closing: (result) => {
        const done = finished(result);
        return [{ type: done.status === 'completed' ? 'response.completed' : 'response.incomplete', response: done }];
      },
      error: ({ message, code, param }) => ({ type: 'error', code, message, param }),
      numbered: true,
    });
  }

  /**
   * Ollama's API (`/api/*`) over the same engine: chat, generate (a chat turn, text as given, or fill-in-the-middle)
   * and embed, and the listings its clients read (`tags`, `ps`, `show`, `version`). Errors take Ollama's shape.
   */
  async function ollama(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    const method = routedMethod(req);
    if (method === 'GET' && path === '/api/version') return sendJson(res, 200, { version: OLLAMA_API_VERSION, reasonplug: PACKAGE_VERSION });
    const l = servable(req);
    if (method === 'GET' && (path === '/api/tags' || path === '/api/ps')) return sendJson(res, 200, { models: await ollamaModels(l, path === '/api/ps') });
    const handlers: Record<string, ((body: unknown) => Promise<void>) | undefined> = {
      // (`name` is the field's older spelling, which Ollama still reads when `model` is left out)
      '/api/show': async (body) => sendJson(res, 200, await ollamaShow(l, isObject(body) ? body.model || body.name : undefined)),
      '/api/chat': async (body) => {
        const load = ollamaChatLoad(body);
        if (load === undefined) return ollamaTurn(l, thoughtServed(l, parseOllamaChat(withOllamaDefaults(body, sampling(l))), body), res, 'chat');
        // No messages load the model (loaded already here), or unload it: the answer says so.
        l.models.resolve(load);
        const reason = ollamaLoadReason((body as { keep_alive?: unknown }).keep_alive);
        sendJson(res, 200, { model: load, created_at: new Date().toISOString(), message: { role: 'assistant', content: '' }, done: true, done_reason: reason });
      },
      '/api/generate': async (body) => {
        const request = parseOllamaGenerate(withOllamaDefaults(body, sampling(l)), (options.chatTemplate ?? l.tokenizer?.chatTemplate) !== undefined);
        if (request.kind === 'chat') return ollamaTurn(l, thoughtServed(l, request.chat, body), res, 'generate');
        if (request.kind === 'text') return ollamaText(l, request.completion, res);
        // An empty prompt loads the model (loaded already here), or unloads it: the answer says so.
        l.models.resolve(request.model);
        const reason = ollamaLoadReason((body as { keep_alive?: unknown }).keep_alive);
        sendJson(res, 200, { model: request.model, created_at: new Date().toISOString(), response: '', done: true, done_reason: reason });
      },
      '/api/embed': (body) => ollamaEmbed(l, parseOllamaEmbed(body, false), res, false),
      '/api/embeddings': (body) => ollamaEmbed(l, parseOllamaEmbed(body, true), res, true),
    };
    const handler = method === 'POST' ? handlers[path] : undefined;
    if (!handler) throw noRoute(req, path, " (this server answers Ollama's chat, generate, embed, embeddings, show, tags, ps and version)");
    active++;
    try {
      await handler(await readJson(req));
    } finally {
      if (--active === 0) idle?.();
    }
  }

  /**
   * The served models as Ollama lists them (each with a tag, as Ollama's clients expect), with the bytes of the files
   * each runs (a composition's, its backbone's and reasoners') and a digest of them (Ollama's CLI prints its first 12
   * characters, and fails on a shorter one).
   */
  async function ollamaModels(l: Loaded, running: boolean): Promise<object[]> {
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
  function writesThought(l: Loaded): boolean {
    const template = options.chatTemplate ?? l.tokenizer?.chatTemplate;
    return reasoningTagsOf(template) !== undefined || isHarmonyTemplate(template);
  }

  /**
   * A thought asked for (`think` true or a level) of a served model that writes none is Ollama's 400, which its clients
   * read to ask again without `think`; a reply without the thought would pass for the model's whole thinking.
   */
  function thoughtServed(l: Loaded, request: ChatRequest, body: unknown): ChatRequest {
    const think = (body as { think?: unknown }).think;
    l.models.resolve(request.model);
    if ((think === true || typeof think === 'string') && !writesThought(l)) throw badRequest(`"${request.model}" does not support thinking`, 'think');
    return request;
  }

  /** `/api/show`: a served model's template, its own defaults (license, system prompt, options, messages) and what it can do (Ollama's capabilities). */
  async function ollamaShow(l: Loaded, model: unknown): Promise<object> {
    // (404 unless served; any spelling resolve takes: `:latest` or not, another case)
    const reasoners = l.models.resolve(ollamaModelName(model));
    const template = options.chatTemplate ?? l.tokenizer?.chatTemplate;
    const capabilities = [
      'completion',
      // Shown by the template, or described in the system message (generic).
      ...(template && (toolSyntax(l) === 'generic' || l.tokenizer!.rendersTools(options.chatTemplate)) ? ['tools'] : []),
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
  async function ollamaTurn(l: Loaded, request: ChatRequest, res: ServerResponse, shape: 'chat' | 'generate'): Promise<void> {
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
    await run(l, request, { promptIds: prompt.ids }, res, async (stream, first, rest, clock) => {
      if (!request.stream) {
        const result = await drain(stream, first, rest, clock);
        const { choice: answer, finish } = choice.message(result.rows[0]!);
        const { message, logprobs } = answer as { message: ChatFields; logprobs: ChatDelta['logprobs'] };
        sendJson(res, 200, { ...chunk(message, logprobs), ...ollamaDone(result, ollamaDoneReason(finish)) });
        return finish;
      }
      const lines = new JsonLines(res);
      const send = ({ delta, logprobs }: ChatDelta) => lines.send({ ...chunk(delta as ChatFields, logprobs), done: false });
      for (let next = first; !next.done; next = await rest.next()) {
        if (next !== first) clock.tick(next.value.row);
        choice.push(next.value.text, next.value.logprobs).forEach(send);
      }
      const result = await stream.result;
      countGenerated(result);
      const deltas = choice.end(result.rows[0]!.finishReason);
      const last = deltas.pop()!;
      deltas.forEach(send);
      lines.end({ ...chunk(last.delta as ChatFields, last.logprobs), ...ollamaDone(result, ollamaDoneReason(last.finish!)) });
      return last.finish!;
    });
  }

  /** `/api/generate` on text as given (`raw`, a model without a chat template) or around a `suffix` (fill-in-the-middle). */
  async function ollamaText(l: Loaded, request: CompletionRequest, res: ServerResponse): Promise<void> {
    request.options.maxTokens ??= l.contextLength;
    if (request.suffix !== undefined && !l.tokenizer?.fimTokens) throw noFillInMiddle(l);
    const input: PromptInput = { prompt: request.prompt as string, ...(request.suffix !== undefined ? { suffix: request.suffix } : {}) };
    const chunk = (response: string, logprobs?: TokenLogprobs) => {
      const lp = logprobs && request.logprobs ? ollamaLogprobs(chatLogprobs([logprobs])) : undefined;
      return { model: request.model, created_at: new Date().toISOString(), response, ...(lp ? { logprobs: lp } : {}) };
    };
    await run(l, request, input, res, async (stream, first, rest, clock) => {
      if (!request.stream) {
        const result = await drain(stream, first, rest, clock);
        const finish = finishReason(result.rows[0]!.finishReason);
        sendJson(res, 200, { ...chunk(result.rows[0]!.text), ...ollamaDone(result, ollamaDoneReason(finish)) });
        return finish;
      }
      const lines = new JsonLines(res);
      for (let next = first; !next.done; next = await rest.next()) {
        if (next !== first) clock.tick(next.value.row);
        if (next.value.text || next.value.logprobs) lines.send({ ...chunk(next.value.text, next.value.logprobs), done: false });
      }
      const result = await stream.result;
      countGenerated(result);
      const finish = finishReason(result.rows[0]!.finishReason);
      lines.end({ ...chunk(''), ...ollamaDone(result, ollamaDoneReason(finish)) });
      return finish;
    });
  }

  /** `/api/embed` (unit vectors, as Ollama's) and the older `/api/embeddings` (one vector). */
  /**
   * `/api/embed` (unit vectors) and the older `/api/embeddings` (the hidden state as it is, as Ollama gives it);
   * with nothing to embed, an empty answer once the model is known (Ollama's warm-up).
   */
  async function ollamaEmbed(l: Loaded, request: OllamaEmbedRequest, res: ServerResponse, legacy: boolean): Promise<void> {
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

  /** `/v1/messages` (Anthropic's Messages API): the chat turn the request amounts to, answered as a message or its event stream. */
  async function messages(l: Loaded, request: ReturnType<typeof parseMessagesRequest>, res: ServerResponse): Promise<void> {
    const { prompt, parsing } = chatTurn(l, request);
    const output = new MessageOutput(parsing, request.thoughtOmitted);
    const id = itemId('msg');
    // (the fields the SDK's types hold always present: no container, refusal or cache diagnostics here)
    const message = (content: object[], stop: string | null, usage: object, sequence: string | null = null) => ({
      id,
      type: 'message',
      role: 'assistant',
      model: request.model,
      content,
      stop_reason: stop,
      stop_sequence: sequence,
      stop_details: null,
      container: null,
      diagnostics: null,
      usage,
    });
    // Anthropic counts the tokens read from the cache apart: the prompt is input_tokens + cache_read_input_tokens.
    const counts = (input: number, cached: number, output: number, thinking: number | null) => ({
      input_tokens: input - cached,
      output_tokens: output,
      cache_read_input_tokens: cached,
      cache_creation_input_tokens: 0,
      output_tokens_details: thinking === null ? null : { thinking_tokens: thinking },
      server_tool_use: null,
    });
    // A message's usage (message_delta's has only the counts), as the SDK's types hold it: nothing is written to a
    // cache by request, one tier and speed.
    const usage = (counted: ReturnType<typeof counts>) => ({ ...counted, cache_creation: { ephemeral_5m_input_tokens: 0, ephemeral_1h_input_tokens: 0 }, inference_geo: null, service_tier: 'standard', speed: 'standard' });
    const final = (result: GenerationResult) => ({
      ...counts(result.usage.promptTokens, result.usage.cachedPromptTokens ?? 0, result.usage.completionTokens, output.reasoningTokens(result.rows[0]!.ids, (ids) => l.tokenizer!.decode(ids, false))),
      ...latentUsage(result),
    });
    const stop = (result: GenerationResult) => stopReason(result.rows[0]!, output.called, request.options.maxTokens!);
    await answerInBlocks(l, request, prompt.ids, res, output, {
      whole: (result) => message(output.content, stop(result), usage(final(result)), result.rows[0]!.stopString ?? null),
      opening: (first) => [{ type: 'message_start', message: message([], null, usage(counts(prompt.ids.length, first?.cachedPromptTokens ?? 0, 0, null))) }],
      closing: (result) => [
        { type: 'message_delta', delta: { stop_reason: stop(result), stop_sequence: result.rows[0]!.stopString ?? null, stop_details: null, container: null }, usage: final(result) },
        { type: 'message_stop' },
      ],
      error: (err) => anthropicError(err, res),
      numbered: false,
    });
  }

  /**
   * Answers a chat turn in a block-shaped API (Responses, Messages): whole, or as its named events between its
   * opening and closing ones; a failure once the stream has started ends it with the API's error event.
   */
  async function answerInBlocks(
    l: Loaded,
    request: ChatRequest,
    promptIds: number[],
    res: ServerResponse,
    output: BlockOutput<Event>,
    api: {
      whole: (result: GenerationResult) => object;
      /** The stream's opening events, given its first token (a stream that ends before one gives none). */
      opening: (first: TokenEvent | undefined) => Event[];
      closing: (result: GenerationResult) => Event[];
      error: (err: HttpError) => Event;
      /** Whether events carry a `sequence_number`. */
      numbered: boolean;
    },
  ): Promise<void> {
    const finish = (result: GenerationResult) => (output.called ? 'tool_calls' : finishReason(result.rows[0]!.finishReason));
    await run(l, request, { promptIds }, res, async (stream, first, rest, clock) => {
      if (!request.stream) {
        // Token by token, as a stream would give them: log-probabilities ride with the text they became.
        const result = await drain(stream, first, rest, clock, (e) => output.push(e.text, e.logprobs));
        output.end(result.rows[0]!.finishReason === 'length');
        sendJson(res, 200, api.whole(result));
        return finish(result);
      }
      res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' });
      const events = new NamedEvents((chunk) => res.destroyed || res.write(chunk), api.numbered);
      events.send(api.opening(first.done ? undefined : first.value));
      try {
        for (let next = first; !next.done; next = await rest.next()) {
          if (next !== first) clock.tick(next.value.row);
          events.send(output.push(next.value.text, next.value.logprobs));
        }
        const result = await stream.result;
        countGenerated(result);
        events.send([...output.end(result.rows[0]!.finishReason === 'length'), ...api.closing(result)]);
        return finish(result);
      } catch (err) {
        events.send([api.error(toHttpError(err))]);
        return 'error';
      } finally {
        if (!res.destroyed) res.end();
      }
    });
  }

  async function completion(l: Loaded, request: CompletionRequest, res: ServerResponse): Promise<void> {
    // (no limit asked for, llama.cpp's `n_predict: -1`: to the end of the context, as a chat reply runs)
    request.options.maxTokens ??= l.contextLength;
    const p = request.prompt;
    const isIds = typeof p !== 'string' && typeof p[0] === 'number';
    const prompts: (string | number[])[] = typeof p === 'string' || isIds ? [p as string | number[]] : (p as (string | number[])[]);
    // Choice i·n + j is the j-th of prompt i (OpenAI's order), a row of its own that samples from seed + j as vLLM's
    // (the engine seeds a prompt's repeats in a call so): choice i·n is prompt i sent alone.
    const ran = completionPrompts(l, request, prompts);
    const rows = ran.flatMap((x) => Array.from({ length: request.n }, () => x));
    if (request.suffix !== undefined && !l.tokenizer?.fimTokens) throw noFillInMiddle(l);
    const input: PromptInput =
      typeof rows[0] === 'string' ? { prompt: rows as string[], ...(request.suffix !== undefined ? { suffix: request.suffix } : {}) } : { promptIds: rows as number[][] };
    // A text that ran as given is echoed as given; one that ran as ids of its own (its last tokens, or no BOS) and ids
    // are echoed as the text of the ids that ran, which the echoed tokens' offsets index.
    const echoOf = (row: number) => {
      if (!request.echo) return '';
      const given = ran[Math.floor(row / request.n)]!;
      if (typeof given === 'string') return given;
      if (!l.tokenizer) throw badRequest('echo of token ids needs the model tokenizer', 'echo');
      return l.tokenizer.decode(rows[row] as number[]);
    };
    const id = `cmpl-${randomUUID()}`;
    const base = { id, created: Math.floor(Date.now() / 1000), model: request.model, system_fingerprint: 'reasonplug' };
    const arrival = performance.now();
    // Echoed with logprobs, the prompt's own tokens open each choice's lists, scored after the tokens before them.
    const scored = request.echo && (request.logprobs || request.scoreOnly) ? await echoedLogprobs(l, request, ran, res) : undefined;
    const echoedOf = (row: number) => (request.logprobs ? scored?.[Math.floor(row / request.n)] : undefined);
    const withEcho = (row: number, after: LegacyLogprobs) => {
      const echoed = echoedOf(row);
      return echoed ? joinLegacy(echoed, after) : after;
    };
    if (request.scoreOnly) {
      const promptTokens = scored!.reduce((n, s) => n + s.tokens.length, 0);
      return scoreOnly(request, rows.map((_, row) => ({ text: echoOf(row), logprobs: echoedOf(row) ?? null })), { promptTokens, arrival }, base, res);
    }

    await run(l, request, input, res, async (stream, first, rest, clock) => {
      if (!request.stream) {
        const result = await drain(stream, first, rest, clock);
        sendJson(res, 200, {
          ...base,
          object: 'text_completion',
          choices: result.rows.map((row, index) => ({
            index,
            text: echoOf(index) + row.text,
            logprobs: request.logprobs ? withEcho(index, completionLogprobs(shownEntries(row.logprobs ?? [], row.text.length), echoOf(index).length)) : null,
            finish_reason: finishReason(row.finishReason),
          })),
          usage: usageJson(result, request.n),
        });
        return finishReason(result.rows[0]!.finishReason);
      }
      const sse = new Sse(res);
      // Per choice: tokens whose text is not out yet.
      const pending = rows.map((): TokenLogprobs[] => []);
      const send = (index: number, text: string, logprobs: LegacyLogprobs | null, finish: string | null = null) =>
        sse.send({ ...base, object: 'text_completion', choices: [{ index, text, logprobs, finish_reason: finish }], ...(request.includeUsage ? { usage: null } : {}) });
      const chunk = (index: number, text: string, finish: string | null = null) => {
        let logprobs: LegacyLogprobs | null = null;
        if (request.logprobs && (pending[index]!.length > 0 || finish)) {
          const entries = pending[index]!.splice(0);
          logprobs = completionLogprobs(entries, echoOf(index).length);
        }
        send(index, text, logprobs, finish);
      };
      if (request.echo) rows.forEach((_, row) => send(row, echoOf(row), echoedOf(row) ?? null));
      for (let next = first; !next.done; next = await rest.next()) {
        if (next !== first) clock.tick(next.value.row);
        if (next.value.logprobs) pending[next.value.row]!.push(next.value.logprobs);
        if (next.value.text) chunk(next.value.row, next.value.text);
      }
      const result = await stream.result;
      countGenerated(result);
      result.rows.forEach((row, index) => {
        pending[index] = shownEntries(pending[index]!, row.text.length);
        chunk(index, '', finishReason(row.finishReason));
      });
      if (request.includeUsage) sse.send({ ...base, object: 'text_completion', choices: [], usage: usageJson(result, request.n) });
      sse.done();
      return finishReason(result.rows[0]!.finishReason);
    });
  }

  /**
   * A completion's prompts as the engine runs them: text as given, unless the request has it tokenized its own way
   * (vLLM's `add_special_tokens: false`, or `truncate_prompt_tokens`, which given ids take too).
   */
  function completionPrompts(l: Loaded, request: CompletionRequest, prompts: (string | number[])[]): (string | number[])[] {
    const keep = keptPromptTokens(l, request);
    if (keep === undefined && request.addSpecialTokens) return prompts;
    const param = keep === undefined ? 'add_special_tokens' : 'truncate_prompt_tokens';
    // (a fill-in-the-middle prompt is written around the model's own tokens, BOS first where the tokenizer adds it)
    if (request.suffix !== undefined) throw badRequest(`${param} cannot be combined with suffix`, param);
    const tokenizer = l.tokenizer;
    return prompts.map((prompt) => {
      if (typeof prompt !== 'string') return keep === undefined ? prompt : prompt.slice(Math.max(0, prompt.length - keep));
      if (!tokenizer) throw badRequest(`${param} needs the model tokenizer to tokenize the prompt`, param);
      const encode = (text: string, within?: number) => tokenizer.encode(text, request.addSpecialTokens, within);
      return keep === undefined ? encode(prompt, l.engine.info.contextLength) : lastTokens(encode, prompt, keep);
    });
  }

  /**
   * The legacy lists of each prompt's own tokens (`echo` with `logprobs`), scored by the model the request names;
   * admitted as any request (the generation after it is admitted again).
   */
  async function echoedLogprobs(l: Loaded, request: CompletionRequest, prompts: (string | number[])[], res: ServerResponse): Promise<LegacyLogprobs[]> {
    const named = l.models.resolve(request.model).map((name) => ({ name }));
    if (request.reasoners) l.models.checkExtension(request.reasoners);
    const reasoners = request.reasoners ?? named;
    const input = typeof prompts[0] === 'string' ? { texts: prompts as string[] } : { ids: prompts as number[][] };
    const { prompts: scored } = await admitted(res, () =>
      l.engine.promptLogprobs(input, { topLogprobs: request.options.logprobs ?? 0, reasoners, ...(request.options.mode ? { mode: request.options.mode } : {}) }),
    );
    const tokenizer = l.tokenizer;
    return scored.map(({ ids, logprobs }) => {
      const first = tokenizer ? tokenizer.decode([ids[0]!], false) : `token_id:${ids[0]}`;
      return promptLegacyLogprobs(logprobs, first, ids.map((_, j) => (tokenizer ? visibleLength(tokenizer, ids, j) : 0)));
    });
  }

  /** `max_tokens: 0` with `echo`: each choice the prompt alone (with its scores), nothing generated. */
  function scoreOnly(
    request: CompletionRequest,
    choices: { text: string; logprobs: LegacyLogprobs | null }[],
    { promptTokens, arrival }: { promptTokens: number; arrival: number },
    base: object,
    res: ServerResponse,
  ): void {
    const usage = { prompt_tokens: promptTokens, completion_tokens: 0, total_tokens: promptTokens };
    note(res, { model: request.model, finishReason: 'length', promptTokens, completionTokens: 0 });
    // Scored requests count as any other in /metrics (lm-evaluation-harness sends thousands of them).
    metrics.promptTokens += promptTokens;
    metrics.countFinished('length');
    metrics.e2e.observe((performance.now() - arrival) / 1000);
    const choice = (c: (typeof choices)[number], index: number) => ({ index, text: c.text, logprobs: c.logprobs, finish_reason: 'length' });
    if (!request.stream) return sendJson(res, 200, { ...base, object: 'text_completion', choices: choices.map(choice), usage });
    const sse = new Sse(res);
    choices.forEach((c, index) => sse.send({ ...base, object: 'text_completion', choices: [choice(c, index)] }));
    if (request.includeUsage) sse.send({ ...base, object: 'text_completion', choices: [], usage });
    sse.done();
  }

  const countGenerated = (result: GenerationResult) => {
    metrics.generationTokens += result.usage.completionTokens;
  };

  /** Reads a stream to its end without answering yet (non-streaming requests), timing its tokens. */
  /** Runs a generation to its end, each token event heard by `onEvent`. */
  const drain = async (stream: GenerationStream, first: IteratorResult<TokenEvent>, rest: AsyncIterator<TokenEvent>, clock: TokenClock, onEvent?: (e: TokenEvent) => void) => {
    for (let next = first; !next.done; next = await rest.next()) {
      if (next !== first) clock.tick(next.value.row);
      onEvent?.(next.value);
    }
    const result = await stream.result;
    countGenerated(result);
    return result;
  };

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 8000, options.host ?? '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  // What loading is fetching or converting, for /health (a first load of a multi-GB model takes minutes).
  const onProgress = (p: TransferProgress) => {
    loading = p;
    options.engine.onProgress?.(p);
  };
  const ready = load({ ...options, engine: { ...options.engine, onProgress } }).then(
    (l) => {
      loaded = l;
    },
    (err: Error) => {
      loadError = err;
      throw err;
    },
  );
  ready.catch(() => {});

  return {
    url: `${options.tls ? 'https' : 'http'}://${host}:${address.port}`,
    ready,
    metrics,
    async close() {
      if (draining) return;
      draining = true;
      const deadline = new Promise<false>((r) => setTimeout(() => r(false), shutdownTimeoutMs).unref());
      // Stop accepting; connections kept alive are closed once they are idle.
      const closed = new Promise<void>((r) => server.close(() => r()));
      server.closeIdleConnections();
      // A request whose body is still arriving would hold the shutdown for as long as its client trickles it.
      for (const refuse of reading) refuse(new HttpError(503, 'the server is shutting down', 'server_error', 'shutting_down', { Connection: 'close' }));
      const finished = active === 0 || (await Promise.race([new Promise<true>((r) => (idle = () => r(true))), deadline]));
      // Past the deadline the requests left are cut off: their rows stop at their next step.
      if (!finished) server.closeAllConnections();
      server.closeIdleConnections();
      // The engine is given what is left of the deadline: a batch thread held by one long step (a grammar's compile)
      // would hold the shutdown past the end of every request. (The CLI then exits; a library's process keeps the
      // engine's dispose going, which ends its worker once that step is done, or a minute on.)
      await Promise.race([ready.then(() => loaded!.engine.dispose(), () => {}), deadline]);
      server.closeAllConnections();
      await closed;
    },
  };
}

/** Loads the engine, names the backbone, and finds the tokenizer chat prompts are rendered with. */
async function load(options: ServeOptions): Promise<Loaded> {
  const { engine: engineOptions } = options;
  const { registry, onProgress } = engineOptions;
  const model = await resolveModelPath(engineOptions.model, onProgress ? { ...registry, onProgress } : registry, engineOptions.ggufKvCache ? { kvCache: engineOptions.ggufKvCache } : undefined);
  // The engine batches as many rows as the server lets requests in (its own default is 8), unless told otherwise.
  // (the name it was resolved from: an Ollama model's defaults are in its manifest)
  const engine = await Engine.load({ ...(options.maxBatch !== undefined ? { maxBatch: options.maxBatch } : {}), ...engineOptions, model, modelSource: engineOptions.modelSource ?? engineOptions.model });
  try {
    const abs = resolve(model);
    const isDir = existsSync(abs) && statSync(abs).isDirectory();
    const manifest = isDir && existsSync(join(abs, MANIFEST_FILE)) ? (await loadModuleDir(abs, { verify: false })).manifest : undefined;
    // A model Ollama has pulled answers to its Ollama name, as Ollama's clients ask for it (`:latest` left out, as requests are read).
    const ollamaName = isOllamaRef(engineOptions.model) ? ollamaServedName(ollamaDisplayName(engineOptions.model)) : undefined;
    const name = options.name ?? ollamaName ?? (isDir ? await ggufModuleName(engineOptions.model, abs) : undefined) ?? manifest?.name ?? basename(engineOptions.model).replace(/\.(onnx|gguf)$/i, '');
    const models = new ServedModels(name, engine.info.reasoners.map((r) => r.name), options.aliases, engine.info.contextLength);
    const tokenizer = engine.info.tokenizer && (await TextTokenizer.fromDirectory(engine.info.tokenizer.dir));
    return { engine, models, ...(tokenizer ? { tokenizer } : {}), contextLength: engine.info.contextLength ?? 2048 };
  } catch (err) {
    await engine.dispose();
    throw err;
  }
}

/**
 * Times a request's tokens for the histograms: time to the first token (once a request), and the gaps between the
 * tokens of each of its rows (a choice's sequence, as vLLM times each of `n` samples). A row's tokens that arrive
 * together (the worker sends tokens in small batches when they come faster than its flush interval; drafted tokens
 * are kept at once) share the gap before them evenly, so a batch does not read as one slow token and several instant
 * ones.
 */
class TokenClock {
  /** Per row: when its last token came, and the gap and tokens not yet observed. */
  private readonly rows = new Map<number, { last: number; gap: number; tokens: number }>();
  private started = false;

  constructor(
    private readonly arrival: number,
    private readonly metrics: ServerMetrics,
  ) {}

  tick(row: number): void {
    const now = performance.now();
    if (!this.started) {
      this.metrics.ttft.observe((now - this.arrival) / 1000);
      this.started = true;
    }
    const seen = this.rows.get(row);
    if (!seen) return void this.rows.set(row, { last: now, gap: 0, tokens: 0 });
    const gap = now - seen.last;
    // Tokens of one worker message arrive within microseconds of each other.
    if (gap < 0.05) {
      seen.tokens++;
      return;
    }
    this.flush(seen);
    seen.gap = gap;
    seen.tokens = 1;
    seen.last = now;
  }

  end(): void {
    for (const seen of this.rows.values()) this.flush(seen);
  }

  private flush(seen: { gap: number; tokens: number }): void {
    if (seen.tokens > 0) this.metrics.itl.observe(seen.gap / 1000 / seen.tokens, seen.tokens);
    seen.tokens = 0;
  }
}

/**
 * Settles once `res` can take more: at once unless its last write filled the socket's buffer, else when that drains
 * or the connection closes. A stream that waits on it before each event writes no faster than its client reads; one
 * that did not kept the whole reply in memory for a client that stopped reading (86 MiB for one stream of 64 choices
 * with 20 alternatives per token), as the engine generates on. The events not yet sent wait in the engine's stream.
 * A client that takes nothing for `deadlineMs` is cut off: it would hold its place in the batch for ever.
 */
function flowing(res: ServerResponse, deadlineMs: number): Promise<void> | undefined {
  if (!res.writableNeedDrain) return undefined;
  return new Promise((resolve) => {
    const go = () => {
      clearTimeout(timer);
      res.off('drain', go).off('close', go);
      resolve();
    };
    // (destroyed, the answer closes: its row is aborted as a client's leaving aborts it)
    const timer = setTimeout(() => res.destroy(), deadlineMs);
    res.on('drain', go).on('close', go);
  });
}

/** A server-sent event stream (its `Connection` header Node's own: a client's `close` and HTTP/1.0 are kept to). */
class Sse {
  constructor(private readonly res: ServerResponse) {
    res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' });
    res.flushHeaders();
  }
  send(data: object): void {
    if (!this.res.destroyed) this.res.write(`data: ${JSON.stringify(data)}\n\n`);
  }
  done(): void {
    if (!this.res.destroyed) this.res.end('data: [DONE]\n\n');
  }
}

/** The refusal of a `suffix` for a model without fill-in-the-middle tokens. */
function noFillInMiddle(l: Loaded): HttpError {
  return badRequest(`the model ${l.models.backbone} has no fill-in-the-middle tokens (such as <|fim_prefix|>, <|fim_suffix|> and <|fim_middle|>): suffix needs a code model`, 'suffix', 'no_fill_in_middle');
}

/** Ollama's stream: one JSON object per line. */
class JsonLines {
  constructor(private readonly res: ServerResponse) {
    res.writeHead(200, { 'Content-Type': 'application/x-ndjson' });
  }
  send(line: object): void {
    if (!this.res.destroyed) this.res.write(`${JSON.stringify(line)}\n`);
  }
  end(line: object): void {
    if (!this.res.destroyed) this.res.end(`${JSON.stringify(line)}\n`);
  }
}

/** This package's version, as `/api/version` gives it. */
/** A model id from a request path; a malformed percent-escape names no model. */
function modelIdOf(escaped: string): string {
  try {
    return decodeURIComponent(escaped);
  } catch {
    throw new HttpError(404, `no model "${escaped}": the path is not a valid percent-encoded id`, 'invalid_request_error', 'model_not_found');
  }
}

/**
 * What `/api/version` says: the Ollama release whose API this server speaks (`think` came with 0.9.0), since Ollama's
 * clients read it as that, and editors refuse a server below their minimum (VS Code's Copilot: 0.6.4); the package's
 * own version beside it.
 */
const OLLAMA_API_VERSION = '0.9.0';

/**
 * The latent steps a generation ran (LiteReason, with a projector) and the reasoning tokens they stood for (where the
 * projector declares `tokensPerStep`), for the top level of a usage object, beside the API's own counts: the steps
 * are no tokens, so no token detail holds them. The OpenAI and Anthropic SDKs keep keys they do not know.
 */
function latentUsage({ usage }: GenerationResult): { latent_steps?: number; reasoning_tokens_saved?: number } {
  if (usage.latentSteps === undefined) return {};
  return { latent_steps: usage.latentSteps, ...(usage.reasoningTokensSaved !== undefined ? { reasoning_tokens_saved: usage.reasoningTokensSaved } : {}) };
}

/** A response's usage (one row). */
function responseUsage(result: GenerationResult, reasoningTokens: number): ResponseUsage & ReturnType<typeof latentUsage> {
  const { promptTokens, completionTokens, cachedPromptTokens } = result.usage;
  return {
    input_tokens: promptTokens,
    input_tokens_details: { cached_tokens: cachedPromptTokens ?? 0, cache_write_tokens: 0 },
    output_tokens: completionTokens,
    output_tokens_details: { reasoning_tokens: reasoningTokens },
    total_tokens: promptTokens + completionTokens,
    ...latentUsage(result),
  };
}

/**
 * OpenAI's usage: each prompt counted once, however many choices (`n`) were made of it; cached tokens as OpenAI's;
 * with a prediction, its accepted and rejected tokens; with a projector, the latent steps of every choice.
 */
function usageJson(result: GenerationResult, n: number) {
  const promptTokens = result.usage.promptTokens / n;
  const { completionTokens, acceptedPredictionTokens: accepted, rejectedPredictionTokens: rejected } = result.usage;
  return {
    prompt_tokens: promptTokens,
    completion_tokens: completionTokens,
    total_tokens: promptTokens + completionTokens,
    prompt_tokens_details: { cached_tokens: (result.usage.cachedPromptTokens ?? 0) / n },
    ...latentUsage(result),
    ...(accepted !== undefined ? { completion_tokens_details: { accepted_prediction_tokens: accepted, rejected_prediction_tokens: rejected ?? 0 } } : {}),
  };
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

/** Seconds a client is asked to wait (`Retry-After`) while the model loads. */
const LOADING_RETRY_SECONDS = 5;

/** A request id a client or proxy may give (`x-request-id`), kept as is: short, and printable without quoting. */
const REQUEST_ID = /^[\w.:-]{1,128}$/;

/**
 * The path a request names: an origin-form target (`/v1/models?x`, RFC 9112 §3.2.1) up to its query, as sent (`//`
 * is an empty segment there, not a host); an absolute-form one (`http://host:8000/v1/models`, §3.2.2) its URL's path.
 */
function requestPath(target = '/'): string {
  if (target.startsWith('/')) return target.split('?')[0]!;
  return URL.canParse(target) ? new URL(target).pathname : target;
}

/** The OpenAI routes llama.cpp's server also answers without `/v1` (its clients' base URLs may leave it out). */
const UNPREFIXED = new Set(['/chat/completions', '/completions', '/embeddings', '/responses', '/models']);

/** A request's method as the routes read it: HEAD is answered as GET is (Node writes the headers alone, RFC 9110 §9.3.2). */
function routedMethod(req: IncomingMessage): string | undefined {
  return req.method === 'HEAD' ? 'GET' : req.method;
}

/** The methods each route takes, as a 405's `Allow` names them (GET's routes take HEAD too; `/v1/models/{id}` is one). */
const ALLOWED = new Map<string, string>([
  ...['/', '/health', '/v1/health', '/metrics', '/v1/models', '/api/version', '/api/tags', '/api/ps'].map((p): [string, string] => [p, 'GET, HEAD']),
  ...['/tokenize', '/detokenize', '/v1/chat/completions', '/v1/completions', '/v1/embeddings', '/v1/responses', '/v1/messages', '/v1/messages/count_tokens', '/api/show', '/api/chat', '/api/generate', '/api/embed', '/api/embeddings'].map(
    (p): [string, string] => [p, 'POST'],
  ),
]);

/**
 * The refusal of a request no route takes: a path routed for another method gets 405 with `Allow` (RFC 9110 §15.5.6,
 * as vLLM's server answers), an unknown one 404 (`served` adds what the server answers there).
 */
function noRoute(req: IncomingMessage, path: string, served = ''): HttpError {
  const allow = ALLOWED.get(path) ?? (path.startsWith('/v1/models/') ? ALLOWED.get('/v1/models') : undefined);
  if (!allow) return new HttpError(404, `no route ${req.method} ${path}${served}`, 'invalid_request_error', 'not_found');
  return new HttpError(405, `${req.method} ${path} is not allowed: it takes ${allow}`, 'invalid_request_error', 'method_not_allowed', { Allow: allow });
}

/** When Ollama's `/api/ps` says a served model unloads: never, while the server runs (a date far enough ahead). */
const FOREVER = '2318-01-01T00:00:00Z';

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

/** The error shapes of the APIs served: OpenAI's, Anthropic's (`/v1/messages`) and Ollama's (`/api/*`). */
type ErrorDialect = 'openai' | 'anthropic' | 'ollama';

/** Answers an error, unless the answer already started (a stream then ends with an error event). */
function sendError(res: ServerResponse, err: HttpError, dialect: ErrorDialect = 'openai'): void {
  // An answer already ended (a Responses or Messages stream closes with its own error event) takes nothing more.
  if (res.destroyed || res.writableEnded) return;
  const body = dialect === 'anthropic' ? anthropicError(err, res) : dialect === 'ollama' ? { error: err.message } : err.body();
  if (res.headersSent) {
    // Mid-stream: the stream's own last line (Ollama's are JSON lines, the others server-sent events).
    res.end(dialect === 'ollama' ? `${JSON.stringify(body)}\n` : `data: ${JSON.stringify(body)}\n\n`);
    return;
  }
  sendJson(res, err.status, body, err.headers);
}

/**
 * How much of the decoded text token `j` of `ids` writes (special tokens such as BOS none): the text after the
 * tokens before it, read over a few of them so that a word's leading space counts where the decoder writes it.
 */
function visibleLength(tokenizer: TextTokenizer, ids: readonly number[], j: number): number {
  return tokenizer.textsAfter(ids.slice(Math.max(0, j - DECODE_LOOK_BEHIND), j), [ids[j]!], true)[0]!.length;
}

/**
 * The last `keep` tokens of `text` (vLLM's `truncate_prompt_tokens`), encoded from an end of it long enough to give
 * more than that (a few more, so that where it is cut does not change the ones kept): a prompt past the context is
 * cut rather than refused, and an 8 MB one encoded whole would hold the server's thread for a minute.
 */
function lastTokens(encode: (text: string) => number[], text: string, keep: number): number[] {
  for (let chars = keep * 4; ; chars *= 4) {
    const ids = encode(text.slice(-chars));
    if (chars >= text.length || ids.length > keep + 16) return ids.slice(Math.max(0, ids.length - keep));
  }
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

/** Each tokenizer's special tokens' texts, listed once asked for. */
const SPECIAL_TEXTS = new WeakMap<TextTokenizer, string[]>();

/** The text of every special token of `tokenizer` (BOS, EOS, a chat turn's markers): what vLLM's `skip_special_tokens: false` keeps. */
function specialTokenTexts(tokenizer: TextTokenizer): string[] {
  let texts = SPECIAL_TEXTS.get(tokenizer);
  if (!texts) {
    texts = [];
    // (an added token's bytes are its text's)
    for (let id = 0; id < tokenizer.vocabSize; id++) if (tokenizer.isSpecial(id)) texts.push(Buffer.from(tokenizer.tokenBytes(id) ?? []).toString('utf8'));
    SPECIAL_TEXTS.set(tokenizer, texts);
  }
  return texts;
}

/**
 * An error in Anthropic's shape, `{"type": "error", "error": {"type", "message"}, "request_id"}`, its type from the
 * status, its id the answer's `request-id`.
 */
function anthropicError(err: HttpError, res: ServerResponse): { type: 'error'; error: { type: string; message: string }; request_id: string | null } {
  const types: Record<number, string> = { 400: 'invalid_request_error', 401: 'authentication_error', 403: 'permission_error', 404: 'not_found_error', 405: 'invalid_request_error', 408: 'timeout_error', 413: 'request_too_large', 429: 'rate_limit_error', 503: 'overloaded_error' };
  const id = res.getHeader('request-id');
  return { type: 'error', error: { type: types[err.status] ?? 'api_error', message: err.message }, request_id: typeof id === 'string' ? id : null };
}
