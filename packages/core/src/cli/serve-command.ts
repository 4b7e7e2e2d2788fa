/**
 * `reasonplug serve`: the OpenAI-compatible server (serve/server.ts) from the command line. Messages go to
 * stderr (JSON lines with `--request-log json`); SIGTERM (and SIGINT) stop accepting, finish what is running, then exit.
 */
import { existsSync, readFileSync } from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';
import { startServer, type ResolvedReference, type ServedInfo } from '../serve/server.js';
import { usableApiKey } from '../serve/api-keys.js';
import { allowedHostOf, corsOriginOf } from '../serve/cors.js';
import { formatRequestRecord, type RequestLogFormat, type RequestRecord } from '../serve/request-log.js';
import type { ReasonerSpec } from '../runtime/protocol.js';
import { settingsFrom, type RegistryOptions } from '../registry/settings.js';
import { parseRef } from '../registry/reference.js';
import { InvalidReferenceError, RegistryAuthError } from '../registry/errors.js';
import { isLocalModelName } from '../modules/local-names.js';
import type { TransferProgress } from '../registry/download.js';
import { DEVICES } from '../runtime/devices.js';
import { DTYPE_CHOICES } from '../modules/hub-variants.js';
import { PLACEMENTS, type PlacementChoice } from '../runtime/thread-budget.js';
import type { FusionMode } from '../compose/fusion.js';
import { chatTemplateFile, integerFlag, jsonObjectFlag, nonNegativeIntegerFlag, parseWeight, reasonerTaskFlag, type ReasonerTaskFlag, threadsFlag } from './flags.js';
import type { ReasoningFormat } from '../chat/reasoning.js';
import type { ToolCallSyntax } from '../constrain/tool-syntax.js';
import { draftModelOf, draftModelOptions, modelDefaultsOption, promptLookupOf, promptLookupOption, sessionCacheOption, int8PromptsOption, int8PromptsUnused } from './model-flags.js';

/** `NAME=REF[=WEIGHT]`: the served name, the model (path or registry reference), an optional default weight. */
export function servedReasonerFlag(v: string, prev: ReasonerSpec[] = []): ReasonerSpec[] {
  const eq = v.indexOf('=');
  if (eq <= 0 || eq === v.length - 1) throw new InvalidArgumentError(`--reasoner ${v}: expected NAME=REF[=WEIGHT]`);
  const name = v.slice(0, eq);
  if (name.includes('+')) throw new InvalidArgumentError(`--reasoner ${v}: the name must not hold "+" (it joins names in a composition)`);
  let ref = v.slice(eq + 1);
  let weight: number | undefined;
  const last = ref.lastIndexOf('=');
  // `ns/name@>=1.2` ends in a registry range, not a weight.
  if (last > 0 && !/[<>=]$/.test(ref.slice(0, last))) {
    weight = parseWeight(ref.slice(last + 1));
    if (weight === undefined) throw new InvalidArgumentError(`--reasoner ${v}: the weight after the last "=" must be a number`);
    ref = ref.slice(0, last);
  } else if (parseWeight(ref) !== undefined) {
    // generate's `--reasoner REF=WEIGHT`, where serve's names the reasoner first
    throw new InvalidArgumentError(`--reasoner ${v}: expected NAME=REF[=WEIGHT], and "${ref}" is a weight, not a model: name the reasoner, e.g. --reasoner r=${name}=${ref}`);
  }
  return [...prev, { name, model: ref, ...(weight !== undefined ? { weight } : {}) }];
}

/** `NAME=<backbone>+<reasoner>+…` (repeatable). */
function aliasFlag(v: string, prev: Record<string, string> = {}): Record<string, string> {
  const eq = v.indexOf('=');
  if (eq <= 0 || eq === v.length - 1) throw new InvalidArgumentError(`--alias ${v}: expected NAME=<backbone>+<reasoner>+…`);
  return { ...prev, [v.slice(0, eq)]: v.slice(eq + 1) };
}

/** `--api-key` (repeatable): a key no request could present is refused (see {@link usableApiKey}). */
function apiKeyFlag(v: string, prev: string[] = []): string[] {
  if (!usableApiKey(v)) throw new InvalidArgumentError('--api-key must be a key without surrounding spaces (an empty one would lock every request out)');
  return [...prev, v];
}

/** A repeatable flag whose values `parse` reads, its refusals usage errors naming the flag. */
function listFlag(flag: string, parse: (v: string) => string): (v: string, prev?: string[]) => string[] {
  return (v, prev = []) => {
    try {
      return [...prev, parse(v)];
    } catch (err) {
      throw new InvalidArgumentError(`${flag}: ${(err as Error).message}`);
    }
  };
}

/** `--cors-origin` (repeatable): an origin as browsers send it, or `*`. */
const corsOriginFlag = listFlag('--cors-origin', corsOriginOf);

/** `--allowed-host` (repeatable): a host name as a `Host` header names it, or `*`. */
const allowedHostFlag = listFlag('--allowed-host', allowedHostOf);

/** A flag naming a file to read at once (a missing or unreadable one is a usage error). */
function fileFlag(flag: string): (file: string) => Buffer {
  return (file) => {
    try {
      return readFileSync(file);
    } catch (err) {
      throw new InvalidArgumentError(`${flag} ${file}: ${(err as Error).message}`);
    }
  };
}

/** `--ssl-key-file` and `--ssl-cert-file`: both or neither. */
function tlsOptions({ sslKeyFile: key, sslCertFile: cert }: Pick<ServeFlags, 'sslKeyFile' | 'sslCertFile'>): { tls?: { key: Buffer; cert: Buffer } } {
  if (key && cert) return { tls: { key, cert } };
  if (key || cert) throw new InvalidArgumentError(`--ssl-key-file and --ssl-cert-file go together (only ${key ? '--ssl-key-file' : '--ssl-cert-file'} was given)`);
  return {};
}

/** `--host`: an address; an empty one would listen on every interface, which only an explicit 0.0.0.0 or :: should. */
function hostFlag(v: string): string {
  if (v.trim() === '') throw new InvalidArgumentError('--host must name an address (0.0.0.0 or :: to listen on every interface)');
  return v;
}

/**
 * `--registry` and `--registry-token`, read as every command's registry and `REASONPLUG_REGISTRY` are (the client's
 * settings: `host[:port]`, or a URL whose `http://` asks for plain HTTP). The token goes to the registry the model
 * references name (`--model registry.local:5000/team/m@^1`), as `pull --token` does, else to `--registry`'s;
 * references that name two registries are refused, since only one of them could get it.
 */
function registryOptions(flags: ServeFlags): RegistryOptions {
  const { registry, registryToken: token } = flags;
  const options = { ...(registry ? { registry } : {}), ...(token ? { token } : {}) };
  if (!token) return options;
  const fallback = settingsFrom(options).registry;
  const named = modelReferences(flags).flatMap(({ flag, spec }) => {
    const from = registryOf(spec, fallback);
    return from === undefined ? [] : [{ flag, from }];
  });
  const [first] = named;
  const other = named.find((n) => n.from !== first!.from);
  if (other) {
    throw new InvalidArgumentError(
      `--registry-token goes to one registry, but ${first!.flag} names ${first!.from} and ${other.flag} names ${other.from}: serve modules of one registry, or pull each first with its own token (reasonplug pull REF --token TOKEN) and serve them from the cache with REASONPLUG_OFFLINE=1`,
    );
  }
  return first ? { ...options, tokenFor: first.from } : options;
}

/** The models the flags name, each with the flag that names it (for messages). */
function modelReferences(flags: ServeFlags): { flag: string; spec: string }[] {
  return [
    { flag: '--model', spec: flags.model },
    ...(flags.reasoner ?? []).map((r) => ({ flag: `--reasoner ${r.name ?? r.model}`, spec: r.model })),
    ...(flags.projector ? [{ flag: '--projector', spec: flags.projector }] : []),
    ...(flags.draftModel ? [{ flag: '--draft-model', spec: flags.draftModel }] : []),
  ];
}

/**
 * The registry (lower case) a model is pulled from where it is a registry reference (`fallback`'s where it names
 * none); undefined for a path or a model another tool keeps.
 */
function registryOf(spec: string, fallback: string | undefined): string | undefined {
  if (isLocalModelName(spec) || existsSync(spec)) return undefined;
  try {
    return parseRef(spec, fallback).registry.toLowerCase();
  } catch (err) {
    if (err instanceof InvalidReferenceError) return undefined;
    throw err;
  }
}

/**
 * A registry's refusal as serve's flags would mend it: the registry client's hint names the registry commands'
 * `--token`, which serve calls `--registry-token`.
 */
function withServeFlags(err: unknown): unknown {
  if (!(err instanceof RegistryAuthError)) return err;
  return new RegistryAuthError(err.message.replace(/--token\b/g, '--registry-token'), err.registry, err.scope, err.reason, err.serverMessage);
}

/** A line of serve's own on stderr: what it says, and the fields a JSON line adds to it. */
type Say = (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;

/**
 * Serve's own lines (start-up, progress, ready, signals, a fatal error): `reasonplug serve: …` text, or with
 * `--request-log json` JSON objects (`time`, `level`, `msg` and the fields given), so that stderr is JSON lines
 * throughout for a log collector.
 */
function serveLines(format: RequestLogFormat): Say {
  if (format !== 'json') return (_level, msg) => process.stderr.write(`reasonplug serve: ${msg}\n`);
  return (level, msg, fields = {}) => process.stderr.write(`${JSON.stringify({ time: new Date().toISOString(), level, msg, ...fields })}\n`);
}

/** How the ready line names a model given as a registry reference (a reasoner by its served name instead). */
const ROLE_LABELS: Record<Exclude<ResolvedReference['role'], 'reasoner'>, string> = { model: 'model', projector: 'projector', draftModel: 'draft model' };

/**
 * The ready line: where to call, the model ids served, what each registry reference resolved to (`model from
 * REG/ns/name@sha256:… (version V); math from …`: the bytes each replica of a scale-out runs), the context length,
 * whether prompts run on int8 products (`int8 prompts (N products)`; `int8Prompts` in JSON wherever --int8-prompts was
 * given, `{ products: 0, unused }` where it rewrote nothing), and the cache the models were pulled and converted into.
 */
function readyLine(url: string, apiKeys: boolean, info: ServedInfo, cacheDir: string): [string, Record<string, unknown>] {
  const resolved = info.resolved.map((r) => `; ${r.role === 'reasoner' ? r.name : ROLE_LABELS[r.role]} from ${r.pinned} (version ${r.version})`).join('');
  const products = info.int8Prompts?.products ?? 0;
  const int8 = products > 0 ? `; int8 prompts (${products} product${products === 1 ? '' : 's'})` : '';
  const msg = `ready; ${url}/v1 (${apiKeys ? 'API key required' : 'no API key'}); serving ${info.models.join(', ')}${resolved}; context length ${info.contextLength}${int8}; cache ${cacheDir}`;
  return [
    msg,
    {
      url: `${url}/v1`,
      apiKey: apiKeys,
      models: info.models,
      contextLength: info.contextLength,
      ...(info.int8Prompts ? { int8Prompts: info.int8Prompts } : {}),
      cacheDir,
      resolved: info.resolved,
      ...(info.pulled ? { pulled: info.pulled } : {}),
    },
  ];
}

interface ServeFlags {
  model: string;
  dtype?: string;
  reasoner?: ReasonerSpec[];
  reasonerTask?: ReasonerTaskFlag[];
  projector?: string;
  mode?: FusionMode;
  registry?: string;
  registryToken?: string;
  host: string;
  port: number;
  apiKey?: string[];
  corsOrigin?: string[];
  allowedHost?: string[];
  requestLog: RequestLogFormat;
  sslKeyFile?: Buffer;
  sslCertFile?: Buffer;
  alias?: Record<string, string>;
  name?: string;
  maxQueue: number;
  maxBatch: number;
  bodyTimeout: number;
  sendTimeout: number;
  shutdownTimeout: number;
  prefixCacheMb: number;
  sessionCache?: boolean;
  int8Prompts?: boolean;
  /** false with --no-model-defaults. */
  modelDefaults?: boolean;
  embeddings?: boolean;
  chatTemplate?: string;
  chatTemplateKwargs?: Record<string, unknown>;
  reasoningFormat: ReasoningFormat;
  thinkingBudget?: number;
  toolCallSyntax: ToolCallSyntax | 'auto';
  device: string;
  threads?: number;
  placement?: PlacementChoice;
  contextLength?: number;
  kvCache?: 'float32' | 'float16';
  promptLookup?: true | number;
  draftModel?: string;
  draftMax?: number;
  draftAdaptive?: boolean;
  draftPMin?: number;
}

/** Adds `serve` to the `reasonplug` program. */
export function addServeCommand(program: Command): void {
  const [draftModel, draftMax, draftAdaptive, draftPMin] = draftModelOptions();
  program
    .command('serve')
    .description("serve a model (and its reasoners) over the OpenAI HTTP API, with OpenAI's Responses, Anthropic's Messages and Ollama's APIs beside it")
    .requiredOption('--model <ref>', 'backbone: module directory, export directory, .onnx, .gguf, ollama://name:tag, hf://org/repo[:QUANT], lmstudio://publisher/model or registry reference')
    .addOption(new Option('--dtype <t>', 'graph of a hub export directory (transformers.js names)').choices([...DTYPE_CHOICES]))
    .option('--reasoner <name=ref[=weight]>', 'reasoner served as <backbone>+<name> (repeatable)', servedReasonerFlag)
    .option('--reasoner-task <task[=weight]>', "the registry's reasoner for this task that composes with the model, served as <backbone>+<task> (repeatable)", reasonerTaskFlag)
    .option('--projector <ref>', 'LiteReason reasoning projector (enables reasonplug.latent)')
    .addOption(new Option('--mode <mode>', 'default transform before weighting').choices(['logits', 'logprobs']))
    .option('--registry <url>', 'registry for references that name none: host[:port] or http(s)://host[:port] (default $REASONPLUG_REGISTRY)')
    .option('--registry-token <token>', 'registry bearer token, or user:token (default $REASONPLUG_TOKEN)')
    .option('--host <host>', 'address to listen on', hostFlag, '127.0.0.1')
    .option('--port <n>', 'port to listen on (0: any free one)', integerFlag('--port', 0, 65535, 'a port from 0 to 65535'), 8000)
    .option('--api-key <key>', 'accepted bearer token (repeatable; default: $REASONPLUG_API_KEY, comma-separated; none: open)', apiKeyFlag)
    .option('--cors-origin <origin>', "origin of browser pages allowed to call besides loopback ones, e.g. https://app.example.com (repeatable; '*': any); other origins get 403", corsOriginFlag)
    .option('--allowed-host <name>', "host name served besides this machine's (localhost, its host name, IP addresses) while listening on loopback, e.g. the Host a reverse proxy sends (repeatable; '*': any, which turns off the DNS-rebinding protection); other names get 403", allowedHostFlag)
    .option('--ssl-key-file <file>', 'serve HTTPS: the PEM private key (with --ssl-cert-file)', fileFlag('--ssl-key-file'))
    .option('--ssl-cert-file <file>', 'serve HTTPS: the PEM certificate, its chain after it (with --ssl-key-file)', fileFlag('--ssl-cert-file'))
    .addOption(new Option('--request-log <format>', 'a line on stderr for each request answered: method, path, status, time, model, tokens, finish reason, error (never prompts, replies or keys)').choices(['text', 'json', 'off']).default('text'))
    .option('--alias <name=composition>', 'extra model name for <backbone>+<reasoner>+… (repeatable)', aliasFlag)
    .option('--name <name>', "the backbone's served name (default: its Ollama name for ollama://…, else its module name, else its file name)")
    .option('--max-batch <n>', 'requests let into the engine at once', integerFlag('--max-batch', 1, 4096, 'a whole number from 1 to 4096'), 8)
    .option('--max-queue <n>', 'requests waiting beyond those; more get 429', integerFlag('--max-queue', 0, 1_000_000, 'a whole number >= 0'), 64)
    .option('--body-timeout <s>', "seconds a request's body may go without a byte arriving (then 408)", integerFlag('--body-timeout', 1, 2_147_483, 'a whole number of seconds from 1 to 2147483'), 30)
    .option('--send-timeout <s>', 'seconds an answer waits for a client that reads nothing (then it is cut off: a stream\'s row stopped, an ended answer\'s rest dropped)', integerFlag('--send-timeout', 1, 2_147_483, 'a whole number of seconds from 1 to 2147483'), 60)
    .option('--shutdown-timeout <s>', 'seconds SIGTERM waits for running requests before cutting them off and exiting', integerFlag('--shutdown-timeout', 1, 2_147_483, 'a whole number of seconds from 1 to 2147483'), 30)
    .option('--prefix-cache-mb <n>', "MiB of KV cache each model keeps of recent prompts, for prompts that begin with one (0: off)", integerFlag('--prefix-cache-mb', 0, 1_048_576, 'a whole number of MiB >= 0'), 128)
    .option('--embeddings', "serve /v1/embeddings: the backbone's final hidden state at each input's last token (its graph gets that output)")
    .option('--chat-template <file>', "a Jinja chat template file used instead of the model's")
    .option('--chat-template-kwargs <json>', 'template variables for every chat request, e.g. \'{"enable_thinking": false}\' (a request\'s chat_template_kwargs override them)', jsonObjectFlag('--chat-template-kwargs'))
    .addOption(new Option('--reasoning-format <f>', "a reply's <think> thought: reasoning_content (auto) or left in the content (none)").choices(['auto', 'none']).default('auto'))
    .option('--thinking-budget <n>', "tokens a reply's thought may take before its closing tag is written (a request's thinking_token_budget overrides it; default: no limit)", nonNegativeIntegerFlag('--thinking-budget'))
    .addOption(new Option('--tool-call-syntax <s>', 'how the model writes tool calls: as its chat template renders them (auto), <tool_call> blocks (hermes), Llama 3\'s JSON object (json), Mistral\'s [TOOL_CALLS] list (mistral), its [TOOL_CALLS]name[ARGS] calls (mistral-args), Granite\'s <|tool_call|> list (granite), DeepSeek\'s fenced calls (deepseek), Cohere\'s <|START_ACTION|> list (command-r), Command R+\'s Action: ```json list (command-r-plus), gpt-oss\'s commentary messages to functions.<name> (harmony), Qwen3-Coder\'s <function=…> and <parameter=…> tags (qwen-xml), GLM-4.5\'s <arg_key>/<arg_value> tags (glm), or a JSON reply with the tools described in the system message (generic, auto\'s choice where the template renders no tools)').choices(['auto', 'hermes', 'json', 'mistral', 'mistral-args', 'granite', 'deepseek', 'command-r', 'command-r-plus', 'harmony', 'qwen-xml', 'glm', 'generic']).default('auto'))
    .addOption(new Option('--device <d>', 'execution provider').choices([...DEVICES]).default('cpu'))
    .option('--threads <n>', 'intra-op threads', threadsFlag)
    .option('--context-length <n>', "positions a request may use (prompt and reply), at most the model's own (vLLM's --max-model-len)", integerFlag('--context-length', 1, Number.MAX_SAFE_INTEGER, 'a whole number >= 1'))
    .addOption(new Option('--kv-cache <t>', "keys' and values' type of .gguf models converted on first use: float16 (default, as llama.cpp's; faster at long contexts) or float32 (exact against llama.cpp's F32 cache)").choices(['float32', 'float16']))
    .addOption(sessionCacheOption())
    .addOption(int8PromptsOption())
    .addOption(modelDefaultsOption())
    .addOption(promptLookupOption())
    .addOption(draftModel!)
    .addOption(draftMax!)
    .addOption(draftAdaptive!)
    .addOption(draftPMin!)
    .addOption(new Option('--placement <p>', 'where reasoners run').choices([...PLACEMENTS]).default('auto'))
    .action((flags: ServeFlags) => serve(flags));
}

/** Files smaller than this load without progress lines. */
const PROGRESS_LINE_BYTES = 64 * 2 ** 20;

/**
 * A progress callback that writes a line whenever a large file being pulled or converted passes another tenth (the
 * log of a server is no terminal for a progress bar).
 */
export function progressLines(write: (line: string) => void): (p: TransferProgress) => void {
  const tenths = new Map<string, number>();
  return (p) => {
    if (p.size < PROGRESS_LINE_BYTES) return;
    const key = `${p.file}\0${p.digest}`;
    const tenth = p.done ? 10 : Math.floor((10 * p.bytes) / p.size);
    if (tenth <= (tenths.get(key) ?? 0)) return;
    tenths.set(key, tenth);
    write(`${p.file}: ${tenth * 10}% of ${(p.size / 2 ** 20).toFixed(1)} MiB`);
  };
}

async function serve(flags: ServeFlags): Promise<void> {
  const say = serveLines(flags.requestLog);
  try {
    await serveUntilReady(flags, say);
  } catch (err) {
    const failure = withServeFlags(err) as Error;
    // As text, main's line; as JSON, a line of the log too.
    if (flags.requestLog !== 'json') throw failure;
    say('error', `${failure.name === 'Error' ? '' : `${failure.name}: `}${failure.message}`);
    process.exitCode = 1;
  }
}

/** Starts the server, stops it on SIGTERM and SIGINT, and says when it is ready (unless it is stopping by then). */
async function serveUntilReady(flags: ServeFlags, say: Say): Promise<void> {
  const apiKeys = flags.apiKey ?? (process.env.REASONPLUG_API_KEY ?? '').split(',').map((k) => k.trim()).filter(Boolean);
  const registry = registryOptions(flags);
  const { requestLog } = flags;
  const running = await startServer({
    engine: {
      model: flags.model,
      ...(flags.dtype ? { dtype: flags.dtype } : {}),
      reasoners: flags.reasoner ?? [],
      ...(flags.reasonerTask ? { reasonerTasks: flags.reasonerTask } : {}),
      ...(flags.projector ? { projector: flags.projector } : {}),
      ...(flags.mode ? { mode: flags.mode } : {}),
      registry,
      onProgress: progressLines((line) => say('info', line)),
      device: flags.device,
      ...(flags.threads ? { intraOpThreads: flags.threads } : {}),
      ...(flags.placement ? { placement: flags.placement } : {}),
      prefixCacheBytes: flags.prefixCacheMb * 2 ** 20,
      ...(flags.embeddings ? { embeddings: true } : {}),
      ...(flags.contextLength !== undefined ? { contextLength: flags.contextLength } : {}),
      ...(flags.kvCache ? { ggufKvCache: flags.kvCache } : {}),
      ...(flags.sessionCache === false ? { sessionCache: false } : {}),
      ...(flags.int8Prompts ? { int8Prompts: true } : {}),
      ...(flags.modelDefaults === false ? { modelDefaults: false } : {}),
      ...promptLookupOf(flags.promptLookup),
      ...draftModelOf(flags),
    },
    ...(flags.name ? { name: flags.name } : {}),
    ...(flags.alias ? { aliases: flags.alias } : {}),
    apiKeys,
    ...(flags.corsOrigin ? { corsOrigins: flags.corsOrigin } : {}),
    ...(flags.allowedHost ? { allowedHosts: flags.allowedHost } : {}),
    ...tlsOptions(flags),
    ...(requestLog !== 'off' ? { onRequest: (record: RequestRecord) => process.stderr.write(`${formatRequestRecord(record, requestLog)}\n`) } : {}),
    host: flags.host,
    port: flags.port,
    maxBatch: flags.maxBatch,
    maxQueue: flags.maxQueue,
    bodyTimeoutMs: flags.bodyTimeout * 1000,
    sendTimeoutMs: flags.sendTimeout * 1000,
    shutdownTimeoutMs: flags.shutdownTimeout * 1000,
    ...(flags.chatTemplate ? { chatTemplate: chatTemplateFile(flags.chatTemplate) } : {}),
    ...(flags.chatTemplateKwargs ? { chatTemplateKwargs: flags.chatTemplateKwargs } : {}),
    reasoningFormat: flags.reasoningFormat,
    ...(flags.thinkingBudget !== undefined ? { thinkingBudget: flags.thinkingBudget } : {}),
    ...(flags.toolCallSyntax !== 'auto' ? { toolCallSyntax: flags.toolCallSyntax } : {}),
  });
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    say('info', `${signal}: finishing running requests, then exiting`);
    running.close().then(
      ({ cutOff }) => {
        if (cutOff > 0) say('warn', `cut off ${cutOff} request${cutOff === 1 ? '' : 's'} after --shutdown-timeout (${flags.shutdownTimeout} s)`, { cutOff });
        process.exit(0);
      },
      (err: Error) => {
        say('error', err.message);
        process.exit(1);
      },
    );
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  // (said once a signal stops it: whoever waits for this line may signal at once)
  say('info', `listening on ${running.url} (loading ${flags.model})`, { url: running.url });
  let info: ServedInfo;
  try {
    info = await running.ready;
  } catch (err) {
    await running.close();
    throw err;
  }
  // Stopped while the model loaded: the server is not taking requests.
  if (stopping) return;
  const int8Unused = int8PromptsUnused(info.int8Prompts);
  if (int8Unused) say('warn', int8Unused, { int8Prompts: info.int8Prompts });
  say('info', ...readyLine(running.url, apiKeys.length > 0, info, settingsFrom(registry).cacheDir));
}
