import { expect } from 'chai';
import { AIMessage, AIMessageChunk, ChatMessage, HumanMessage, SystemMessage, ToolMessage } from '@langchain/core/messages';
import { toTemplateMessage } from '../src/chat-prompt.js';
import { UnsupportedMessageError } from '../src/errors.js';
import { ReplySplitter, type SplitText } from '../src/reply-splitter.js';
import type { ToolCallSyntax } from '@reasonplug/core';

/** Feeds `text` to a splitter in pieces cut at `cuts`, and assembles the message LangChain would. */
function split(text: string, cuts: number[], syntax: ToolCallSyntax = 'hermes'): AIMessageChunk {
  const splitter = new ReplySplitter({ tools: syntax });
  const pieces: SplitText[] = [];
  let from = 0;
  for (const at of [...cuts, text.length]) {
    pieces.push(splitter.push(text.slice(from, at)));
    from = at;
  }
  pieces.push(splitter.end());
  return pieces
    .map((p) => new AIMessageChunk({ content: p.content, tool_call_chunks: p.toolCalls }))
    .reduce((a, b) => a.concat(b));
}

const TEXT =
  'Let me add. <tool_call>{"name": "add", "arguments": {"a": 2, "b": 3}}</tool_call>' +
  ' and <tool_call>\n{"name": "mul", "parameters": {"x": [1, 2]}}\n</tool_call> done <t';

describe('tool calls in generated text', () => {
  it('separates content from tool calls however the text is cut', () => {
    const cutsList = [[], [1, 2, 3], [13, 14, 20, 60, 70, 83], Array.from({ length: TEXT.length - 1 }, (_, i) => i + 1)];
    for (const cuts of cutsList) {
      const message = split(TEXT, cuts);
      expect(message.content).to.equal('Let me add.  and  done <t');
      expect(message.tool_calls!.map(({ name, args, type }) => ({ name, args, type }))).to.deep.equal([
        { name: 'add', args: { a: 2, b: 3 }, type: 'tool_call' },
        { name: 'mul', args: { x: [1, 2] }, type: 'tool_call' },
      ]);
      const ids = message.tool_calls!.map((c) => c.id);
      expect(new Set(ids).size).to.equal(2);
      expect(message.invalid_tool_calls).to.deep.equal([]);
    }
  });

  it('drops the whitespace between calls and after the last (their layout), and keeps it before text that follows', () => {
    const call = (a: number) => `<tool_call>\n{"name": "add", "arguments": {"a": ${a}}}\n</tool_call>`;
    const cases: [string, string][] = [
      [`Sure.\n${call(1)}\n${call(2)}\n`, 'Sure.\n'],
      [`${call(1)}\n \n${call(2)}\n\nDone.`, '\n\nDone.'],
      [`${call(1)}\n<tool`, '\n<tool'],
    ];
    for (const [text, content] of cases) {
      for (const cuts of [[], Array.from({ length: text.length - 1 }, (_, i) => i + 1)]) {
        const message = split(text, cuts);
        expect(message.content, text).to.equal(content);
        expect(message.tool_calls!.map((c) => c.args.a), text).to.deep.equal(text.includes(call(2)) ? [1, 2] : [1]);
      }
    }
  });

  it('never streams part of an opening tag as content', () => {
    const splitter = new ReplySplitter({ tools: 'hermes' });
    expect(splitter.push('Hi <tool').content).to.equal('Hi ');
    expect(splitter.push('_ca').content).to.equal('');
    expect(splitter.push('ll>{"name": "f", "arguments": {}}</tool_call>!')).to.deep.include({ content: '!' });
  });

  it("reads Llama 3's calls (json syntax): text before streams as content, the call ends the reply, however the text is cut", () => {
    const call = '{"name": "add", "parameters": {"a": 2, "b": 3}}';
    const cases: [string, string, number][] = [
      [call, '', 1],
      [`  \n${call}`, '', 1],
      [`Let me add. ${call}`, 'Let me add. ', 1],
      ['No call here: {"a": 1} and {"name" is text', 'No call here: {"a": 1} and {"name" is text', 0],
    ];
    for (const [text, content, calls] of cases) {
      for (const cuts of [[], [3, 9, 14], Array.from({ length: text.length - 1 }, (_, i) => i + 1)]) {
        const message = split(text, cuts, 'json');
        expect(message.content, text).to.equal(content);
        expect(message.tool_calls!.map(({ name, args }) => ({ name, args })), text).to.deep.equal(calls ? [{ name: 'add', args: { a: 2, b: 3 } }] : []);
      }
    }
    // The opening of a call is never streamed as content.
    const splitter = new ReplySplitter({ tools: 'json' });
    expect(splitter.push('Sure {"na').content).to.equal('Sure ');
    expect(splitter.push('me": "add", "parameters": {}}').content).to.equal('');
    expect(splitter.end().toolCalls.map((c) => c.name)).to.deep.equal(['add']);
  });

  it('reports a block that is not JSON as an invalid tool call, and an unclosed one as text', () => {
    const invalid = split('<tool_call>add(2, 3)</tool_call>', [5]);
    expect(invalid.tool_calls).to.deep.equal([]);
    expect(invalid.invalid_tool_calls!.map((c) => c.args)).to.deep.equal(['add(2, 3)']);
    const unclosed = split('x <tool_call>{"name": "add"', [4]);
    expect(unclosed.content).to.equal('x <tool_call>{"name": "add"');
    expect(unclosed.tool_calls).to.deep.equal([]);
  });
});

describe('messages for chat templates', () => {
  it('maps roles, tool calls and tool results to the shape Hugging Face templates expect', () => {
    expect(toTemplateMessage(new SystemMessage('Be brief.'))).to.deep.equal({ role: 'system', content: 'Be brief.' });
    // text blocks a line apart, as vLLM and llama.cpp join a message's parts
    expect(toTemplateMessage(new HumanMessage({ content: [{ type: 'text', text: 'Summarize this:' }, { type: 'text', text: 'The cat sat.' }] }))).to.deep.equal({
      role: 'user',
      content: 'Summarize this:\nThe cat sat.',
    });
    expect(toTemplateMessage(new AIMessage({ content: '', tool_calls: [{ id: 'c1', name: 'add', args: { a: 1 } }] }))).to.deep.equal({
      role: 'assistant',
      content: '',
      tool_calls: [{ id: 'c1', type: 'function', function: { name: 'add', arguments: { a: 1 } } }],
    });
    expect(toTemplateMessage(new ToolMessage({ content: '3', tool_call_id: 'c1', name: 'add' }))).to.deep.equal({
      role: 'tool',
      content: '3',
      tool_call_id: 'c1',
      name: 'add',
    });
    expect(toTemplateMessage(new ChatMessage('note', 'narrator'))).to.deep.equal({ role: 'narrator', content: 'note' });
  });

  it("reads an AI message's tool-call and thought blocks as its calls and thought, not as text", () => {
    const call = { id: 'c1', name: 'add', args: { a: 2, b: 3 } };
    const rendered = { role: 'assistant', content: 'Adding.', tool_calls: [{ id: 'c1', type: 'function', function: { name: 'add', arguments: { a: 2, b: 3 } } }] };
    // outputVersion 'v1': the calls are in content and in tool_calls; the template gets them once.
    const v1 = new AIMessage({ content: [{ type: 'reasoning', reasoning: 'Sum.' }, { type: 'text', text: 'Adding.' }, { type: 'tool_call', ...call }], tool_calls: [call] });
    expect(toTemplateMessage(v1)).to.deep.equal({ ...rendered, reasoning_content: 'Sum.' });
    // Anthropic's: tool_use blocks beside tool_calls, or alone; a thought given as reasoning_content is taken over blocks.
    const tool_use = { type: 'tool_use', id: 'c1', name: 'add', input: { a: 2, b: 3 } };
    const thinking = { type: 'thinking', thinking: 'Hm.', signature: 's' };
    expect(toTemplateMessage(new AIMessage({ content: [{ type: 'text', text: 'Adding.' }, tool_use], tool_calls: [call] }))).to.deep.equal(rendered);
    expect(toTemplateMessage(new AIMessage({ content: [thinking, { type: 'text', text: 'Adding.' }, tool_use] }))).to.deep.equal({ ...rendered, reasoning_content: 'Hm.' });
    const given = new AIMessage({ content: [thinking, { type: 'text', text: 'Adding.' }, tool_use], additional_kwargs: { reasoning_content: 'Own.' } });
    expect(toTemplateMessage(given)).to.deep.equal({ ...rendered, reasoning_content: 'Own.' });
    // Chunks, invalid calls and a provider's server-side calls write nothing.
    const others = [
      { type: 'tool_call_chunk', name: 'add', args: '{"a"', index: 0 },
      { type: 'invalid_tool_call', name: 'add', args: '{', error: 'bad' },
      { type: 'server_tool_call', id: 's1', name: 'web_search', args: {} },
      { type: 'server_tool_call_result', toolCallId: 's1', status: 'success' },
      { type: 'redacted_thinking', data: 'x' },
    ];
    expect(toTemplateMessage(new AIMessage({ content: [{ type: 'text', text: 'Adding.' }, ...others], tool_calls: [call] }))).to.deep.equal(rendered);
  });

  it('refuses content a text model cannot read', () => {
    const image = new HumanMessage({ content: [{ type: 'image_url', image_url: { url: 'https://example.com/a.png' } }] });
    expect(() => toTemplateMessage(image)).to.throw(UnsupportedMessageError, /image_url/);
    const aiImage = new AIMessage({ content: [{ type: 'text', text: 'See.' }, { type: 'image', url: 'https://example.com/a.png' }] });
    expect(() => toTemplateMessage(aiImage)).to.throw(UnsupportedMessageError, /ai message holds a "image"/);
    // Tool-call blocks belong to AI messages only.
    const human = new HumanMessage({ content: [{ type: 'tool_use', id: 'c1', name: 'add', input: {} }] });
    expect(() => toTemplateMessage(human)).to.throw(UnsupportedMessageError, /tool_use/);
  });
});
