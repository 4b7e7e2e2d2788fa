/**
 * The generic tool syntax (tools described in the system message) under `tool_choice: auto` beside a response format
 * of the call's own: the reply is the calls or the answer itself in that format, so the prompt says so (the answer's
 * JSON Schema shown, no `{"response": …}` object) and shows earlier answers as written. `reasonplug serve` with a
 * Gemma-templated model scripted to answer at exactly that prompt.
 */
import { expect } from 'chai';
import { TextTokenizer, type ChatMessage } from '../src/tokenizer/tokenizer.js';
import { toolsInstruction, toolsShown, withToolsInPrompt, type ToolsPrompt } from '../src/tokenizer/tools-in-prompt.js';
import { scriptedChatModule } from './support/modules.js';
import { GEMMA_TEMPLATE } from './support/chat-templates.js';
import { postJson, useServers } from './support/servers.js';
import { ADD_TOOL, SUM_FORMAT, SUM_SCHEMA } from './support/sum-tool.js';

/** A question, its answer in SUM_SCHEMA's JSON, and the next question. */
const TURNS: ChatMessage[] = [
  { role: 'user', content: 'What are two and two?' },
  { role: 'assistant', content: '{"sum": 4}' },
  { role: 'user', content: 'And three and four?' },
];
const SCHEMA_SHOWN = `To answer the user, reply with your answer as one JSON object following this JSON Schema:\n${JSON.stringify(SUM_SCHEMA, null, 2)}`;

describe('generic tools beside a response format of the call\'s own (tool_choice auto)', function () {
  this.timeout(240_000);
  const { serve } = useServers();

  it("a chat request's prompt shows the answer's schema, no response object, and the earlier answer as written", async () => {
    const shown: ToolsPrompt = { tools: [ADD_TOOL], choice: 'auto', parallel: true, answer: SUM_FORMAT };
    const { dir } = await scriptedChatModule('gemma-format-answerer', GEMMA_TEMPLATE, TURNS, '{"sum": 7}', { toolsPrompt: shown });
    const tokenizer = await TextTokenizer.fromDirectory(dir);
    const expected = tokenizer.applyChatTemplate(TURNS, { template: GEMMA_TEMPLATE, toolsPrompt: shown });
    expect(expected).to.include(SCHEMA_SHOWN).and.not.include('{"response"');
    expect(expected).to.include('<start_of_turn>model\n{"sum": 4}<end_of_turn>');

    const url = await serve({ engine: { model: dir }, name: 'gemma-format-answerer' });
    const body = {
      model: 'gemma-format-answerer',
      messages: TURNS,
      tools: [ADD_TOOL],
      response_format: { type: 'json_schema', json_schema: { name: 'sum', schema: SUM_SCHEMA, strict: true } },
      max_tokens: 40,
      temperature: 0,
    };
    const res = await postJson(url, '/v1/chat/completions', body);
    expect(res.status).to.equal(200);
    const reply = (await res.json()) as { choices: { message: { content: string; tool_calls?: unknown[] }; finish_reason: string }[]; usage: { prompt_tokens: number } };
    // The server's prompt is that one (its length, and the model scripted at exactly it answers).
    expect(reply.usage.prompt_tokens).to.equal(tokenizer.encode(expected, false).length);
    const { message, finish_reason } = reply.choices[0]!;
    expect([finish_reason, message.tool_calls ?? [], JSON.parse(message.content) as unknown]).to.deep.equal(['stop', [], { sum: 7 }]);
  });

  it('a grammar or pattern answer is asked for in the requested format; forced calls and no calls describe no answer', () => {
    const auto = { choice: 'auto' as const, parallel: true };
    const regex = toolsShown(true, [ADD_TOOL], auto, { type: 'regex', pattern: '[0-9]+' }).toolsPrompt!;
    const text = toolsInstruction(regex);
    expect(text).to.include('A reply that calls tools is one JSON object and nothing else. To call tools, reply with {"tool_calls": [');
    expect(text).to.include('\nTo answer the user, reply with your answer in the requested format instead.').and.not.include('{"response"');
    expect(toolsInstruction(toolsShown(true, [ADD_TOOL], auto, { type: 'json_object' }).toolsPrompt!)).to.include('To answer the user, reply with your answer as one JSON object.');
    // A thought before the structure is no part of the answer's format.
    const thought = { open: '<think>', close: '</think>', opened: false };
    expect(toolsShown(true, [ADD_TOOL], auto, { ...SUM_FORMAT, thought }).toolsPrompt!.answer).to.deep.equal(SUM_FORMAT);

    // Required or named calls are the reply, no answer; with tool_choice none nothing is described: prompts as without the format.
    for (const calls of [{ choice: 'required' as const, parallel: true }, { choice: { name: 'add' }, parallel: false }, undefined]) {
      expect(toolsShown(true, [ADD_TOOL], calls, SUM_FORMAT), JSON.stringify(calls)).to.deep.equal(toolsShown(true, [ADD_TOOL], calls));
    }
    // Without a format of its own an earlier answer is still the response object.
    const wrapped = withToolsInPrompt(TURNS, toolsShown(true, [ADD_TOOL], auto).toolsPrompt!, true);
    expect(wrapped[2]!.content).to.equal('{"response": "{\\"sum\\": 4}"}');
  });
});
