/** Loading the same model under several names and comparing what each gives. */
import { Engine } from '../../src/engine.js';
import { testDir } from './models.js';
import { runReasonplug } from './cli.js';

/** Runs `fn` with the environment variables `env` set, and puts back what they were after. */
export async function withEnv<T>(env: Record<string, string>, fn: () => Promise<T>): Promise<T> {
  const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]));
  Object.assign(process.env, env);
  try {
    return await fn();
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

/**
 * The greedy ids from BOS of each spec, each loaded by an engine with a cache of its own (so each converts what it
 * was given), with the environment variables `env` set meanwhile (restored after).
 */
export function greedyFromEach(specs: string[], env: Record<string, string>, maxTokens = 24): Promise<number[][]> {
  return withEnv(env, async () => {
    const engines: Engine[] = [];
    try {
      for (const model of specs) engines.push(await Engine.load({ model, cacheDir: testDir('greedy-each') }));
      return await Promise.all(engines.map(async (e) => (await e.generate({ promptIds: [1] }, { maxTokens })).rows[0]!.ids));
    } finally {
      await Promise.all(engines.map((e) => e.dispose()));
    }
  });
}

/** `reasonplug generate`'s greedy text from BOS for `spec` (16 tokens), with the environment `env`; fails on an error exit. */
export async function cliGreedyText(spec: string, env: Record<string, string>): Promise<string> {
  const r = await runReasonplug(['generate', '--model', spec, '--prompt-ids', '1', '--max-tokens', '16', '--json'], env);
  if (r.code !== 0) throw new Error(`reasonplug generate --model ${spec} exited ${r.code}: ${r.stderr}`);
  return (JSON.parse(r.stdout) as { text: string }).text;
}
