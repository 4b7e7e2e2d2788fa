/**
 * The main job (`npm install && npm run demo`): start the embedded registry, publish the trained example modules,
 * then — through the LangChain plugin — pick reasoners by task tag and measure, on held-out problems, the frozen
 * backbone alone, the backbone composed with the reasoners, and the latent-reasoning policy with its projector
 * (greedy, exact match, as `npm run eval` scores them); show a few of those answers, drawn with a fixed seed; and
 * tell a story with the converted stories260K model. Everything runs on loopback in temporary directories and is
 * stopped and removed at the end.
 *
 *   npm run demo [-- --problems 40] [--seed 1] [--examples 3] [--gguf PATH|ollama://NAME|hf://ORG/REPO:QUANT|lmstudio://PUBLISHER/MODEL]
 */
import { existsSync, readdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { convertGguf, loadModuleDir, localModelPath, pushModule, searchModules } from '@reasonplug/core';
import { createRegistryServer, FilesystemStorage } from '@reasonplug/registry-server';
import { ReasonerLLM } from '@reasonplug/langchain';
import { isCorrect, loadProblems, type Problem } from '../eval/run.js';
import { models, repoRoot } from '../test/support/paths.js';

const { values } = parseArgs({
  options: {
    problems: { type: 'string', default: '40' },
    seed: { type: 'string', default: '1' },
    examples: { type: 'string', default: '3' },
    gguf: { type: 'string', default: models.stories260K },
  },
});
const say = (line = '') => process.stdout.write(`${line}\n`);
// A count that is no whole number would run nothing and print a table of dashes.
for (const [flag, least] of [['problems', 1], ['examples', 0], ['seed', 0]] as const) {
  const given = values[flag];
  if (!/^\d+$/.test(given) || Number(given) < least) {
    process.stderr.write(`demo: --${flag} ${given}: give a whole number from ${least}\n`);
    process.exit(2);
  }
}
// The story's GGUF: a path, or a model Ollama, the Hugging Face cache or LM Studio keeps (ollama://…, hf://…, lmstudio://…); a name that is
// missing is said before anything runs.
let gguf: string;
try {
  gguf = await localModelPath(values.gguf);
} catch (err) {
  process.stderr.write(`demo: --gguf: ${(err as Error).message}\n`);
  process.exit(2);
}
const WIDTH = 34; // the label column
const modulesDir = join(repoRoot, 'examples', 'modules');
const work = await mkdtemp(join(tmpdir(), 'reasonplug-demo-'));
const server = await createRegistryServer({ storage: new FilesystemStorage(join(work, 'registry')) }).listen(0, '127.0.0.1');
const registry = { registry: new URL(server.url).host, cacheDir: join(work, 'cache') };
const loaded: { dispose(): Promise<void> }[] = [];

try {
  // 1. Publish every example module, as a team would to its registry.
  say(`registry on ${server.url}`);
  for (const name of readdirSync(modulesDir).sort()) {
    const { manifest } = await loadModuleDir(join(modulesDir, name));
    await pushModule(join(modulesDir, name), `${registry.registry}/examples/${name}:${manifest.version}`, registry);
    say(`  pushed examples/${name}:${manifest.version}  (${manifest.kind}; tasks: ${manifest.tasks.join(', ') || '-'})`);
  }

  // 2. Pick reasoners by task tag.
  const reasonerFor = async (task: string) => {
    const hit = (await searchModules({ task, kind: 'logit-reasoner' }, registry))[0];
    if (!hit) throw new Error(`no reasoner for task ${task} in the registry`);
    return `${hit.name}@^${hit.versions[0]!.version!.split('.')[0]}`;
  };
  const [mathRef, cipherRef] = [await reasonerFor('math'), await reasonerFor('cipher')];
  say(`\nreasoners by task tag: math → ${mathRef}, cipher → ${cipherRef}`);

  // 3. Held-out problems, greedy: the frozen backbone alone, composed with both reasoners, and the latent policy.
  const greedy = { maxTokens: 48, stop: ['\n'], temperature: 0 };
  const model = await ReasonerLLM.create({
    backbone: 'examples/toy-backbone-s@^1',
    reasoners: [{ module: mathRef }, { module: cipherRef }],
    registry,
    ...greedy,
  });
  loaded.push(model);
  const policy = await ReasonerLLM.create({
    backbone: 'examples/toy-math-policy@^1',
    projector: 'examples/toy-math-projector@^1',
    registry,
    ...greedy,
    latent: 'marker',
    latentPlaceholder: '·',
  });
  loaded.push(policy);

  const n = Number(values.problems);
  const problems = [...loadProblems('math', n), ...loadProblems('cipher', n)];
  const math = problems.filter((p) => p.task === 'math');
  const settings: Setting[] = [
    { label: 'backbone alone', answers: await model.withConfig({ reasoners: [] }).batch(problems.map((p) => p.prompt)), problems },
    { label: `backbone + math & cipher reasoners`, answers: await model.batch(problems.map((p) => p.prompt)), problems },
    { label: 'latent policy + projector', answers: await policy.batch(math.map((p) => p.latent_prompt!)), problems: math },
  ];
  say(`\naccuracy on held-out problems (greedy, exact answer, ${n} per task)`);
  say(table(settings));

  // 4. A few of those answers, drawn with a fixed seed: math problems (where the reasoners matter) and one cipher.
  const random = mulberry32(Number(values.seed));
  const draw = (pool: Problem[], k: number) => {
    const picked = new Set<Problem>();
    while (picked.size < Math.min(k, pool.length)) picked.add(pool[Math.floor(random() * pool.length)]!);
    return [...picked].sort((x, y) => pool.indexOf(x) - pool.indexOf(y));
  };
  for (const problem of [...draw(math, Number(values.examples)), ...draw(problems.filter((p) => p.task === 'cipher'), 1)]) {
    say(`\n${problem.prompt.trim()}   (expected ${problem.answer})`);
    for (const { label, answers, problems: asked } of settings) {
      const j = asked.indexOf(problem);
      if (j >= 0) say(`  ${label.padEnd(WIDTH)} ${answers[j]}   ${isCorrect(problem, answers[j]!) ? '✓' : '✗'}`);
    }
  }

  // 5. A story from the real TinyStories model, converted from GGUF.
  const stories = join(work, 'stories260K');
  if (existsSync(gguf)) {
    await convertGguf(gguf, stories, { name: 'stories260k' });
    const storyteller = await ReasonerLLM.create({ backbone: stories, maxTokens: 120 });
    loaded.push(storyteller);
    say('\nstories260K (converted from GGUF):');
    process.stdout.write('Once upon a time');
    for await (const piece of await storyteller.stream('Once upon a time')) process.stdout.write(piece);
    say();
  } else {
    say(`\n(no stories260K GGUF at ${values.gguf}; pass --gguf PATH to hear a story)`);
  }
} finally {
  for (const m of loaded) await m.dispose();
  await server.close();
  await rm(work, { recursive: true, force: true });
}

interface Setting {
  label: string;
  /** One completion per problem asked, in order. */
  answers: string[];
  problems: Problem[];
}

/** Accuracy per task; a dash where a setting was not asked that task's problems. */
function table(settings: Setting[]): string {
  const tasks = ['math', 'cipher'] as const;
  const cell = (s: Setting, task: Problem['task']) => {
    const asked = s.problems.map((p, i) => [p, s.answers[i]!] as const).filter(([p]) => p.task === task);
    if (asked.length === 0) return '—'.padStart(7);
    const right = asked.filter(([p, answer]) => isCorrect(p, answer)).length;
    return `${((100 * right) / asked.length).toFixed(1)}%`.padStart(7);
  };
  const lines = [`  ${''.padEnd(WIDTH)} ${tasks.map((t) => t.padStart(7)).join('  ')}`];
  for (const s of settings) lines.push(`  ${s.label.padEnd(WIDTH)} ${tasks.map((t) => cell(s, t)).join('  ')}`);
  return lines.join('\n');
}

/** A small seeded PRNG (mulberry32), so the examples shown are the same on every run. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
