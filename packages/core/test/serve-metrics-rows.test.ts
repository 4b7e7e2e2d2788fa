/**
 * `/metrics` and the request log where a request is more than one row or leaves early: inter-token latency per
 * choice, the KV capacity of a call of more rows than --max-batch, a client gone while queued or mid-stream.
 */
import { expect } from 'chai';
import type { RequestRecord } from '../src/serve/request-log.js';
import { storiesModule } from './support/modules.js';
import { postJson, useServers } from './support/servers.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('reasonplug serve: metrics of several choices and of clients that leave', function () {
  this.timeout(120_000);
  let url: string;
  const records: RequestRecord[] = [];
  const { serve } = useServers();
  const metricsText = async () => (await fetch(`${url}/metrics`)).text();
  /** A metric's value, summed over the series that carry `labels`, from `text` (one scrape) or a new scrape. */
  const value = async (name: string, labels = '', text?: string) => {
    text ??= await metricsText();
    return [...text.matchAll(new RegExp(`^reasonplug:${name}\\{([^}]*)\\} (\\S+)$`, 'gm'))].filter((m) => m[1]!.includes(labels)).reduce((n, m) => n + Number(m[2]), 0);
  };

  before(async () => {
    url = await serve({ engine: { model: await storiesModule() }, maxBatch: 1, maxQueue: 2, onRequest: (r) => records.push(r) });
  });

  it('times the tokens of each of n choices apart (they were one sequence of n-times-shorter gaps)', async () => {
    const [gaps, firsts] = [await value('inter_token_latency_seconds_count'), await value('time_to_first_token_seconds_count')];
    const res = await postJson(url, '/v1/completions', { model: 'stories260k', prompt: 'Once upon a time', max_tokens: 20, n: 4, temperature: 1, seed: 3, ignore_eos: true, stream: true });
    await res.text();
    expect((await value('inter_token_latency_seconds_count')) - gaps).to.equal(4 * 19);
    expect((await value('time_to_first_token_seconds_count')) - firsts).to.equal(1);
  });

  it('a call of more rows than --max-batch (n above it, run alone) reads within its KV capacity', async () => {
    // (4 rows of 900 positions hold more than one row of the full 2048-position context)
    let done = false;
    const res = postJson(url, '/v1/completions', { model: 'stories260k', prompt: 'Once upon a time', max_tokens: 900, n: 4, temperature: 1, seed: 3, ignore_eos: true }).then(async (r) => {
      await r.text();
      done = true;
    });
    let most = 0;
    let perRow = 0;
    while (!done) {
      await sleep(20);
      // (both from one scrape: the capacity drops back to --max-batch rows once the call ends)
      const text = await metricsText();
      const [bytes, capacity] = [await value('kv_cache_bytes', '', text), await value('kv_cache_capacity_bytes', '', text)];
      expect(bytes).to.be.at.most(capacity);
      if (bytes > most) [most, perRow] = [bytes, capacity];
    }
    await res;
    expect(most, 'the rows held more than maxBatch rows of context would').to.be.greaterThan(perRow / 4);
  });

  it('a client gone while queued counts as aborted; one gone mid-stream is logged with its finish and tokens', async () => {
    const aborted = await value('request_success_total', 'finished_reason="abort"');
    const long = postJson(url, '/v1/completions', { model: 'stories260k', prompt: 'Once upon a time', max_tokens: 1500, ignore_eos: true, stream: true }).then(async (r) => {
      const reader = r.body!.getReader();
      await reader.read();
      return reader;
    });
    const reader = await long;
    const queued = new AbortController();
    const waiting = fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ model: 'stories260k', prompt: 'x', max_tokens: 5 }), signal: queued.signal }).catch(() => 'gone');
    // (polled, not a fixed pause: on a loaded machine the request may take longer to arrive, and its end to be counted)
    for (let i = 0; i < 1500 && (await value('num_requests_waiting')) === 0; i++) await sleep(20);
    expect(await value('num_requests_waiting'), 'the second request waits').to.equal(1);
    queued.abort();
    expect(await waiting).to.equal('gone');
    for (let i = 0; i < 500 && (await value('request_success_total', 'finished_reason="abort"')) === aborted; i++) await sleep(20);
    expect((await value('request_success_total', 'finished_reason="abort"')) - aborted).to.equal(1);
    await reader.cancel();
    // (the record comes once the handler has noted how the row ended)
    for (let i = 0; i < 400 && !records.some((r) => r.aborted && r.status === 200); i++) await sleep(25);
    const left = records.find((r) => r.aborted && r.status === 200)!;
    expect(left).to.deep.include({ finishReason: 'abort' });
    expect(left.completionTokens).to.be.greaterThan(0);
    expect(left.promptTokens).to.be.greaterThan(0);
    expect(records.find((r) => r.status === 499)).to.deep.include({ finishReason: 'abort' });
  });
});
