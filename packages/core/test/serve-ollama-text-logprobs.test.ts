/**
 * Log-probabilities of Ollama's `/api/generate` on text as given (`raw`, or a model without a chat template), whole or
 * streamed: the shown tokens' entries, the same either way and the same as the legacy completion's, with their
 * `top_logprobs`; a stop string's tokens, which show nothing, are left out of both. The converted stories260K, greedy.
 */
import { expect } from 'chai';
import { postJson, useServers } from './support/servers.js';
import { storiesModule } from './support/modules.js';
import { TOOLS_TEMPLATE } from './support/chat-templates.js';

type Entry = { token: string; logprob: number; top_logprobs: { token: string; logprob: number }[] };
type Generated = { response: string; done: boolean; done_reason?: string; eval_count?: number; logprobs?: Entry[] };

const PROMPT = 'Once upon a time';

describe("reasonplug serve: Ollama's generate on raw text gives its logprobs whole as streamed", function () {
  this.timeout(180_000);
  const { serve } = useServers();
  /** A server whose model has a chat template (raw text only with `raw`), and one whose model has none. */
  let templated: string;
  let plain: string;
  const generate = async (at: string, body: Record<string, unknown>): Promise<Generated[]> => {
    const res = await postJson(at, '/api/generate', { model: 'st', prompt: PROMPT, logprobs: true, top_logprobs: 2, ...body, options: { temperature: 0, num_predict: 8, ...(body.options as object) } });
    expect(res.status, await res.clone().text()).to.equal(200);
    return (await res.text()).trim().split('\n').map((line) => JSON.parse(line) as Generated);
  };
  /** The whole answer, and the streamed one's lines joined: their text and their entries. */
  const bothWays = async (at: string, body: Record<string, unknown>) => {
    const [whole] = await generate(at, { ...body, stream: false });
    const lines = await generate(at, { ...body, stream: true });
    const streamed = { response: lines.map((l) => l.response).join(''), logprobs: lines.flatMap((l) => l.logprobs ?? []) };
    return { whole: whole!, streamed, last: lines.at(-1)! };
  };

  before(async () => {
    const dir = await storiesModule();
    templated = await serve({ engine: { model: dir }, name: 'st', chatTemplate: TOOLS_TEMPLATE });
    plain = await serve({ engine: { model: dir }, name: 'st' });
  });

  it('raw: the whole answer has the logprobs the stream has, one per token, with their alternatives, as the completion\'s', async () => {
    const { whole, streamed } = await bothWays(templated, { raw: true });
    expect(whole.logprobs, 'the whole answer has logprobs').to.be.an('array').with.length(whole.eval_count!);
    expect(whole.logprobs).to.deep.equal(streamed.logprobs);
    expect(whole.response).to.equal(streamed.response);
    expect(whole.logprobs!.map((e) => e.token).join('')).to.equal(whole.response);
    expect(whole.logprobs!.every((e) => e.top_logprobs.length === 2)).to.equal(true);
    // The legacy completion of the same text: the same tokens, the same log-probabilities.
    const res = await postJson(templated, '/v1/completions', { model: 'st', prompt: PROMPT, temperature: 0, max_tokens: 8, logprobs: 2 });
    const completion = (await res.json()) as { choices: { text: string; logprobs: { tokens: string[]; token_logprobs: number[] } }[] };
    expect(completion.choices[0]!.text).to.equal(whole.response);
    expect(whole.logprobs!.map((e) => e.token)).to.deep.equal(completion.choices[0]!.logprobs.tokens);
    expect(whole.logprobs!.map((e) => e.logprob)).to.deep.equal(completion.choices[0]!.logprobs.token_logprobs);
  });

  it('a model without a chat template: its prompt as raw text, logprobs whole and streamed alike', async () => {
    const { whole, streamed } = await bothWays(plain, {});
    const { whole: raw } = await bothWays(templated, { raw: true });
    expect(whole.logprobs).to.be.an('array').with.length(8);
    expect(whole.logprobs).to.deep.equal(streamed.logprobs);
    expect(whole).to.deep.include({ response: raw.response, logprobs: raw.logprobs });
  });

  it("a stop string's tokens show nothing: neither answer lists them", async () => {
    const [free] = await generate(templated, { raw: true, stream: false });
    // A word the greedy text writes after its first token, with its space: a token of its own, which the reply stops before.
    const words = free!.response.split(' ').filter(Boolean);
    const stop = ` ${words[words.length - 2]!}`;
    const { whole, streamed, last } = await bothWays(templated, { raw: true, options: { stop: [stop] } });
    expect(whole.done_reason).to.equal('stop');
    expect(whole.response).to.equal(free!.response.slice(0, free!.response.indexOf(stop)));
    expect(whole.logprobs!.map((e) => e.token).join('')).to.equal(whole.response);
    expect(whole.eval_count, 'the stop string was generated').to.equal(whole.logprobs!.length + 1);
    expect(streamed.logprobs).to.deep.equal(whole.logprobs);
    expect(streamed.response).to.equal(whole.response);
    // (the closing line, as the chat turn's, lists what the text held back and shows: nothing here)
    expect(last).to.deep.include({ done: true, response: '', logprobs: [] });
  });
});
