/**
 * The Responses API's `output_text` log-probabilities after a thought hold every token of the text, the byte tokens of
 * its first character included (they name nothing and start where the token completing it does): their `bytes`,
 * joined, are the text's, as chat's are.
 */
import { expect } from 'chai';
import { THINKING_TEMPLATE } from './support/chat-templates.js';
import { scriptedChatModule } from './support/modules.js';
import { postJson, useServers } from './support/servers.js';

const QUESTION = 'What are two and two?';
const ANSWER = '😀 Hi';

type Entry = { token: string; bytes: number[] };

describe('Responses logprobs of a text opening with a split character after a thought', function () {
  this.timeout(120_000);
  const { serve } = useServers();

  it("lists the character's byte tokens, whole and streamed", async () => {
    const { dir } = await scriptedChatModule('thought-bytes', THINKING_TEMPLATE, [{ role: 'user', content: QUESTION }], `<think>\nOk\n</think>\n\n${ANSWER}`);
    const at = await serve({ engine: { model: dir }, name: 'thinker' });
    const body = { model: 'thinker', input: QUESTION, max_output_tokens: 60, include: ['message.output_text.logprobs'] };
    const whole = (await (await postJson(at, '/v1/responses', body)).json()) as { output: { type: string; content?: { text: string; logprobs: Entry[] }[] }[] };
    const text = whole.output.find((o) => o.type === 'message')!.content![0]!;
    expect(text.text).to.equal(ANSWER);
    expect(text.logprobs.flatMap((e) => e.bytes)).to.deep.equal([...Buffer.from(ANSWER)]);

    const events = (await (await postJson(at, '/v1/responses', { ...body, stream: true })).text())
      .split('\n')
      .filter((l) => l.startsWith('data: {'))
      .map((l) => JSON.parse(l.slice(6)) as { type: string; logprobs?: Entry[] });
    const streamed = events.filter((e) => e.type === 'response.output_text.delta').flatMap((e) => e.logprobs ?? []);
    expect(streamed.flatMap((e) => e.bytes)).to.deep.equal([...Buffer.from(ANSWER)]);
  });
});
