/**
 * Tools for templates that show none (the `generic` syntax): the prompt that describes them (Gemma's template, which
 * has no system or tool role and demands alternating turns, renders the whole conversation), and the splitter that
 * reads the reply object back, its answer streaming as it is written. JSON.parse is the reference for what the
 * reply's strings mean.
 */
import { expect } from 'chai';
import { TextTokenizer, TokenizerError, type ChatMessage } from '../src/tokenizer/tokenizer.js';
import { spacedJson, toolsInstruction, type ToolsPrompt } from '../src/tokenizer/tools-in-prompt.js';
import { GenericReplySplitter } from '../src/chat/generic-reply.js';
import { toolCallSyntaxOf } from '../src/constrain/tool-syntax.js';
import { createRng } from '../src/sampling/index.js';
import { storiesModule } from './support/modules.js';
import { GEMMA_TEMPLATE, TOOLS_TEMPLATE } from './support/chat-templates.js';

const ADD = {
  type: 'function' as const,
  function: { name: 'add', description: 'Add two integers', parameters: { type: 'object', properties: { a: { type: 'integer' }, b: { type: 'integer' } }, required: ['a', 'b'] } },
};
const PROMPT: ToolsPrompt = { tools: [ADD], choice: 'auto', parallel: true };

/** A conversation with a system message, two calls and their results, and a question after them. */
const TURNS: ChatMessage[] = [
  { role: 'system', content: 'You are terse.' },
  { role: 'user', content: 'What are 2+2 and 3+4?' },
  {
    role: 'assistant',
    content: '',
    tool_calls: [
      { id: 'call_1', type: 'function', function: { name: 'add', arguments: '{"a": 2, "b": 2}' } },
      { id: 'call_2', type: 'function', function: { name: 'add', arguments: { a: 3, b: 4 } } },
    ],
  },
  { role: 'tool', content: '4', tool_call_id: 'call_1' },
  { role: 'tool', content: '7', tool_call_id: 'call_2' },
  { role: 'assistant', content: '4 and 7.' },
  { role: 'user', content: 'And 5+5?' },
];

/** A reply pushed in pieces cut at random places, and what the splitter made of it. */
function split(text: string, rng: () => number): { content: string; pieces: number; calls: { name?: string; args: unknown }[] } {
  const splitter = new GenericReplySplitter();
  let content = '';
  let pieces = 0;
  const calls: { name?: string; args: unknown }[] = [];
  const take = (out: ReturnType<GenericReplySplitter['push']>) => {
    if (out.content) pieces++;
    content += out.content;
    for (const c of out.toolCalls) calls.push({ name: c.name, args: JSON.parse(c.arguments) });
  };
  for (let at = 0; at < text.length; ) {
    const size = 1 + Math.floor(rng() * 4);
    take(splitter.push(text.slice(at, at + size)));
    at += size;
  }
  take(splitter.end());
  return { content, pieces, calls };
}

describe('tools for templates that show none (generic syntax)', function () {
  this.timeout(60_000);
  let tokenizer: TextTokenizer;

  before(async () => {
    tokenizer = await TextTokenizer.fromDirectory(await storiesModule());
  });

  it('probes what a template shows: Gemma\'s no tools and no system message, the Zephyr-style one both', () => {
    expect(tokenizer.rendersTools(GEMMA_TEMPLATE)).to.equal(false);
    expect(tokenizer.rendersSystem(GEMMA_TEMPLATE)).to.equal(false);
    expect(tokenizer.rendersTools(TOOLS_TEMPLATE)).to.equal(true);
    expect(tokenizer.rendersSystem(TOOLS_TEMPLATE)).to.equal(true);
    expect(toolCallSyntaxOf(GEMMA_TEMPLATE, false)).to.equal('generic');
    expect(toolCallSyntaxOf(TOOLS_TEMPLATE, true)).to.equal('hermes');
  });

  it("renders a conversation with calls and results through Gemma's template, which refuses it as given", () => {
    expect(() => tokenizer.applyChatTemplate(TURNS, { template: GEMMA_TEMPLATE, tools: [ADD] })).to.throw(TokenizerError, /System role not supported/);
    const text = tokenizer.applyChatTemplate(TURNS, { template: GEMMA_TEMPLATE, toolsPrompt: PROMPT });
    const turns = text.split('<start_of_turn>').slice(1);
    // user, model, user (both results), model, user, and the generation prompt: alternating, as the template demands.
    expect(turns.map((t) => t.slice(0, t.indexOf('\n')))).to.deep.equal(['user', 'model', 'user', 'model', 'user', 'model']);
    // The system message and the tools' description open the first user turn, before its question.
    expect(turns[0]).to.include('You are terse.\n\nYou can call these tools');
    expect(turns[0]).to.include('"name": "add",\n    "description": "Add two integers",\n    "parameters": {');
    expect(turns[0]).to.match(/What are 2\+2 and 3\+4\?<end_of_turn>\n$/);
    // The calls as the reply object the constraint writes (arguments given as text or as an object alike).
    expect(turns[1]).to.equal('model\n{"tool_calls": [{"name": "add", "arguments": {"a": 2, "b": 2}}, {"name": "add", "arguments": {"a": 3, "b": 4}}]}<end_of_turn>\n');
    // Both results in one user turn, each naming the tool its call's id belongs to.
    expect(turns[2]).to.equal(
      'user\n{"tool_response": {"name": "add", "tool_call_id": "call_1", "content": "4"}}\n{"tool_response": {"name": "add", "tool_call_id": "call_2", "content": "7"}}<end_of_turn>\n',
    );
    expect(turns[3]).to.equal('model\n{"response": "4 and 7."}<end_of_turn>\n');
  });

  it('a user message right after the results joins their user turn (Anthropic sends tool_result and text in one message)', () => {
    const turns = [...TURNS.slice(0, 5), { role: 'user', content: 'And 5+5?' }];
    const text = tokenizer.applyChatTemplate(turns, { template: GEMMA_TEMPLATE, toolsPrompt: PROMPT });
    const shown = text.split('<start_of_turn>').slice(1);
    expect(shown.map((t) => t.slice(0, t.indexOf('\n')))).to.deep.equal(['user', 'model', 'user', 'model']);
    expect(shown[2]).to.equal(
      'user\n{"tool_response": {"name": "add", "tool_call_id": "call_1", "content": "4"}}\n{"tool_response": {"name": "add", "tool_call_id": "call_2", "content": "7"}}\n\nAnd 5+5?<end_of_turn>\n',
    );
  });

  it('a template with a system role gets the description as its system message; the last assistant message stays as given', () => {
    const [system, ...rest] = TURNS;
    const continued = [...rest.slice(0, 1), { role: 'assistant', content: 'Let me' }];
    const text = tokenizer.applyChatTemplate(continued, { template: TOOLS_TEMPLATE, toolsPrompt: PROMPT, addGenerationPrompt: false });
    expect(text).to.match(/^<s>?<\|system\|>You can call these tools/);
    expect(text).to.include('<|assistant|>Let me<|end|>');
    expect(text).to.not.include('<|tools|>');
    const withSystem = tokenizer.applyChatTemplate([system!, ...rest], { template: TOOLS_TEMPLATE, toolsPrompt: PROMPT });
    expect(withSystem).to.include('<|system|>You are terse.\n\nYou can call these tools');
    expect(withSystem.match(/<\|system\|>/g)).to.have.length(1);
  });

  it('without tools to describe (none bound, or tool_choice none) a system message is still folded and earlier calls still shown; answers stay as given', () => {
    const text = tokenizer.applyChatTemplate(TURNS, { template: GEMMA_TEMPLATE, toolsPrompt: { tools: [], choice: 'auto', parallel: true } });
    expect(text).to.not.include('You can call');
    expect(text).to.include('<start_of_turn>user\nYou are terse.\n\nWhat are 2+2 and 3+4?<end_of_turn>');
    expect(text).to.include('<start_of_turn>model\n{"tool_calls": [{"name": "add"');
    expect(text).to.include('<start_of_turn>model\n4 and 7.<end_of_turn>');
    const plain = tokenizer.applyChatTemplate([{ role: 'user', content: 'Hi' }], { template: GEMMA_TEMPLATE, toolsPrompt: { tools: [], choice: 'auto', parallel: true } });
    expect(plain).to.equal(tokenizer.applyChatTemplate([{ role: 'user', content: 'Hi' }], { template: GEMMA_TEMPLATE }));
  });

  it('the description names the reply object each tool choice admits', () => {
    expect(toolsInstruction(PROMPT)).to.include('{"tool_calls": [{"name": "<tool name>", "arguments": {…}}, …]}').and.include('{"response": "<your answer>"}');
    const one = toolsInstruction({ ...PROMPT, parallel: false });
    expect(one).to.include('{"tool_call": {"name": "<tool name>"').and.not.include('tool_calls');
    const required = toolsInstruction({ ...PROMPT, choice: 'required' });
    expect(required).to.include('You must call a tool.').and.not.include('"response"');
    const named = toolsInstruction({ ...PROMPT, choice: { name: 'add' } });
    expect(named).to.include('Call the tool "add", replying with {"tool_call": {"name": "add"').and.not.include('"response"');
    expect(spacedJson({ a: [1, { b: 'x"y' }], c: null, d: undefined })).to.equal('{"a": [1, {"b": "x\\"y"}], "c": null}');
  });

  it('streams an answer as it is written, whatever its escapes and wherever the pieces are cut', () => {
    const rng = createRng(11);
    const alphabet = ['a', ' ', '"', '\\', '\n', '\t', '/', 'é', '€', '😀', '\u0001', '\u2028', '{', '}'];
    for (let n = 0; n < 200; n++) {
      const answer = Array.from({ length: Math.floor(rng() * 30) }, () => alphabet[Math.floor(rng() * alphabet.length)]).join('');
      // JSON.stringify's escapes, and \u escapes of every character on a third of them (surrogate pairs included).
      const written = rng() < 1 / 3 ? `"${Array.from({ length: answer.length }, (_, i) => `\\u${answer.charCodeAt(i).toString(16).padStart(4, '0')}`).join('')}"` : JSON.stringify(answer);
      const text = `{"response": ${written}}`;
      expect(JSON.parse(text)).to.deep.equal({ response: answer });
      const out = split(text, rng);
      expect(out.content, text).to.equal(answer);
      expect(out.calls).to.deep.equal([]);
      if (answer.length > 8) expect(out.pieces, text).to.be.greaterThan(1);
    }
  });

  it('reads calls, a list or one, when the reply ends; a reply that is no such object is content as written', () => {
    const rng = createRng(3);
    const listed = '{"tool_calls": [{"name": "add", "arguments": {"a": 2, "b": 2}}, {"name": "add", "arguments": {"a": 3, "b": 4}}]}';
    expect(split(listed, rng)).to.deep.equal({ content: '', pieces: 0, calls: [{ name: 'add', args: { a: 2, b: 2 } }, { name: 'add', args: { a: 3, b: 4 } }] });
    expect(split('{"tool_call": {"name": "add", "arguments": {"a": 1, "b": 0}}}', rng).calls).to.deep.equal([{ name: 'add', args: { a: 1, b: 0 } }]);
    for (const text of ['Hello there.', '{"answer": 42}', '  {"resp', '{"tool_calls": [{"name": "add", "argum', '[1, 2]', '{}']) {
      expect(split(text, rng), text).to.deep.include({ content: text, calls: [] });
    }
    // An answer cut off inside an escape keeps what was decoded and the raw rest.
    expect(split('{"response": "a\\nb\\u00', rng).content).to.equal('a\nb\\u00');
    // One splitter takes reply after reply.
    const splitter = new GenericReplySplitter();
    splitter.push(listed);
    expect(splitter.end().toolCalls).to.have.length(2);
    expect([splitter.push('{"response": "next'), splitter.end()].map((o) => o.content).join('')).to.equal('next');
  });
});
