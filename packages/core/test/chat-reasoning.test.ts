/**
 * Splitting a reply's thought from its answer as text streams in: every way of cutting a reply into pieces gives
 * what a regular expression over the whole reply gives, tags split anywhere, thoughts the prompt left open, cut
 * replies, tool calls after a thought; and the count of the thought's tokens, against a linear scan.
 */
import { expect } from 'chai';
import { ReasoningTextSplitter, opensThought, reasoningTagsOf, reasoningTokens, type ReasoningTags } from '../src/chat/reasoning.js';
import { ChatReplySplitter, replyParsing, splitReply, thoughtFirst } from '../src/chat/reply.js';

const THINK: ReasoningTags = { open: '<think>', close: '</think>' };

/** The reference: the thought opens the reply (after whitespace) or the prompt; trimmed; the answer after it, without leading whitespace. */
function expected(text: string, tags: ReasoningTags, open: boolean): { reasoning: string; content: string } {
  const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
  const whole = open ? tags.open + text : text;
  const closed = new RegExp(`^\\s*${esc(tags.open)}([\\s\\S]*?)${esc(tags.close)}\\s*([\\s\\S]*)$`).exec(whole);
  if (closed) return { reasoning: closed[1]!.trim(), content: closed[2]! };
  const unclosed = new RegExp(`^\\s*${esc(tags.open)}([\\s\\S]*)$`).exec(whole);
  if (unclosed) return { reasoning: unclosed[1]!.trim(), content: '' };
  return { reasoning: '', content: text };
}

/** Deterministic pseudo-random cuts. */
function* cuttings(text: string, count: number, seed: number): Generator<string[]> {
  let s = seed;
  const next = () => ((s = (s * 1103515245 + 12345) & 0x7fffffff), s);
  yield [...text]; // one character at a time
  yield [text];
  for (let k = 0; k < count; k++) {
    const pieces: string[] = [];
    let i = 0;
    while (i < text.length) {
      const n = 1 + (next() % 7);
      pieces.push(text.slice(i, i + n));
      i += n;
    }
    yield pieces;
  }
}

function streamed(pieces: string[], tags: ReasoningTags, open: boolean): { reasoning: string; content: string } {
  const splitter = new ReasoningTextSplitter(tags, open);
  let reasoning = '';
  let content = '';
  for (const p of [...pieces.map((t) => splitter.push(t)), splitter.end()]) {
    reasoning += p.reasoning;
    content += p.content;
  }
  return { reasoning, content };
}

const REPLIES = [
  '<think>\nTwo and two make four.\n</think>\n\nFour.',
  '<think>Hmm</think>Four',
  '  \n<think> a < b, and </thin is not a tag </think>  x <think>later tags are text</think>',
  '<think>\n\n</think>\n\nNo thought at all.',
  'Four. <think>not a thought</think>',
  '<thin',
  '<think>cut before the close',
  '<think>ends on a half tag </thi',
  '',
  '   ',
  '<think>spaces   \n  inside  and before the tag   </think>answer with trailing space  ',
  '<tool_call> is not a thought',
];

describe('reasoning: splitting a thought from the answer', () => {
  for (const open of [false, true]) {
    it(`every cutting of a reply equals the whole reply's split (${open ? 'the prompt opens the thought' : 'the reply opens it'})`, () => {
      for (const [r, reply] of REPLIES.entries()) {
        const want = expected(reply, THINK, open);
        for (const pieces of cuttings(reply, 40, r + 1)) {
          expect(streamed(pieces, THINK, open), `${JSON.stringify(reply)} cut as ${JSON.stringify(pieces)}`).to.deep.equal(want);
        }
      }
    });
  }

  it('gives the thought out while it streams, holding back only what may be the closing tag or whitespace before it', () => {
    const splitter = new ReasoningTextSplitter(THINK, false);
    expect(splitter.push('<thi')).to.deep.equal({ reasoning: '', content: '' });
    expect(splitter.push('nk>\nFirst')).to.deep.equal({ reasoning: 'First', content: '' });
    expect(splitter.thinking).to.equal(true);
    expect(splitter.push(' step. \n</')).to.deep.equal({ reasoning: ' step.', content: '' });
    expect(splitter.push('think>\n\nThe')).to.deep.equal({ reasoning: '', content: 'The' });
    expect(splitter.thinking).to.equal(false);
    expect(splitter.push(' answer')).to.deep.equal({ reasoning: '', content: ' answer' });
  });

  it('reads the tags a template writes, and whether its prompt leaves a thought open', () => {
    expect(reasoningTagsOf("{{ content.split('</think>')[-1] }}")).to.deep.equal(THINK);
    expect(reasoningTagsOf('{{ "<thought>" }}…{{ "</thought>" }}')).to.deep.equal({ open: '<thought>', close: '</thought>' });
    expect(reasoningTagsOf(undefined)).to.equal(undefined);
    expect(reasoningTagsOf('{{ messages }}')).to.equal(undefined);
    expect(reasoningTagsOf('{% if add_generation_prompt %}<|Assistant|><think>\n{% endif %}')).to.deep.equal(THINK);
    expect(opensThought('<|Assistant|><think>\n', THINK)).to.equal(true);
    expect(opensThought('<|im_start|>assistant\n<think>\n\n</think>\n\n', THINK)).to.equal(false);
    expect(opensThought('<|im_start|>assistant\n', THINK)).to.equal(false);
  });

  it('a reply is split into thought, answer and tool calls, a call written while thinking staying in the thought', () => {
    const parsing = replyParsing({ format: 'auto', chatTemplate: '</think>', prompt: 'user: hi\nassistant:', constrained: false, tools: 'hermes' });
    const reply = '<think>I could write <tool_call>{"name":"x"}</tool_call> here.</think>\nCalling.\n<tool_call>{"name": "add", "arguments": {"a": 1}}</tool_call>';
    const whole = splitReply(parsing, reply);
    expect(whole.reasoning).to.equal('I could write <tool_call>{"name":"x"}</tool_call> here.');
    expect(whole.content).to.equal('Calling.\n');
    expect(whole.toolCalls.map((c) => [c.name, c.arguments])).to.deep.equal([['add', '{"a": 1}']]);
    for (const pieces of cuttings(reply, 20, 7)) {
      const splitter = new ChatReplySplitter(parsing);
      const parts = [...pieces.map((p) => splitter.push(p)), splitter.end()];
      expect(parts.map((p) => p.reasoning).join('')).to.equal(whole.reasoning);
      expect(parts.map((p) => p.content).join('')).to.equal(whole.content);
      expect(parts.flatMap((p) => p.toolCalls.map((c) => c.arguments))).to.deep.equal(['{"a": 1}']);
    }
  });

  it('leaves the thought in the answer with format none, or where a constraint shapes a reply whose template names no thought or whose prompt closed it; a reasoning template puts the thought before the constraint', () => {
    const reply = '<think>x</think>y';
    for (const parsing of [
      replyParsing({ format: 'none', chatTemplate: '</think>', prompt: '', constrained: false, tools: undefined }),
      replyParsing({ format: 'auto', chatTemplate: undefined, prompt: '<think>\n', constrained: true, tools: undefined }),
    ]) {
      expect(splitReply(parsing, reply)).to.deep.equal({ reasoning: '', content: reply, toolCalls: [] });
      expect(thoughtFirst({ type: 'json_object' }, parsing)).to.deep.equal({ type: 'json_object' });
    }
    // Free replies are read with <think> whatever the template; constrained ones think first where it names the tags.
    expect(replyParsing({ format: 'auto', chatTemplate: undefined, prompt: '', constrained: false, tools: undefined }).reasoning).to.deep.equal({ tags: THINK, open: false });
    const thinking = replyParsing({ format: 'auto', chatTemplate: '{{ "<thought>" }}{{ "</thought>" }}', prompt: 'A: <thought>\n', constrained: true, tools: undefined });
    expect(thoughtFirst({ type: 'json_object' }, thinking)).to.deep.equal({ type: 'json_object', thought: { open: '<thought>', close: '</thought>', opened: true } });
    // A prompt that closed the thought (thinking switched off) leaves the constrained reply none; a free one is still read.
    const closed = '<|im_start|>assistant\n<think>\n\n</think>\n\n';
    const off = replyParsing({ format: 'auto', chatTemplate: '</think>', prompt: closed, constrained: true, tools: undefined });
    expect(off.reasoning).to.equal(undefined);
    expect(thoughtFirst({ type: 'json_object' }, off)).to.deep.equal({ type: 'json_object' });
    expect(replyParsing({ format: 'auto', chatTemplate: '</think>', prompt: closed, constrained: false, tools: undefined }).reasoning).to.deep.equal({ tags: THINK, open: false });
  });

  it('counts the tokens up to the one that closes the thought, as a scan of every prefix does', () => {
    const pieces = ['<think>', '\n', 'a', ' b', '</', 'think', '>\n\n', 'c', ' d'];
    const decode = (k: number) => pieces.slice(0, k).join('');
    const scan = (n: number) => {
      for (let k = 0; k <= n; k++) if (decode(k).includes('</think>')) return k;
      return n;
    };
    for (let n = 0; n <= pieces.length; n++) expect(reasoningTokens(n, decode, THINK), `${n} tokens`).to.equal(scan(n));
    expect(reasoningTokens(pieces.length, decode, THINK)).to.equal(7);
  });
});
