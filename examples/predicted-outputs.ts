/**
 * Speculative decoding on a real model (stories260K, a GGUF file converted on first use): the same story three
 * ways, each the same text, in fewer model steps where drafts are kept:
 *   - as the model writes it, one token a step;
 *   - with prompt lookup, drafts taken from the story's own earlier tokens;
 *   - with a prediction of the reply (OpenAI's Predicted Outputs): here the story with one word changed, as a file
 *     to be edited would be.
 *
 * Run: npx tsx examples/predicted-outputs.ts
 */
import { Engine } from '@reasonplug/core';
import { models } from '../test/support/paths.js';

const prompt = 'Tom had a big red ball. He liked to play with the ball.';
const [plain, lookup] = await Promise.all([Engine.load({ model: models.stories260K }), Engine.load({ model: models.stories260K, promptLookup: true })]);
try {
  const story = await plain.generate({ prompt }, { maxTokens: 96 });
  const text = story.rows[0]!.text;
  const report = (label: string, r: typeof story, note = '') =>
    console.log(`${label.padEnd(22)} ${String(r.rows[0]!.ids.length).padStart(3)} tokens in ${String(r.timing.decodeSteps + 1).padStart(3)} steps   same text: ${r.rows[0]!.text === text ? 'yes' : 'no'}${note}`);
  console.log(`${prompt}${text}\n`);
  report('one token a step', story);
  report('prompt lookup', await lookup.generate({ prompt }, { maxTokens: 96 }));
  const prediction = text.replace(/\bball\b/, 'kite');
  const predicted = await plain.generate({ prompt }, { maxTokens: 96, prediction });
  report('with a prediction', predicted, `   prediction tokens kept: ${predicted.usage.acceptedPredictionTokens}, not kept: ${predicted.usage.rejectedPredictionTokens}`);
} finally {
  await Promise.all([plain.dispose(), lookup.dispose()]);
}
