/**
 * `ChatReasoner.bindTools` on a Llama 3-style template: the calls are constrained and read in the syntax the
 * template teaches (one JSON object with "parameters"), not as `<tool_call>` blocks. The backbone is scripted to
 * answer with a call.
 */
import { expect } from 'chai';
import { AIMessageChunk, HumanMessage } from '@langchain/core/messages';
import { tool } from '@langchain/core/tools';
import { convertToOpenAITool } from '@langchain/core/utils/function_calling';
import { z } from 'zod';
import { ChatReasoner } from '../src/index.js';
import { cacheDir } from './support/modules.js';
import { scriptedChatModule } from '../../core/test/support/modules.js';
import { LLAMA3_TOOLS_TEMPLATE } from '../../core/test/support/chat-templates.js';

const QUESTION = 'What are two and two?';

describe('ChatReasoner: tool calls in the syntax of the template', function () {
  this.timeout(60_000);
  let model: ChatReasoner;
  let forcedHermes: ChatReasoner;
  const add = tool(async ({ a, b }) => String(a + b), { name: 'add', description: 'Add two integers', schema: z.object({ a: z.number().int(), b: z.number().int() }) });

  before(async () => {
    // Scripted for the prompt with the tool rendered as bindTools renders it.
    const shown = [convertToOpenAITool(add)];
    const { dir } = await scriptedChatModule('llama3ish-plugin', LLAMA3_TOOLS_TEMPLATE, [{ role: 'user', content: QUESTION }], '{"name": "add", "parameters": {"a": 2, "b": 2}}', { tools: shown });
    [model, forcedHermes] = await Promise.all([
      ChatReasoner.create({ backbone: dir, cacheDir, maxTokens: 60 }),
      ChatReasoner.create({ backbone: dir, cacheDir, maxTokens: 60, toolCallSyntax: 'hermes' }),
    ]);
  });
  after(async () => {
    await Promise.all([model?.dispose(), forcedHermes?.dispose()]);
  });

  it('bindTools (auto) gives the JSON call as tool_calls, in invoke and stream', async () => {
    const reply = await model.bindTools([add]).invoke([new HumanMessage(QUESTION)]);
    expect(reply.tool_calls?.map((c) => [c.name, c.args])).to.deep.equal([['add', { a: 2, b: 2 }]]);
    expect(reply.content).to.equal('');
    const chunks: AIMessageChunk[] = [];
    for await (const c of await model.bindTools([add]).stream([new HumanMessage(QUESTION)])) chunks.push(c);
    expect(chunks.reduce((a, b) => a.concat(b)).tool_calls?.map((c) => c.name)).to.deep.equal(['add']);
  });

  it('toolCallSyntax overrides what the template suggests: as hermes, the same JSON is free text, no call', async () => {
    const reply = await forcedHermes.bindTools([add]).invoke([new HumanMessage(QUESTION)]);
    expect(reply.tool_calls).to.deep.equal([]);
    expect(String(reply.content).trim()).to.equal('{"name": "add", "parameters": {"a": 2, "b": 2}}');
  });
});
