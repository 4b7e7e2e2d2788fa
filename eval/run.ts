/**
 * The results table: exact match on the held-out sets (eval/data/*.jsonl), greedy, through the engine, from the
 * committed example modules (examples/modules/). Prints a table, then (with --json) one JSON line
 * `{"rows":[{"setting","task","accuracy","meanReasoningTokens"}]}`.
 *
 *   npm run eval [-- --n 200] [-- --json] [-- --modules examples/modules] [-- --prefix toy] [-- --bits 4|8 [--block 32] [--head-bits 4|8] [--search range|weighted] [--accuracy int8|fp32]]
 *
 * Modules are found by name, `<prefix>-backbone-s`, `<prefix>-math-reasoner`, … (MODULE_ROLES): `toy` names the
 * example modules, another prefix the modules `training/export.py --prefix` wrote.
 * With --bits every module is first quantized (`reasonplug quantize`: MatMul weights → MatMulNBits) into a
 * temporary directory, and the same settings run on the quantized modules (`--head-bits`, `--search`: as the CLI's);
 * the fp32 modules run too, and a second table gives each fp32 gain beside the quantized one (eval/gains.ts).
 *
 * Settings: S, S+math, S+cipher, S+math+cipher (one engine, reasoners picked per call), L, L+math (the math
 * reasoner trained against S, weak-to-strong), cot (the policy writing its reasoning as text) and latent (the
 * policy writing <implicit_thought>N</implicit_thought> markers, decoded with the projector).
 * Reasoning tokens: generated tokens before the final answer ('#' for math; cipher has none) plus latent steps.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { Engine, pullModule, pushModule, quantizeModel } from '@reasonplug/core';
import { gainsKept } from './gains.js';

export interface Problem {
  task: 'math' | 'cipher';
  prompt: string;
  latent_prompt?: string;
  cot: string;
  answer: string;
}
export interface Row {
  setting: string;
  task: string;
  accuracy: number;
  meanReasoningTokens: number;
  meanLatentSteps?: number;
  n: number;
}

const here = fileURLToPath(new URL('.', import.meta.url));
export const repoRoot = resolve(here, '..');

export function loadProblems(task: 'math' | 'cipher', n: number, dataDir = join(repoRoot, 'eval', 'data')): Problem[] {
  const lines = readFileSync(join(dataDir, `${task}.jsonl`), 'utf8').split('\n').filter(Boolean);
  return lines.slice(0, n).map((l) => JSON.parse(l) as Problem);
}

/** Exact match of the final answer: the text from the last '#' for math, the whole completion for cipher. */
export function isCorrect(p: Problem, completion: string): boolean {
  const c = completion.trim();
  if (p.task === 'math') return c.includes('#') && c.slice(c.lastIndexOf('#')) === p.answer;
  return c === p.answer;
}

const MAX_TOKENS = { math: 48, cipher: 12 } as const;

interface Setting {
  engine: Engine;
  reasoners?: { name: string; weight: number }[];
  latent?: 'marker' | 'never';
  promptField?: 'prompt' | 'latent_prompt';
}

async function runSetting(name: string, task: 'math' | 'cipher', problems: Problem[], s: Setting, hashId: number): Promise<Row> {
  let correct = 0;
  let reasoning = 0;
  let latentSteps = 0;
  const field = s.promptField ?? 'prompt';
  const options = {
    maxTokens: MAX_TOKENS[task],
    temperature: 0,
    ...(s.reasoners ? { reasoners: s.reasoners } : {}),
    ...(s.latent ? { latent: s.latent } : {}),
  };
  // Under the marker policy a problem runs one a call, as eval/README.md's results were made (several in a call get
  // the same replies, see packages/core/test/latent-batch.test.ts); everything else goes in batches.
  const batch = s.latent === 'marker' ? 1 : 25;
  for (let i = 0; i < problems.length; i += batch) {
    const chunk = problems.slice(i, i + batch);
    const prompts = chunk.map((p) => p[field] ?? p.prompt);
    const result = await s.engine.generate({ prompt: prompts.length === 1 ? prompts[0]! : prompts }, options);
    result.rows.forEach((row, j) => {
      const p = chunk[j]!;
      if (isCorrect(p, row.text)) correct++;
      // discrete tokens before the answer (math: before '#'); EOS is not counted
      const cut = row.ids.indexOf(hashId);
      const discrete = task === 'math' ? (cut >= 0 ? cut : row.ids.filter((id) => id !== 2).length) : 0;
      reasoning += discrete + (row.latentSteps ?? 0);
      latentSteps += row.latentSteps ?? 0;
    });
  }
  const n = problems.length;
  return {
    setting: name,
    task,
    accuracy: correct / n,
    meanReasoningTokens: reasoning / n,
    ...(s.latent === 'marker' ? { meanLatentSteps: latentSteps / n } : {}),
    n,
  };
}

/** The modules the eval runs, each found under the name `<prefix>-<role>` (as `training/export.py` names them). */
export const MODULE_ROLES = ['backbone-s', 'backbone-l', 'math-reasoner', 'cipher-reasoner', 'math-policy', 'math-projector'] as const;
export type ModuleRole = (typeof MODULE_ROLES)[number];
/** The example modules' prefix (examples/modules/toy-*). */
export const DEFAULT_PREFIX = 'toy';

// The manifest's name rule (packages/core/src/modules/manifest.ts), which a pushed module's repository path follows too.
const NAME_RE = /^[a-z0-9]+(?:[._-][a-z0-9]+)*$/;
const NAME_MAX = 128;

/** Why `prefix` cannot begin the eval's module names, or undefined when it can. */
export function prefixProblem(prefix: string): string | undefined {
  for (const role of MODULE_ROLES) {
    const name = `${prefix}-${role}`;
    if (name.length > NAME_MAX) return `the module name ${name} is longer than ${NAME_MAX} characters`;
    if (!NAME_RE.test(name)) return `the module name ${name} is not lower-case letters and digits separated by single ".", "_" or "-"`;
  }
  return undefined;
}

/** The module names under `prefix`, by role. */
export function moduleNames(prefix: string = DEFAULT_PREFIX): Record<ModuleRole, string> {
  const problem = prefixProblem(prefix);
  if (problem) throw new Error(`prefix ${prefix}: ${problem}`);
  return Object.fromEntries(MODULE_ROLES.map((role) => [role, `${prefix}-${role}`])) as Record<ModuleRole, string>;
}

/**
 * Publishes the module directories to a reasonplug-registry started in this process (loopback, temporary storage)
 * and pulls them back through the registry client into a temporary cache, so the eval reads what users would pull.
 * Returns the pulled directories by module name, and a function that stops the registry and removes the files.
 */
export async function viaRegistry(modules: string, log: (line: string) => void = () => {}, prefix: string = DEFAULT_PREFIX) {
  const names = Object.values(moduleNames(prefix));
  const { createRegistryServer, FilesystemStorage } = await import('@reasonplug/registry-server');
  const root = await mkdtemp(join(tmpdir(), 'reasonplug-eval-'));
  const listening = await createRegistryServer({ storage: new FilesystemStorage(join(root, 'registry')) }).listen(0, '127.0.0.1');
  const host = new URL(listening.url).host;
  const dirs: Record<string, string> = {};
  try {
    for (const name of names) {
      if (!existsSync(join(modules, name))) continue;
      // (under the module's own version, whatever it is; pulled back by the digest pushed)
      const pushed = await pushModule(join(modules, name), `${host}/examples/${name}`, { cacheDir: join(root, 'cache') });
      const ref = `${host}/examples/${name}@${pushed.digest}`;
      const pulled = await pullModule(ref, { cacheDir: join(root, 'cache') });
      dirs[name] = pulled.dir;
      log(`pulled ${host}/examples/${name}:${pushed.version} → ${pulled.dir}`);
    }
  } catch (err) {
    await listening.close();
    await rm(root, { recursive: true, force: true });
    throw err;
  }
  return {
    dirs,
    close: async () => {
      await listening.close();
      await rm(root, { recursive: true, force: true });
    },
  };
}

export interface EvalOptions {
  n: number;
  modules: string;
  /** The modules' names are `<prefix>-backbone-s`, … (default {@link DEFAULT_PREFIX}). */
  prefix?: string;
  /** Module directories by name (e.g. pulled from a registry); default: `<modules>/<name>`. */
  dirs?: Record<string, string>;
  /** Skip the latent rows (when the policy/projector modules are absent they are skipped anyway). */
  latent?: boolean;
  log?: (line: string) => void;
}

export async function runEval(opts: EvalOptions): Promise<Row[]> {
  const prefix = opts.prefix ?? DEFAULT_PREFIX;
  const names = moduleNames(prefix);
  const m = (role: ModuleRole) => opts.dirs?.[names[role]] ?? join(opts.modules, names[role]);
  const log = opts.log ?? (() => {});
  if (!Number.isSafeInteger(opts.n) || opts.n < 1) throw new Error(`n must be a whole number of problems from 1 (got ${opts.n})`);
  // The S rows need S and the math reasoner; the cipher, L and latent rows are run where their modules are there.
  const missing = (['backbone-s', 'math-reasoner'] as const).filter((role) => !existsSync(m(role)));
  if (missing.length > 0) {
    // (modules exported under another prefix are the likely cause: name the ones there)
    const others = statSync(opts.modules, { throwIfNoEntry: false })?.isDirectory() ? readdirSync(opts.modules).filter((d) => d.endsWith('-backbone-s') && d !== names['backbone-s']) : [];
    const seen = others.map((d) => `--prefix ${d.slice(0, -'-backbone-s'.length)}`);
    throw new Error(
      `the eval needs ${missing.map((role) => names[role]).join(' and ')} in ${opts.modules} ` +
        `(modules are found by the names <prefix>-backbone-s, <prefix>-math-reasoner, …; it looked for prefix ${prefix}` +
        `${seen.length ? `, that directory has modules for ${seen.join(', ')}` : ', --prefix gives another'})`,
    );
  }
  const cipher = existsSync(m('cipher-reasoner'));
  const data = { math: loadProblems('math', opts.n), cipher: loadProblems('cipher', opts.n) };
  const tasks = ['math', 'cipher'] as const;
  const rows: Row[] = [];
  const hashId = 20; // '#' in the toy tokenizer (checked below)
  const add = async (name: string, task: 'math' | 'cipher', s: Setting) => {
    const row = await runSetting(name, task, data[task], s, hashId);
    log(`${name.padEnd(14)} ${task.padEnd(7)} ${(row.accuracy * 100).toFixed(1)}%`);
    rows.push(row);
  };

  const engS = await Engine.load({
    model: m('backbone-s'),
    reasoners: [{ model: m('math-reasoner'), name: 'math' }, ...(cipher ? [{ model: m('cipher-reasoner'), name: 'cipher' }] : [])],
  });
  try {
    for (const task of tasks) {
      await add('S', task, { engine: engS, reasoners: [] });
      await add('S+math', task, { engine: engS, reasoners: [{ name: 'math', weight: 1 }] });
      if (!cipher) continue;
      await add('S+cipher', task, { engine: engS, reasoners: [{ name: 'cipher', weight: 1 }] });
      await add('S+math+cipher', task, { engine: engS, reasoners: [{ name: 'math', weight: 1 }, { name: 'cipher', weight: 1 }] });
    }
  } finally {
    await engS.dispose();
  }

  if (existsSync(m('backbone-l'))) {
    const engL = await Engine.load({ model: m('backbone-l'), reasoners: [{ model: m('math-reasoner'), name: 'math' }] });
    try {
      for (const task of tasks) {
        await add('L', task, { engine: engL, reasoners: [] });
        await add('L+math', task, { engine: engL, reasoners: [{ name: 'math', weight: 1 }] });
      }
    } finally {
      await engL.dispose();
    }
  }

  if ((opts.latent ?? true) && existsSync(m('math-policy')) && existsSync(m('math-projector'))) {
    const engP = await Engine.load({ model: m('math-policy'), projector: m('math-projector') });
    try {
      await add('cot', 'math', { engine: engP, latent: 'never' });
      await add('latent', 'math', { engine: engP, latent: 'marker', promptField: 'latent_prompt' });
    } finally {
      await engP.dispose();
    }
  }
  return rows;
}

export function formatTable(rows: Row[]): string {
  const head = ['setting', 'task', 'accuracy', 'mean reasoning tokens', 'latent steps', 'n'];
  const body = rows.map((r) => [
    r.setting,
    r.task,
    `${(r.accuracy * 100).toFixed(1)}%`,
    r.meanReasoningTokens.toFixed(1),
    r.meanLatentSteps === undefined ? '' : r.meanLatentSteps.toFixed(1),
    String(r.n),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => '| ' + cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ') + ' |';
  return [line(head), '|' + widths.map((w) => '-'.repeat(w + 2)).join('|') + '|', ...body.map(line)].join('\n');
}

const HELP = `npm run eval [-- OPTIONS]: the results table, from the example modules or modules of your own

  --n N              problems per task, from the start of eval/data/{math,cipher}.jsonl (default 200)
  --json             after the table, one line {"rows":[{"setting","task","accuracy","meanReasoningTokens"}]}
  --modules DIR      where the modules are (default examples/modules)
  --prefix NAME      the modules are DIR/NAME-backbone-s and DIR/NAME-math-reasoner (needed), NAME-cipher-reasoner,
                     NAME-backbone-l, NAME-math-policy and NAME-math-projector (their rows run where they are there);
                     default ${DEFAULT_PREFIX}, the example modules; training/export.py --prefix NAME names them so
  --local            read the directories instead of pushing them to a loopback registry and pulling them back
  --bits 4|8         also quantize every module and run the same settings on the copies, with each gain kept
    --block B        quantization block size (default 32)
    --head-bits 4|8  the LM head's bits (default 8 with --bits 4, else --bits)
    --search range|weighted, --accuracy int8|fp32   as reasonplug quantize (defaults range, int8)
  --help             this text
`;

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({
    options: {
      help: { type: 'boolean', default: false },
      n: { type: 'string', default: '200' },
      json: { type: 'boolean', default: false },
      modules: { type: 'string', default: join(repoRoot, 'examples', 'modules') },
      prefix: { type: 'string', default: DEFAULT_PREFIX },
      local: { type: 'boolean', default: false },
      bits: { type: 'string' },
      block: { type: 'string', default: '32' },
      'head-bits': { type: 'string' },
      search: { type: 'string', default: 'range' },
      accuracy: { type: 'string', default: 'int8' },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    process.exit(0);
  }
  const modules = resolve(values.modules!);
  const prefix = values.prefix!;
  const log = (l: string) => process.stderr.write(l + '\n');
  if (!/^[1-9]\d*$/.test(values.n!)) throw new Error(`--n ${values.n}: give a whole number of problems from 1`);
  const badPrefix = prefixProblem(prefix);
  if (badPrefix) throw new Error(`--prefix ${prefix}: ${badPrefix}`);
  const names = moduleNames(prefix);
  // Through the registry client by default (push to a loopback reasonplug-registry, pull back); --local reads the directories.
  const registry = values.local ? undefined : await viaRegistry(modules, log, prefix);
  let rows: Row[];
  let reference: Row[] | undefined;
  let label = '';
  const quantizedRoot = values.bits ? await mkdtemp(join(tmpdir(), 'reasonplug-eval-q-')) : undefined;
  try {
    let dirs = registry?.dirs;
    if (values.bits) {
      const bits = Number(values.bits) as 4 | 8;
      log('fp32 reference:');
      reference = await runEval({ n: Number(values.n), modules, prefix, ...(dirs ? { dirs } : {}), log });
      const quantized: Record<string, string> = {};
      let headBits: number | undefined;
      for (const name of Object.values(names)) {
        const src = dirs?.[name] ?? join(modules, name);
        if (!existsSync(src)) continue;
        const { path, report } = await quantizeModel(src, join(quantizedRoot!, name), {
          bits,
          blockSize: Number(values.block),
          search: values.search as 'weighted' | 'range',
          accuracy: values.accuracy as 'int8' | 'fp32',
          ...(values['head-bits'] ? { headBits: Number(values['head-bits']) as 4 | 8 } : {}),
        });
        quantized[name] = path;
        if (report.head.names.length) headBits = report.head.bits;
        log(`quantized ${name} to ${bits} bits: ${report.matmuls} MatMulNBits${report.head.names.length ? ` (head at ${report.head.bits} bits)` : ''}${report.skipped.length ? `, left dense: ${report.skipped.join('; ')}` : ''}`);
      }
      dirs = quantized;
      label = `${bits}-bit, block ${values.block}${headBits !== undefined && headBits !== bits ? `, ${headBits}-bit head` : ''}${values.search === 'range' ? '' : `, ${values.search} search`}${values.accuracy === 'int8' ? '' : `, ${values.accuracy} accuracy`}`;
      log(`${label}:`);
    }
    rows = await runEval({ n: Number(values.n), modules, prefix, ...(dirs ? { dirs } : {}), log });
  } finally {
    await registry?.close();
    if (quantizedRoot) await rm(quantizedRoot, { recursive: true, force: true });
  }
  console.log(formatTable(rows));
  if (reference) console.log(`\nGains of the fp32 modules kept by the quantized ones:\n${gainsKept(reference, rows, label)}`);
  if (values.json) {
    console.log(JSON.stringify({ rows: rows.map(({ setting, task, accuracy, meanReasoningTokens }) => ({ setting, task, accuracy, meanReasoningTokens })) }));
  }
}
