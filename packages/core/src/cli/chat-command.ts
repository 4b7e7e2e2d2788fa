/**
 * `reasonplug chat`: a conversation with a model and its reasoners, turn by turn, as `ollama run` and llama.cpp's
 * conversation mode hold one. Each line of input is a user message; the reply streams to stdout (a reasoning
 * model's thought to stderr) and joins the history, which the chat template renders into the next turn's prompt,
 * so the engine's prefix cache prefills only what the turn adds. `/reset` forgets the conversation, `/exit` (or the end of the input) leaves; Ctrl-C
 * stops a reply, or leaves between replies.
 */
import { createInterface } from 'node:readline';
import { stdout } from './output-closed.js';
import { Option, type Command } from 'commander';
import { Engine, type StreamOptions } from '../engine.js';
import { validateGenerateOptions } from '../generate/options.js';
import { TextTokenizer, TokenizerError, type ChatMessage } from '../tokenizer/tokenizer.js';
import { ChatReplySplitter, keptTokens, replyParsing, thinkingBudgetFor } from '../chat/reply.js';
import type { ReasoningFormat } from '../chat/reasoning.js';
import { chatTemplateFile, jsonObjectFlag, nonNegativeIntegerFlag, positiveIntegerFlag } from './flags.js';
import { withModelMessages, withModelSampling } from '../modules/model-defaults.js';
import { addLatentFlags, addModelFlags, addSamplingFlags, decodeSpeed, engineOptions, latentOptions, samplingOptions, type LatentFlags, type ModelFlags, type SamplingFlags } from './model-flags.js';

interface ChatFlags extends ModelFlags, SamplingFlags, LatentFlags {
  system?: string;
  maxTokens?: number;
  chatTemplate?: string;
  chatTemplateKwargs?: Record<string, unknown>;
  reasoningFormat: ReasoningFormat;
  thinkingBudget?: number;
}

/** How a conversation is rendered and its replies read. */
interface Conversation {
  engine: Engine;
  tokenizer: TextTokenizer;
  options: StreamOptions;
  /** The messages every turn starts with: a system message, the model's example messages. */
  opening: ChatMessage[];
  /** The template (the model's unless --chat-template) and its variables. */
  template: string;
  templateKwargs: Record<string, unknown> | undefined;
  reasoningFormat: ReasoningFormat;
  /** Tokens each reply's thought may take (default: no limit). */
  thinkingBudget: number | undefined;
  /** Positions a turn's prompt and reply share. */
  context: number;
}

/** Adds `chat` to the command tree. */
export function addChatCommand(program: Command): void {
  const command = program.command('chat').description('talk with a model turn by turn: each line of input is a message (/reset forgets, /exit leaves)');
  addLatentFlags(addSamplingFlags(addModelFlags(command)))
    .option('--system <text>', "system message that opens the conversation (default: the model's own, an Ollama model's SYSTEM)")
    .option('--max-tokens <n>', "tokens per reply at most (default: the model's own limit, else to the end of the context)", positiveIntegerFlag('--max-tokens'))
    .option('--chat-template <file>', "a Jinja chat template used instead of the model's")
    .option('--chat-template-kwargs <json>', 'template variables, e.g. \'{"enable_thinking": false}\'', jsonObjectFlag('--chat-template-kwargs'))
    .addOption(new Option('--reasoning-format <f>', "a reply's <think> thought: to stderr, apart from the answer (auto), or left in the reply (none)").choices(['auto', 'none']).default('auto'))
    .option('--thinking-budget <n>', "tokens a reply's thought may take before its closing tag is written (default: no limit)", nonNegativeIntegerFlag('--thinking-budget'))
    .action((flags: ChatFlags) => chat(flags));
}

async function chat(flags: ChatFlags): Promise<void> {
  const sampling = samplingOptions(flags);
  validateGenerateOptions({ ...sampling, ...latentOptions(flags), ...(flags.maxTokens ? { maxTokens: flags.maxTokens } : {}) });
  const chatTemplate = flags.chatTemplate ? chatTemplateFile(flags.chatTemplate) : undefined;
  const engine = await Engine.load(await engineOptions(flags));
  try {
    const info = engine.info.tokenizer;
    if (!info) throw new TokenizerError(`${flags.model} has no tokenizer.json beside it, so it cannot take chat messages: use generate with --prompt-ids`);
    const tokenizer = await TextTokenizer.fromDirectory(info.dir);
    const template = chatTemplate ?? tokenizer.chatTemplate;
    if (!template) throw new TokenizerError(`${flags.model} has no chat template: give one with --chat-template, or use generate`);
    for (const w of engine.info.warnings) process.stderr.write(`warning: ${w}\n`);
    // Without --max-tokens a reply may run to the end of the context (the engine stops a row there).
    const context = engine.info.contextLength ?? 2048;
    // The model's own sampling settings, limit and stop strings where flags leave them out (none with --no-model-defaults).
    const defaults = engine.info.defaults;
    const options = withModelSampling<StreamOptions>({ ...sampling, ...latentOptions(flags), ...(flags.maxTokens ? { maxTokens: flags.maxTokens } : {}) }, defaults);
    options.maxTokens ??= context;
    // The model's system prompt unless --system gives one, and its example messages, open the conversation.
    const opening = withModelMessages(flags.system ? [{ role: 'system', content: flags.system }] : [], defaults);
    await converse({ engine, tokenizer, options, opening, template, templateKwargs: flags.chatTemplateKwargs, reasoningFormat: flags.reasoningFormat, thinkingBudget: flags.thinkingBudget, context });
  } finally {
    await engine.dispose();
  }
}

/**
 * The turn's messages rendered, with the oldest exchanges after the first `kept` messages (the system message) left
 * out until the prompt leaves a reply room (a quarter of the context, or --max-tokens where that is less), as Ollama
 * trims a conversation to its context; undefined when the newest message alone leaves none.
 */
function fitted(c: Conversation, messages: ChatMessage[], kept: number): { messages: ChatMessage[]; prompt: string; ids: number[]; dropped: number } | undefined {
  const room = Math.min(c.options.maxTokens ?? Infinity, Math.floor(c.context / 4));
  for (let dropped = 0; ; dropped += 2) {
    const turn = [...messages.slice(0, kept), ...messages.slice(kept + dropped)];
    const prompt = c.tokenizer.applyChatTemplate(turn, { template: c.template, ...(c.templateKwargs ? { extra: c.templateKwargs } : {}) });
    const ids = c.tokenizer.encodeChat(prompt);
    if (ids.length + room <= c.context) return { messages: turn, prompt, ids, dropped };
    if (turn.length - kept <= 1) return ids.length < c.context ? { messages: turn, prompt, ids, dropped } : undefined;
  }
}

/**
 * Reads messages until the input ends or `/exit`, streaming each reply: its answer to stdout, a thought it writes
 * first to stderr (dimmed on a terminal), so that a pipe gets the answers alone. The history keeps each thought
 * apart (`reasoning_content`), for templates that show or drop earlier thoughts.
 */
async function converse(c: Conversation): Promise<void> {
  const interactive = process.stdin.isTTY === true && process.stdout.isTTY === true;
  const dim = process.stderr.isTTY === true ? (t: string) => `\x1b[2m${t}\x1b[22m` : (t: string) => t;
  // (with the terminal as its output readline echoes what is typed and edits the line; raw mode turns the echo off)
  const lines = createInterface({ input: process.stdin, ...(interactive ? { output: process.stdout } : {}), terminal: interactive });
  lines.setPrompt('> ');
  const opening = c.opening;
  let history = [...opening];
  let replying: AbortController | undefined;
  // Ctrl-C stops the reply being written; between replies it leaves.
  lines.on('SIGINT', () => (replying ? replying.abort() : lines.close()));
  process.on('SIGINT', () => (replying ? replying.abort() : lines.close()));
  const ask = () => interactive && lines.prompt();
  ask();
  for await (const line of lines) {
    const text = line.trim();
    // (a reader that closed the pipe takes no more replies)
    if (text === '/exit' || stdout.closed) break;
    if (text === '/reset') {
      history = [...opening];
      process.stderr.write('[conversation reset]\n');
    } else if (text) {
      const turn = fitted(c, [...history, { role: 'user', content: text }], opening.length);
      if (!turn) {
        process.stderr.write(`[the message alone fills the context of ${c.context} tokens: shorten it]\n`);
        ask();
        continue;
      }
      if (turn.dropped > 0) process.stderr.write(`[${turn.dropped} earlier message(s) left out to fit the context]\n`);
      const { messages, prompt, ids } = turn;
      const parsing = replyParsing({ format: c.reasoningFormat, chatTemplate: c.template, prompt, constrained: false, tools: undefined });
      const splitter = new ChatReplySplitter(parsing);
      const kept = keptTokens(parsing);
      const budget = c.thinkingBudget !== undefined ? { thinkingBudget: thinkingBudgetFor(c.thinkingBudget, parsing, c.template, prompt) } : {};
      let thought = '';
      let answer = '';
      const show = (split: { reasoning: string; content: string }) => {
        if (split.reasoning) process.stderr.write(dim(split.reasoning));
        // The thought's line ends before the answer starts.
        if (split.content && thought && !answer) process.stderr.write('\n');
        thought += split.reasoning;
        answer += split.content;
        process.stdout.write(split.content);
      };
      replying = new AbortController();
      const stream = c.engine.stream({ promptIds: ids }, { ...c.options, ...(kept.length ? { keepTokens: kept } : {}), ...budget, signal: replying.signal });
      for await (const t of stream) show(splitter.push(t.text));
      show(splitter.end());
      const result = await stream.result;
      replying = undefined;
      const row = result.rows[0]!;
      process.stdout.write('\n');
      if (thought && !answer) process.stderr.write('\n');
      const { promptTokens, completionTokens, cachedPromptTokens, latentSteps } = result.usage;
      const thinking = splitter.reasoningTokens(row.ids, (ids) => c.tokenizer.decode(ids, false));
      process.stderr.write(
        `[${promptTokens} prompt tokens (${cachedPromptTokens ?? 0} cached) + ${completionTokens} generated${thinking ? ` (${thinking} thinking)` : ''}` +
          `${latentSteps !== undefined ? ` + ${latentSteps} latent steps` : ''}, ` +
          `${result.timing.prefillMs.toFixed(1)} ms prefill, ${decodeSpeed(result)}, ${row.finishReason}]\n`,
      );
      history = [...messages, { role: 'assistant', content: answer, ...(thought ? { reasoning_content: thought } : {}) }];
    }
    ask();
  }
  lines.close();
}
