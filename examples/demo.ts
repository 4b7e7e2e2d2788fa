/**
 * The main job (`npm install && npm run demo`): start the embedded registry, publish the trained example modules,
 * then — through the LangChain plugin — pick reasoners by task tag, answer held-out problems with the backbone
 * alone and composed, answer one with latent reasoning, and tell a story with the converted stories260K model.
 * Everything runs on loopback in temporary directories and is stopped and removed at the end.
 *
 *   npm run demo [-- --problems 3] [--gguf PATH]
 */
import { existsSync, readdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { convertGguf, loadModuleDir, pushModule, searchModules } from '@reasonplug/core';
import { createRegistryServer, FilesystemStorage } from '@reasonplug/registry-server';
import { ReasonerLLM } from '@reasonplug/langchain';
import { isCorrect, loadProblems } from '../eval/run.js';
import { models, repoRoot } from '../test/support/paths.js';

const { values } = parseArgs({
  options: {
    problems: { type: 'string', default: '3' },
    gguf: { type: 'string', default: models.stories260K },
  },
});
const say = (line = '') => process.stdout.write(`${line}\n`);
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

  // 3. The frozen backbone alone and composed with both reasoners, on held-out problems, side by side.
  const model = await ReasonerLLM.create({
    backbone: 'examples/toy-backbone-s@^1',
    reasoners: [{ module: mathRef }, { module: cipherRef }],
    registry,
    maxTokens: 48,
    stop: ['\n'],
  });
  loaded.push(model);
  const n = Number(values.problems);
  for (const problem of [...loadProblems('math', n), ...loadProblems('cipher', n)]) {
    say(`\n${problem.prompt.trim()}   (expected ${problem.answer})`);
    const sides: [string, ReasonerLLM | ReturnType<ReasonerLLM['withConfig']>][] = [
      ['backbone alone  ', model.withConfig({ reasoners: [] })],
      ['with reasoners  ', model],
    ];
    for (const [label, runnable] of sides) {
      process.stdout.write(`  ${label} `);
      let text = '';
      for await (const piece of await runnable.stream(problem.prompt)) {
        process.stdout.write(piece);
        text += piece;
      }
      say(`   ${isCorrect(problem, text) ? '✓' : '✗'}`);
    }
  }

  // 4. Latent reasoning: the policy writes <implicit_thought>N</implicit_thought> and the projector thinks N steps.
  const policy = await ReasonerLLM.create({
    backbone: 'examples/toy-math-policy@^1',
    projector: 'examples/toy-math-projector@^1',
    registry,
    maxTokens: 48,
    stop: ['\n'],
  });
  loaded.push(policy);
  const [problem] = loadProblems('math', 1);
  say(`\nlatent reasoning on ${problem!.prompt.trim()}   (expected ${problem!.answer})`);
  for (const [label, prompt, latent] of [['written chain of thought', problem!.prompt, 'never'], ['latent steps          ', problem!.latent_prompt!, 'marker']] as const) {
    const result = await policy.generate([prompt], { latent, latentPlaceholder: '·' } as never);
    const generation = result.generations[0]![0]!;
    const info = generation.generationInfo as { usage_metadata: { output_tokens: number }; latent?: { steps: number } };
    const steps = info.latent?.steps ?? 0;
    say(`  ${label}: ${generation.text}   [${info.usage_metadata.output_tokens} tokens written${steps ? `, ${steps} latent steps` : ''}]`);
  }

  // 5. A story from the real TinyStories model, converted from GGUF.
  const stories = join(work, 'stories260K');
  if (existsSync(values.gguf)) {
    await convertGguf(values.gguf, stories, { name: 'stories260k' });
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
