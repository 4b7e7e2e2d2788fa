/**
 * Long replies streamed in small pieces: each splitter gives what it gives the reply in one piece, and its work grows
 * with the reply's length, not with its square (a piece re-read the text held before it, copying it whole each time);
 * the stream decoder keeps its window over a run of ids the decode drops (EOS under ignoreEos).
 */
import { expect } from 'chai';
import { ChatReplySplitter, splitReply, type ReplyParsing, type SplitReply } from '../src/chat/reply.js';
import { THINK_TAGS } from '../src/chat/reasoning.js';
import { TextTokenizer } from '../src/tokenizer/tokenizer.js';
import { StreamDecoder, type DecodeFn } from '../src/tokenizer/stream-decoder.js';
import { models } from '../../../test/support/paths.js';

const THOUGHT = { reasoning: { tags: THINK_TAGS, open: false } };

/** Replies of about `n` characters, whose long part is where each splitter holds text back. */
const CASES: { name: string; parsing: ReplyParsing; reply: (n: number) => string }[] = [
  { name: 'hermes call arguments', parsing: { tools: 'hermes' }, reply: (n) => `<tool_call>{"name": "write", "arguments": {"text": "${'word '.repeat(n / 5)}"}}</tool_call>\nDone.` },
  { name: 'blanks after a hermes call', parsing: { tools: 'hermes' }, reply: (n) => `<tool_call>{"name": "a", "arguments": {}}</tool_call>${'\n'.repeat(n)}Then text.` },
  { name: 'qwen-xml call', parsing: { tools: 'qwen-xml' }, reply: (n) => `<tool_call>\n<function=write>\n<parameter=text>\n${'word '.repeat(n / 5)}\n</parameter>\n</function>\n</tool_call>` },
  { name: 'mistral-args calls', parsing: { tools: 'mistral-args' }, reply: (n) => `[TOOL_CALLS]write[ARGS]{"text": "${'word '.repeat(n / 5)}"}[TOOL_CALLS]b[ARGS]{}` },
  { name: 'deepseek call', parsing: { tools: 'deepseek' }, reply: (n) => `<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>write\n\`\`\`json\n{"text": "${'word '.repeat(n / 5)}"}\n\`\`\`<｜tool▁call▁end｜><｜tool▁calls▁end｜>` },
  { name: 'command-r-plus call', parsing: { tools: 'command-r-plus' }, reply: (n) => `Action: \`\`\`json\n[{"tool_name": "write", "parameters": {"text": "${'word '.repeat(n / 5)}"}}]\n\`\`\`` },
  { name: 'generic response', parsing: { tools: 'generic' }, reply: (n) => `{"response": "${'word \\n\\u00e9 '.repeat(n / 15)}\\ud83d\\ude00"}` },
  { name: 'generic reply that is no object', parsing: { tools: 'generic' }, reply: (n) => `Plain ${'word '.repeat(n / 5)}` },
  { name: 'thought of blank runs', parsing: THOUGHT, reply: (n) => `<think>x${'\n'.repeat(n / 2)}y${' \n'.repeat(n / 4)}</think>\n\nAnswer.` },
  { name: 'blanks before a thought', parsing: THOUGHT, reply: (n) => `${'\n'.repeat(n)}<think>x</think>Answer.` },
  { name: 'blanks before an answer', parsing: THOUGHT, reply: (n) => `${' '.repeat(n)}Answer.` },
  { name: 'thought then a call', parsing: { ...THOUGHT, tools: 'hermes' }, reply: (n) => `<think>${'word '.repeat(n / 10)}</think>\n<tool_call>{"name": "a", "arguments": {"t": "${'x'.repeat(n / 2)}"}}</tool_call>` },
];

/** A split with its calls' fresh ids left out. */
function comparable(split: SplitReply) {
  return { ...split, toolCalls: split.toolCalls.map(({ id: _id, ...call }) => call) };
}

/** The reply in pieces of 1 to 5 characters. */
function pieces(reply: string): string[] {
  const out: string[] = [];
  for (let i = 0, k = 0; i < reply.length; i += 1 + (k++ % 5)) out.push(reply.slice(i, i + 1 + (k % 5)));
  return out;
}

/** The pieces fed to a splitter, then ended (`cut` or not), as one split. */
function streamed(parsing: ReplyParsing, pieces: readonly string[], cut: boolean): SplitReply {
  const splitter = new ChatReplySplitter(parsing);
  const parts = [...pieces.map((piece) => splitter.push(piece)), splitter.end(cut)];
  return { reasoning: parts.map((p) => p.reasoning).join(''), content: parts.map((p) => p.content).join(''), toolCalls: parts.flatMap((p) => p.toolCalls) };
}

const STRING_METHODS = ['at', 'charAt', 'charCodeAt', 'endsWith', 'includes', 'indexOf', 'lastIndexOf', 'match', 'matchAll', 'replace', 'search', 'slice', 'split', 'startsWith', 'substring', 'trim', 'trimEnd', 'trimStart'] as const;

/**
 * How many characters the strings whose methods `run` calls hold, summed over the calls: the text it reads (a
 * string made of pieces is copied whole when read). The methods are the real ones, counted on the way in.
 */
function charactersRead(run: () => void): number {
  const methods = String.prototype as unknown as Record<string, (this: string, ...args: unknown[]) => unknown>;
  const real = STRING_METHODS.map((name) => methods[name]!);
  let read = 0;
  STRING_METHODS.forEach((name, i) => {
    methods[name] = function (this: string, ...args: unknown[]) {
      read += this.length;
      return real[i]!.apply(this, args);
    };
  });
  try {
    run();
  } finally {
    STRING_METHODS.forEach((name, i) => (methods[name] = real[i]!));
  }
  return read;
}

describe('long replies streamed in small pieces', function () {
  this.timeout(120_000);

  for (const { name, parsing, reply } of CASES) {
    it(`${name}: the pieces give the one-piece split, ended or cut, at work linear in the length`, () => {
      const text = reply(20_000);
      const [short, long] = [pieces(reply(5_000)), pieces(text)];
      expect(long.join('')).to.equal(text);
      for (const cut of [false, true]) expect(comparable(streamed(parsing, long, cut)), `cut: ${cut}`).to.deep.equal(comparable(splitReply(parsing, text, cut)));
      const [shortRead, longRead] = [short, long].map((p) => charactersRead(() => streamed(parsing, p, false)));
      // Four times the text: four times the work where it is linear, sixteen times where each piece re-reads the text.
      expect(longRead, `characters read: ${shortRead} for 5 000, ${longRead} for 20 000`).to.be.at.most(6 * shortRead);
    });
  }
});

describe('stream decoder over ids the decode drops', () => {
  let tok: TextTokenizer;
  before(async () => {
    tok = await TextTokenizer.fromDirectory(models.llamaFp16);
  });

  /** The pieces `ids` stream to through `decode`, and how many ids its decodes took in all. */
  function stream(decode: DecodeFn, ids: readonly number[], context: readonly number[]): { text: string; decoded: number } {
    let decoded = 0;
    const counted: DecodeFn = Object.assign((window: readonly number[]) => ((decoded += window.length), decode(window)), { bytes: decode.bytes });
    const decoder = new StreamDecoder(counted, context);
    const text = ids.map((id) => decoder.push(id)).join('') + decoder.flush();
    return { text, decoded };
  }

  it('gives the decode of the whole reply, EOS runs between words and inside a character, at a window that does not grow', () => {
    const eos = tok.eosTokenIds[0]!;
    const context = tok.encode('Once upon', true);
    const word = tok.encode('Once upon a time', true).slice(context.length); // its first id keeps its space after the context
    const emoji = tok.encode('😀', false); // ▁ and four byte tokens
    const run = (n: number) => Array<number>(n).fill(eos);
    const ids = [...word, ...run(2000), ...word, ...emoji.slice(0, 3), ...run(500), ...emoji.slice(3), ...run(500), ...word];
    const dropped = stream(tok.replyDecoder(), ids, context);
    expect(dropped.text).to.equal(tok.decode([...context, ...ids]).slice(tok.decode(context).length));
    expect(dropped.text).to.equal(' a time a time 😀 a time');
    expect(dropped.decoded, 'ids decoded').to.be.below(50 * ids.length);
    // An EOS the decode keeps is text, and its window moves on as any token's does.
    const kept = stream(tok.replyDecoder(new Set([eos])), ids, context);
    expect(kept.text).to.equal(tok.decode([...context, ...ids], true, new Set([eos])).slice(tok.decode(context).length));
    expect(kept.decoded, 'ids decoded').to.be.below(50 * ids.length);
  });
});
