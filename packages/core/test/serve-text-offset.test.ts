/**
 * `/v1/completions`' `text_offset` in code points, as OpenAI's Python-served legacy API and vLLM count them: a Python
 * client's `text[offset:]` starts at the token past an emoji (two UTF-16 units, one code point), echoed or generated.
 */
import { expect } from 'chai';
import { TextTokenizer } from '../src/tokenizer/tokenizer.js';
import { scriptedModule } from './support/modules.js';
import { postJson, useServers } from './support/servers.js';

const PROMPT = '😀é:';
const REPLY = 'Hi 😀 é 👩🏽‍💻 END';

const pythonSlice = (text: string, at: number) => [...text].slice(at).join('');
const pythonLen = (text: string) => [...text].length;

type Legacy = { tokens: string[]; text_offset: number[] };

/** A stories-vocabulary backbone that answers `prompt` with the ids `reply` gives for its tokenizer, then EOS. */
async function scripted(name: string, prompt: string, reply: (tokenizer: TextTokenizer) => number[]): Promise<string> {
  return (await scriptedModule(name, prompt, reply)).dir;
}

/** A streamed completion's chunks. */
const chunksOf = async (res: Response) =>
  (await res.text())
    .split('\n')
    .filter((l) => l.startsWith('data: {'))
    .map((l) => JSON.parse(l.slice(6)) as { choices: { text: string; logprobs: Legacy | null }[] });

describe('/v1/completions text_offset past astral characters', function () {
  this.timeout(120_000);
  const { serve } = useServers();
  let at: string;

  before(async () => {
    // (the stories vocabulary spells the emoji in byte pieces)
    const dir = await scripted('astral-completion', PROMPT, (tokenizer) => tokenizer.encode(REPLY, false));
    at = await serve({ engine: { model: dir }, name: 'astral' });
  });

  it('lists a token streamed with the text it starts in, where a stop string held back its own past text let out', async () => {
    // (` E EX`: after `A E E` the second ` E` may start it; `E` then lets the first out while the second stays held)
    const reply = 'A E E EN.';
    const dir = await scripted('overlapping-stop', 'Q:', (tokenizer) => tokenizer.encode(reply, false));
    const url = await serve({ engine: { model: dir }, name: 'overlap' });
    const body = { model: 'overlap', prompt: 'Q:', max_tokens: 20, logprobs: 0, stop: [' E EX'] };
    const whole = ((await (await postJson(url, '/v1/completions', body)).json()) as { choices: { text: string; logprobs: Legacy }[] }).choices[0]!;
    expect(whole.text.trimStart()).to.equal(reply);
    whole.logprobs.tokens.forEach((t, i) => expect(pythonSlice(whole.text, whole.logprobs.text_offset[i]!).startsWith(t), `${JSON.stringify(t)} at ${whole.logprobs.text_offset[i]}`).to.equal(true));
    const chunks = await chunksOf(await postJson(url, '/v1/completions', { ...body, stream: true }));
    expect(chunks.flatMap((c) => c.choices[0]?.logprobs?.text_offset ?? [])).to.deep.equal(whole.logprobs.text_offset);
  });

  it('places a token after a byte that can be no character past that byte\'s U+FFFD, streamed as whole', async () => {
    let reply: number[] = [];
    // (a lone continuation byte: U+FFFD for good, named so at its own token)
    const dir = await scripted('invalid-byte-offsets', 'Q:', (tokenizer) =>
      (reply = [...tokenizer.encode('Hi', false), tokenizer.tokenId('<0x98>')!, tokenizer.tokenId('A')!, tokenizer.tokenId('B')!, ...tokenizer.encode(' ok.', false)]),
    );
    const url = await serve({ engine: { model: dir }, name: 'invalid-byte' });
    const body = { model: 'invalid-byte', prompt: 'Q:', max_tokens: 20, logprobs: 0 };
    const whole = ((await (await postJson(url, '/v1/completions', body)).json()) as { choices: { text: string; logprobs: Legacy }[] }).choices[0]!;
    const { tokens, text_offset: offsets } = whole.logprobs;
    expect(tokens).to.have.length(reply.length);
    expect(tokens.join('')).to.equal(whole.text);
    expect(tokens.slice(2, 5)).to.deep.equal(['\uFFFD', 'A', 'B']);
    tokens.slice(0, -1).forEach((t, i) => expect(offsets[i + 1], `after ${JSON.stringify(t)}`).to.equal(offsets[i]! + pythonLen(t)));
    const chunks = await chunksOf(await postJson(url, '/v1/completions', { ...body, stream: true }));
    expect(chunks.map((c) => c.choices[0]?.text ?? '').join('')).to.equal(whole.text);
    expect(chunks.flatMap((c) => c.choices[0]?.logprobs?.text_offset ?? [])).to.deep.equal(offsets);
  });

  it('counts code points in the echoed prompt and the reply, streamed as whole', async () => {
    const body = { model: 'astral', prompt: PROMPT, max_tokens: 60, logprobs: 1, echo: true };
    const answer = (await (await postJson(at, '/v1/completions', body)).json()) as { choices: { text: string; logprobs: Legacy }[]; usage: { prompt_tokens: number } };
    const { text, logprobs } = answer.choices[0]!;
    expect(text.slice(PROMPT.length).trimStart()).to.equal(REPLY);
    const { tokens, text_offset: offsets } = logprobs;
    // the prompt's tokens: é after 😀 at 1, the colon at 2
    expect([offsets[tokens.indexOf('é')], offsets[tokens.indexOf(':')]]).to.deep.equal([1, 2]);
    // the reply's, after them: vLLM's text_offset[i + 1] = text_offset[i] + len(token), where Python's slice finds each
    const first = answer.usage.prompt_tokens;
    expect(offsets[first]).to.equal(pythonLen(PROMPT));
    tokens.slice(first, -1).forEach((t, i) => expect(offsets[first + i + 1], `after ${JSON.stringify(t)}`).to.equal(offsets[first + i]! + pythonLen(t)));
    tokens.slice(first).forEach((t, i) => expect(pythonSlice(text, offsets[first + i]!).startsWith(t), `${JSON.stringify(t)} at ${offsets[first + i]}`).to.equal(true));
    expect(offsets.at(-1)).to.equal(pythonLen(text) - 1);

    const chunks = await chunksOf(await postJson(at, '/v1/completions', { ...body, stream: true }));
    expect(chunks.flatMap((c) => c.choices[0]?.logprobs?.text_offset ?? [])).to.deep.equal(offsets);
  });

  it('counts them without echo, past text a stop string held back, and with max_tokens 0 (the prompt scored alone)', async () => {
    // (each space might have started the stop string: held back until the next token)
    const body = { model: 'astral', prompt: PROMPT, max_tokens: 60, logprobs: 0, stop: [' X'] };
    const plain = ((await (await postJson(at, '/v1/completions', body)).json()) as { choices: { text: string; logprobs: Legacy }[] }).choices[0]!;
    expect(plain.text.trimStart()).to.equal(REPLY);
    const emoji = plain.logprobs.tokens.indexOf('😀');
    expect(plain.logprobs.text_offset.slice(emoji, emoji + 3)).to.deep.equal([4, 5, 6]);
    plain.logprobs.tokens.forEach((t, i) => expect(pythonSlice(plain.text, plain.logprobs.text_offset[i]!).startsWith(t), `${JSON.stringify(t)} at ${plain.logprobs.text_offset[i]}`).to.equal(true));
    const chunks = await chunksOf(await postJson(at, '/v1/completions', { ...body, stream: true }));
    expect(chunks.flatMap((c) => c.choices[0]?.logprobs?.text_offset ?? [])).to.deep.equal(plain.logprobs.text_offset);
    const scored = ((await (await postJson(at, '/v1/completions', { model: 'astral', prompt: PROMPT, max_tokens: 0, logprobs: 0, echo: true })).json()) as { choices: { logprobs: Legacy }[] }).choices[0]!;
    expect(scored.logprobs.text_offset.at(-1)).to.equal(2);
  });
});
