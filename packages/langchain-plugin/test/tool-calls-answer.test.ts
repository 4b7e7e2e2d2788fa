/**
 * `ChatReasoner` with bound tools and a response format of the call's own (createAgent's `responseFormat` provider
 * strategy, a `withConfig({ responseFormat })`): under `tool_choice` auto the reply is either the calls or the answer in
 * that format, as the server gives it; a required call wins over the format. Backbones scripted to call and to answer.
 */
import { expect } from 'chai';
import { AIMessageChunk, HumanMessage } from '@langchain/core/messages';
import { ChatReasoner } from '../src/index.js';
import { cacheDir } from './support/modules.js';
import { scriptedChatModule } from '../../core/test/support/modules.js';
import { TOOLS_TEMPLATE } from '../../core/test/support/chat-templates.js';
import { ADD_TOOL, SUM_FORMAT } from '../../core/test/support/sum-tool.js';

const QUESTION = 'What are two and two?';
const CALL = '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 2}}\n</tool_call>';
const ANSWER = '{"sum": 4}';

describe('ChatReasoner: bound tools beside a response format of its own', function () {
  this.timeout(120_000);
  let caller: ChatReasoner;
  let answerer: ChatReasoner;

  before(async () => {
    // (a byte-level vocabulary: the reply's first token is its text's, with no blank a SentencePiece one puts first)
    const script = async (name: string, reply: string) =>
      ChatReasoner.create({ backbone: (await scriptedChatModule(name, TOOLS_TEMPLATE, [{ role: 'user', content: QUESTION }], reply, { tools: [ADD_TOOL], bpe: true })).dir, cacheDir, maxTokens: 80 });
    caller = await script('plugin-format-caller', CALL);
    answerer = await script('plugin-format-answerer', ANSWER);
  });
  after(async () => {
    await Promise.all([caller, answerer].filter(Boolean).map((m) => m.dispose()));
  });

  it('under tool_choice auto a model that calls gets its call, one that answers its JSON as content, in invoke and stream', async () => {
    const called = await caller.bindTools([ADD_TOOL]).withConfig({ responseFormat: SUM_FORMAT }).invoke([new HumanMessage(QUESTION)]);
    expect(called.tool_calls!.map((c) => [c.name, c.args])).to.deep.equal([['add', { a: 2, b: 2 }]]);
    expect([called.content, called.response_metadata.finish_reason]).to.deep.equal(['', 'tool_calls']);
    const answered = await answerer.bindTools([ADD_TOOL]).withConfig({ responseFormat: SUM_FORMAT }).invoke([new HumanMessage(QUESTION)]);
    expect([answered.content, answered.tool_calls, answered.response_metadata.finish_reason]).to.deep.equal([ANSWER, [], 'stop']);

    const chunks: AIMessageChunk[] = [];
    for await (const c of await caller.bindTools([ADD_TOOL]).withConfig({ responseFormat: SUM_FORMAT }).stream([new HumanMessage(QUESTION)])) chunks.push(c);
    const joined = chunks.reduce((a, b) => a.concat(b));
    expect(joined.tool_calls!.map((c) => [c.name, c.args])).to.deep.equal([['add', { a: 2, b: 2 }]]);
    expect(joined.content).to.equal('');
  });

  it('a required call wins over the format, as the server has it', async () => {
    const forced = await caller.bindTools([ADD_TOOL], { tool_choice: 'required' }).withConfig({ responseFormat: SUM_FORMAT }).invoke([new HumanMessage(QUESTION)]);
    expect(forced.tool_calls!.map((c) => [c.name, c.args])).to.deep.equal([['add', { a: 2, b: 2 }]]);
    expect(forced.content).to.equal('');
  });
});
