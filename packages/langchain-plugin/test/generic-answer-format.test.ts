/**
 * `ChatReasoner` with tools where the template renders none (Gemma's: the generic syntax, tools described in the system
 * message) and a response format of the call's own under `tool_choice` auto: the reply is the calls or the answer in
 * that format, so the prompt shows the answer's JSON Schema, no `{"response": …}` object, and earlier answers as
 * written. A backbone scripted to answer at exactly that prompt.
 */
import { expect } from 'chai';
import { AIMessage, HumanMessage } from '@langchain/core/messages';
import { ChatReasoner } from '../src/index.js';
import { TextTokenizer, type ChatMessage, type ToolsPrompt } from '@reasonplug/core';
import { cacheDir, GEMMA_TEMPLATE } from './support/modules.js';
import { scriptedChatModule } from '../../core/test/support/modules.js';
import { ADD_TOOL, SUM_FORMAT, SUM_SCHEMA } from '../../core/test/support/sum-tool.js';

const TURNS: ChatMessage[] = [
  { role: 'user', content: 'What are two and two?' },
  { role: 'assistant', content: '{"sum": 4}' },
  { role: 'user', content: 'And three and four?' },
];

describe('ChatReasoner: generic tools beside a response format of its own', function () {
  this.timeout(120_000);
  let answerer: ChatReasoner | undefined;
  after(async () => {
    await answerer?.dispose();
  });

  it("under tool_choice auto the prompt shows the answer's schema and the earlier answer as written, and the answer comes back", async () => {
    const shown: ToolsPrompt = { tools: [ADD_TOOL], choice: 'auto', parallel: true, answer: SUM_FORMAT };
    const { dir } = await scriptedChatModule('plugin-gemma-format-answerer', GEMMA_TEMPLATE, TURNS, '{"sum": 7}', { toolsPrompt: shown });
    const tokenizer = await TextTokenizer.fromDirectory(dir);
    const expected = tokenizer.applyChatTemplate(TURNS, { template: GEMMA_TEMPLATE, toolsPrompt: shown });
    expect(expected).to.include(`To answer the user, reply with your answer as one JSON object following this JSON Schema:\n${JSON.stringify(SUM_SCHEMA, null, 2)}`);
    expect(expected).to.not.include('{"response"');
    expect(expected).to.include('<start_of_turn>model\n{"sum": 4}<end_of_turn>');

    answerer = await ChatReasoner.create({ backbone: dir, cacheDir, maxTokens: 40 });
    const history = [new HumanMessage(TURNS[0]!.content), new AIMessage(TURNS[1]!.content), new HumanMessage(TURNS[2]!.content)];
    const reply = await answerer.bindTools([ADD_TOOL]).withConfig({ responseFormat: SUM_FORMAT }).invoke(history);
    // The plugin's prompt is that one (its length, and the model scripted at exactly it answers).
    expect(reply.usage_metadata!.input_tokens).to.equal(tokenizer.encode(expected, false).length);
    expect([JSON.parse(reply.content as string) as unknown, reply.tool_calls, reply.response_metadata.finish_reason]).to.deep.equal([{ sum: 7 }, [], 'stop']);
  });
});
