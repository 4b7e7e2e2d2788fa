/**
 * `reasonplug` command line: generate, inspect, convert.
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import * as ort from 'onnxruntime-node';
import { Engine, type StreamOptions } from '../engine.js';
import { PACKAGE_VERSION } from '../package-version.js';
import { stdout } from './output-closed.js';
import { validateGenerateOptions } from '../generate/options.js';
import { locateModel, ModelNotFoundError } from '../modules/locate.js';
import { resolveModelPath } from '../registry/resolve-model.js';
import { detectSignature, describeSignature } from '../onnx/signature.js';
import { prepareDecoder } from '../onnx/prepared-cache.js';
import { loadFailure } from '../runtime/devices.js';
import { convertGguf, kebabName, SUPPORTED_ARCHITECTURES } from '../gguf/convert.js';
import { progressBar } from '../registry/progress.js';
import { basename, resolve } from 'node:path';
import { existsSync } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import type { TokenTrace } from '../compose/composed-source.js';
import { DTYPE_CHOICES } from '../modules/hub-variants.js';
import { quantizeModel } from '../modules/quantize-module.js';
import { isLocalModelName } from '../modules/local-names.js';
import { isOllamaRef, ollamaDisplayName } from '../modules/ollama-store.js';
import { ollamaServedName } from '../serve/models.js';
import { addRegistryCommands } from './registry-commands.js';
import { addCacheCommand } from './cache-command.js';
import { responseFormatFromFlags, type ResponseFormatFlags } from './response-format-flags.js';
import { addServeCommand } from './serve-command.js';
import { writeBeside } from './write-beside.js';
import { addChatCommand } from './chat-command.js';
import { addEmbedCommand } from './embed-command.js';
import { addModelsCommand } from './models-command.js';
import { addLatentFlags, addModelFlags, addSamplingFlags, decodeSpeed, engineOptions, noteInt8PromptsUnused, latentOptions, localModelWithProgress, samplingOptions, type LatentFlags, type ModelFlags, type SamplingFlags } from './model-flags.js';
import { integerFlag, positiveIntegerFlag, promptIdsFlag } from './flags.js';
import type { PromptInput } from '../runtime/protocol.js';
import { withModelSampling } from '../modules/model-defaults.js';

interface GenerateFlags extends ModelFlags, SamplingFlags, LatentFlags {
  prompt?: string;
  promptIds?: number[];
  suffix?: string;
  maxTokens?: number;
  trace?: number | true;
  json?: boolean;
}

type GenerateFlagsWithFormat = GenerateFlags & ResponseFormatFlags;

/** `generate`'s reply limit where neither --max-tokens nor the model's files give one. */
const DEFAULT_MAX_TOKENS = 128;

/**
 * The prompt text: `--prompt`'s, or stdin's where it is `-` or where neither --prompt nor --prompt-ids is given and
 * stdin is no terminal (`echo … | reasonplug generate`), less the line ending `echo` puts after it.
 */
async function promptText(flags: GenerateFlags): Promise<string | undefined> {
  const piped = flags.prompt === undefined && flags.promptIds === undefined && process.stdin.isTTY !== true;
  if (flags.prompt !== '-' && !piped) return flags.prompt;
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  const text = Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
  // (an empty pipe, as from </dev/null, is no prompt: the error below says what to give)
  return piped && !text ? undefined : text;
}

async function generate(flags: GenerateFlagsWithFormat): Promise<void> {
  flags.prompt = await promptText(flags);
  if ((flags.prompt === undefined) === (flags.promptIds === undefined)) {
    throw new InvalidArgumentError('give exactly one of --prompt or --prompt-ids (or pipe the prompt to stdin)');
  }
  if (flags.suffix !== undefined && flags.prompt === undefined) throw new InvalidArgumentError('--suffix fills in after --prompt: give the code before the insertion as --prompt');
  const input: PromptInput = flags.promptIds ? { promptIds: flags.promptIds } : { prompt: flags.prompt!, ...(flags.suffix !== undefined ? { suffix: flags.suffix } : {}) };
  const options: StreamOptions = {
    ...(flags.maxTokens !== undefined ? { maxTokens: flags.maxTokens } : {}),
    ...samplingOptions(flags),
    ...(flags.trace ? { trace: flags.trace === true ? 5 : flags.trace } : {}),
    ...latentOptions(flags),
  };
  const responseFormat = responseFormatFromFlags(flags);
  if (responseFormat) options.responseFormat = responseFormat;
  // Refused before the model loads, not after.
  validateGenerateOptions(options);
  const engine = await Engine.load(await engineOptions(flags));
  const controller = new AbortController();
  process.once('SIGINT', () => {
    // Interrupted, the command fails as llama.cpp's does (130: a shell loop over it stops); stopped by its reader
    // closing the pipe (reasonplug.ts), it ends normally.
    if (!stdout.closed) process.exitCode = 130;
    controller.abort();
  });
  try {
    // The model's own sampling settings, limit and stop strings where flags leave them out (none with --no-model-defaults).
    const defaulted = withModelSampling(options, engine.info.defaults);
    const stream = engine.stream(input, { ...defaulted, maxTokens: defaulted.maxTokens ?? DEFAULT_MAX_TOKENS, signal: controller.signal });
    for (const w of engine.info.warnings) process.stderr.write(`warning: ${w}\n`);
    noteInt8PromptsUnused(engine.info.int8Prompts);
    const traces: unknown[] = [];
    for await (const t of stream) {
      if (t.trace) {
        if (flags.json) traces.push({ id: t.id, ...t.trace });
        else process.stderr.write(`${formatTrace(t.id, t.trace)}\n`);
      }
      if (!flags.json) process.stdout.write(t.text);
    }
    const result = await stream.result;
    const row = result.rows[0]!;
    if (flags.json) {
      const { loadMs, prefillMs, msPerToken, decodeSteps } = result.timing;
      // Reasoners come back in the order they were given, those found by task last.
      const reasoners = engine.info.reasoners.map((r, i) => ({ path: flags.reasoner?.[i]?.model ?? r.modelPath, name: r.name, weight: r.weight }));
      process.stdout.write(
        JSON.stringify({
          ids: row.ids,
          text: row.text,
          usage: result.usage,
          timing: { loadMs, prefillMs, msPerToken, decodeSteps },
          finishReason: row.finishReason,
          ...(row.parsed !== undefined ? { parsed: row.parsed } : {}),
          reasoners,
          ...(reasoners.length > 0 ? { placement: engine.info.placement } : {}),
          ...(flags.trace ? { trace: traces } : {}),
        }) + '\n',
      );
    } else {
      process.stdout.write('\n');
      process.stderr.write(
        `[${result.usage.promptTokens} prompt + ${result.usage.completionTokens} generated tokens` +
          `${result.usage.latentSteps !== undefined ? ` + ${result.usage.latentSteps} latent steps` : ''}, ` +
          `${result.timing.prefillMs.toFixed(1)} ms prefill, ${decodeSpeed(result)}, ${row.finishReason}]\n`,
      );
    }
  } finally {
    await engine.dispose();
  }
}

/** One line per token: what the fusion chose from, and each model's favourites. */
/** Refuses a destination that holds something (a file, or a directory with files), which converting would overwrite. */
async function freshDirectory(dir: string): Promise<void> {
  const found = await stat(dir).catch(() => undefined);
  if (!found) return;
  if (!found.isDirectory()) throw new InvalidArgumentError(`${dir} is a file, not a directory to write the module in`);
  if ((await readdir(dir)).length > 0) throw new InvalidArgumentError(`${dir} is not empty: give a new (or empty) directory, so that nothing in it is overwritten`);
}

function formatTrace(id: number, trace: TokenTrace): string {
  const top = (c: { id: number; logit: number }[]) => c.map((x) => `${x.id}:${x.logit.toFixed(2)}`).join(' ');
  const models = trace.models.map((m) => `${m.name}×${m.weight} [${top(m.top)}]`).join('  ');
  return `[trace] ${id} ← fused [${trace.fused.map((c) => `${c.id}:${(c.prob * 100).toFixed(1)}%`).join(' ')}]  ${models}`;
}

async function inspect(path: string, flags: { dtype?: string } = {}): Promise<void> {
  const location = await locateModel(await resolveModelPath(path), flags);
  // A projector is no decoder: its graph's inputs and outputs are what there is to show.
  const projector = location.manifest?.kind === 'latent-projector';
  // The file checks a load makes (complete protobuf, external data present), then onnxruntime's own.
  if (!projector) await prepareDecoder(location.modelPath);
  const session = await ort.InferenceSession.create(location.modelPath).catch((err: unknown) => {
    throw loadFailure(location.modelPath, err);
  });
  try {
    const described = projector
      ? { inputs: session.inputMetadata, outputs: session.outputMetadata }
      : { signature: describeSignature(detectSignature(session.inputMetadata, session.outputMetadata, location.modelPath)) };
    process.stdout.write(JSON.stringify({ ...location, ...described }, null, 2) + '\n');
  } finally {
    await session.release();
  }
}

/**
 * The name a model given as Ollama, the Hugging Face cache or LM Studio keep it goes by: an Ollama name as `serve`
 * answers to it (the default host, namespace and tag left out), the others without their scheme (and a file's
 * `.gguf`); undefined for any other spec, and for a name no module can be named after (no Latin letters or digits),
 * which gives way to the file's own name.
 */
function localModelDisplayName(spec: string): string | undefined {
  if (!isLocalModelName(spec)) return undefined;
  const name = isOllamaRef(spec) ? ollamaServedName(ollamaDisplayName(spec)) : spec.replace(/^[a-z]+:\/\//i, '').replace(/\.gguf$/i, '');
  return kebabName(name) ? name : undefined;
}

/** Builds the command tree (exported for tests and embedding). */
export function buildProgram(): Command {
  const program = new Command('reasonplug')
    .description('Run ONNX causal LMs and compose them with reasoner modules.')
    .version(PACKAGE_VERSION, '-v, --version', 'print the version');
  const generateCommand = program.command('generate').description('generate text from a model');
  addLatentFlags(addSamplingFlags(addModelFlags(generateCommand)))
    .option('--prompt <text>', 'prompt text (tokenized with the model tokenizer, BOS added as it specifies); - reads it from stdin, as does leaving out --prompt and --prompt-ids with stdin a pipe or file')
    .option('--prompt-ids <ids>', 'prompt as comma-separated token ids, fed as given', promptIdsFlag)
    .option('--suffix <text>', 'fill in the middle: the code after the insertion, --prompt the code before it (code models with FIM tokens)')
    .option('--max-tokens <n>', `tokens to generate at most (default: the model's own limit, else ${DEFAULT_MAX_TOKENS}; a row also stops at the context length)`, positiveIntegerFlag('--max-tokens'))
    .option('--trace [n]', 'show the top n candidates of every model and of the fusion per token', positiveIntegerFlag('--trace'))
    .option('--json-schema <file>', 'constrain the reply to JSON valid against the JSON Schema in this file')
    .option('--grammar <file>', 'constrain the reply to the EBNF/GBNF grammar in this file (start rule root)')
    .option('--regex <pattern>', 'constrain the reply to match this regular expression')
    .option('--json', 'print one JSON object instead of streaming text')
    .action((flags: GenerateFlagsWithFormat) => generate(flags));
  program
    .command('inspect')
    .argument('<path>', 'model path')
    .description('print the detected decoder signature as JSON')
    .addOption(new Option('--dtype <t>', 'graph of a hub export directory (transformers.js names)').choices([...DTYPE_CHOICES]))
    .action((path: string, flags: { dtype?: string }) => inspect(path, flags));
  program
    .command('convert')
    .description('convert a model into a reasonplug module directory')
    .command('gguf')
    .description('convert a GGUF file (quantized types kept quantized) into a module directory, to publish or load')
    .argument('<file>', `GGUF file, or one named as Ollama (ollama://name:tag), the Hugging Face cache (hf://org/repo:QUANT) or LM Studio (lmstudio://publisher/model) keep it (general.architecture: ${SUPPORTED_ARCHITECTURES.join(', ')})`)
    .argument('<outdir>', 'module directory to write')
    .addOption(new Option('--dtype <t>', 'weight and I/O precision').choices(['float32', 'float16']).default('float32'))
    .addOption(new Option('--kv-cache <t>', "keys' and values' type: float16 (llama.cpp's default; half the bytes a long context's step moves) or float32 (exact against llama.cpp's F32 cache)").choices(['float32', 'float16']).default('float16'))
    .addOption(
      new Option('--kv-output <form>', "what the attention layers return: new (default: each run's keys and values, which reasonplug writes into room its caches keep) or joined (present.{i}: the past with them appended, as exports do; for other runtimes)").choices(['new', 'joined']).default('new'),
    )
    .option('--name <name>', 'module name')
    .action(async (src: string, outDir: string, flags: { dtype: 'float32' | 'float16'; kvCache: 'float32' | 'float16'; kvOutput: 'new' | 'joined'; name?: string }) => {
      await freshDirectory(outDir);
      const file = await localModelWithProgress(src);
      if (!existsSync(file)) throw new ModelNotFoundError(`model path not found: ${file}`);
      // A model named as another tool keeps it is named so, not after its file (an Ollama blob is `sha256-<hex>`).
      const name = flags.name ?? localModelDisplayName(src);
      const bar = progressBar(`convert ${isLocalModelName(src) ? src : basename(file)}`);
      const onTensorRead = bar && ((bytes: number, total: number) => bar.update({ file: basename(file), digest: file, size: total, bytes, resumedFrom: 0, done: bytes === total }));
      await writeBeside(outDir, (tmp) =>
        convertGguf(file, tmp, {
          dtype: flags.dtype,
          kvCache: flags.kvCache,
          kvOutput: flags.kvOutput,
          ...(name ? { name } : {}),
          ...(onTensorRead ? { onTensorRead } : {}),
        }).finally(() => bar?.finish()),
      );
      process.stdout.write(`${resolve(outDir)}\n`);
    });
  program
    .command('quantize')
    .description('write a 4- or 8-bit copy of a module, plain export directory or .onnx file (MatMul weights → MatMulNBits)')
    .argument('<src>', 'module directory, plain export directory, or .onnx file (a path, a file: URL, or hf://org/repo as the Hugging Face cache holds it)')
    .argument('<dest>', 'where the quantized copy goes (must not exist)')
    .addOption(new Option('--bits <n>', 'bits per weight').choices(['4', '8']).default('4'))
    .addOption(new Option('--block <n>', 'weights per block (a power of two from 16 to 256)').argParser(integerFlag('--block', 16, 256, 'a power of two from 16 to 256')).default(32))
    .addOption(new Option('--accuracy <a>', "MatMulNBits' compute: int8 (activations quantized per block) or fp32").choices(['int8', 'fp32']).default('int8'))
    .option('--embeddings', 'also quantize embedding tables (GatherBlockQuantized)')
    .addOption(new Option('--head-bits <n>', 'bits for the LM head (default: 8 with --bits 4, as Q4_K_M keeps output.weight at Q6_K; else --bits)').choices(['4', '8']))
    .addOption(new Option('--search <s>', "per-block scale search: range (zero point at the block minimum, a few scales tried) or weighted (error-weighted least squares, after llama.cpp's Q4_K search)").choices(['range', 'weighted']).default('range'))
    .addOption(new Option('--dtype <t>', "graph of a hub export directory (transformers.js names; default: as its config.json says, else the most precise present, a float one where that is quantized)").choices([...DTYPE_CHOICES]))
    // (not --version: the program's --version is read wherever it is written)
    .option('--copy-version <v>', "a module copy's version (semver; default: the original's with -q<bits>, as 1.0.0-q4; a prerelease original needs one: that would outrank it)")
    .action(async (src: string, dest: string, flags: { bits: string; block: number; accuracy: 'int8' | 'fp32'; embeddings?: boolean; headBits?: string; search: 'weighted' | 'range'; dtype?: string; copyVersion?: string }) => {
      const { path, report, variant } = await quantizeModel(src, dest, {
        bits: Number(flags.bits) as 4 | 8,
        blockSize: flags.block,
        accuracy: flags.accuracy,
        embeddings: flags.embeddings ?? false,
        ...(flags.headBits ? { headBits: Number(flags.headBits) as 4 | 8 } : {}),
        search: flags.search,
        ...(flags.dtype ? { dtype: flags.dtype } : {}),
        ...(flags.copyVersion !== undefined ? { version: flags.copyVersion } : {}),
      });
      process.stdout.write(`${path}\n`);
      if (variant?.passedOver) process.stderr.write(`[config.json picks the ${variant.passedOver} graph, which is already quantized: quantized the ${variant.dtype} graph instead]\n`);
      process.stderr.write(
        `[${report.matmuls} MatMul → MatMulNBits${report.head.names.length ? ` (LM head at ${report.head.bits} bits)` : ''}${report.gathers ? `, ${report.gathers} Gather → GatherBlockQuantized` : ''}; ` +
          `weights ${(report.bytesBefore / 2 ** 20).toFixed(2)} → ${(report.bytesAfter / 2 ** 20).toFixed(2)} MiB` +
          `${report.skipped.length ? `; left dense: ${report.skipped.join('; ')}` : ''}]\n`,
      );
    });
  addRegistryCommands(program);
  addCacheCommand(program);
  addModelsCommand(program);
  addServeCommand(program);
  addChatCommand(program);
  addEmbedCommand(program);
  return program;
}

/** Runs the CLI; errors print one clear line and set exit code 1. */
export async function main(argv = process.argv): Promise<void> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (err) {
    process.stderr.write(`reasonplug: ${(err as Error).name === 'Error' ? '' : (err as Error).name + ': '}${(err as Error).message}\n`);
    process.exitCode = 1;
  }
}
