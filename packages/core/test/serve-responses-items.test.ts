/**
 * `item_reference` input items on `POST /v1/responses`: the server keeps the output items of its answers (whole and
 * streamed; not those of `store: false`) in a bounded store, least recently used first out, and a later request's
 * references read as the items they name, as the AI SDK's default OpenAI provider sends earlier turns (its requests
 * reproduced here with fetch: the AI SDK is not a dependency of the repository). A reference the server does not
 * hold is a 400 saying how to do without.
 */
import { expect } from 'chai';
import { postJson, useServers } from './support/servers.js';
import { scriptedChatModule, storiesModule } from './support/modules.js';
import { THINKING_TEMPLATE, TOOLS_TEMPLATE } from './support/chat-templates.js';
import { ResponseItems, type OutputItem } from '../src/serve/response-items.js';
import { parseResponsesRequest } from '../src/serve/responses-request.js';

type Item = { type: string; id: string; [key: string]: unknown };
interface Response {
  status: string;
  store: boolean;
  output: Item[];
  usage: { input_tokens: number };
}
interface Refusal {
  error: { message: string; code: string; param: string };
}

/** The items of a finished response streamed as events: its `response.completed` event's output. */
function completedOutput(body: string): Item[] {
  const completed = body
    .split('\n\n')
    .filter((block) => block.trim())
    .map((block) => JSON.parse(block.split('\n')[1]!.slice('data: '.length)) as { type: string; response?: Response })
    .find((e) => e.type === 'response.completed' || e.type === 'response.incomplete');
  return completed!.response!.output;
}

/** A user message as the AI SDK writes it. */
const user = (text: string) => ({ role: 'user', content: [{ type: 'input_text', text }] });

describe('reasonplug serve: /v1/responses item_reference', function () {
  this.timeout(120_000);
  const { serve } = useServers();
  let url: string;
  const respond = async (body: object, at = url) => {
    const res = await postJson(at, '/v1/responses', { model: 'stories260k', max_output_tokens: 8, temperature: 0, ...body });
    return { status: res.status, body: (await res.json()) as Response & Refusal };
  };

  before(async () => {
    url = await serve({ engine: { model: await storiesModule() }, chatTemplate: TOOLS_TEMPLATE });
  });

  it("reads the AI SDK's second turn, an earlier answer as its item_reference, as the whole message would read", async () => {
    const first = await respond({ input: [user('Once upon a time')] });
    expect(first.status).to.equal(200);
    expect(first.body.store).to.equal(true);
    const message = first.body.output[0]!;
    expect(message.type).to.equal('message');
    const referenced = await respond({ input: [user('Once upon a time'), { type: 'item_reference', id: message.id }, user('And then?')] });
    expect(referenced.status, JSON.stringify(referenced.body)).to.equal(200);
    const whole = await respond({ input: [user('Once upon a time'), message, user('And then?')] });
    expect(referenced.body.usage.input_tokens).to.equal(whole.body.usage.input_tokens);
    expect(referenced.body.output[0]!.content).to.deep.equal(whole.body.output[0]!.content);
    // (OpenAI's schema makes the reference's type optional: an item of an id alone)
    const untyped = await respond({ input: [user('Once upon a time'), { id: message.id }, user('And then?')] });
    expect(untyped.body.usage.input_tokens).to.equal(whole.body.usage.input_tokens);
  });

  it("a streamed answer's items are kept too, function calls among them", async () => {
    const parameters = { type: 'object', properties: { a: { enum: [2] }, b: { enum: [3] } }, required: ['a', 'b'], additionalProperties: false };
    const tools = [{ type: 'function', name: 'add', description: 'Add two integers', parameters, strict: true }];
    const question = { tools, input: [user('Add 2 and 3')], max_output_tokens: 80 };
    const res = await postJson(url, '/v1/responses', { model: 'stories260k', temperature: 0, stream: true, ...question, tool_choice: { type: 'function', name: 'add' } });
    const call = completedOutput(await res.text()).find((o) => o.type === 'function_call')!;
    expect(call.id).to.match(/^fc_/);
    const result = { type: 'function_call_output', call_id: call.call_id, output: '5' };
    const referenced = await respond({ ...question, input: [...question.input, { type: 'item_reference', id: call.id }, result] });
    expect(referenced.status, JSON.stringify(referenced.body)).to.equal(200);
    const whole = await respond({ ...question, input: [...question.input, call, result] });
    expect(referenced.body.usage.input_tokens).to.equal(whole.body.usage.input_tokens);
    expect(referenced.body.output).to.have.length.greaterThan(0);
    expect(referenced.body.output.map((o) => o.content ?? o.arguments)).to.deep.equal(whole.body.output.map((o) => o.content ?? o.arguments));
  });

  it("a reasoning model's thought and answer, referenced, are the reasoning and assistant message the whole items make", async () => {
    const question = 'What are two and two?';
    const { dir } = await scriptedChatModule('items-thinker', THINKING_TEMPLATE, [{ role: 'user', content: question }], '<think>\nTwo and two make four.\n</think>\n\nFour.');
    const at = await serve({ engine: { model: dir }, name: 'thinker' });
    const first = await respond({ model: 'thinker', input: [user(question)], max_output_tokens: 60 }, at);
    expect(first.body.output.map((o) => o.type)).to.deep.equal(['reasoning', 'message']);
    const [thought, answer] = first.body.output as [Item, Item];
    const referenced = await respond({ model: 'thinker', input: [user(question), { type: 'item_reference', id: thought.id }, { type: 'item_reference', id: answer.id }, user('And three?')] }, at);
    expect(referenced.status, JSON.stringify(referenced.body)).to.equal(200);
    const whole = await respond({ model: 'thinker', input: [user(question), thought, answer, user('And three?')] }, at);
    expect(referenced.body.usage.input_tokens).to.equal(whole.body.usage.input_tokens);
    // The chat turn read from the references carries the thought as the answer's reasoning_content.
    const held = new ResponseItems();
    held.keep(first.body.output as OutputItem[]);
    const read = parseResponsesRequest({ model: 'thinker', input: [user(question), { type: 'item_reference', id: thought.id }, { type: 'item_reference', id: answer.id }] }, held);
    expect(read.chat.messages[1]).to.deep.equal({ role: 'assistant', content: 'Four.', reasoning_content: 'Two and two make four.' });
  });

  it('keeps nothing of an answer asked with store: false; a reference not held is a 400 saying how to do without', async () => {
    const unstored = await respond({ input: 'Once upon a time', store: false });
    expect(unstored.body.store).to.equal(false);
    const id = unstored.body.output[0]!.id;
    for (const reference of [{ type: 'item_reference', id }, { type: 'item_reference', id: 'msg_0123456789abcdef01234567' }]) {
      const refused = await respond({ input: [user('Once upon a time'), reference, user('And then?')] });
      expect(refused.status).to.equal(400);
      expect(refused.body.error).to.include({ code: 'item_not_found', param: 'input[1]' });
      expect(refused.body.error.message).to.include(reference.id).and.include('store: false').and.include('load balancer').and.include("providerOptions: { openai: { store: false } }");
    }
    const bad = await respond({ input: [{ type: 'item_reference', id: 7 }] });
    expect(bad.body.error.param).to.equal('input[0].id');
    expect((await respond({ input: 'Hi', store: 'yes' })).body.error.param).to.equal('store');
  });

  it("a request reads only the items answered to its own API key", async () => {
    const at = await serve({ engine: { model: await storiesModule() }, chatTemplate: TOOLS_TEMPLATE, apiKeys: ['alice-key', 'bob-key'] });
    const as = async (key: string, body: object) => {
      const res = await postJson(at, '/v1/responses', { model: 'stories260k', max_output_tokens: 8, temperature: 0, ...body }, { authorization: `Bearer ${key}` });
      return { status: res.status, body: (await res.json()) as Response & Refusal };
    };
    const first = await as('alice-key', { input: [user('Once upon a time')] });
    const reference = { type: 'item_reference', id: first.body.output[0]!.id };
    expect((await as('alice-key', { input: [user('Once upon a time'), reference, user('And then?')] })).status).to.equal(200);
    const other = await as('bob-key', { input: [user('Once upon a time'), reference, user('And then?')] });
    expect(other.status).to.equal(400);
    expect(other.body.error.code).to.equal('item_not_found');
  });

  it('holds at most maxItems items and maxBytes bytes, the least recently used going first; hands out copies without log-probabilities', () => {
    const message = (id: string, text: string): OutputItem => ({ type: 'message', id, role: 'assistant', content: [{ type: 'output_text', text, logprobs: [{ token: text, logprob: -1 }] }] });
    const held = new ResponseItems(3, 10_000);
    held.keep([message('msg_a', 'a'), message('msg_b', 'b'), message('msg_c', 'c')]);
    held.get('msg_a'); // now b is the least recently used
    held.keep([message('msg_d', 'd')]);
    expect(['msg_a', 'msg_b', 'msg_c', 'msg_d'].map((id) => held.get(id) !== undefined)).to.deep.equal([true, false, true, true]);
    expect(held.size).to.equal(3);
    const copy = held.get('msg_a')!;
    expect(copy.content).to.deep.equal([{ type: 'output_text', text: 'a' }]);
    (copy.content as unknown[]).length = 0;
    expect(held.get('msg_a')!.content).to.have.length(1);

    const one = Buffer.byteLength(JSON.stringify({ type: 'message', id: 'msg_0', role: 'assistant', content: [{ type: 'output_text', text: 'x'.repeat(100) }] }));
    const bounded = new ResponseItems(100, one * 2);
    bounded.keep([0, 1, 2].map((i) => message(`msg_${i}`, 'x'.repeat(100))));
    expect([0, 1, 2].map((i) => bounded.get(`msg_${i}`) !== undefined)).to.deep.equal([false, true, true]);
    expect(bounded.bytes).to.equal(one * 2);
    // An item alone past the bound is not kept, and pushes nothing out.
    bounded.keep([message('msg_big', 'x'.repeat(1000))]);
    expect(bounded.get('msg_big')).to.equal(undefined);
    expect(bounded.size).to.equal(2);
    expect(() => new ResponseItems(0)).to.throw(RangeError);
  });
});
