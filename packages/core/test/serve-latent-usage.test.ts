/**
 * The latent steps of a LiteReason reply in `reasonplug serve`'s usage: the toy math policy writes markers, the
 * projector runs the steps, and every API's usage gives them (`latent_steps`, `reasoning_tokens_saved`) as the
 * engine's own usage counts them for the same prompt (the CLI's and LangChain's metadata read that usage).
 */
import { expect } from 'chai';
import { join } from 'node:path';
import { Engine } from '../src/engine.js';
import { cacheDir } from './support/models.js';
import { postJson, useServers } from './support/servers.js';
import { repoRoot } from '../../../test/support/paths.js';

const MODULES = join(repoRoot, 'examples', 'modules');
const [POLICY, PROJECTOR] = [join(MODULES, 'toy-math-policy'), join(MODULES, 'toy-math-projector')];
const PROMPT = 'L:47+5-3+8\n';
const TEMPLATE = '{% for m in messages %}{{ m.content }}\n{% endfor %}';

type Usage = Record<string, unknown>;

describe('reasonplug serve: latent steps in the usage', function () {
  this.timeout(120_000);
  const { serve } = useServers();
  let url: string;
  let want: { latent_steps: number; reasoning_tokens_saved: number };
  const usageOf = async (path: string, body: Record<string, unknown>) => {
    const res = await postJson(url, path, { model: 'pol', temperature: 0, ...body });
    expect(res.status).to.equal(200);
    return ((await res.json()) as { usage: Usage }).usage;
  };

  before(async () => {
    url = await serve({ engine: { model: POLICY, projector: PROJECTOR }, name: 'pol', chatTemplate: TEMPLATE });
    const engine = await Engine.load({ model: POLICY, projector: PROJECTOR, cacheDir });
    try {
      const { usage } = await engine.generate({ prompt: PROMPT }, { maxTokens: 20 });
      want = { latent_steps: usage.latentSteps!, reasoning_tokens_saved: usage.reasoningTokensSaved! };
    } finally {
      await engine.dispose();
    }
    expect(want.latent_steps).to.be.greaterThan(0);
    // (the projector's manifest gives 4 tokens a step)
    expect(want.reasoning_tokens_saved).to.equal(4 * want.latent_steps);
  });

  it("completions give the engine's latent steps at the usage's top level, every choice's, streamed or not", async () => {
    expect(await usageOf('/v1/completions', { prompt: PROMPT, max_tokens: 20 })).to.deep.include(want);
    // Two choices (and two prompts) think at their markers, each as one alone; fixed steps count per choice too.
    const twice = { latent_steps: 2 * want.latent_steps, reasoning_tokens_saved: 2 * want.reasoning_tokens_saved };
    expect(await usageOf('/v1/completions', { prompt: PROMPT, max_tokens: 20, n: 2 })).to.deep.include(twice);
    expect(await usageOf('/v1/completions', { prompt: [PROMPT, PROMPT], max_tokens: 20 })).to.deep.include(twice);
    const fixed = { prompt: PROMPT, max_tokens: 20, n: 2, reasonplug: { latent: 'fixed:3' } };
    expect(await usageOf('/v1/completions', fixed)).to.deep.include({ latent_steps: 2 * 3, reasoning_tokens_saved: 2 * 3 * 4 });
    const res = await postJson(url, '/v1/completions', { model: 'pol', prompt: PROMPT, max_tokens: 20, temperature: 0, stream: true, stream_options: { include_usage: true } });
    const last = (await res.text()).split('\n\n').filter((e) => e.startsWith('data: {')).at(-1)!;
    expect((JSON.parse(last.slice(6)) as { usage: Usage }).usage).to.deep.include(want);
  });

  it('chat completions, responses and messages give the same chat turn the same latent steps', async () => {
    const messages = [{ role: 'user', content: PROMPT.trim() }];
    const chat = await usageOf('/v1/chat/completions', { messages, max_tokens: 20 });
    expect(chat.latent_steps).to.be.a('number').and.greaterThan(0);
    expect(chat.reasoning_tokens_saved).to.equal(4 * (chat.latent_steps as number));
    const latent = { latent_steps: chat.latent_steps, reasoning_tokens_saved: chat.reasoning_tokens_saved };
    expect(await usageOf('/v1/responses', { input: PROMPT.trim(), max_output_tokens: 20 })).to.deep.include(latent);
    expect(await usageOf('/v1/messages', { messages, max_tokens: 20 })).to.deep.include(latent);
  });
});
