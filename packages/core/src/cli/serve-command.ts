/**
 * `reasonplug serve`: the OpenAI-compatible server (serve/server.ts) from the command line. Messages go to
 * stderr; SIGTERM (and SIGINT) stop accepting, finish what is running, then exit.
 */
import { readFileSync } from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';
import { startServer } from '../serve/server.js';
import { usableApiKey } from '../serve/api-keys.js';
import { allowedHostOf, corsOriginOf } from '../serve/cors.js';
import { formatRequestRecord, type RequestLogFormat, type RequestRecord } from '../serve/request-log.js';
import type { ReasonerSpec } from '../runtime/protocol.js';
import type { RegistryOptions } from '../registry/settings.js';
import type { TransferProgress } from '../registry/download.js';
import { DEVICES } from '../runtime/devices.js';
import { DTYPE_CHOICES } from '../modules/hub-variants.js';
import { PLACEMENTS, type PlacementChoice } from '../runtime/thread-budget.js';
import type { FusionMode } from '../compose/fusion.js';
import { chatTemplateFile, integerFlag, jsonObjectFlag, nonNegativeIntegerFlag, parseWeight, reasonerTaskFlag, type ReasonerTaskFlag, threadsFlag } from './flags.js';
import type { ReasoningFormat } from '../chat/reasoning.js';
import type { ToolCallSyntax } from '../constrain/tool-syntax.js';
import { draftModelOf, draftModelOptions, modelDefaultsOption, promptLookupOf, promptLookupOption, sessionCacheOption } from './model-flags.js';

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
 * settings: `host[:port]`, or a URL whose `http://` asks for plain HTTP).
 */
function registryOptions(flag: string | undefined, token: string | undefined): RegistryOptions {
  return { ...(flag ? { registry: flag } : {}), ...(token ? { token } : {}) };
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
    .option('--send-timeout <s>', 'seconds a streamed answer waits for a client that reads nothing (then it is cut off, its row stopped)', integerFlag('--send-timeout', 1, 2_147_483, 'a whole number of seconds from 1 to 2147483'), 60)
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
  const apiKeys = flags.apiKey ?? (process.env.REASONPLUG_API_KEY ?? '').split(',').map((k) => k.trim()).filter(Boolean);
  const registry = registryOptions(flags.registry, flags.registryToken);
  const say = (text: string) => process.stderr.write(`${text}\n`);
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
      onProgress: progressLines((line) => say(`reasonplug serve: ${line}`)),
      device: flags.device,
      ...(flags.threads ? { intraOpThreads: flags.threads } : {}),
      ...(flags.placement ? { placement: flags.placement } : {}),
      prefixCacheBytes: flags.prefixCacheMb * 2 ** 20,
      ...(flags.embeddings ? { embeddings: true } : {}),
      ...(flags.contextLength !== undefined ? { contextLength: flags.contextLength } : {}),
      ...(flags.kvCache ? { ggufKvCache: flags.kvCache } : {}),
      ...(flags.sessionCache === false ? { sessionCache: false } : {}),
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
    ...(requestLog !== 'off' ? { onRequest: (record: RequestRecord) => say(formatRequestRecord(record, requestLog)) } : {}),
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
  say(`reasonplug serve: listening on ${running.url} (loading ${flags.model})`);
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    say(`reasonplug serve: ${signal}: finishing running requests, then exiting`);
    running.close().then(
      () => process.exit(0),
      (err: Error) => {
        say(`reasonplug serve: ${err.message}`);
        process.exit(1);
      },
    );
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  try {
    await running.ready;
  } catch (err) {
    await running.close();
    throw err;
  }
  say(`reasonplug serve: ready; ${running.url}/v1 (${apiKeys.length ? 'API key required' : 'no API key'})`);
}
