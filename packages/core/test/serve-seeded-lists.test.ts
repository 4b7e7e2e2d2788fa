/**
 * A seeded `/v1/completions` request with a list of prompts samples each prompt as the prompt alone (vLLM runs the
 * prompts of a list as requests of their own with one seed, prompt i's choice j from seed + j): the list as sent, with
 * `n`, streamed, and as LangChain's OpenAI LLM class batches a `generate` of several prompts into one request. The
 * model is the converted stories260K, sampled at a temperature where its drafts differ from seed to seed.
 */
import { expect } from 'chai';
import { OpenAI } from '@langchain/openai';
import { storiesModule } from './support/modules.js';
import { postJson, useServers } from './support/servers.js';

const PROMPTS = ['Once upon a time', 'The dog'];
const SAMPLED = { model: 'st', max_tokens: 20, temperature: 1.3, seed: 5 };

type Completion = { choices: { index: number; text: string }[] };

describe('reasonplug serve: seeded completions of a list of prompts', function () {
  this.timeout(120_000);
  const { serve } = useServers();
  let url: string;
  const complete = async (body: Record<string, unknown>) => {
    const res = await postJson(url, '/v1/completions', { ...SAMPLED, ...body });
    expect(res.status).to.equal(200);
    return ((await res.json()) as Completion).choices.map((c) => c.text);
  };

  before(async () => {
    url = await serve({ engine: { model: await storiesModule() }, name: 'st' });
  });

  it("gives each prompt of a list the choices the prompt alone gets, choice j from seed + j, streamed or not", async () => {
    const alone = await Promise.all(PROMPTS.map((prompt) => complete({ prompt, n: 2 })));
    // (the draws differ, or the test could not tell the seeds apart)
    expect(new Set(alone.flat()).size, alone.flat().join(' | ')).to.equal(4);
    expect(await complete({ prompt: PROMPTS })).to.deep.equal(alone.map((choices) => choices[0]));
    expect(await complete({ prompt: PROMPTS, n: 2 })).to.deep.equal(alone.flat());

    const res = await postJson(url, '/v1/completions', { ...SAMPLED, prompt: PROMPTS, n: 2, stream: true });
    const chunks = (await res.text())
      .split('\n\n')
      .filter((e) => e.startsWith('data: {'))
      .flatMap((e) => (JSON.parse(e.slice(6)) as Completion).choices);
    expect([0, 1, 2, 3].map((i) => chunks.filter((c) => c.index === i).map((c) => c.text).join(''))).to.deep.equal(alone.flat());
  });

  it("answers LangChain's OpenAI LLM, which sends a generate's prompts as one list, as it answers each prompt alone", async () => {
    const llm = new OpenAI({ model: 'st', apiKey: 'none', configuration: { baseURL: `${url}/v1` }, temperature: 1.3, maxTokens: 20, modelKwargs: { seed: 5 } });
    const together = (await llm.generate(PROMPTS)).generations.map((g) => g[0]!.text);
    expect(together).to.deep.equal(await Promise.all(PROMPTS.map((p) => llm.invoke(p))));
  });
});
