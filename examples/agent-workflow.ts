/**
 * A LangGraph workflow that picks reasoner modules per step by task tag and composes them. A story is written in
 * steps, each tagged with what it needs ("characters", "mood", "play"); a `route` node looks the tags up in the
 * module catalogue (the task tags of each module's manifest, read from local module directories until the
 * registry's search serves them) and a `write` node runs the one shared ChatReasoner with just those modules.
 * Tokens stream out of the graph as the model writes them (LangGraph's "messages" stream mode).
 *
 *   npx tsx examples/agent-workflow.ts [--max-tokens N]
 */
import { parseArgs } from 'node:util';
import { HumanMessage } from '@langchain/core/messages';
import { Annotation, END, START, StateGraph } from '@langchain/langgraph';
import { loadModuleDir } from '@reasonplug/core';
import { ChatReasoner } from '@reasonplug/langchain';
import { STAND_INS, standInReasoner, storiesBackbone } from './support/stand-ins.js';

const { values } = parseArgs({ options: { 'max-tokens': { type: 'string', default: '40' } } });

/** One step of the story: how it opens, and the tasks its continuation calls for. */
interface Step {
  opening: string;
  tags: string[];
}

const STEPS: Step[] = [
  { opening: 'Once upon a time,', tags: ['characters'] },
  { opening: ' One day,', tags: ['play', 'mood'] },
  { opening: ' In the end,', tags: ['mood'] },
];

// The catalogue: each module's name and task tags, from its manifest.
const catalogue = await Promise.all(
  STAND_INS.map(async (spec) => {
    const { dir, manifest } = await loadModuleDir(await standInReasoner(spec));
    return { dir, name: manifest.name, tasks: manifest.tasks };
  }),
);

// Every module a step might pick is loaded once; each call then chooses among them by name.
const model = await ChatReasoner.create({
  backbone: await storiesBackbone(),
  reasoners: catalogue.map((m) => ({ module: m.dir })),
  maxTokens: Number(values['max-tokens']),
  repetitionPenalty: 1.2,
  // One sentence per step: the engine stops before the full stop, which the step then adds.
  stop: ['.'],
  chatTemplate: "{{ bos_token }}{% for m in messages %}{% if m.role == 'user' %}{{ m.content }}{% endif %}{% endfor %}",
});

const Story = Annotation.Root({
  steps: Annotation<Step[]>(),
  story: Annotation<string>(),
  /** The modules picked for the next step. */
  picked: Annotation<string[]>(),
  /** What each step used. */
  log: Annotation<{ tags: string[]; reasoners: string[] }[]>({ reducer: (a, b) => [...a, ...b], default: () => [] }),
});

const graph = new StateGraph(Story)
  .addNode('route', (state) => {
    const { tags } = state.steps[0]!;
    return { picked: catalogue.filter((m) => m.tasks.some((t) => tags.includes(t))).map((m) => m.name) };
  })
  .addNode('write', async (state) => {
    const [step, ...rest] = state.steps;
    const prompt = state.story + step!.opening;
    const reply = await model.withConfig({ reasoners: state.picked.map((name) => ({ name })) }).invoke([new HumanMessage(prompt)]);
    return { steps: rest, story: `${prompt}${reply.text}.`, log: [{ tags: step!.tags, reasoners: state.picked }] };
  })
  .addEdge(START, 'route')
  .addEdge('route', 'write')
  .addConditionalEdges('write', (state) => (state.steps.length > 0 ? 'route' : END))
  .compile();

try {
  let final: typeof Story.State | undefined;
  let step = 0;
  const stream = await graph.stream({ steps: STEPS, story: '' }, { streamMode: ['updates', 'messages', 'values'] });
  for await (const [mode, data] of stream) {
    if (mode === 'updates' && data.route) {
      console.error(`\n[route] ${STEPS[step]!.tags.join(', ')} -> ${data.route.picked!.join(' + ')}`);
      process.stdout.write(STEPS[step++]!.opening);
    }
    if (mode === 'updates' && data.write) process.stdout.write('.');
    if (mode === 'messages') process.stdout.write(String(data[0].content));
    if (mode === 'values') final = data;
  }
  console.log('\n');
  for (const [i, s] of final!.log.entries()) console.log(`step ${i + 1} [${s.tags.join(', ')}]: ${s.reasoners.join(' + ')}`);
} finally {
  await model.dispose();
}
