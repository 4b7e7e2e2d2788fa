/**
 * Tool-call arguments kept as written on the paths that parsed them into values and wrote them again (which spells
 * `1.0` as `1` and `12345678901234567890` as `12345678901234567000`, and lays the JSON out anew): the generic reply's
 * calls, gpt-oss's harmony calls, and earlier calls shown in the generic prompt. And a chat template the renderer cannot
 * run answered as the server's fault (500), where a template's own refusal stays the request's (400).
 */
import { expect } from 'chai';
import { GenericReplySplitter } from '../src/chat/generic-reply.js';
import { HarmonyReplySplitter } from '../src/chat/harmony.js';
import { toolsShown, withToolsInPrompt } from '../src/tokenizer/tools-in-prompt.js';
import { ChatTemplateUnsupportedError, TextTokenizer, TokenizerError, type ChatMessage } from '../src/index.js';
import type { SplitToolText } from '../src/chat/tool-calls.js';
import { storiesModule } from './support/modules.js';
import { GEMMA_TEMPLATE } from './support/chat-templates.js';
import { postJson, useServers } from './support/servers.js';

/** Arguments whose numbers and layout a round trip through a JavaScript value would change. */
const ARGS = '{"order_id": 12345678901234567890, "weight": 1.0, "ratio":1e-7}';

/** `text` in pieces of `size` characters. */
const pieces = (text: string, size: number) => text.match(new RegExp(`[\\s\\S]{1,${size}}`, 'gu'))!;

/** The calls (name, arguments) a generic reply splitter reads from `text` in pieces of `size`. */
function genericCalls(text: string, size: number): [string | undefined, string][] {
  const splitter = new GenericReplySplitter();
  const parts: SplitToolText[] = [...pieces(text, size).map((p) => splitter.push(p)), splitter.end()];
  expect(parts.map((p) => p.content).join('')).to.equal('');
  return parts.flatMap((p) => p.toolCalls).map((c) => [c.name, c.arguments]);
}

describe('arguments as written: the generic reply, harmony, and the generic prompt', () => {
  it("the generic reply's calls, listed or one, give each call's arguments as the model wrote them", () => {
    const listed = `{"tool_calls": [{"name": "lookup", "arguments": ${ARGS}}, {"name": "add", "arguments": {"a":1.50}}]}`;
    for (const size of [listed.length, 3]) {
      expect(genericCalls(listed, size)).to.deep.equal([
        ['lookup', ARGS],
        ['add', '{"a":1.50}'],
      ]);
    }
    expect(genericCalls(`{"tool_call": {"name": "lookup", "arguments": ${ARGS}}}`, 4)).to.deep.equal([['lookup', ARGS]]);
    // (a call with no name keeps its own text whole, as the other syntaxes keep one)
    expect(genericCalls('{"tool_calls": [{"arguments": {"a": 1.0}}]}', 5)).to.deep.equal([[undefined, '{"arguments": {"a": 1.0}}']]);
  });

  it("harmony's call gives its body as written", () => {
    const splitter = new HarmonyReplySplitter();
    const reply = `<|channel|>analysis<|message|>Look it up.<|end|><|start|>assistant to=functions.lookup<|channel|>commentary json<|message|> ${ARGS}\n<|call|>`;
    const calls = [...pieces(reply, 6).flatMap((p) => splitter.push(p).toolCalls), ...splitter.end().toolCalls];
    expect(calls.map((c) => [c.name, c.arguments])).to.deep.equal([['lookup', ARGS]]);
  });

  it('earlier calls shown in the generic prompt keep their arguments\' values as given, in the layout the constraint writes, through the template', async () => {
    const lookup = { type: 'function' as const, function: { name: 'lookup', parameters: { type: 'object' } } };
    const messages: ChatMessage[] = [
      { role: 'user', content: 'Look up order 12345678901234567890.' },
      { role: 'assistant', content: '', tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'lookup', arguments: ARGS } }] },
      { role: 'tool', content: 'shipped', tool_call_id: 'call_1' },
      { role: 'assistant', content: '', tool_calls: [{ id: 'call_2', type: 'function', function: { name: 'lookup', arguments: 'not JSON' } }] },
    ];
    const { toolsPrompt } = toolsShown(true, [lookup], { choice: 'auto', parallel: true });
    const shown = withToolsInPrompt(messages, toolsPrompt!, true);
    // (the values as written; the spacing the constraint holds the model's own replies to, so the turn reads as it wrote it)
    const relaid = '{"order_id": 12345678901234567890, "weight": 1.0, "ratio": 1e-7}';
    expect(shown[2]!.content).to.equal(`{"tool_calls": [{"name": "lookup", "arguments": ${relaid}}]}`);
    // (text that is no JSON is a string, as before)
    expect(shown[4]!.content).to.equal('{"tool_calls": [{"name": "lookup", "arguments": "not JSON"}]}');
    const tokenizer = await TextTokenizer.fromDirectory(await storiesModule());
    const prompt = tokenizer.applyChatTemplate(messages.slice(0, 3), { template: GEMMA_TEMPLATE, toolsPrompt: toolsPrompt! });
    expect(prompt).to.include(`<start_of_turn>model\n{"tool_calls": [{"name": "lookup", "arguments": ${relaid}}]}`);
  });
});

/**
 * A template that refuses a second message with its own raise_exception, and lists the messages with `list.append`,
 * which the renderer lacks, where the message says `append`.
 */
const APPEND_TEMPLATE =
  "{% if messages | length > 1 %}{{ raise_exception('One message only.') }}{% endif %}" +
  "{% set seen = [] %}{% if messages[0].content == 'append' %}{% set _ = seen.append(1) %}{% endif %}" +
  '{{ messages[0].content }}';

describe('reasonplug serve: a chat template the renderer cannot run is the server’s error', function () {
  this.timeout(120_000);
  const { serve } = useServers();
  let url: string;

  before(async () => {
    url = await serve({ engine: { model: await storiesModule() }, name: 'appender', chatTemplate: APPEND_TEMPLATE });
  });

  it('TextTokenizer raises ChatTemplateUnsupportedError, a TokenizerError of its own', async () => {
    const tokenizer = await TextTokenizer.fromDirectory(await storiesModule());
    const render = (content: string) => () => tokenizer.applyChatTemplate([{ role: 'user', content }], { template: APPEND_TEMPLATE });
    expect(render('append')).to.throw(ChatTemplateUnsupportedError, /^the given chat template uses a construct the chat template renderer does not support/);
    expect(new ChatTemplateUnsupportedError('x')).to.be.an.instanceOf(TokenizerError).and.have.property('name', 'ChatTemplateUnsupportedError');
    expect(render('hello')()).to.equal('hello');
  });

  it("answers it 500 server_error; the template's raise_exception stays a 400", async () => {
    const ask = async (messages: { role: string; content: string }[]) => {
      const res = await postJson(url, '/v1/chat/completions', { model: 'appender', messages, max_tokens: 2 });
      return { status: res.status, body: (await res.json()) as { error?: { type: string; code: string | null; message: string } } };
    };
    const unsupported = await ask([{ role: 'user', content: 'append' }]);
    expect(unsupported.status).to.equal(500);
    expect(unsupported.body.error).to.deep.include({ type: 'server_error', code: 'chat_template_unsupported' });
    expect(unsupported.body.error!.message).to.match(/^ChatTemplateUnsupportedError: the given chat template uses a construct the chat template renderer does not support/);
    const refused = await ask([
      { role: 'user', content: 'one' },
      { role: 'user', content: 'two' },
    ]);
    expect(refused.status).to.equal(400);
    expect(refused.body.error).to.deep.include({ type: 'invalid_request_error' });
    expect(refused.body.error!.message).to.match(/One message only/);
    expect((await ask([{ role: 'user', content: 'hello' }])).status).to.equal(200);
  });
});
