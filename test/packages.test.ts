/**
 * What npm users get. A fresh clone of HEAD: `npm install` builds the packages (root `prepare`), so the bins run
 * with no build by hand. From that clone the three workspaces are packed (`prepack` builds them again, clean), and
 * a project outside the repository installs the tarballs with npm, from the registry or its cache, and uses them:
 * an ESM and a CommonJS script (invoke, stream, batch, stop, abort, an LCEL chain), a TypeScript consumer with
 * `nodenext` in both module systems, the README's chain exactly as printed (and through `require`), `npx reasonplug`
 * and `npx reasonplug-registry`. The plugin is a dual package: either way it is loaded, its classes extend the
 * `@langchain/core` that the consumer's own `import` or `require` gets (`instanceof`, and LangChain's types).
 *
 * It packs what is committed (HEAD), as CI sees it. Optional dependencies are left out of the clone's install
 * (node-llama-cpp's ~600 MB of prebuilt llama.cpp binaries; nothing the bins use), to keep the test near two
 * minutes on CI's two cores.
 */
import { expect } from 'chai';
import { execFile, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { models, repoRoot } from './support/paths.js';

const exec = promisify(execFile);
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
const npx = process.platform === 'win32' ? 'npx.cmd' : 'npx';
const WORKSPACES = ['packages/core', 'packages/registry-server', 'packages/langchain-plugin'];

/**
 * The environment of a user's shell: without what `npm test` added (npm_* variables, and NODE_OPTIONS with the
 * repository's source condition, which would point @reasonplug/* at a src/ the tarballs do not have), keeping
 * the settings that say where the registry and the cache are.
 */
function userEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const keep = /^npm_config_(cache|registry|userconfig|globalconfig|cafile|proxy|https_proxy|noproxy)$/i;
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if ((/^npm_/i.test(k) && !keep.test(k)) || k === 'NODE_OPTIONS' || k === 'INIT_CWD') continue;
    env[k] = v;
  }
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return env;
}

/** Runs a command; on failure the error carries its output. */
async function sh(cmd: string, args: string[], cwd: string, env = userEnv()): Promise<{ stdout: string; stderr: string }> {
  try {
    return await exec(cmd, args, { cwd, env, maxBuffer: 64 << 20 });
  } catch (err) {
    const e = err as Error & { stdout?: string; stderr?: string };
    throw new Error(`${cmd} ${args.join(' ')} (in ${cwd}) failed: ${e.message}\n${e.stdout ?? ''}\n${e.stderr ?? ''}`);
  }
}

const seconds = (t0: number) => ((performance.now() - t0) / 1000).toFixed(1);

/** The consumer scripts: one body, written as an ES module and as a CommonJS script. */
function consumerScript(kind: 'esm' | 'cjs'): string {
  const imports: [string, string][] = [
    ['ReasonerLLM', '@reasonplug/langchain'],
    ['PromptTemplate', '@langchain/core/prompts'],
    ['StringOutputParser', '@langchain/core/output_parsers'],
    ['ModelAbortError', '@langchain/core/errors'],
    ['BaseLLM', '@langchain/core/language_models/llms'],
  ];
  const head = imports
    .map(([name, from]) => (kind === 'esm' ? `import { ${name} } from '${from}';` : `const { ${name} } = require('${from}');`))
    .join('\n');
  const body = `
const dir = process.argv[2];
const llm = await ReasonerLLM.create({ backbone: dir, maxTokens: 24, temperature: 0 });
try {
  const out = { module: typeof require === 'function' && typeof module === 'object' ? 'cjs' : 'esm' };
  out.extendsOurBaseLLM = ReasonerLLM.prototype instanceof BaseLLM;
  out.invoke = await llm.invoke('Once upon a time');
  out.pieces = [];
  for await (const piece of await llm.stream('Once upon a time')) out.pieces.push(piece);
  out.batch = await llm.batch(['Once upon a time', 'One day']);
  out.stop = await llm.invoke('Once upon a time', { stop: ['.'] });
  const controller = new AbortController();
  let tokens = 0;
  const aborted = await llm
    .invoke('Once upon a time', { maxTokens: 400, signal: controller.signal, callbacks: [{ handleLLMNewToken: () => ++tokens === 3 && controller.abort() }] })
    .then(() => null, (e) => e);
  out.abort = ModelAbortError.isInstance(aborted)
    ? { finish: aborted.partialOutput.response_metadata.finish_reason, outputTokens: aborted.partialOutput.usage_metadata.output_tokens }
    : String(aborted);
  const chain = PromptTemplate.fromTemplate('Once upon a time, there was a {animal}').pipe(llm).pipe(new StringOutputParser());
  out.chain = await chain.invoke({ animal: 'dog' }, { maxTokens: 40 });
  out.direct = await llm.invoke('Once upon a time, there was a dog', { maxTokens: 40 });
  console.log(JSON.stringify(out));
} finally {
  await llm.dispose();
}
`;
  return kind === 'esm' ? `${head}\n${body}` : `${head}\n(async () => {${body}})().catch((e) => { console.error(e); process.exitCode = 1; });\n`;
}

/** A TypeScript consumer: real types (not `any`) in both module systems. */
const TS_ESM = `import { ChatReasoner, ReasonerLLM, type ModelOptions } from '@reasonplug/langchain';
import { Engine, type ModuleManifest } from '@reasonplug/core';
import { createRegistryServer, FilesystemStorage } from '@reasonplug/registry-server';
import type { BaseChatModel } from '@langchain/core/language_models/chat_models';
import type { BaseLLM } from '@langchain/core/language_models/llms';

export async function check(dir: string): Promise<string> {
  const options: ModelOptions = { backbone: dir, maxTokens: 8 };
  const llm: BaseLLM = await ReasonerLLM.create(options);
  const chat: BaseChatModel = await ChatReasoner.create({ backbone: dir, chatTemplate: '{{ messages[0].content }}' });
  const text: string = await llm.invoke('Once upon a time');
  // @ts-expect-error invoke resolves to a string
  const wrong: number = await llm.invoke('Once upon a time');
  // @ts-expect-error a misspelt option
  await ReasonerLLM.create({ backbon: dir });
  const engine: Engine = await Engine.load({ model: dir });
  const manifest: ModuleManifest['kind'] = 'backbone';
  const server = createRegistryServer({ storage: new FilesystemStorage(dir) });
  return [text, wrong, chat.getName(), engine, manifest, server].join();
}
`;
/**
 * The CommonJS consumer hands the models to LangChain's own types, which it takes from @langchain/core's CommonJS
 * declarations (`.d.cts`): they accept the plugin's classes only if the plugin's declarations, read as CommonJS,
 * reach those same declarations.
 */
const TS_CJS = `import { ChatReasoner, ReasonerLLM } from '@reasonplug/langchain';
import type { BaseChatModel } from '@langchain/core/language_models/chat_models';
import type { BaseLLM } from '@langchain/core/language_models/llms';
import { StringOutputParser } from '@langchain/core/output_parsers';
import { ChatPromptTemplate, PromptTemplate } from '@langchain/core/prompts';
import { RunnableSequence, type Runnable } from '@langchain/core/runnables';

export async function complete(dir: string): Promise<string> {
  const llm = await ReasonerLLM.create({ backbone: dir });
  // @ts-expect-error temperature is a number
  await llm.invoke('x', { temperature: 'hot' });
  const base: BaseLLM = llm;
  const chat: BaseChatModel = await ChatReasoner.create({ backbone: dir, chatTemplate: '{{ messages[0].content }}' });
  const story: Runnable<{ animal: string }, string> = PromptTemplate.fromTemplate('Once upon a time, there was a {animal}').pipe(llm).pipe(new StringOutputParser());
  const answer = RunnableSequence.from([ChatPromptTemplate.fromMessages([['human', '{question}']]), chat, new StringOutputParser()]);
  return [await base.invoke('Once upon a time'), await story.invoke({ animal: 'dog' }), await answer.invoke({ question: 'Why?' })].join();
}
`;

/** The README's own-project chain, exactly as printed. */
function readmeChain(): string {
  const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## Use it from your own project'));
  const block = section.match(/```js\n(\/\/ story\.mjs[^\n]*\n[\s\S]*?)```/);
  if (!block) throw new Error('README: no ```js block starting "// story.mjs" under "## Use it from your own project"');
  return block[1]!;
}

/** The README's chain as a CommonJS script: its imports as `require` calls, the rest in an async function. */
function asCommonJS(esm: string): string {
  const requires: string[] = [];
  const rest: string[] = [];
  for (const line of esm.split('\n')) {
    const named = line.match(/^import (\{ [\w, ]+ \}) from ('[^']+');$/);
    if (named) requires.push(`const ${named[1]} = require(${named[2]});`);
    else rest.push(line);
  }
  if (requires.length < 3 || rest.some((line) => line.startsWith('import '))) throw new Error(`README chain: imports not all named imports:\n${esm}`);
  return `${requires.join('\n')}\n(async () => {\n${rest.join('\n')}})().catch((e) => { console.error(e); process.exitCode = 1; });\n`;
}

describe('packages, as npm users get them (fresh clone, npm pack, install into a new project)', function () {
  this.timeout(900_000);
  let work: string;
  let clone: string;
  let consumer: string;
  let story: string;
  let installLog: string;
  let packed: { name: string; filename: string; files: { path: string }[] }[];
  const timings: string[] = [];

  before(async function () {
    if (!existsSync(models.stories260K)) this.skip(); // (REASONPLUG_TEST_MODELS: see test/support/paths.ts)
    if (!existsSync(join(repoRoot, '.git'))) {
      console.log('      (skipped: not a git checkout, so there is no HEAD to clone)');
      this.skip();
    }
    work = await mkdtemp(join(tmpdir(), 'reasonplug-packages-'));
    clone = join(work, 'clone');
    consumer = join(work, 'consumer');
    story = join(consumer, 'stories260k');

    let t0 = performance.now();
    await sh('git', ['clone', '--quiet', repoRoot, clone], work);
    // npm 11 reads the repository's allowScripts (onnxruntime-node's CUDA download denied); npm 10 does not, so
    // there the README's variable does it.
    const { stdout: known } = await sh(npm, ['config', 'get', 'strict-allow-scripts'], work);
    const onnxruntime = known.trim() === 'undefined' ? 'skip' : undefined;
    const install = await sh(npm, ['install', '--prefer-offline', '--no-audit', '--no-fund', '--omit=optional'], clone, userEnv({ ONNXRUNTIME_NODE_INSTALL: onnxruntime }));
    installLog = install.stdout + install.stderr;
    timings.push(`clone + npm install (builds): ${seconds(t0)} s`);

    t0 = performance.now();
    const pack = await sh(npm, ['pack', '--json', '--pack-destination', work, ...WORKSPACES.flatMap((w) => ['-w', w])], clone);
    packed = JSON.parse(pack.stdout.slice(pack.stdout.indexOf('[')));
    timings.push(`npm pack ×3 (clean builds): ${seconds(t0)} s`);

    t0 = performance.now();
    await mkdir(consumer);
    await writeFile(join(consumer, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true }, null, 2));
    const tarballs = packed.map((p) => join(work, p.filename));
    const typescript = JSON.parse(readFileSync(join(repoRoot, 'node_modules', 'typescript', 'package.json'), 'utf8')).version as string;
    const typesNode = JSON.parse(readFileSync(join(repoRoot, 'node_modules', '@types', 'node', 'package.json'), 'utf8')).version as string;
    // A user's offline (or CPU-only) install, as the README says: onnxruntime-node's CUDA download skipped.
    const env = userEnv({ ONNXRUNTIME_NODE_INSTALL: 'skip' });
    await sh(npm, ['install', '--prefer-offline', '--no-audit', '--no-fund', ...tarballs, '@langchain/core', `typescript@${typescript}`, `@types/node@${typesNode}`], consumer, env);
    timings.push(`consumer npm install: ${seconds(t0)} s`);
    await sh(npx, ['reasonplug', 'convert', 'gguf', models.stories260K, story], consumer);
  });

  after(async () => {
    if (timings.length) console.log(timings.map((t) => `      ${t}`).join('\n'));
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('a fresh clone: npm install prints no npm config or install-script warnings and leaves working bins', async () => {
    expect(installLog).to.not.match(/Unknown (project|user|env|cli) config/);
    expect(installLog).to.not.match(/install-scripts|allowScripts/);
    const help = await sh(npx, ['reasonplug', '--help'], clone);
    expect(help.stdout).to.match(/^Usage: reasonplug /);
    const registryHelp = await sh(npx, ['reasonplug-registry', '--help'], clone);
    expect(registryHelp.stdout + registryHelp.stderr).to.include('reasonplug-registry serve');
    const generated = await sh(npx, ['reasonplug', 'generate', '--model', story, '--prompt', 'Once upon a time', '--max-tokens', '20'], clone);
    expect(generated.stdout).to.match(/^, there was a little girl named Lily/);
  });

  it('the tarballs hold the built package, its README, LICENSE and bins, and no sources', () => {
    expect(packed.map((p) => p.name).sort()).to.deep.equal(['@reasonplug/core', '@reasonplug/langchain', '@reasonplug/registry-server']);
    for (const p of packed) {
      const files = p.files.map((f) => f.path);
      expect(files, p.name).to.include.members(['package.json', 'README.md', 'LICENSE', 'dist/index.js', 'dist/index.d.ts']);
      expect(files.filter((f) => /^(src|test)\/|tsbuildinfo|\.ts$/.test(f) && !f.endsWith('.d.ts')), p.name).to.deep.equal([]);
    }
    expect(packed.find((p) => p.name === '@reasonplug/core')!.files.map((f) => f.path)).to.include('bin/reasonplug.js');
    expect(packed.find((p) => p.name === '@reasonplug/registry-server')!.files.map((f) => f.path)).to.include('bin/reasonplug-registry.js');
  });

  it('the plugin ships an ES module build and a CommonJS one, with the same declarations', async () => {
    const files = packed.find((p) => p.name === '@reasonplug/langchain')!.files.map((f) => f.path);
    expect(files).to.include.members(['dist/cjs/package.json', 'dist/cjs/index.js', 'dist/cjs/index.d.ts']);
    const installed = join(consumer, 'node_modules', '@reasonplug', 'langchain', 'dist');
    expect(JSON.parse(readFileSync(join(installed, 'cjs', 'package.json'), 'utf8'))).to.deep.equal({ type: 'commonjs' });
    const esmDeclarations = files.filter((f) => /^dist\/[^/]+\.d\.ts$/.test(f)).sort();
    const cjsDeclarations = files.filter((f) => /^dist\/cjs\/[^/]+\.d\.ts$/.test(f)).map((f) => f.replace('cjs/', '')).sort();
    expect(cjsDeclarations).to.deep.equal(esmDeclarations);
    for (const f of esmDeclarations) {
      const name = f.slice('dist/'.length);
      expect(readFileSync(join(installed, 'cjs', name), 'utf8'), name).to.equal(readFileSync(join(installed, name), 'utf8'));
    }
    const required = await sh(process.execPath, ['-p', "require.resolve('@reasonplug/langchain')"], consumer);
    expect(required.stdout.trim()).to.equal(join(installed, 'cjs', 'index.js'));
  });

  it('one copy of @langchain/core: the plugin takes it as a peer', async () => {
    const nested = join(consumer, 'node_modules', '@reasonplug', 'langchain', 'node_modules', '@langchain');
    expect(existsSync(nested), nested).to.equal(false);
    const { stdout } = await sh(npm, ['ls', '@langchain/core', '--all', '--parseable'], consumer);
    expect(stdout.trim().split('\n')).to.have.length(1);
  });

  let esm: Record<string, unknown>;
  it('an ES module imports @reasonplug/langchain: invoke, stream, batch, stop, abort and an LCEL chain', async () => {
    await writeFile(join(consumer, 'use.mjs'), consumerScript('esm'));
    const { stdout } = await sh(process.execPath, ['use.mjs', story], consumer);
    esm = JSON.parse(stdout) as Record<string, unknown>;
    const out = esm as { module: string; invoke: string; pieces: string[]; batch: string[]; stop: string; abort: unknown; chain: string; direct: string };
    expect(out.module).to.equal('esm');
    expect(esm.extendsOurBaseLLM, 'ReasonerLLM.prototype instanceof BaseLLM').to.equal(true);
    expect(out.invoke).to.match(/^, there was a little girl named Lily/);
    expect(out.pieces.length).to.be.above(1);
    expect(out.pieces.join('')).to.equal(out.invoke);
    expect(out.batch[0]).to.equal(out.invoke);
    expect(out.batch[1]).to.be.a('string').and.not.equal(out.invoke);
    expect(out.stop).to.equal(out.invoke.slice(0, out.invoke.indexOf('.')));
    expect(out.abort).to.have.property('finish', 'abort');
    expect((out.abort as { outputTokens: number }).outputTokens).to.be.within(3, 399);
    expect(out.chain).to.equal(out.direct);
    expect(out.chain.length).to.be.above(10);
  });

  it('a CommonJS script require()s it (its CommonJS build; core through require(esm), Node ^20.19 || >=22.12) and gets the same results', async () => {
    await writeFile(join(consumer, 'use.cjs'), consumerScript('cjs'));
    const { stdout, stderr } = await sh(process.execPath, ['use.cjs', story], consumer);
    const cjs = JSON.parse(stdout) as Record<string, unknown>;
    expect(cjs.module).to.equal('cjs');
    // (the plugin's classes extend the @langchain/core the script's own require() gets: its CommonJS build)
    expect(cjs.extendsOurBaseLLM, 'ReasonerLLM.prototype instanceof BaseLLM').to.equal(true);
    expect({ ...cjs, module: 'esm', abort: 0 }).to.deep.equal({ ...esm, abort: 0 });
    expect(cjs.abort).to.have.property('finish', 'abort');
    expect(stderr).to.not.match(/Error/);
  });

  it('a TypeScript consumer (module and moduleResolution nodenext) type-checks, ESM and CommonJS', async () => {
    await writeFile(join(consumer, 'check.mts'), TS_ESM);
    await writeFile(join(consumer, 'check.cts'), TS_CJS);
    // skipLibCheck off, so our declarations and those they reach are checked too (onnx-proto's name protobufjs's
    // global `Long`: core's declarations reference its types, which `types: ['node']` alone would leave out).
    const compilerOptions = { module: 'nodenext', moduleResolution: 'nodenext', target: 'es2022', strict: true, noEmit: true, skipLibCheck: false, types: ['node'] };
    await writeFile(join(consumer, 'tsconfig.json'), JSON.stringify({ compilerOptions, files: ['check.mts', 'check.cts'] }, null, 2));
    const output = await exec(npx, ['tsc', '-p', 'tsconfig.json'], { cwd: consumer, env: userEnv() }).then(
      ({ stdout }) => stdout,
      (e: { stdout?: string }) => e.stdout ?? String(e),
    );
    const errors = output.split('\n').filter((line) => line.trim() && !line.startsWith(' '));
    expect(errors).to.deep.equal([]);
  });

  it("the README's chain runs exactly as printed", async () => {
    await writeFile(join(consumer, 'story.mjs'), readmeChain());
    const { stdout } = await sh(process.execPath, ['story.mjs'], consumer);
    expect(stdout.trim()).to.equal((esm.direct as string).trim());
  });

  it("the README's chain runs through require() as well", async () => {
    await writeFile(join(consumer, 'story.cjs'), asCommonJS(readmeChain()));
    const { stdout, stderr } = await sh(process.execPath, ['story.cjs'], consumer);
    expect(stdout.trim()).to.equal((esm.direct as string).trim());
    expect(stderr).to.not.match(/Error/);
  });

  it('npx reasonplug generate, and npx reasonplug-registry serve takes a push from npx reasonplug push', async () => {
    const generated = await sh(npx, ['reasonplug', 'generate', '--model', 'stories260k', '--prompt', 'Once upon a time', '--max-tokens', '20'], consumer);
    expect(generated.stdout).to.match(/^, there was a little girl named Lily/);

    const data = join(work, 'registry-data');
    const child = spawn(npx, ['reasonplug-registry', 'serve', '--data', data, '--port', '0'], { cwd: consumer, env: userEnv(), detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      const url = await new Promise<string>((resolve, reject) => {
        child.once('exit', (code) => reject(new Error(`reasonplug-registry serve exited with ${code}`)));
        createInterface({ input: child.stdout! }).on('line', (line) => {
          const entry = JSON.parse(line) as { msg?: string; url?: string };
          if (entry.msg === 'listening') resolve(entry.url!);
        });
      });
      const host = new URL(url).host;
      await sh(npx, ['reasonplug', 'push', 'stories260k', `${host}/tiny/stories260k:0.1.0`], consumer);
      const tags = (await (await fetch(`${url}/v2/tiny/stories260k/tags/list`)).json()) as { tags: string[] };
      expect(tags.tags).to.include('0.1.0');
      expect(await readdir(data)).to.not.deep.equal([]);
    } finally {
      process.kill(-child.pid!, 'SIGTERM');
    }
  });
});
