/**
 * `reasonplug serve` under `--max-batch` above the engine's default, and its /metrics counters against the usage
 * its clients were given (n choices, scored prompts).
 */
import { expect } from 'chai';
import { storiesModule } from './support/modules.js';
import { postJson, useServers } from './support/servers.js';

describe('reasonplug serve: max_batch reaches the engine; /metrics counts what clients were told', function () {
  this.timeout(120_000);
  let url: string;
  const { serve } = useServers();
  /** A metric's value, summed over its labels. */
  const counter = async (name: string) => {
    const text = await (await fetch(`${url}/metrics`)).text();
    return [...text.matchAll(new RegExp(`^reasonplug:${name}\\{[^}]*\\} (\\S+)$`, 'gm'))].reduce((n, m) => n + Number(m[1]), 0);
  };

  before(async () => {
    url = await serve({ engine: { model: await storiesModule() }, maxBatch: 12 });
  });

  it('runs as many rows at once as --max-batch lets in, above the engine default of 8', async () => {
    const request = { model: 'stories260k', prompt: 'Once upon a time', max_tokens: 300, temperature: 0, ignore_eos: true, stream: true };
    const firstTokens: number[] = [];
    const ends: number[] = [];
    await Promise.all(
      Array.from({ length: 12 }, async () => {
        const reader = (await postJson(url, '/v1/completions', request)).body!.getReader();
        await reader.read();
        firstTokens.push(performance.now());
        while (!(await reader.read()).done);
        ends.push(performance.now());
      }),
    );
    // Queued behind 8 rows, the last four would see their first token only once one of the first eight had ended.
    expect(Math.max(...firstTokens)).to.be.below(Math.min(...ends));
  });

  it('counts a prompt once for its n choices, and counts prompts scored with max_tokens 0, as the usage does', async () => {
    const before = await counter('prompt_tokens_total');
    const chosen = (await (await postJson(url, '/v1/completions', { model: 'stories260k', prompt: 'Once upon a time', max_tokens: 3, n: 3, temperature: 1, seed: 1 })).json()) as { usage: { prompt_tokens: number } };
    const afterChoices = await counter('prompt_tokens_total');
    expect(afterChoices - before).to.equal(chosen.usage.prompt_tokens);

    const [succeeded, latencies] = [await counter('request_success_total'), await counter('e2e_request_latency_seconds_count')];
    const scored = (await (await postJson(url, '/v1/completions', { model: 'stories260k', prompt: ['Once upon a time', 'The cat sat'], max_tokens: 0, echo: true, logprobs: 1 })).json()) as {
      usage: { prompt_tokens: number };
      choices: { logprobs: { tokens: string[] } }[];
    };
    expect(scored.usage.prompt_tokens).to.equal(scored.choices.reduce((n, c) => n + c.logprobs.tokens.length, 0));
    expect((await counter('prompt_tokens_total')) - afterChoices).to.equal(scored.usage.prompt_tokens);
    expect((await counter('request_success_total')) - succeeded).to.equal(1);
    expect((await counter('e2e_request_latency_seconds_count')) - latencies).to.equal(1);
  });
});
