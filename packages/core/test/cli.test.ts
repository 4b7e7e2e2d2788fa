import { expect } from 'chai';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { Engine } from '../src/engine.js';
import { TextTokenizer, type ChatMessage } from '../src/tokenizer/tokenizer.js';
import { join } from 'node:path';
import { models, repoRoot } from '../../../test/support/paths.js';
import { builtModel, cacheDir, testDir } from './support/models.js';
import { cliPath, runReasonplug } from './support/cli.js';
import { spawn } from 'node:child_process';
import { scriptedChatModule } from './support/modules.js';
import { THINKING_TEMPLATE } from './support/chat-templates.js';

/** The CLI with its own cache beside the tests' model cache. */
const reasonplug = (...args: string[]) => runReasonplug(args, { REASONPLUG_CACHE: join(cacheDir, '..', 'cli-cache') });

const STORY = 'Once upon a time, there was a little girl named Lily. She loved to play outside in the park.';

describe('reasonplug CLI', function () {
  this.timeout(120_000);
  let storiesDir: string;

  before(async () => {
    storiesDir = join(testDir('cli'), 'stories260K');
    const r = await reasonplug('convert', 'gguf', models.stories260K, storiesDir);
    expect(r.code, r.stderr).to.equal(0);
  });

  it('prints its version (--version, -v)', async () => {
    const { version } = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
    for (const flag of ['--version', '-v']) {
      const run = await runReasonplug([flag]);
      expect([run.code, run.stdout], flag).to.deep.equal([0, `${version}\n`]);
    }
  });

  it('converts stories260K and generates its known greedy story from BOS, token for token', async () => {
    const r = await reasonplug('generate', '--model', storiesDir, '--prompt-ids', '1', '--max-tokens', '31', '--json');
    expect(r.code, r.stderr).to.equal(0);
    const out = JSON.parse(r.stdout);
    expect(out.text).to.equal(STORY);
    expect(out.ids).to.have.length(31);
    expect(out.usage).to.deep.equal({ promptTokens: 1, completionTokens: 31 });
    expect(Object.keys(out.timing)).to.have.members(['loadMs', 'prefillMs', 'msPerToken', 'decodeSteps']);
    expect(out.timing.decodeSteps).to.equal(30);
  });

  it('--prompt-lookup writes the same text in fewer steps, and says so; --prompt-lookup 0 is refused', async () => {
    const args = ['generate', '--model', storiesDir, '--prompt', 'Tom had a big red ball. He liked to play with the ball.', '--max-tokens', '60'];
    const [plain, fast] = await Promise.all([reasonplug(...args, '--json'), reasonplug(...args, '--json', '--prompt-lookup', '6')]);
    expect(fast.code, fast.stderr).to.equal(0);
    const [a, b] = [JSON.parse(plain.stdout), JSON.parse(fast.stdout)];
    expect(b.text).to.equal(a.text);
    expect(a.timing.decodeSteps).to.equal(59);
    expect(b.timing.decodeSteps).to.be.lessThan(50);
    const line = await reasonplug(...args, '--prompt-lookup');
    expect(line.stderr).to.match(/ms\/token \(\d+ steps for 59 tokens\)/);
    const refused = await reasonplug(...args, '--prompt-lookup', '0');
    expect(refused.code).to.not.equal(0);
    expect(refused.stderr).to.match(/--prompt-lookup must be a whole number >= 1/);
  });

  it('--draft-model writes the same text in fewer steps; --draft-max without it, and a --draft-p-min past 1, are refused', async () => {
    const args = ['generate', '--model', storiesDir, '--prompt', 'Once upon a time, there was a little girl named Lily.', '--max-tokens', '60', '--json'];
    // (the model as its own draft: every drafted token is the model's)
    const [plain, fast] = await Promise.all([reasonplug(...args), reasonplug(...args, '--draft-model', storiesDir, '--draft-max', '5', '--draft-p-min', '0', '--no-draft-adaptive')]);
    expect(fast.code, fast.stderr).to.equal(0);
    const [a, b] = [JSON.parse(plain.stdout), JSON.parse(fast.stdout)];
    expect(b.text).to.equal(a.text);
    expect(b.timing.decodeSteps).to.be.at.most(Math.ceil(a.timing.decodeSteps / 6) + 1);
    const alone = await reasonplug(...args, '--draft-max', '2');
    expect(alone.code).to.not.equal(0);
    expect(alone.stderr).to.match(/--draft-max, --no-draft-adaptive and --draft-p-min need --draft-model/);
    const unsure = await reasonplug(...args, '--draft-model', storiesDir, '--draft-p-min', '1.5');
    expect(unsure.code).to.not.equal(0);
    expect(unsure.stderr).to.match(/--draft-p-min must be a number from 0 to 1 \(got "1.5"\)/);
  });

  it('convert gguf keeps keys and values in fp16 (llama.cpp\'s cache type), --kv-cache float32 in float32, --kv-output joined as present.{i}: the same greedy story', async () => {
    const forms = [
      [[], 'float16', true],
      [['--kv-cache', 'float32'], 'float32', true],
      [['--kv-output', 'joined'], 'float16', false],
    ] as const;
    for (const [flags, kvType, appends] of forms) {
      const dir = join(testDir('cli'), `stories260K-${kvType}-${appends ? 'new' : 'joined'}`);
      const c = await reasonplug('convert', 'gguf', models.stories260K, dir, ...flags);
      expect(c.code, c.stderr).to.equal(0);
      const inspected = JSON.parse((await reasonplug('inspect', join(dir, 'model.onnx'))).stdout) as { signature: { kvType: string; kvOutput?: string } };
      expect(inspected.signature.kvType).to.equal(kvType);
      expect(inspected.signature.kvOutput !== undefined, 'returns new keys and values').to.equal(appends);
      const r = await reasonplug('generate', '--model', dir, '--prompt-ids', '1', '--max-tokens', '31', '--json');
      expect(r.code, r.stderr).to.equal(0);
      expect(JSON.parse(r.stdout).text).to.equal(STORY);
    }
  });

  it('ends quietly when its reader stops reading (`reasonplug … | head`)', async () => {
    const args = ['--import', 'tsx', cliPath, 'generate', '--model', storiesDir, '--prompt-ids', '1', '--max-tokens', '200'];
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, REASONPLUG_CACHE: join(cacheDir, '..', 'cli-cache') } });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    // the reader takes the first bytes, then goes away
    child.stdout.once('data', () => child.stdout.destroy());
    const code = await new Promise<number | string | null>((done) => child.on('close', (c, signal) => done(c ?? signal)));
    expect(stderr).to.not.contain('EPIPE');
    expect(code).to.equal(0);
  });

  it('reproduces a seeded sampled story, and another seed tells another', async () => {
    const run = (seed: string) =>
      reasonplug('generate', '--model', storiesDir, '--prompt', 'Once upon a time', '--max-tokens', '40', '--temperature', '1', '--top-p', '0.9', '--seed', seed, '--json');
    const [a, b, c] = await Promise.all([run('7'), run('7'), run('8')]);
    const [ta, tb, tc] = [a, b, c].map((r) => JSON.parse(r.stdout).text as string);
    expect(ta).to.equal(tb);
    expect(ta).to.not.equal(tc);
    expect(ta.length).to.be.greaterThan(40);
  });

  it('takes OpenAI-style --logit-bias and penalties (-100 takes the greedy first token out), and refuses a malformed bias', async () => {
    const run = async (...flags: string[]) => {
      const r = await reasonplug('generate', '--model', storiesDir, '--prompt-ids', '1', '--max-tokens', '31', '--json', ...flags);
      expect(r.code, r.stderr).to.equal(0);
      return JSON.parse(r.stdout) as { ids: number[]; text: string };
    };
    const plain = await run();
    const [banned, penalized] = await Promise.all([run('--logit-bias', `${plain.ids[0]}=-100`, '--logit-bias', '3=1.5'), run('--frequency-penalty', '2', '--presence-penalty', '0.5')]);
    expect(banned.ids[0]).to.not.equal(plain.ids[0]);
    expect(new Set(plain.ids).size).to.be.lessThan(plain.ids.length);
    expect(penalized.text).to.not.equal(plain.text);
    const bad = await reasonplug('generate', '--model', storiesDir, '--prompt-ids', '1', '--logit-bias', '5');
    expect(bad.code).to.not.equal(0);
    expect(bad.stderr).to.match(/--logit-bias must be TOKEN_ID=BIAS/);
  });

  it('chat refuses a --chat-template that is missing or does not parse, naming it, before loading the model', async () => {
    const dir = testDir('cli-chat-bad');
    const broken = join(dir, 'broken.jinja');
    await writeFile(broken, '{% for m in messages %}{{ m.content }');
    for (const [file, message] of [[join(dir, 'missing.jinja'), /--chat-template .*missing\.jinja: ENOENT/], [broken, /--chat-template .*broken\.jinja is not a Jinja template/], [dir, /--chat-template .* is a directory/]] as const) {
      const r = await runReasonplug(['chat', '--model', storiesDir, '--chat-template', file], { REASONPLUG_CACHE: join(cacheDir, '..', 'cli-cache') }, '');
      expect(r.code, file).to.equal(1);
      expect(r.stderr, file).to.match(message);
    }
  });

  it('chat holds a conversation from its input lines: each reply the engine\'s to the history so far, the next turn prefilled from the cache, /reset forgetting it', async () => {
    const template =
      '{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}';
    await mkdir(testDir('cli-chat'), { recursive: true });
    const templateFile = join(testDir('cli-chat'), 'template.jinja');
    await writeFile(templateFile, template);
    const first = 'Once upon a time there was a little girl named Lily. What did she do?';
    const input = `${first}\nAnd then?\n/reset\n${first}\n`;
    const r = await runReasonplug(['chat', '--model', storiesDir, '--chat-template', templateFile, '--max-tokens', '12'], { REASONPLUG_CACHE: join(cacheDir, '..', 'cli-cache') }, input);
    expect(r.code, r.stderr).to.equal(0);
    const engine = await Engine.load({ model: storiesDir, cacheDir });
    try {
      const reply = async (messages: ChatMessage[]) => (await engine.generate({ messages, chatTemplate: template }, { maxTokens: 12 })).rows[0]!.text;
      const one = await reply([{ role: 'user', content: first }]);
      const two = await reply([{ role: 'user', content: first }, { role: 'assistant', content: one }, { role: 'user', content: 'And then?' }]);
      expect(r.stdout).to.equal(`${one}\n${two}\n${one}\n`);
    } finally {
      await engine.dispose();
    }
    const cached = [...r.stderr.matchAll(/\((\d+) cached\)/g)].map((m) => Number(m[1]));
    expect(cached).to.have.length(3);
    expect(cached[0]).to.equal(0);
    expect(cached[1]).to.be.greaterThan(16); // the first turn's prompt
    expect(cached[2]).to.be.greaterThan(16); // the same prompt again, all but its last two tokens
    expect(r.stderr).to.include('[conversation reset]');
    const untemplated = await runReasonplug(['chat', '--model', storiesDir], { REASONPLUG_CACHE: join(cacheDir, '..', 'cli-cache') }, 'Hi\n');
    expect(untemplated.code).to.not.equal(0);
    expect(untemplated.stderr).to.match(/has no chat template: give one with --chat-template/);
  });

  it('chat takes --latent and --latent-placeholder as generate does, and counts the latent steps', async () => {
    const template = '{% for m in messages %}{{ m.content }}\n{% endfor %}';
    const dir = testDir('cli-chat-latent');
    const templateFile = join(dir, 'template.jinja');
    await writeFile(templateFile, template);
    const modules = join(repoRoot, 'examples', 'modules');
    const [policy, projector] = [join(modules, 'toy-math-policy'), join(modules, 'toy-math-projector')];
    const question = 'L:47+5-3+8';
    const chat = (...flags: string[]) =>
      runReasonplug(['chat', '--model', policy, '--projector', projector, '--chat-template', templateFile, '--max-tokens', '24', ...flags], { REASONPLUG_CACHE: join(cacheDir, '..', 'cli-cache') }, `${question}\n`);
    const [latent, never] = await Promise.all([chat('--latent-placeholder', '~'), chat('--latent', 'never')]);
    expect(latent.code, latent.stderr).to.equal(0);
    const engine = await Engine.load({ model: policy, projector, cacheDir });
    try {
      const messages: ChatMessage[] = [{ role: 'user', content: question }];
      const want = await engine.generate({ messages, chatTemplate: template }, { maxTokens: 24, latentPlaceholder: '~' });
      expect(want.usage.latentSteps).to.be.greaterThan(0);
      expect(latent.stdout).to.equal(`${want.rows[0]!.text}\n`);
      expect(latent.stdout).to.include('~'.repeat(want.usage.latentSteps!));
      expect(latent.stderr).to.include(` + ${want.usage.latentSteps} latent steps, `);
      expect(never.stdout).to.include('<implicit_thought>');
      expect(never.stderr).to.not.include('latent steps');
    } finally {
      await engine.dispose();
    }
  });

  it('chat leaves the oldest exchanges out where the conversation would pass the context, and a turn it cannot take does not end it', async () => {
    const template = '{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}';
    await mkdir(testDir('cli-chat-fit'), { recursive: true });
    const templateFile = join(testDir('cli-chat-fit'), 'template.jinja');
    await writeFile(templateFile, template);
    // A reply runs to the end of a 64-position context: the next turn cannot hold it, and the first exchange goes.
    const long = 'Once upon a time '.repeat(30);
    const input = `Once upon a time\nLily\n${long}\nTom\n`;
    const r = await runReasonplug(['chat', '--model', storiesDir, '--chat-template', templateFile, '--context-length', '64'], { REASONPLUG_CACHE: join(cacheDir, '..', 'cli-cache') }, input);
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stderr).to.include('[2 earlier message(s) left out to fit the context]');
    expect(r.stderr).to.include('[the message alone fills the context of 64 tokens: shorten it]');
    // three replies (the long message got none), each turn's prompt within the context
    const prompts = [...r.stderr.matchAll(/\[(\d+) prompt tokens/g)].map((m) => Number(m[1]));
    expect(prompts).to.have.length(3);
    for (const n of prompts) expect(n).to.be.below(64);
  });

  it('Ctrl-C stops generate with exit code 130 (a shell loop over it stops); a reader closing the pipe ends it with 0', async () => {
    // (the story model with its end of text banned: it writes on until stopped)
    const args = ['--import', 'tsx', cliPath, 'generate', '--model', storiesDir, '--prompt-ids', '1', '--max-tokens', '100000', '--logit-bias', '2=-100'];
    const child = spawn(process.execPath, args, { env: { ...process.env, REASONPLUG_CACHE: join(cacheDir, '..', 'cli-cache') } });
    child.stdout.once('data', () => child.kill('SIGINT'));
    expect(await new Promise<number | null>((r) => child.on('close', r))).to.equal(130);
    const piped = spawn('bash', ['-c', `"${process.execPath}" ${args.map((a) => `'${a}'`).join(' ')} | head -c 10 > /dev/null; echo "\${PIPESTATUS[0]}"`]);
    let status = '';
    piped.stdout.on('data', (d: Buffer) => (status += d.toString()));
    await new Promise((r) => piped.on('close', r));
    expect(status.trim()).to.equal('0');
  });

  it("chat writes a reasoning model's thought to stderr and its answer to stdout; --reasoning-format none keeps them together", async () => {
    const question = 'What are two and two?';
    const reply = '<think>\nTwo and two make four.\n</think>\n\nFour.';
    const tokenizer = await TextTokenizer.fromDirectory(storiesDir);
    const { dir, replyIds } = await scriptedChatModule('cli-thinker', THINKING_TEMPLATE, [{ role: 'user', content: question }], reply);
    const env = { REASONPLUG_CACHE: join(cacheDir, '..', 'cli-cache') };
    const r = await runReasonplug(['chat', '--model', dir], env, `${question}\n`);
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout).to.equal('Four.\n');
    expect(r.stderr).to.include('Two and two make four.\n');
    const thinking = replyIds.findIndex((_, k) => tokenizer.decode(replyIds.slice(0, k + 1)).includes('</think>')) + 1;
    expect(r.stderr).to.include(`(${thinking} thinking)`);
    const raw = await runReasonplug(['chat', '--model', dir, '--reasoning-format', 'none'], env, `${question}\n`);
    expect(raw.stdout).to.equal(` ${tokenizer.decode(replyIds)}\n`);
    expect(raw.stderr).to.not.include('thinking)');
    // enable_thinking: false renders an empty thought: a longer prompt, which this backbone was not scripted for
    const off = await runReasonplug(['chat', '--model', dir, '--chat-template-kwargs', '{"enable_thinking": false}', '--max-tokens', '1'], env, `${question}\n`);
    const prompts = [r, off].map((x) => Number(/\[(\d+) prompt tokens/.exec(x.stderr)![1]));
    const promptLength = (extra: Record<string, unknown>) => tokenizer.encode(tokenizer.applyChatTemplate([{ role: 'user', content: question }], { template: THINKING_TEMPLATE, extra }), false).length;
    expect(prompts).to.deep.equal([promptLength({}), promptLength({ enable_thinking: false })]);
    const bad = await runReasonplug(['chat', '--model', dir, '--chat-template-kwargs', 'enable_thinking'], env, `${question}\n`);
    expect(bad.code).to.not.equal(0);
    expect(bad.stderr).to.match(/--chat-template-kwargs must be a JSON object/);
    // --thinking-budget 0: the closing tag right after the opening one; the scripted model then writes on.
    const opened = replyIds.findIndex((_, k) => tokenizer.decode(replyIds.slice(0, k + 1)).trimStart().startsWith('<think>')) + 1;
    const cut = await runReasonplug(['chat', '--model', dir, '--thinking-budget', '0', '--max-tokens', '20'], env, `${question}\n`);
    expect(cut.code, cut.stderr).to.equal(0);
    expect(cut.stderr, cut.stdout + cut.stderr).to.include(`(${opened + tokenizer.encode('</think>', false).length} thinking)`);
    expect(cut.stdout).to.not.equal('Four.\n');
    const negative = await runReasonplug(['chat', '--model', dir, '--thinking-budget', '-1'], env, `${question}\n`);
    expect(negative.code).to.not.equal(0);
    expect(negative.stderr).to.match(/--thinking-budget must be a whole number >= 0/);
  });

  it("embed prints one JSON line per text (arguments, or the input's lines): the engine's vectors, --dimensions cut, --raw unscaled", async () => {
    const texts = ['Once upon a time', 'The cat sat on the mat.'];
    const engine = await Engine.load({ model: storiesDir, cacheDir, embeddings: true });
    let expected: Float32Array[];
    let raw: Float32Array[];
    try {
      expected = (await engine.embed({ texts })).vectors;
      raw = (await engine.embed({ texts }, { normalize: false })).vectors;
    } finally {
      await engine.dispose();
    }
    const lines = (out: string) => out.trim().split('\n').map((l) => JSON.parse(l) as { index: number; tokens: number; embedding: number[] });
    const byArgs = await reasonplug('embed', '--model', storiesDir, '--no-session-cache', ...texts);
    expect(byArgs.code, byArgs.stderr).to.equal(0);
    const got = lines(byArgs.stdout);
    expect(got.map((l) => [l.index, l.tokens])).to.deep.equal([[0, 5], [1, 11]]);
    got.forEach((l, i) => l.embedding.forEach((x, k) => expect(x).to.be.closeTo(expected[i]![k]!, 1e-6)));
    const byLines = await runReasonplug(['embed', '--model', storiesDir, '--raw', '--dimensions', '3'], { REASONPLUG_CACHE: join(cacheDir, '..', 'cli-cache') }, `${texts[0]}\n\n${texts[1]}\n`);
    expect(byLines.code, byLines.stderr).to.equal(0);
    expect(lines(byLines.stdout).map((l) => l.embedding.map((x) => x.toFixed(5)))).to.deep.equal(raw.map((v) => Array.from(v.slice(0, 3), (x) => x.toFixed(5))));
    const tooWide = await reasonplug('embed', '--model', storiesDir, '--dimensions', '65', 'hi');
    expect(tooWide.code).to.not.equal(0);
    expect(tooWide.stderr).to.match(/--dimensions 65 is more than the model's 64/);
  });

  it('streams text for a text prompt', async () => {
    const r = await reasonplug('generate', '--model', storiesDir, '--prompt', 'Once upon a time', '--max-tokens', '20');
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout.startsWith(STORY.slice('Once upon a time'.length, 60))).to.equal(true);
    expect(r.stderr).to.match(/prompt \+ 20 generated tokens/);
  });

  it('runs a bare .onnx with no tokenizer from --prompt-ids, with empty text', async () => {
    const dir = testDir('bare');
    const model = join(dir, 'model.onnx');
    await copyFile(await builtModel('cli-bare'), model);
    const r = await reasonplug('generate', '--model', model, '--prompt-ids', '3,4,5', '--max-tokens', '5', '--json');
    expect(r.code, r.stderr).to.equal(0);
    const out = JSON.parse(r.stdout);
    expect(out.ids).to.have.length(5);
    expect(out.text).to.equal('');
    const noText = await reasonplug('generate', '--model', model, '--prompt', 'hi');
    expect(noText.code).to.equal(1);
    expect(noText.stderr).to.match(/no tokenizer/);
  });

  it('inspects an export and refuses the legacy layout with a one-line error', async () => {
    const ok = await reasonplug('inspect', models.llamaFp16);
    expect(ok.code, ok.stderr).to.equal(0);
    const info = JSON.parse(ok.stdout);
    expect(JSON.stringify(info.signature)).to.include('past_key_values.0.key');
    const bad = await reasonplug('inspect', join(models.gpt2Legacy, 'past.onnx'));
    expect(bad.code).to.equal(1);
    expect(bad.stderr).to.match(/UnsupportedModelError: .*past_/);
    expect(bad.stderr.trim().split('\n')).to.have.length(1);
    // a damaged copy gets the load's own file checks, not onnxruntime's bare text
    const damaged = testDir('inspect-damaged');
    await mkdir(damaged, { recursive: true });
    await copyFile(join(models.llamaFp16, 'model.onnx'), join(damaged, 'model.onnx'));
    const noData = await reasonplug('inspect', damaged);
    expect(noData.code).to.equal(1);
    expect(noData.stderr).to.match(/OnnxFormatError: .*model\.onnx\.data is missing/);
    await writeFile(join(damaged, 'model.onnx'), (await readFile(join(models.llamaFp16, 'model.onnx'))).subarray(0, 5000));
    const cut = await reasonplug('inspect', damaged);
    expect(cut.code).to.equal(1);
    expect(cut.stderr).to.match(/OnnxFormatError: .*inspect-damaged-\w+.model\.onnx/);
    // a latent projector is no decoder: its manifest and its graph's inputs and outputs
    const projector = await reasonplug('inspect', join(repoRoot, 'examples', 'modules', 'toy-math-projector'));
    expect(projector.code, projector.stderr).to.equal(0);
    const shown = JSON.parse(projector.stdout) as { manifest: { kind: string }; inputs: { name: string }[]; outputs: { name: string }[] };
    expect([shown.manifest.kind, shown.inputs.map((i) => i.name), shown.outputs.map((o) => o.name)]).to.deep.equal(['latent-projector', ['hidden_state'], ['latent_embedding']]);
  });

  it('rejects bad flags with a clear message', async () => {
    const r = await reasonplug('generate', '--model', storiesDir, '--prompt-ids', '1,x');
    expect(r.code).to.not.equal(0);
    expect(r.stderr).to.match(/comma-separated/);
    const t = await reasonplug('generate', '--model', storiesDir, '--prompt-ids', '1', '--temperature', '-1');
    expect(t.code).to.equal(1);
    expect(t.stderr).to.match(/temperature/);
  });

  it('convert gguf refuses a destination that is a file or holds files, before reading the model, and touches neither', async () => {
    const root = testDir('cli-convert-dest');
    const file = join(root, 'a-file');
    const full = join(root, 'full');
    await writeFile(file, 'mine');
    await mkdir(full);
    await writeFile(join(full, 'model.onnx'), 'mine too');
    for (const [dest, message] of [
      [file, /a-file is a file, not a directory to write the module in/],
      [full, /full is not empty: give a new \(or empty\) directory/],
    ] as const) {
      const r = await reasonplug('convert', 'gguf', models.stories260K, dest);
      expect(r.code).to.not.equal(0);
      expect(r.stderr).to.match(message);
    }
    expect(await readFile(file, 'utf8')).to.equal('mine');
    expect(await readdir(full)).to.deep.equal(['model.onnx']);
    // a file that is not there is named as such (not a raw ENOENT), and no destination is made
    const missing = await reasonplug('convert', 'gguf', join(root, 'nowhere.gguf'), join(root, 'out'));
    expect(missing.stderr).to.include(`ModelNotFoundError: model path not found: ${join(root, 'nowhere.gguf')}`);
    expect(existsSync(join(root, 'out'))).to.equal(false);
  });

  it('quantize refuses a .gguf file by what it is, pointing to convert gguf, and writes nothing', async () => {
    const dest = join(testDir('cli-quantize-gguf'), 'q4');
    const r = await reasonplug('quantize', models.stories260K, dest);
    expect(r.code).to.equal(1);
    expect(r.stderr).to.match(/^reasonplug: QuantizeError: .*stories260K\.gguf is a GGUF file, .*reasonplug convert gguf /);
    expect(r.stderr).to.not.match(/not a valid ONNX model/);
    expect(r.stderr.trim().split('\n')).to.have.length(1);
    expect(existsSync(dest)).to.equal(false);
  });
});
