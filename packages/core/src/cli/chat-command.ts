/**
 * `reasonplug chat`: a conversation with a model and its reasoners, turn by turn, as `ollama run` and llama.cpp's
 * conversation mode hold one. Each line of input is a user message; the reply streams to stdout (a reasoning
 * model's thought to stderr) and joins the history, which the chat template renders into the next turn's prompt,
 * so the engine's prefix cache prefills only what the turn adds. A paste, or a `"""` … `"""` block, is one message.
 * `/reset` forgets the conversation, `/exit` or `/bye` (or the end of the input) leaves, `/?` lists the commands. On a
 * terminal Ctrl-C stops a reply or drops the line being typed, and at an empty prompt leaves; elsewhere it ends the
 * command with exit code 130.
 */
import { createInterface, type Interface } from 'node:readline';
import { stdout } from './output-closed.js';
import { Option, type Command } from 'commander';
import { Engine, type StreamOptions } from '../engine.js';
import { validateGenerateOptions } from '../generate/options.js';
import { TextTokenizer, TokenizerError, type ChatMessage } from '../tokenizer/tokenizer.js';
import { ChatReplySplitter, keptTokens, replyParsing, thinkingBudgetFor } from '../chat/reply.js';
import type { ReasoningFormat } from '../chat/reasoning.js';
import { chatTemplateFile, jsonObjectFlag, nonNegativeIntegerFlag, positiveIntegerFlag } from './flags.js';
import { withModelMessages, withModelSampling } from '../modules/model-defaults.js';
import { addLatentFlags, addModelFlags, addSamplingFlags, decodeSpeed, engineOptions, noteInt8PromptsUnused, latentOptions, samplingOptions, type LatentFlags, type ModelFlags, type SamplingFlags } from './model-flags.js';

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
  const command = program.command('chat').description('talk with a model turn by turn: each line of input is a message, a paste or a """ … """ block one (/? lists the commands: /reset forgets, /exit or /bye leaves; Ctrl-C stops a reply or drops the line typed, and at an empty prompt leaves)');
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
    noteInt8PromptsUnused(engine.info.int8Prompts);
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

/** What `/?` and `/help` print, as `ollama run`'s do. */
const HELP = `Available commands:
  /reset          Forget the conversation (its system message stays)
  /exit, /bye     Leave (as Ctrl + d does)
  /?, /help       This help

Use """ to begin a multi-line message; a pasted one is sent whole, on Enter.
Ctrl + c stops a reply, or drops the line being typed; at an empty prompt it leaves.
`;

/** A terminal in bracketed paste mode marks what is pasted, so that its lines are not sent one by one. */
const PASTE_ON = '\x1b[?2004h';
const PASTE_OFF = '\x1b[?2004l';

/** A message as read: `typed` when it is one line typed (which may be a /command), not a paste or a `"""` block. */
interface Message {
  text: string;
  typed: boolean;
}

/**
 * The input's lines joined into messages as `ollama run` joins them: the lines of a bracketed paste, up to the Enter
 * that sends it, and those of a `"""` … `"""` block make one message; any other line is one.
 */
class MessageLines {
  private parts: string[] = [];
  private block = false;

  /** Whether a message is under way: a paste not yet sent, a block not yet closed. */
  get open(): boolean {
    return this.block || this.parts.length > 0;
  }

  /** Takes a line (`pasted`: read inside a paste); returns the message it ends, if it ends one. */
  push(line: string, pasted: boolean): Message | undefined {
    if (this.block || line.startsWith('"""')) {
      const body = this.block ? line : line.slice(3);
      this.block = !body.endsWith('"""');
      this.parts.push(this.block ? body : body.slice(0, -3));
      return this.block ? undefined : this.take();
    }
    if (!pasted && !this.open) return { text: line, typed: true };
    this.parts.push(line);
    return pasted ? undefined : this.take();
  }

  /** The lines held, as one message, and a fresh start. */
  take(): Message {
    const text = this.parts.join('\n');
    this.parts = [];
    this.block = false;
    return { text, typed: false };
  }
}

/** readline's reset of the line being edited (past its end, a newline, emptied), which Node's REPL calls on Ctrl-C; @types/node leaves it out. */
type LineEditor = Interface & { clearLine(): void };

/**
 * The user's messages from stdin. On a terminal readline edits the line, and bracketed paste is on (unless
 * TERM=dumb) so that a pasted message comes whole; Ctrl-C stops a reply or drops the line being typed, and at an
 * empty prompt leaves, as Ctrl-D does. A SIGINT (Ctrl-C where stdin is no terminal, or a kill) stops the reply and
 * the conversation, with exit code 130 as `generate`'s, so that a shell loop over it stops.
 */
class ChatInput {
  /** Stops the reply being written, while one is. */
  replying: AbortController | undefined;
  private readonly lines: LineEditor;
  private readonly held = new MessageLines();
  private readonly queue: Message[] = [];
  private readonly bracketed: boolean;
  private wake: (() => void) | undefined;
  private pasting = false;
  private ended = false;
  private leaving = false;

  constructor(private readonly interactive: boolean) {
    // (with the terminal as its output readline echoes what is typed and edits the line; raw mode turns the echo off)
    this.lines = createInterface({ input: process.stdin, ...(interactive ? { output: process.stdout } : {}), terminal: interactive }) as LineEditor;
    this.bracketed = interactive && process.env['TERM'] !== 'dumb';
    if (this.bracketed) {
      process.stdout.write(PASTE_ON);
      // (readline reads the markers as keys named so, and drops them)
      process.stdin.on('keypress', this.onKey);
    }
    this.lines.on('line', (line) => this.onLine(line));
    this.lines.on('SIGINT', () => this.onCtrlC());
    this.lines.on('close', () => this.onClose());
    // (never removed: a producer stopped by the same Ctrl-C ends the input at once, and whichever comes first the command was interrupted)
    process.once('SIGINT', this.onSignal);
  }

  /** The next message; undefined once the input has ended (or a SIGINT stopped it). */
  async next(): Promise<Message | undefined> {
    while (this.queue.length === 0 && !this.ended) await new Promise<void>((resolve) => (this.wake = resolve));
    return this.queue.shift();
  }

  /** Shows the prompt on a terminal (`... ` while a message is under way); none once the input has ended. */
  prompt(): void {
    if (!this.interactive || this.ended) return;
    this.lines.setPrompt(this.held.open ? '... ' : '> ');
    this.lines.prompt();
  }

  /** Stops reading, and gives the terminal back as it was. */
  close(): void {
    this.leaving = true;
    this.lines.close();
    if (this.bracketed) {
      process.stdin.removeListener('keypress', this.onKey);
      process.stdout.write(PASTE_OFF);
    }
  }

  private readonly onKey = (_text: string | undefined, key: { name?: string } | undefined) => {
    if (key?.name === 'paste-start') this.pasting = true;
    else if (key?.name === 'paste-end') this.pasting = false;
  };

  private readonly onSignal = () => {
    if (!stdout.closed) process.exitCode = 130;
    this.replying?.abort();
    this.queue.length = 0;
    this.leaving = true;
    this.lines.close();
  };

  private onLine(line: string): void {
    const message = this.held.push(line, this.pasting);
    if (message) {
      this.queue.push(message);
      this.awake();
    } else if (this.wake) this.prompt();
  }

  private onCtrlC(): void {
    if (this.replying) {
      this.replying.abort();
    } else if (this.lines.line || this.held.open) {
      // As a shell does: what was typed is dropped, not sent, and the prompt comes again.
      this.lines.write(null, { ctrl: true, name: 'e' });
      process.stdout.write('^C');
      this.lines.clearLine();
      this.held.take();
      this.prompt();
    } else {
      this.lines.close();
    }
  }

  private onClose(): void {
    // The end of a file or pipe sends a block it leaves open; a terminal's Ctrl-D drops one, as ollama's does.
    if (!this.interactive && this.held.open && !this.leaving) this.queue.push(this.held.take());
    // (left at the prompt, by Ctrl-D or Ctrl-C, the shell's prompt starts on a line of its own)
    if (this.interactive && !this.leaving && !this.replying) process.stdout.write('\n');
    this.ended = true;
    this.awake();
  }

  private awake(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }
}

/**
 * Reads messages until the input ends or `/exit`, streaming each reply: its answer to stdout, a thought it writes
 * first to stderr (dimmed where stderr has colours: a terminal, without NO_COLOR or TERM=dumb), so that a pipe gets
 * the answers alone. The history keeps each thought apart (`reasoning_content`), for templates that show or drop
 * earlier thoughts.
 */
async function converse(c: Conversation): Promise<void> {
  const interactive = process.stdin.isTTY === true && process.stdout.isTTY === true;
  const dim = process.stderr.hasColors?.() ? (t: string) => `\x1b[2m${t}\x1b[22m` : (t: string) => t;
  const input = new ChatInput(interactive);
  let history = [...c.opening];
  try {
    input.prompt();
    for (let message = await input.next(); message; message = await input.next()) {
      // (a reader that closed the pipe takes no more replies)
      if (stdout.closed) break;
      // A paste or a block keeps its first line's indent.
      const text = message.typed ? message.text.trim() : message.text.replace(/^\s*\n|\s+$/g, '');
      if (message.typed && text.startsWith('/')) {
        const command = text.split(/\s/, 1)[0]!;
        if (command === '/exit' || command === '/bye') break;
        if (command === '/reset') {
          history = [...c.opening];
          process.stderr.write('[conversation reset]\n');
        } else if (command === '/?' || command === '/help') {
          process.stderr.write(HELP);
        } else {
          process.stderr.write(`Unknown command '${command}'. Type /? for help\n`);
        }
      } else if (text) {
        input.replying = new AbortController();
        try {
          history = (await answer(c, history, text, input.replying.signal, dim)) ?? history;
        } finally {
          input.replying = undefined;
        }
      }
      input.prompt();
    }
  } finally {
    input.close();
  }
}

/** One turn: the reply to `text` after `history`, streamed; the history with both, or undefined where the message does not fit. */
async function answer(c: Conversation, history: ChatMessage[], text: string, signal: AbortSignal, dim: (t: string) => string): Promise<ChatMessage[] | undefined> {
  const turn = fitted(c, [...history, { role: 'user', content: text }], c.opening.length);
  if (!turn) {
    process.stderr.write(`[the message alone fills the context of ${c.context} tokens: shorten it]\n`);
    return undefined;
  }
  if (turn.dropped > 0) process.stderr.write(`[${turn.dropped} earlier message(s) left out to fit the context]\n`);
  const { messages, prompt, ids } = turn;
  const parsing = replyParsing({ format: c.reasoningFormat, chatTemplate: c.template, prompt, constrained: false, tools: undefined });
  const splitter = new ChatReplySplitter(parsing);
  const kept = keptTokens(parsing);
  const budget = c.thinkingBudget !== undefined ? { thinkingBudget: thinkingBudgetFor(c.thinkingBudget, parsing, c.template, prompt) } : {};
  let thought = '';
  let reply = '';
  const show = (split: { reasoning: string; content: string }) => {
    if (split.reasoning) process.stderr.write(dim(split.reasoning));
    // The thought's line ends before the answer starts.
    if (split.content && thought && !reply) process.stderr.write('\n');
    thought += split.reasoning;
    reply += split.content;
    process.stdout.write(split.content);
  };
  const stream = c.engine.stream({ promptIds: ids }, { ...c.options, ...(kept.length ? { keepTokens: kept } : {}), ...budget, signal });
  for await (const t of stream) show(splitter.push(t.text));
  show(splitter.end());
  const result = await stream.result;
  const row = result.rows[0]!;
  process.stdout.write('\n');
  if (thought && !reply) process.stderr.write('\n');
  const { promptTokens, completionTokens, cachedPromptTokens, latentSteps } = result.usage;
  const thinking = splitter.reasoningTokens(row.ids, (ids) => c.tokenizer.decode(ids, false));
  process.stderr.write(
    `[${promptTokens} prompt tokens (${cachedPromptTokens ?? 0} cached) + ${completionTokens} generated${thinking ? ` (${thinking} thinking)` : ''}` +
      `${latentSteps !== undefined ? ` + ${latentSteps} latent steps` : ''}, ` +
      `${result.timing.prefillMs.toFixed(1)} ms prefill, ${decodeSpeed(result)}, ${row.finishReason}]\n`,
  );
  return [...messages, { role: 'assistant', content: reply, ...(thought ? { reasoning_content: thought } : {}) }];
}
