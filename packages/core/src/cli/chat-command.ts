/**
 * `reasonplug chat`: a conversation with a model and its reasoners, turn by turn, as `ollama run` and llama.cpp's
 * conversation mode hold one. Each line of input is a user message; the reply streams to stdout and joins the
 * history, which the chat template renders into the next turn's prompt, so the engine's prefix cache prefills
 * only what the turn adds. `/reset` forgets the conversation, `/exit` (or the end of the input) leaves; Ctrl-C
 * stops a reply, or leaves between replies.
 */
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import type { Command } from 'commander';
import { Engine, type StreamOptions } from '../engine.js';
import { validateGenerateOptions } from '../generate/options.js';
import type { ChatMessage } from '../tokenizer/tokenizer.js';
import { positiveIntegerFlag } from './flags.js';
import { addModelFlags, addSamplingFlags, engineOptions, samplingOptions, type ModelFlags, type SamplingFlags } from './model-flags.js';

interface ChatFlags extends ModelFlags, SamplingFlags {
  system?: string;
  maxTokens?: number;
  chatTemplate?: string;
}

/** Adds `chat` to the command tree. */
export function addChatCommand(program: Command): void {
  const command = program.command('chat').description('talk with a model turn by turn: each line of input is a message (/reset forgets, /exit leaves)');
  addSamplingFlags(addModelFlags(command))
    .option('--system <text>', 'system message that opens the conversation')
    .option('--max-tokens <n>', 'tokens per reply at most (default: to the end of the context)', positiveIntegerFlag('--max-tokens'))
    .option('--chat-template <file>', "a Jinja chat template used instead of the model's")
    .action((flags: ChatFlags) => chat(flags));
}

async function chat(flags: ChatFlags): Promise<void> {
  const sampling = samplingOptions(flags);
  validateGenerateOptions({ ...sampling, ...(flags.maxTokens ? { maxTokens: flags.maxTokens } : {}) });
  const chatTemplate = flags.chatTemplate ? readFileSync(flags.chatTemplate, 'utf8') : undefined;
  const engine = await Engine.load(await engineOptions(flags));
  try {
    if (!chatTemplate && !engine.info.tokenizer?.hasChatTemplate) {
      throw new Error(`${flags.model} has no chat template: give one with --chat-template, or use generate`);
    }
    for (const w of engine.info.warnings) process.stderr.write(`warning: ${w}\n`);
    // Without --max-tokens a reply may run to the end of the context (the engine stops a row there).
    const options: StreamOptions = { ...sampling, maxTokens: flags.maxTokens ?? engine.info.contextLength ?? 2048 };
    await converse(engine, options, flags.system, chatTemplate);
  } finally {
    await engine.dispose();
  }
}

/** Reads messages until the input ends or `/exit`, streaming each reply. */
async function converse(engine: Engine, options: StreamOptions, system: string | undefined, chatTemplate: string | undefined): Promise<void> {
  const interactive = process.stdin.isTTY === true && process.stdout.isTTY === true;
  const lines = createInterface({ input: process.stdin, terminal: interactive });
  const opening: ChatMessage[] = system ? [{ role: 'system', content: system }] : [];
  let history = [...opening];
  let replying: AbortController | undefined;
  // Ctrl-C stops the reply being written; between replies it leaves.
  lines.on('SIGINT', () => (replying ? replying.abort() : lines.close()));
  process.on('SIGINT', () => (replying ? replying.abort() : lines.close()));
  const ask = () => interactive && process.stdout.write('> ');
  ask();
  for await (const line of lines) {
    const text = line.trim();
    if (text === '/exit') break;
    if (text === '/reset') {
      history = [...opening];
      process.stderr.write('[conversation reset]\n');
    } else if (text) {
      const messages: ChatMessage[] = [...history, { role: 'user', content: text }];
      replying = new AbortController();
      const stream = engine.stream({ messages, ...(chatTemplate ? { chatTemplate } : {}) }, { ...options, signal: replying.signal });
      for await (const t of stream) process.stdout.write(t.text);
      const result = await stream.result;
      replying = undefined;
      const row = result.rows[0]!;
      process.stdout.write('\n');
      const { promptTokens, completionTokens, cachedPromptTokens } = result.usage;
      process.stderr.write(
        `[${promptTokens} prompt tokens (${cachedPromptTokens ?? 0} cached) + ${completionTokens} generated, ` +
          `${result.timing.prefillMs.toFixed(1)} ms prefill, ${result.timing.msPerToken.toFixed(2)} ms/token, ${row.finishReason}]\n`,
      );
      history = [...messages, { role: 'assistant', content: row.text }];
    }
    ask();
  }
  lines.close();
}
