/**
 * The main job, until the reasoner issues land: convert the real TinyStories model (llama2.c's stories260K,
 * GGUF) into a reasonplug module and stream a story from it.
 *
 *   npm install && npm run demo [-- --gguf PATH] [--prompt TEXT]
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Engine, convertGguf } from '../packages/core/src/index.js';
import { models, repoRoot } from '../test/support/paths.js';

const { values } = parseArgs({
  options: {
    gguf: { type: 'string', default: models.stories260K },
    prompt: { type: 'string', default: 'Once upon a time' },
    'max-tokens': { type: 'string', default: '200' },
    seed: { type: 'string' },
  },
});

const moduleDir = join(repoRoot, '.cache', 'demo', 'stories260K');
if (!existsSync(join(moduleDir, 'reasonplug.json'))) {
  console.error(`converting ${values.gguf} → ${moduleDir}`);
  await convertGguf(values.gguf, moduleDir, { name: 'stories260k' });
}

const engine = await Engine.load({ model: moduleDir });
try {
  const stream = engine.stream(
    { prompt: values.prompt },
    {
      maxTokens: Number(values['max-tokens']),
      // Greedy reproduces the model's known story; pass --seed for a sampled one.
      ...(values.seed ? { temperature: 0.8, topP: 0.95, seed: Number(values.seed) } : {}),
    },
  );
  process.stdout.write(values.prompt);
  for await (const token of stream) process.stdout.write(token.text);
  const { usage, timing } = await stream.result;
  process.stdout.write('\n');
  console.error(
    `[${usage.completionTokens} tokens, load ${timing.loadMs.toFixed(0)} ms, ` +
      `prefill ${timing.prefillMs.toFixed(1)} ms, ${timing.msPerToken.toFixed(3)} ms/token]`,
  );
} finally {
  await engine.dispose();
}
