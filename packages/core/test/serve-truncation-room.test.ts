/**
 * vLLM's `truncate_prompt_tokens` beside the context: -1 keeps as many of the prompt's last tokens as the context holds
 * with the request's fixed latent steps after them (steps that fill the context are refused naming the latent
 * policy), and a truncation past the context (max_model_len) is refused naming the field, as vLLM refuses it, whatever
 * the prompt's length. The trained example policy and projector.
 */
import { expect } from 'chai';
import { join } from 'node:path';
import { repoRoot } from '../../../test/support/paths.js';
import { postJson, useServers } from './support/servers.js';

const modules = join(repoRoot, 'examples', 'modules');
const CONTEXT = 24;
const LONG = 'L:12+34+56+78+90+11+22+33=';

describe('truncate_prompt_tokens against the context', function () {
  this.timeout(120_000);
  const { serve } = useServers();
  let at: string;

  before(async () => {
    at = await serve({ engine: { model: join(modules, 'toy-math-policy'), projector: join(modules, 'toy-math-projector'), contextLength: CONTEXT }, name: 'policy' });
  });

  it('-1 leaves room for fixed latent steps', async () => {
    const res = await postJson(at, '/v1/completions', { model: 'policy', prompt: LONG, max_tokens: 2, truncate_prompt_tokens: -1, reasonplug: { latent: 'fixed:4' } });
    expect(res.status, await res.clone().text()).to.equal(200);
    const body = (await res.json()) as { usage: { prompt_tokens: number } };
    expect(body.usage.prompt_tokens).to.equal(CONTEXT - 4);
  });

  it('-1 beside fixed latent steps that fill the context refuses the latent policy, which no truncation can help', async () => {
    for (const steps of [CONTEXT, 30]) {
      const res = await postJson(at, '/v1/completions', { model: 'policy', prompt: LONG, max_tokens: 2, truncate_prompt_tokens: -1, reasonplug: { latent: `fixed:${steps}` } });
      expect(res.status).to.equal(400);
      const { error } = (await res.json()) as { error: { param: string; message: string } };
      expect(error.param).to.equal('reasonplug.latent');
      expect(error.message).to.include(`fixed:${steps}`).and.include(`context length of ${CONTEXT}: K must be below the context length`);
    }
  });

  it('a truncation past the context is refused naming the field, short prompt or long', async () => {
    for (const prompt of ['L:1+2=', LONG]) {
      const res = await postJson(at, '/v1/completions', { model: 'policy', prompt, max_tokens: 2, truncate_prompt_tokens: 100 });
      expect(res.status).to.equal(400);
      const { error } = (await res.json()) as { error: { param: string; message: string } };
      expect(error.param).to.equal('truncate_prompt_tokens');
      expect(error.message).to.include(`max_model_len) of ${CONTEXT}`);
    }
  });
});
