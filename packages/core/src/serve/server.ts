/**
 * `reasonplug serve`: an OpenAI-compatible HTTP server (node:http, or node:https with `tls`) over one engine, which
 * also answers OpenAI's Responses API, Anthropic's Messages API and Ollama's API (`/api/*`) through the same chat turn.
 * Concurrent requests are concurrent `engine.stream` calls; the server's own admission keeps at most `maxBatch` of
 * them in the engine and `maxQueue` more waiting, and answers 429 with `Retry-After` beyond that. The socket listens
 * before the model loads, so `/health` can say 503 while it does. Requests for other machines' host names and browser
 * pages of other origins are let in or refused first (cors.ts); each answered request's record goes to `onRequest`
 * (request-log.ts).
 * The routes are modules of their own (chat-routes.ts, completions-route.ts, embeddings-route.ts, tokenize-routes.ts,
 * ollama-routes.ts), sharing the loaded model and the request runner through served.ts; this one listens, sends each
 * path to its route, and shuts down.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { existsSync, statSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import type { AddressInfo } from 'node:net';
import { checkEngineOptions, Engine, type EngineOptions } from '../engine.js';
import { PACKAGE_VERSION } from '../package-version.js';
import { TextTokenizer } from '../tokenizer/tokenizer.js';
import { resolveModelPath } from '../registry/resolve-model.js';
import { pullModule, type PulledModule, type PullOptions } from '../registry/pull.js';
import type { RegistryOptions } from '../registry/settings.js';
import { reasonersForTasks } from '../registry/task-reasoners.js';
import { isLocalModelName } from '../modules/local-names.js';
import { ModelNotFoundError } from '../modules/locate.js';
import { loadModuleDir } from '../modules/module-dir.js';
import { ggufModuleName, type GgufModuleOptions } from '../gguf/gguf-module.js';
import { MANIFEST_FILE } from '../modules/manifest.js';
import { isOllamaRef, ollamaDisplayName } from '../modules/ollama-store.js';
import type { ToolCallSyntax } from '../constrain/tool-syntax.js';
import type { ReasoningFormat } from '../chat/reasoning.js';
import type { TransferProgress } from '../registry/download.js';
import type { Int8PromptsOutcome } from '../runtime/decoder-session.js';
import { listener, type RefusedRequest, type TlsFiles } from './listener.js';
import { Admission } from './admission.js';
import { ApiKeys, usableApiKey } from './api-keys.js';
import { limitUnsentTail, sendError, sendJson } from './answer-writers.js';
import { chat, countTokens, messages, responses } from './chat-routes.js';
import { completion } from './completions-route.js';
import { CorsPolicy, HostPolicy } from './cors.js';
import { CHAT_FIELDS, MESSAGES_FIELDS, RESPONSES_FIELDS, withSamplingDefaults } from './defaults-request.js';
import { embeddings } from './embeddings-route.js';
import { HttpError, toHttpError } from './errors.js';
import { ServerMetrics } from './metrics.js';
import { ollamaServedName, ServedModels } from './models.js';
import { OLLAMA_API_VERSION, OLLAMA_ROUTES, ollamaModels } from './ollama-routes.js';
import { BodyReader } from './request-body.js';
import type { RequestRecord } from './request-log.js';
import { newRequestId, refusedRecord, RequestRecords } from './request-records.js';
import { KEEP_ALIVE_MS, RequestRunner } from './request-runner.js';
import { isObject, parseChatRequest, parseCompletionRequest, parseDetokenizeRequest, parseEmbeddingsRequest, parseTokenizeRequest } from './requests.js';
import { ResponseItems } from './response-items.js';
import { parseResponsesRequest } from './responses-request.js';
import { parseMessagesRequest } from './messages-request.js';
import { modelIdOf, noRoute, requestPath, routedMethod, UNPREFIXED } from './routing.js';
import { sampling, type Loaded, type Served } from './served.js';
import { detokenize, tokenize } from './tokenize-routes.js';

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
  /** Address to listen on (default `127.0.0.1`: this machine only; `0.0.0.0` for every interface). */
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
   * Milliseconds an answer may wait for its client to take what was written (default 60 000, as nginx's
   * send_timeout); a client that reads nothing for that long is cut off: a stream's row stopped and its place freed,
   * an ended answer's unsent rest dropped with its connection.
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
  /**
   * Host names served besides this machine's (localhost, its host name, IP addresses) while the server listens on
   * loopback: the name a reverse proxy sends as `Host` (`*`: any, which turns the DNS-rebinding protection off; see
   * serve/cors.ts). Requests for other names get 403.
   */
  allowedHosts?: string[];
  /**
   * Called with each request's record when its answer ends, and with one for each request the HTTP parser refused
   * before any route saw it (`reasonplug serve` writes each as a line; see request-log.ts).
   */
  onRequest?: (record: RequestRecord) => void;
  /** Serve HTTPS with this PEM key and certificate (chain) instead of plain HTTP. */
  tls?: TlsFiles;
  /** For tests: milliseconds a stream waits for its first token before each keep-alive (default 15 000; see request-runner.ts). */
  keepAliveMs?: number;
}

/** A model a server loaded from a registry reference: what it was loaded as, and the module the reference resolved to. */
export interface ResolvedReference extends Pick<PulledModule, 'version' | 'digest' | 'pinned'> {
  /** The backbone (`model`), a reasoner, the projector or the draft model. */
  role: 'model' | 'reasoner' | 'projector' | 'draftModel';
  /** A reasoner's served name (models are served as `<backbone>+<name>`). */
  name?: string;
}

/** What a server loaded, as its `ready` gives it. */
export interface ServedInfo {
  /** The model ids it answers to, as `GET /v1/models` lists them: the backbone, its compositions, the aliases. */
  models: string[];
  /** Positions one request may use (prompt and reply). */
  contextLength: number;
  /**
   * Each model given as a registry reference (the backbone, the reasoners given in their order, then those found by
   * task, the projector, the draft model): the module it resolved to, its exact version and manifest digest; empty
   * when none was.
   */
  resolved: ResolvedReference[];
  /** The backbone's entry of `resolved` (without its role), where the backbone was given as a registry reference. */
  pulled?: Pick<PulledModule, 'version' | 'digest' | 'pinned'>;
  /** What `int8Prompts` did for the backbone (`ModelInfo.int8Prompts`), where the engine was loaded with it. */
  int8Prompts?: Int8PromptsOutcome;
}

/** A listening server. */
export interface RunningServer {
  /** `http://host:port`. */
  readonly url: string;
  /** Settles once the model is loaded, with what it serves (rejects when loading fails; the server then answers 503). */
  readonly ready: Promise<ServedInfo>;
  /** The counters and histograms `/metrics` reports, live. */
  readonly metrics: ServerMetrics;
  /**
   * Stops accepting, refuses the requests still sending their bodies, finishes every admitted and queued request
   * (those still running after `shutdownTimeoutMs` are cut off, and given a moment for their records to be written),
   * frees the engine, closes the socket. Settles with the number of requests cut off; a second call settles with the first.
   */
  close(): Promise<{ cutOff: number }>;
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
  const keepAliveMs = options.keepAliveMs ?? KEEP_ALIVE_MS;
  const maxBodyBytes = options.maxBodyBytes ?? 8 * 2 ** 20;
  if (!(Number.isSafeInteger(maxBodyBytes) && maxBodyBytes >= 1)) throw new RangeError(`maxBodyBytes must be a whole number >= 1 (got ${maxBodyBytes})`);
  for (const [name, ms] of [['bodyTimeoutMs', bodyTimeoutMs], ['sendTimeoutMs', sendTimeoutMs], ['shutdownTimeoutMs', shutdownTimeoutMs], ['keepAliveMs', keepAliveMs]] as const) {
    // (setTimeout fires at once past 2^31 - 1 ms)
    if (!(Number.isSafeInteger(ms) && ms >= 1 && ms < 2 ** 31)) throw new RangeError(`${name} must be a whole number of milliseconds from 1 to ${2 ** 31 - 1} (got ${ms})`);
  }
  const cors = new CorsPolicy(options.corsOrigins);
  const hosts = new HostPolicy(options.host ?? '127.0.0.1', options.allowedHosts);
  const metrics = new ServerMetrics();
  const admission = new Admission(maxBatch, maxQueue, metrics);
  const apiKeys = new ApiKeys(options.apiKeys ?? []);
  const bodies = new BodyReader(maxBodyBytes, bodyTimeoutMs);
  const records = new RequestRecords();
  const runner = new RequestRunner(admission, metrics, records, sendTimeoutMs, keepAliveMs);
  /** The output items of this server's Responses answers, which later requests' `item_reference`s name. */
  const responseItems = new ResponseItems();
  let loaded: Served | undefined;
  let loadError: Error | undefined;
  let loading: TransferProgress | undefined;
  let draining = false;
  /** Requests being handled (read, queued, running, answering): what a shutdown waits for. */
  let active = 0;
  let idle: (() => void) | undefined;

  const { onRequest } = options;
  const onRefused = onRequest && ((refused: RefusedRequest) => onRequest(refusedRecord(refused)));
  const server = listener(options.tls, (req, res) => {
    const sent = requestPath(req.url);
    // llama.cpp's server answers the OpenAI routes without `/v1` too, for clients whose base URL leaves it out.
    const path = UNPREFIXED.has(sent) ? `/v1${sent}` : sent;
    // The request's id, a proxy's own where one sent it: OpenAI's SDKs read it as `x-request-id`, Anthropic's as
    // `request-id` (each gives it as `_request_id` for logs).
    const given = req.headers['x-request-id'];
    const requestId = typeof given === 'string' && REQUEST_ID.test(given) ? given : newRequestId();
    res.setHeader('x-request-id', requestId);
    res.setHeader('request-id', requestId);
    // Anthropic's and Ollama's clients read their own error shapes.
    const dialect = path.startsWith('/v1/messages') ? 'anthropic' : path.startsWith('/api/') ? 'ollama' : 'openai';
    const answered = handle(req, res, path)
      .catch((err) => {
        const error = toHttpError(err, path);
        records.note(res, { error: error.message });
        sendError(res, error, dialect);
      })
      .finally(() => limitUnsentTail(res, sendTimeoutMs, server.keepAliveTimeout));
    if (onRequest) records.track(req, res, sent, requestId, answered, onRequest);
  }, onRefused);

  async function handle(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    // First, so that a page allowed to call can read every answer, errors included (a Host refused too: a rebinding
    // page's own origin is never allowed, so it reads nothing); a preflight ends here.
    if (cors.apply(req, res)) return;
    hosts.check(req);
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
      // bytes may still be in the engine's answer; and the engine's own rows beside its bytes, since a call's answer
      // may reach the server, which frees its place, before the engine has let its rows go)
      const held = admission.heldRows();
      // The engine's count of the KV bytes it holds, against its budget or maxBatch rows of full context.
      const kv = loaded ? await loaded.engine.stats().catch(() => undefined) : undefined;
      const rows = Math.max(kv?.maxBatch ?? 0, kv?.running ?? 0, held);
      const capacity = kv ? (kv.kvBudgetBytes ?? rows * loaded!.contextLength * kv.bytesPerPosition) : 0;
      res.writeHead(200, { 'Content-Type': 'text/plain; version=0.0.4; charset=utf-8' });
      res.end(
        metrics.render(loaded?.models.backbone ?? options.name ?? 'loading', {
          running: admission.runningCount,
          waiting: admission.waitingCount,
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
      const l = servable(req);
      return counted(async () => {
        const body = await bodyOf(req, res);
        return path === '/tokenize' ? tokenize(l, parseTokenizeRequest(body), res) : detokenize(l, parseDetokenizeRequest(body), res);
      });
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
    if (method === 'POST' && path === '/v1/messages/count_tokens') return counted(async () => countTokens(l, await bodyOf(req, res), res));
    const endpoint =
      method === 'POST' ? ({ '/v1/chat/completions': chat, '/v1/completions': completion, '/v1/embeddings': embeddings, '/v1/responses': responses, '/v1/messages': messages } as const)[path] : undefined;
    if (endpoint) {
      return counted(async () => {
        const body = await bodyOf(req, res);
        if (endpoint === embeddings) return embeddings(l, parseEmbeddingsRequest(body), res);
        if (endpoint === responses) {
          const scope = apiKeys.itemScope(req);
          const held = { get: (id: string) => responseItems.get(id, scope) };
          return responses(l, parseResponsesRequest(withSamplingDefaults(body, sampling(l), RESPONSES_FIELDS), held), res, responseItems, scope);
        }
        if (endpoint === messages) return messages(l, parseMessagesRequest(withSamplingDefaults(body, sampling(l), MESSAGES_FIELDS)), res);
        const defaulted = withSamplingDefaults(body, sampling(l), CHAT_FIELDS);
        return endpoint === chat ? chat(l, parseChatRequest(defaulted), res) : completion(l, parseCompletionRequest(defaulted), res);
      });
    }
    throw noRoute(req, path);
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
    const handler = method === 'POST' ? OLLAMA_ROUTES[path] : undefined;
    if (!handler) throw noRoute(req, path, " (this server answers Ollama's chat, generate, embed, embeddings, show, tags, ps and version)");
    return counted(async () => handler(l, await bodyOf(req, res), res));
  }

  /**
   * An API request's JSON body, the model it names noted on its record at once: a request refused before it runs (a
   * model not served, a field wrong) is logged with the model it asked for, on every route.
   */
  async function bodyOf(req: IncomingMessage, res: ServerResponse): Promise<unknown> {
    const body = await bodies.readJson(req);
    if (isObject(body) && typeof body.model === 'string') records.note(res, { model: body.model });
    return body;
  }

  /** Runs an API request's handling (its body read, its answer) among the requests a shutdown waits for. */
  async function counted(work: () => Promise<void>): Promise<void> {
    active++;
    try {
      await work();
    } finally {
      if (--active === 0) idle?.();
    }
  }

  /** The loaded model for an API request: the caller authorized, the server not shutting down, the model loaded. */
  function servable(req: IncomingMessage): Served {
    apiKeys.authorize(req);
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
    ({ resolved, ...l }): ServedInfo => {
      loaded = { ...l, options, runner };
      const backbone = resolved.find((r) => r.role === 'model');
      const pulled = backbone && { version: backbone.version, digest: backbone.digest, pinned: backbone.pinned };
      const { int8Prompts } = l.engine.info;
      return { models: l.models.list().map((m) => m.id), contextLength: l.contextLength, resolved, ...(pulled ? { pulled } : {}), ...(int8Prompts ? { int8Prompts } : {}) };
    },
    (err: Error) => {
      loadError = err;
      throw err;
    },
  );
  ready.catch(() => {});

  let closing: Promise<{ cutOff: number }> | undefined;
  /** `close()`'s work, done once (see {@link RunningServer.close}). */
  async function shutdown(): Promise<{ cutOff: number }> {
    draining = true;
    const deadline = new Promise<false>((r) => setTimeout(() => r(false), shutdownTimeoutMs).unref());
    // Stop accepting; connections kept alive are closed once they are idle.
    const closed = new Promise<void>((r) => server.close(() => r()));
    server.closeIdleConnections();
    // A request whose body is still arriving would hold the shutdown for as long as its client trickles it.
    bodies.refuseAll();
    const finished = active === 0 || (await Promise.race([new Promise<true>((r) => (idle = () => r(true))), deadline]));
    // Past the deadline the requests left are cut off: their rows stop at their next step.
    const cutOff = finished ? 0 : active;
    if (!finished) {
      records.cutAll();
      server.closeAllConnections();
    }
    server.closeIdleConnections();
    await records.written(RECORDS_AFTER_CUT_OFF_MS);
    // The engine is given what is left of the deadline: a batch thread held by one long step (a grammar's compile)
    // would hold the shutdown past the end of every request. (The CLI then exits; a library's process keeps the
    // engine's dispose going, which ends its worker once that step is done, or a minute on.)
    await Promise.race([ready.then(() => loaded!.engine.dispose(), () => {}), deadline]);
    server.closeAllConnections();
    await closed;
    return { cutOff };
  }

  return {
    url: `${options.tls ? 'https' : 'http'}://${host}:${address.port}`,
    ready,
    metrics,
    close() {
      closing ??= shutdown();
      return closing;
    },
  };
}

/**
 * Loads the engine, names the backbone, and finds the tokenizer chat prompts are rendered with; for each model given
 * as a registry reference, what it resolved to too.
 */
async function load(options: ServeOptions): Promise<Loaded & Pick<ServedInfo, 'resolved'>> {
  // (reasoners found by task are found here, and the engine given them as reasoners)
  const { reasonerTasks, ...engineOptions } = options.engine;
  const { registry, onProgress, reasoners: given = [], projector, draftModel } = engineOptions;
  const pullOptions = onProgress ? { ...registry, onProgress } : registry;
  const convert = engineOptions.ggufKvCache ? { kvCache: engineOptions.ggufKvCache } : undefined;
  // The engine's checks first: a mistake in the options is named before anything is pulled.
  checkEngineOptions({ ...(options.maxBatch !== undefined ? { maxBatch: options.maxBatch } : {}), ...options.engine });
  // The models given are resolved here and the engine given the paths: resolving a range again, the engine could find
  // a version newer than the one the ready line names.
  const resolveSpec = (spec: string) => resolvedModel(spec, pullOptions, convert, registry);
  const draftSpec = typeof draftModel === 'string' ? draftModel : draftModel?.model;
  // The backbone first: one that cannot be had stops the load before the others are pulled (a path passes through
  // resolution as it is, so one that is not there is refused here, as the engine would).
  const model = await resolveSpec(engineOptions.model);
  if (!existsSync(model.path)) throw new ModelNotFoundError(`model path not found: ${model.path}`);
  // Reasoners found by task (for the backbone's tokenizer) follow the ones given, pinned to the version found.
  const reasoners = [...given, ...(reasonerTasks?.length ? await reasonersForTasks(model.path, engineOptions.dtype, reasonerTasks, registry) : [])];
  const [reasonerModels, projectorModel, draft] = await Promise.all([
    Promise.all(reasoners.map((r) => resolveSpec(r.model))),
    projector !== undefined ? resolveSpec(projector) : undefined,
    draftSpec !== undefined ? resolveSpec(draftSpec) : undefined,
  ]);
  const reasonersAt = await Promise.all(
    reasoners.map(async (r, i) => {
      const path = reasonerModels[i]!.path;
      // (named as the engine names a reasoner given by its spec: a GGUF file's after the file)
      const name = r.name ?? (await ggufModuleName(r.model, path));
      return { ...r, model: path, ...(name !== undefined ? { name } : {}) };
    }),
  );
  // The engine batches as many rows as the server lets requests in (its own default is 8), unless told otherwise.
  // (the name it was resolved from: an Ollama model's defaults are in its manifest)
  const engine = await Engine.load({
    ...(options.maxBatch !== undefined ? { maxBatch: options.maxBatch } : {}),
    ...engineOptions,
    model: model.path,
    modelSource: engineOptions.modelSource ?? engineOptions.model,
    reasoners: reasonersAt,
    ...(projectorModel ? { projector: projectorModel.path } : {}),
    ...(draft ? { draftModel: typeof draftModel === 'object' ? { ...draftModel, model: draft.path } : draft.path } : {}),
  });
  try {
    const abs = resolve(model.path);
    const isDir = existsSync(abs) && statSync(abs).isDirectory();
    const manifest = isDir && existsSync(join(abs, MANIFEST_FILE)) ? (await loadModuleDir(abs, { verify: false })).manifest : undefined;
    // A model Ollama has pulled answers to its Ollama name, as Ollama's clients ask for it (`:latest` left out, as requests are read).
    const ollamaName = isOllamaRef(engineOptions.model) ? ollamaServedName(ollamaDisplayName(engineOptions.model)) : undefined;
    const name = options.name ?? ollamaName ?? (isDir ? await ggufModuleName(engineOptions.model, abs) : undefined) ?? manifest?.name ?? basename(engineOptions.model).replace(/\.(onnx|gguf)$/i, '');
    const models = new ServedModels(name, engine.info.reasoners.map((r) => r.name), options.aliases, engine.info.contextLength);
    const tokenizer = engine.info.tokenizer && (await TextTokenizer.fromDirectory(engine.info.tokenizer.dir));
    // (the engine's reasoners are the ones it was given, in their order)
    const loadedAs: [Pick<ResolvedReference, 'role' | 'name'>, ResolvedModel | undefined][] = [
      [{ role: 'model' }, model],
      ...reasonerModels.map((m, i): [Pick<ResolvedReference, 'role' | 'name'>, ResolvedModel] => [{ role: 'reasoner', name: engine.info.reasoners[i]!.name }, m]),
      [{ role: 'projector' }, projectorModel],
      [{ role: 'draftModel' }, draft],
    ];
    const resolved = loadedAs.flatMap(([as, m]) => (m?.pulled ? [{ ...as, ...m.pulled }] : []));
    return { engine, models, ...(tokenizer ? { tokenizer } : {}), contextLength: engine.info.contextLength ?? 2048, resolved };
  } catch (err) {
    await engine.dispose();
    throw err;
  }
}

/** Where a model given to load is loaded from, and for a registry reference the module it resolved to. */
type ResolvedModel = { path: string; pulled?: ServedInfo['pulled'] };

/**
 * The path `spec` loads from (a registry reference pulled into the cache, a GGUF file converted, a path as given),
 * and for a registry reference the module it resolved to.
 */
async function resolvedModel(spec: string, opts: PullOptions | undefined, convert: GgufModuleOptions['convert'], registry: RegistryOptions | undefined): Promise<ResolvedModel> {
  const path = await resolveModelPath(spec, opts, convert);
  const pulled = await pulledAs(spec, path, registry);
  return { path, ...(pulled ? { pulled } : {}) };
}

/**
 * What the registry reference `spec` resolved to, `dir` in the cache: read back from the cache it was just pulled
 * into (its version refs resolve a range there too); undefined for a model that is no registry reference (a path, a
 * model another tool keeps, a GGUF file converted), which no offline pull of it finds as that directory.
 */
async function pulledAs(spec: string, dir: string, registry: RegistryOptions | undefined): Promise<ServedInfo['pulled']> {
  if (dir === spec || isLocalModelName(spec)) return undefined;
  // (only to say what loaded: a reference the cache cannot answer so is named without them)
  const pulled = await pullModule(spec, { ...registry, offline: true }).catch(() => undefined);
  return pulled?.dir === dir ? { version: pulled.version, digest: pulled.digest, pinned: pulled.pinned } : undefined;
}

/**
 * Milliseconds a shutdown waits, once it has cut requests off, for their handlers to end and their records to be
 * written: a row stops at its next step, well within this (a handler still running after it goes unrecorded).
 */
const RECORDS_AFTER_CUT_OFF_MS = 1_000;

/** Seconds a client is asked to wait (`Retry-After`) while the model loads. */
const LOADING_RETRY_SECONDS = 5;

/** A request id a client or proxy may give (`x-request-id`), kept as is: short, and printable without quoting. */
const REQUEST_ID = /^[\w.:-]{1,128}$/;
