/**
 * An LCEL chain, prompt template | ChatReasoner | output parser, streaming a story to stdout as it is generated.
 * The backbone is the real TinyStories model (stories260K) composed with a stand-in reasoner that favours happy
 * words (see support/stand-ins.ts); any module directories work the same way.
 *
 *   npx tsx examples/chain.ts [--hero TEXT] [--max-tokens N] [--joy WEIGHT]
 */
import { parseArgs } from 'node:util';
import { StringOutputParser } from '@langchain/core/output_parsers';
import { ChatPromptTemplate } from '@langchain/core/prompts';
import { ChatReasoner } from '@reasonplug/langchain';
import { STAND_INS, standInReasoner, storiesBackbone } from './support/stand-ins.js';

const { values } = parseArgs({
  options: {
    hero: { type: 'string', default: 'a little dog' },
    'max-tokens': { type: 'string', default: '80' },
    joy: { type: 'string', default: '1' },
  },
});

const model = await ChatReasoner.create({
  backbone: await storiesBackbone(),
  reasoners: [{ module: await standInReasoner(STAND_INS.find((s) => s.name === 'joy-r')!), weight: Number(values.joy) }],
  maxTokens: Number(values['max-tokens']),
  repetitionPenalty: 1.2,
  // stories260K writes stories and has no chat template; this one makes the user's turns the story's opening.
  // Chat backbones bring their own template from tokenizer_config.json.
  chatTemplate: "{{ bos_token }}{% for m in messages %}{% if m.role == 'user' %}{{ m.content }}{% endif %}{% endfor %}",
});

try {
  const prompt = ChatPromptTemplate.fromMessages([['human', 'Once upon a time, there was {hero}']]);
  const chain = prompt.pipe(model).pipe(new StringOutputParser());
  process.stdout.write(`Once upon a time, there was ${values.hero}`);
  for await (const text of await chain.stream({ hero: values.hero })) process.stdout.write(text);
  process.stdout.write('\n');
} finally {
  await model.dispose();
}
