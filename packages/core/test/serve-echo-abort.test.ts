/**
 * A client that leaves while its prompts are scored for `echo` with logprobs stops the generation that would follow:
 * the request is queued twice (scored, then run), and the second time finds its connection closed already.
 */
import { expect } from 'chai';
import type { RequestRecord } from '../src/serve/request-log.js';
import { storiesModule } from './support/modules.js';
import { rawRequest } from './support/raw-http.js';
import { useServers } from './support/servers.js';
import { within } from './support/assertions.js';

describe('a client gone while its echo is scored', function () {
  this.timeout(120_000);
  const { serve } = useServers();

  it('runs no generation for it', async () => {
    let ended!: (record: RequestRecord) => void;
    const record = new Promise<RequestRecord>((resolve) => (ended = resolve));
    const url = await serve({ engine: { model: await storiesModule() }, name: 'stories', onRequest: (r) => ended(r) });
    const prompt = 'Once upon a time there was a little girl named Lily who loved to play. '.repeat(6);
    const body = JSON.stringify({ model: 'stories', prompt: Array.from({ length: 48 }, () => prompt), max_tokens: 350, stream: true, echo: true, logprobs: 1 });
    const raw = rawRequest(url, `POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
    // gone while the 48 prompts are scored
    await new Promise((r) => setTimeout(r, 150));
    raw.socket.destroy();
    const { finishReason, completionTokens } = await within(record, 60_000, 'the request record');
    expect(finishReason).to.equal('abort');
    expect(completionTokens ?? 0).to.be.below(48 * 350);
  });
});
