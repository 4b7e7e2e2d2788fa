/**
 * The same prompt with and without reasoners, side by side. One ReasonerLLM loads the backbone and the reasoners
 * once; `withConfig({ reasoners: [] })` runs the backbone alone on the same engine, and a RunnableMap sends both
 * calls at once (the engine queues them). Greedy decoding, so each column is exactly what its models prefer.
 *
 *   npx tsx examples/compare.ts [--prompt TEXT] [--max-tokens N] [--reasoners joy-r,play-r]
 */
import { parseArgs } from 'node:util';
import { RunnableMap } from '@langchain/core/runnables';
import { ReasonerLLM } from '@reasonplug/langchain';
import { STAND_INS, standInReasoner, storiesBackbone } from './support/stand-ins.js';

const { values } = parseArgs({
  options: {
    prompt: { type: 'string', default: 'Once upon a time' },
    'max-tokens': { type: 'string', default: '70' },
    reasoners: { type: 'string', default: 'joy-r,play-r' },
  },
});

const names = values.reasoners.split(',').filter(Boolean);
const specs = names.map((name) => {
  const spec = STAND_INS.find((s) => s.name === name);
  if (!spec) throw new Error(`no stand-in reasoner named ${name} (there are ${STAND_INS.map((s) => s.name).join(', ')})`);
  return spec;
});

const llm = await ReasonerLLM.create({
  backbone: await storiesBackbone(),
  reasoners: await Promise.all(specs.map(async (s) => ({ module: await standInReasoner(s) }))),
  maxTokens: Number(values['max-tokens']),
  repetitionPenalty: 1.2,
});

/** Words of `text` in lines of at most `width` characters. */
function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.replace(/\s+/g, ' ').trim().split(' ')) {
    if (line && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  return line ? [...lines, line] : lines;
}

try {
  const both = RunnableMap.from({ alone: llm.withConfig({ reasoners: [] }), composed: llm });
  const { alone, composed } = await both.invoke(values.prompt);
  const width = 44;
  const left = wrap(values.prompt + alone, width);
  const right = wrap(values.prompt + composed, width);
  console.log(`${'backbone alone'.padEnd(width)} | backbone + ${names.join(' + ')}`);
  console.log(`${'-'.repeat(width)}-+-${'-'.repeat(width)}`);
  for (let i = 0; i < Math.max(left.length, right.length); i++) console.log(`${(left[i] ?? '').padEnd(width)} | ${right[i] ?? ''}`);
} finally {
  await llm.dispose();
}
