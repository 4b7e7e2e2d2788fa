/**
 * `reasonplug serve` from any OpenAI client: the toy backbone served with its math reasoner, asked through OpenAI's
 * own SDK for the backbone alone and for the composition `toy-backbone-s+math` (a composition is named as vLLM names
 * adapters), then a reply streamed with its usage. The same works from the command line:
 *
 *   reasonplug serve --model examples/modules/toy-backbone-s --reasoner math=examples/modules/toy-math-reasoner
 *
 * Run: npx tsx examples/openai-client.ts
 */
import { join } from 'node:path';
import OpenAI from 'openai';
import { startServer } from '@reasonplug/core';
import { repoRoot } from '../test/support/paths.js';

const modules = join(repoRoot, 'examples', 'modules');
const API_KEY = 'example-key';
const server = await startServer({
  engine: { model: join(modules, 'toy-backbone-s'), reasoners: [{ name: 'math', model: join(modules, 'toy-math-reasoner') }] },
  port: 0,
  apiKeys: [API_KEY],
});
try {
  await server.ready;
  const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: API_KEY });
  const models = (await client.models.list()).data;
  console.log(`served models: ${models.map((m) => m.id).join(', ')}`);

  // Held-out problems the backbone alone gets wrong and the composition right (greedy, so the same every run).
  for (const [problem, expected] of [['Q:50-4-8-3-9', '#26'], ['Q:21-9+6+9', '#27']]) {
    console.log(`\n${problem}   (expected ${expected})`);
    for (const model of ['toy-backbone-s', 'toy-backbone-s+math']) {
      const completion = await client.completions.create({ model, prompt: `${problem}\n`, max_tokens: 48, temperature: 0, stop: ['\n'] });
      const text = completion.choices[0]!.text;
      console.log(`  ${model.padEnd(20)} ${text}   ${text.endsWith(expected) ? '✓' : '✗'}`);
    }
  }

  // Streamed, with the usage chunk the SDK asks for.
  process.stdout.write('\nQ:50-4-8-3-9 streamed from toy-backbone-s+math: ');
  const stream = await client.completions.create({
    model: 'toy-backbone-s+math',
    prompt: 'Q:50-4-8-3-9\n',
    max_tokens: 48,
    temperature: 0,
    stop: ['\n'],
    stream: true,
    stream_options: { include_usage: true },
  });
  for await (const chunk of stream) {
    process.stdout.write(chunk.choices[0]?.text ?? '');
    if (chunk.usage) process.stdout.write(`\nusage: ${chunk.usage.prompt_tokens} prompt + ${chunk.usage.completion_tokens} completion tokens\n`);
  }
} finally {
  await server.close();
}
