/**
 * `reasonplug serve` with a latent projector: every token of a reply is listed among its log-probabilities on every
 * door, whole or streamed alike, a latent marker's too (zero width: placed where the text after it starts, as a
 * special token the text skips), and a marker left unclosed, let out as text, is text like any other; and
 * `reasonplug.latent` is checked by the engine's parser before the request runs, a 400 naming the field. The toy
 * math policy writes the markers, the toy projector runs their steps; greedy.
 */
import { expect } from 'chai';
import { join } from 'node:path';
import { postJson, useServers } from './support/servers.js';
import { repoRoot } from '../../../test/support/paths.js';

const MODULES = join(repoRoot, 'examples', 'modules');
const [POLICY, PROJECTOR] = [join(MODULES, 'toy-math-policy'), join(MODULES, 'toy-math-projector')];
const PROMPT = 'L:47+5-3+8\n';
const TEMPLATE = '{% for m in messages %}{{ m.content }}\n{% endfor %}';
const MESSAGES = [{ role: 'user', content: PROMPT.trim() }];
/** `</implicit_thought>` in the toy vocabulary: biased out, the policy's marker is never closed. */
const CLOSE_TAG = 4;

type Entry = { token: string; bytes?: number[] };
/** A door's text and listed tokens (their bytes joined where the door gives bytes), whole or streamed. */
type Listed = { text: string; tokens: string[]; bytes?: string };

const listed = (text: string, entries: Entry[]): Listed => ({
  text,
  tokens: entries.map((e) => e.token),
  ...(entries.every((e) => e.bytes) ? { bytes: Buffer.from(entries.flatMap((e) => e.bytes!)).toString('utf8') } : {}),
});

const sseData = async (res: Response) => (await res.text()).split('\n').filter((l) => l.startsWith('data: {')).map((l) => JSON.parse(l.slice(6)));
const jsonLines = async (res: Response) => (await res.text()).trim().split('\n').map((l) => JSON.parse(l));

type Doors = Record<string, { whole: Listed; streamed: Listed }>;

/** Posts to a served `pol`, expecting a 200. */
async function post(at: string, path: string, body: object): Promise<Response> {
  const res = await postJson(at, path, { model: 'pol', ...body });
  expect(res.status, `${path} ${JSON.stringify(body)}`).to.equal(200);
  return res;
}

/**
 * OpenAI's doors' answers to the prompt, whole and streamed, with `extra` in each body, and legacy completions'
 * `text_offset`s.
 */
async function openAiDoors(at: string, extra: object = {}): Promise<{ answers: Doors; offsets: { whole: number[]; streamed: number[] } }> {
  const chat = { ...extra, messages: MESSAGES, max_tokens: 30, temperature: 0, logprobs: true };
  const completion = { ...extra, prompt: PROMPT, max_tokens: 30, temperature: 0, logprobs: 0 };
  const responses = { ...extra, input: PROMPT.trim(), max_output_tokens: 30, temperature: 0, include: ['message.output_text.logprobs'] };
  const chatWhole = ((await (await post(at, '/v1/chat/completions', chat)).json()) as any).choices[0];
  const chatStream = await sseData(await post(at, '/v1/chat/completions', { ...chat, stream: true }));
  const legacyWhole = ((await (await post(at, '/v1/completions', completion)).json()) as any).choices[0];
  const legacyStream = await sseData(await post(at, '/v1/completions', { ...completion, stream: true }));
  const responseWhole = ((await (await post(at, '/v1/responses', responses)).json()) as any).output.find((i: any) => i.type === 'message').content[0];
  const deltas = (await sseData(await post(at, '/v1/responses', { ...responses, stream: true }))).filter((e) => e.type === 'response.output_text.delta');
  const legacyTokens = (tokens: string[] = []) => tokens.map((token) => ({ token }));
  return {
    offsets: { whole: legacyWhole.logprobs.text_offset, streamed: legacyStream.flatMap((c) => c.choices[0]?.logprobs?.text_offset ?? []) },
    answers: {
      chat: {
        whole: listed(chatWhole.message.content, chatWhole.logprobs.content),
        streamed: listed(chatStream.map((c) => c.choices[0]?.delta?.content ?? '').join(''), chatStream.flatMap((c) => c.choices[0]?.logprobs?.content ?? [])),
      },
      completions: {
        whole: listed(legacyWhole.text, legacyTokens(legacyWhole.logprobs.tokens)),
        streamed: listed(legacyStream.map((c) => c.choices[0]?.text ?? '').join(''), legacyStream.flatMap((c) => legacyTokens(c.choices[0]?.logprobs?.tokens))),
      },
      responses: {
        whole: listed(responseWhole.text, responseWhole.logprobs),
        streamed: listed(deltas.map((e) => e.delta).join(''), deltas.flatMap((e) => e.logprobs)),
      },
    },
  };
}

/** Ollama's doors' answers to the prompt (its API has no `logit_bias`), whole and streamed. */
async function ollamaDoors(at: string): Promise<Doors> {
  const ollama = { logprobs: true, options: { temperature: 0, num_predict: 30 } };
  const generate = { ...ollama, prompt: PROMPT, raw: true };
  const chat = { ...ollama, messages: MESSAGES };
  const generateWhole = (await (await post(at, '/api/generate', { ...generate, stream: false })).json()) as any;
  const generateStream = await jsonLines(await post(at, '/api/generate', { ...generate, stream: true }));
  const chatWhole = (await (await post(at, '/api/chat', { ...chat, stream: false })).json()) as any;
  const chatStream = await jsonLines(await post(at, '/api/chat', { ...chat, stream: true }));
  return {
    'ollama generate': {
      whole: listed(generateWhole.response, generateWhole.logprobs),
      streamed: listed(generateStream.map((l) => l.response).join(''), generateStream.flatMap((l) => l.logprobs ?? [])),
    },
    'ollama chat': {
      whole: listed(chatWhole.message.content, chatWhole.logprobs),
      streamed: listed(chatStream.map((l) => l.message.content).join(''), chatStream.flatMap((l) => l.logprobs ?? [])),
    },
  };
}

/** Joined, each door's listed tokens (and their bytes) are its text, streamed as whole. */
function expectListedAsShown(answers: Doors): void {
  for (const [door, { whole, streamed }] of Object.entries(answers)) {
    expect(streamed, door).to.deep.equal(whole);
    expect(whole.tokens.join(''), `${door}: ${JSON.stringify(whole.tokens)}`).to.equal(whole.text);
    if (whole.bytes !== undefined) expect(whole.bytes, door).to.equal(whole.text);
  }
}

describe('reasonplug serve: log-probabilities of a reply with latent markers', function () {
  this.timeout(240_000);
  const { serve } = useServers();
  let url: string;

  before(async () => {
    url = await serve({ engine: { model: POLICY, projector: PROJECTOR }, name: 'pol', chatTemplate: TEMPLATE });
  });

  it("list a latent marker's tokens on every door, whole and streamed alike, where the text after the marker starts", async () => {
    const usage = ((await (await postJson(url, '/v1/completions', { model: 'pol', prompt: PROMPT, max_tokens: 30, temperature: 0 })).json()) as { usage: { latent_steps: number } }).usage;
    expect(usage.latent_steps, 'the reply wrote a marker').to.be.greaterThan(0);
    const hidden = await openAiDoors(url);
    const answers = { ...hidden.answers, ...(await ollamaDoors(url)) };
    for (const [door, { whole, streamed }] of Object.entries(answers)) {
      expect(whole.text, door).to.match(/^#\d+$/);
      expect(streamed, door).to.deep.equal(whole);
      // (the marker's tokens name its text, which the reply does not show)
      expect(whole.tokens.join('').replace(/<implicit_thought>\d+<\/implicit_thought>/, ''), door).to.equal(whole.text);
    }
    const { tokens } = hidden.answers.completions!.whole;
    const close = tokens.indexOf('</implicit_thought>');
    expect(close, JSON.stringify(tokens)).to.be.greaterThan(0);
    expect(hidden.offsets.streamed).to.deep.equal(hidden.offsets.whole);
    expect(hidden.offsets.whole.slice(0, close + 2).every((at) => at === 0), JSON.stringify(hidden.offsets.whole)).to.equal(true);
    // Never closed, the marker is text: its tokens are the text's.
    const shown = await openAiDoors(url, { logit_bias: { [CLOSE_TAG]: -100 } });
    for (const [door, { whole }] of Object.entries(shown.answers)) expect(whole.text, door).to.match(/^<implicit_thought>\d+\D/);
    expectListedAsShown(shown.answers);
    expect(shown.offsets.streamed).to.deep.equal(shown.offsets.whole);
  });

  it('refuses a reasonplug.latent the engine would refuse, "" too, as a 400 naming the field on every route', async () => {
    for (const latent of ['', 'off', 'fixed:0', 'fixed:', 'max', 'MARKER', ' marker', 3]) {
      for (const [path, body] of [
        ['/v1/completions', { prompt: PROMPT, max_tokens: 4 }],
        ['/v1/chat/completions', { messages: MESSAGES, max_tokens: 4 }],
        ['/v1/responses', { input: PROMPT.trim(), max_output_tokens: 4 }],
      ] as const) {
        const res = await postJson(url, path, { model: 'pol', ...body, reasonplug: { latent } });
        const { error } = (await res.json()) as { error?: { type: string; param: string | null; message: string } };
        expect([res.status, error?.type, error?.param], `${path} ${JSON.stringify(latent)}: ${error?.message}`).to.deep.equal([400, 'invalid_request_error', 'reasonplug.latent']);
      }
      const ollama = await postJson(url, '/api/generate', { model: 'pol', prompt: PROMPT, raw: true, stream: false, reasonplug: { latent } });
      expect(ollama.status, `/api/generate ${JSON.stringify(latent)}`).to.equal(400);
      expect(((await ollama.json()) as { error: string }).error).to.include('reasonplug.latent');
    }
    // the policies the engine takes still run
    const steps = async (latent: string) =>
      ((await (await postJson(url, '/v1/completions', { model: 'pol', prompt: PROMPT, max_tokens: 20, temperature: 0, reasonplug: { latent } })).json()) as { usage: { latent_steps?: number } }).usage.latent_steps ?? 0;
    expect(await steps('never')).to.equal(0);
    expect(await steps('fixed:2')).to.equal(2);
    expect(await steps('marker')).to.be.greaterThan(0);
  });

  it('names reasonplug.latent when a server without a projector is asked for latent steps', async () => {
    const bare = await serve({ engine: { model: POLICY }, name: 'pol', chatTemplate: TEMPLATE });
    const res = await postJson(bare, '/v1/completions', { model: 'pol', prompt: PROMPT, max_tokens: 4, reasonplug: { latent: 'marker' } });
    const { error } = (await res.json()) as { error: { code: string; param: string | null } };
    expect([res.status, error.code, error.param]).to.deep.equal([400, 'LatentPolicyError', 'reasonplug.latent']);
  });
});
