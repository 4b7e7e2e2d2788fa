/**
 * A row that ends before the others of its call says so in the stream as it ends: its last token carries its finish
 * reason on both decode paths, and the server's streamed choices (`n` > 1, chat and legacy completions) each end in
 * the chunk where their row ends, as OpenAI's and vLLM's do, not once the last of them has. stories260K, sampled:
 * seed 2 makes the third of three rows stop at ` dog` after a few tokens, the other two run to their limit.
 */
import { expect } from 'chai';
import { Engine } from '../src/engine.js';
import type { TokenEvent } from '../src/generate/types.js';
import { storiesModule } from './support/modules.js';
import { postJson, useServers } from './support/servers.js';

const PROMPT = 'Once upon a time';
const SAMPLED = { temperature: 1, seed: 2, stop: [' dog'] };
const MAX_TOKENS = 40;
/** The row seed 2 ends early, and the rows it leaves running. */
const EARLY = 2;
const LATE = [0, 1];

/** The continuous batch (a plain call) and the decode loop (a traced call runs alone through it). */
const PATHS = [
  ['the continuous batch', {}],
  ['the decode loop', { trace: 1 }],
] as const;

/** The `data:` payloads of an SSE body, [DONE] left out. */
const sseData = async (res: Response) =>
  (await res.text())
    .split('\n')
    .filter((l) => l.startsWith('data: {'))
    .map((l) => JSON.parse(l.slice(6)));

describe('a row that ends early', function () {
  this.timeout(180_000);
  let engine: Engine;
  before(async () => {
    engine = await Engine.load({ model: await storiesModule() });
  });
  after(async () => {
    await engine?.dispose();
  });

  for (const [path, options] of PATHS) {
    it(`ends in the stream as it ends, its last token carrying its finish reason and stop string, on ${path}`, async () => {
      const ids = await engine.tokenize(PROMPT);
      const stream = engine.stream({ promptIds: [ids, ids, ids] }, { ...SAMPLED, ...options, maxTokens: MAX_TOKENS });
      const events: TokenEvent[] = [];
      for await (const event of stream) events.push(event);
      const { rows } = await stream.result;
      expect(rows.map((r) => r.finishReason)).to.deep.equal(['length', 'length', 'stop']);
      expect(rows[EARLY]!.ids.length).to.be.below(MAX_TOKENS);
      // Each row's end rides on its own last token, as the result has it, and on no other.
      rows.forEach((row, r) => {
        const own = events.filter((e) => e.row === r);
        expect(own.map((e) => e.text).join(''), `row ${r}`).to.equal(row.text);
        expect(own.slice(0, -1).filter((e) => e.finishReason !== undefined || e.stopString !== undefined), `row ${r}`).to.be.empty;
        expect({ finishReason: own.at(-1)!.finishReason, stopString: own.at(-1)!.stopString }, `row ${r}`).to.deep.equal({ finishReason: row.finishReason, stopString: row.stopString });
      });
      // The early row's end comes before the other rows' later tokens, not with the stream's end.
      const ended = events.findIndex((e) => e.row === EARLY && e.finishReason);
      for (const r of LATE) expect(events.findLastIndex((e) => e.row === r)).to.be.above(ended);
    });
  }
});

describe('streamed choices (n > 1) that end early', function () {
  this.timeout(180_000);
  const { serve } = useServers();
  let at: string;
  before(async () => {
    // (the chat prompt is BOS and the message: the completion's prompt, so the same seed ends the same choice early)
    at = await serve({ engine: { model: await storiesModule() }, chatTemplate: '{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}' });
  });

  /** Per chunk, the choice it carries: its index, whether it has text, and its finish reason. */
  type Chunk = { index: number; text: boolean; finish: string | null };
  const checkOrder = (chunks: Chunk[]) => {
    const finishes = chunks.filter((c) => c.finish !== null).map((c) => [c.index, c.finish]);
    expect(finishes).to.have.deep.members([
      [0, 'length'],
      [1, 'length'],
      [EARLY, 'stop'],
    ]);
    // The early choice's finish chunk comes where it ended: before the other choices' last text.
    const ended = chunks.findIndex((c) => c.index === EARLY && c.finish !== null);
    expect(chunks.slice(ended + 1).filter((c) => c.index === EARLY)).to.be.empty;
    for (const index of LATE) expect(chunks.findLastIndex((c) => c.index === index && c.text)).to.be.above(ended);
  };

  it('end each chat choice in the chunk where it ends, before the other choices\' last text', async () => {
    const res = await postJson(at, '/v1/chat/completions', { model: 'stories260k', messages: [{ role: 'user', content: PROMPT }], n: 3, max_tokens: MAX_TOKENS, ...SAMPLED, stream: true });
    const chunks = (await sseData(res)).flatMap((d) =>
      (d.choices as { index: number; delta: { content?: string }; finish_reason: string | null }[]).map((c) => ({ index: c.index, text: !!c.delta.content, finish: c.finish_reason })),
    );
    checkOrder(chunks);
  });

  it('end each completion choice in the chunk where it ends, before the other choices\' last text', async () => {
    const res = await postJson(at, '/v1/completions', { model: 'stories260k', prompt: PROMPT, n: 3, max_tokens: MAX_TOKENS, ...SAMPLED, logprobs: 1, stream: true });
    const data = await sseData(res);
    const chunks = data.flatMap((d) => (d.choices as { index: number; text: string; finish_reason: string | null }[]).map((c) => ({ index: c.index, text: c.text !== '', finish: c.finish_reason })));
    checkOrder(chunks);
    // Each choice's tokens are all listed by its end (the stop string's, cut from the text, in no list).
    const whole = (await (await postJson(at, '/v1/completions', { model: 'stories260k', prompt: PROMPT, n: 3, max_tokens: MAX_TOKENS, ...SAMPLED, logprobs: 1 })).json()) as {
      choices: { index: number; text: string; logprobs: { tokens: string[] } }[];
    };
    for (const choice of whole.choices) {
      const own = data.flatMap((d) => d.choices as { index: number; text: string; logprobs: { tokens: string[] } | null }[]).filter((c) => c.index === choice.index);
      expect(own.map((c) => c.text).join('')).to.equal(choice.text);
      expect(own.flatMap((c) => c.logprobs?.tokens ?? [])).to.deep.equal(choice.logprobs.tokens);
    }
  });

  it('scores a prompt alone (echo, max_tokens 0) with usage: null on its choice chunks and the usage details of any answer', async () => {
    const body = { model: 'stories260k', prompt: PROMPT, max_tokens: 0, echo: true, n: 2 };
    const data = await sseData(await postJson(at, '/v1/completions', { ...body, stream: true, stream_options: { include_usage: true } }));
    const usage = data.at(-1)!.usage;
    expect(data.at(-1)!.choices).to.be.empty;
    expect(data.slice(0, -1).map((d) => [d.choices[0].index, d.usage])).to.deep.equal([
      [0, null],
      [1, null],
    ]);
    // As a generated answer's usage is made (usageJson): the prompt once, none of it from the prefix cache.
    const tokens = ((await (await postJson(at, '/tokenize', { model: 'stories260k', prompt: PROMPT })).json()) as { count: number }).count;
    expect(usage).to.deep.equal({ prompt_tokens: tokens, completion_tokens: 0, total_tokens: tokens, prompt_tokens_details: { cached_tokens: 0 } });
    expect(((await (await postJson(at, '/v1/completions', body)).json()) as { usage: object }).usage).to.deep.equal(usage);
    // Without include_usage, no chunk has a usage key.
    const plain = await sseData(await postJson(at, '/v1/completions', { ...body, stream: true }));
    expect(plain.filter((d) => 'usage' in d)).to.be.empty;
  });
});
