/**
 * `reasonplug chat` and `generate` as a user runs them: on a terminal of their own (util-linux `script` gives the CLI a
 * real pty, keys typed into it as a user types them) and in shell pipelines.
 */
import { expect } from 'chai';
import { execFileSync, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { models } from '../../../test/support/paths.js';
import { TextTokenizer, type ChatMessage } from '../src/tokenizer/tokenizer.js';
import { DestinationTakenError, writeBeside } from '../src/cli/write-beside.js';
import { progressBar } from '../src/registry/progress.js';
import { cacheDir, testDir } from './support/models.js';
import { cliPath, runReasonplug } from './support/cli.js';
import { scriptedChatModule } from './support/modules.js';
import { THINKING_TEMPLATE } from './support/chat-templates.js';

const TEMPLATE = '{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}';
const PASTE_ON = '\x1b[?2004h';
const PASTE_OFF = '\x1b[?2004l';
const env = { REASONPLUG_CACHE: join(cacheDir, '..', 'cli-cache') };

/** Whether `script` is util-linux's (BSD's takes other flags). */
const hasScript = (() => {
  try {
    return execFileSync('script', ['--version'], { encoding: 'utf8' }).includes('util-linux');
  } catch {
    return false;
  }
})();

/** `reasonplug ...args` on a terminal of its own: what it shows (stdout and stderr, as a terminal gets them) and the keys typed. */
class Terminal {
  screen = '';
  readonly exited: Promise<number | null>;
  private readonly child: ChildProcessWithoutNullStreams;

  constructor(args: string[], vars: Record<string, string> = {}) {
    const command = [process.execPath, '--import', 'tsx', cliPath, ...args].map((a) => `'${a.replaceAll("'", `'\\''`)}'`).join(' ');
    const inherited = { ...process.env };
    for (const name of ['NO_COLOR', 'FORCE_COLOR', 'NODE_DISABLE_COLORS', 'CI']) delete inherited[name];
    this.child = spawn('script', ['-qfec', command, '/dev/null'], { env: { ...inherited, TERM: 'xterm-256color', ...env, ...vars } });
    this.child.stdout.on('data', (d: Buffer) => (this.screen += d.toString()));
    this.exited = new Promise((resolve) => this.child.on('close', resolve));
  }

  type(keys: string): void {
    this.child.stdin.write(keys);
  }

  /** Waits (60 s at most: a CLI started from sources on a loaded machine) until the screen passes `test`. */
  async until(test: (screen: string) => boolean, what: string): Promise<void> {
    for (const end = Date.now() + 60_000; !test(this.screen); await new Promise((r) => setTimeout(r, 20))) {
      if (Date.now() > end) throw new Error(`no ${what} on the screen: ${JSON.stringify(this.screen)}`);
    }
  }

  /** The exit code, once the command ends by itself (60 s at most). */
  async code(): Promise<number | null> {
    const timeout = new Promise<'running'>((r) => setTimeout(() => r('running'), 60_000).unref());
    const code = await Promise.race([this.exited, timeout]);
    if (code === 'running') {
      this.child.kill('SIGKILL');
      throw new Error(`still running: ${JSON.stringify(this.screen)}`);
    }
    this.child.stdin.end();
    return code;
  }
}

/** The stats line's prompt token counts, one per reply. */
const promptCounts = (text: string) => [...text.matchAll(/\[(\d+) prompt tokens/g)].map((m) => Number(m[1]));

describe('reasonplug chat and generate on a terminal and in pipelines', function () {
  this.timeout(120_000);
  let storiesDir: string;
  let templateFile: string;
  let tokenizer: TextTokenizer;
  /** Prompt tokens of a first turn that says `content`. */
  const firstTurn = (content: string) => tokenizer.encodeChat(tokenizer.applyChatTemplate([{ role: 'user', content }] as ChatMessage[], { template: TEMPLATE })).length;
  const chatArgs = (...more: string[]) => ['chat', '--model', storiesDir, '--chat-template', templateFile, '--max-tokens', '8', ...more];

  before(async () => {
    const dir = testDir('cli-terminal');
    storiesDir = join(dir, 'stories260K');
    const r = await runReasonplug(['convert', 'gguf', models.stories260K, storiesDir], env);
    expect(r.code, r.stderr).to.equal(0);
    templateFile = join(dir, 'template.jinja');
    await writeFile(templateFile, TEMPLATE);
    tokenizer = await TextTokenizer.fromDirectory(storiesDir);
  });

  describe('on a terminal', function () {
    before(function () {
      if (!hasScript) this.skip();
    });

    it('Ctrl-C drops a line being typed (^C, the prompt again) and leaves only at an empty prompt; a bracketed paste is one message', async () => {
      const t = new Terminal(chatArgs());
      await t.until((s) => s.includes('> '), 'prompt');
      expect(t.screen.startsWith(PASTE_ON), 'bracketed paste turned on').to.equal(true);
      t.type('half typed');
      await t.until((s) => s.includes('half typed'), 'echo');
      t.type('\x03');
      await t.until((s) => s.includes('half typed^C'), '^C');
      t.type('Once upon a time\r');
      await t.until((s) => promptCounts(s).length === 1, 'reply');
      t.type('/reset\r');
      await t.until((s) => s.includes('[conversation reset]'), 'reset');
      // A terminal sends a paste between markers; the Enter after it sends it, lines and all.
      t.type('\x1b[200~Lily went\routside\x1b[201~');
      await t.until((s) => s.includes('... ') && s.includes('outside'), 'continuation prompt');
      t.type('\r');
      await t.until((s) => promptCounts(s).length === 2 && s.slice(s.lastIndexOf('prompt tokens')).includes('> '), 'second reply and prompt');
      t.type('\x03');
      expect(await t.code()).to.equal(0);
      expect(promptCounts(t.screen)).to.deep.equal([firstTurn('Once upon a time'), firstTurn('Lily went\noutside')]);
      expect(t.screen.endsWith(`\r\n${PASTE_OFF}`), 'a newline, then bracketed paste off').to.equal(true);
    });

    it('Ctrl-D while a reply is under way ends the session once it is written', async () => {
      const t = new Terminal(chatArgs());
      await t.until((s) => s.includes('> '), 'prompt');
      // (both keys in one read: the reply starts after the input has closed)
      t.type('Once upon a time\r\x04');
      expect(await t.code()).to.equal(0);
      expect(promptCounts(t.screen)).to.deep.equal([firstTurn('Once upon a time')]);
    });

    it("dims a thought only where stderr has colours: not under NO_COLOR, and TERM=dumb gets no escape codes at all", async () => {
      const question = 'What are two and two?';
      const { dir } = await scriptedChatModule('cli-terminal-thinker', THINKING_TEMPLATE, [{ role: 'user', content: question }], '<think>\nTwo and two make four.\n</think>\n\nFour.');
      const screen = async (vars: Record<string, string>) => {
        const t = new Terminal(['chat', '--model', dir], vars);
        await t.until((s) => s.includes('> '), 'prompt');
        t.type(`${question}\r\x04`);
        expect(await t.code(), t.screen).to.equal(0);
        expect(t.screen.replace(/\x1b\[\d+m/g, '')).to.include('Two and two make four.');
        return t.screen;
      };
      const [colour, none, dumb] = [await screen({}), await screen({ NO_COLOR: '1' }), await screen({ TERM: 'dumb' })];
      expect(colour).to.include('\x1b[2m');
      expect(none).to.not.include('\x1b[2m');
      expect(dumb).to.not.include('\x1b');
    });
  });

  it('slash commands: /? and /help list them, an unknown one is named and sent nowhere, /bye leaves; a """ block is one message', async () => {
    const r = await runReasonplug(chatArgs(), env, '/help\n/?\n/exti\n"""\nOnce upon\na time\n"""\n/bye\nLily\n');
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stderr.match(/Available commands:/g)).to.have.length(2);
    expect(r.stderr).to.include("Unknown command '/exti'. Type /? for help\n");
    expect(promptCounts(r.stderr)).to.deep.equal([firstTurn('Once upon\na time')]);
    expect(r.stdout.split('\n')).to.have.length(2);
  });

  it('SIGINT (Ctrl-C) stops a chat reading a pipe, with exit code 130, its other lines unanswered', async () => {
    // (the story model with its end of text banned: the reply runs on until stopped)
    const child = spawn(process.execPath, ['--import', 'tsx', cliPath, ...chatArgs('--max-tokens', '100000', '--logit-bias', '2=-100')], { env: { ...process.env, ...env } });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdin.write('Once upon a time\nLily\nTom\n');
    child.stdout.once('data', () => {
      child.kill('SIGINT');
      // (a producer stopped by the same Ctrl-C ends the input at once)
      child.stdin.end();
    });
    expect(await new Promise<number | null>((r) => child.on('close', r)), stderr).to.equal(130);
    expect(promptCounts(stderr)).to.have.length(1);
    expect(stderr).to.match(/, abort\]\n$/);
  });

  it('generate takes its prompt from stdin, piped or as --prompt -, and without one says what to give', async () => {
    const args = ['generate', '--model', storiesDir, '--max-tokens', '10', '--json'];
    const given = await runReasonplug([...args, '--prompt', 'Once upon a time'], env);
    expect(given.code, given.stderr).to.equal(0);
    const want = JSON.parse(given.stdout) as { text: string; usage: unknown };
    for (const extra of [[], ['--prompt', '-']]) {
      const piped = await runReasonplug([...args, ...extra], env, 'Once upon a time\n');
      expect(piped.code, piped.stderr).to.equal(0);
      const got = JSON.parse(piped.stdout) as { text: string; usage: unknown };
      expect([got.text, got.usage], extra.join(' ')).to.deep.equal([want.text, want.usage]);
    }
    const empty = await runReasonplug(args, env, '');
    expect(empty.code).to.equal(1);
    expect(empty.stderr).to.include('give exactly one of --prompt or --prompt-ids (or pipe the prompt to stdin)');
  });
});

describe('a destination two commands write at once', () => {
  it('the one finishing second is refused as such, leaving the first one\'s output as it is and no temp', async () => {
    const root = testDir('write-beside-taken');
    const dest = join(root, 'out');
    const err = await writeBeside(dest, async (tmp) => {
      await mkdir(tmp);
      await writeFile(join(tmp, 'reasonplug.json'), '{"mine":true}');
      // Meanwhile another process's rename lands.
      await mkdir(dest);
      await writeFile(join(dest, 'reasonplug.json'), '{"theirs":true}');
    }).catch((e: Error) => e);
    expect(err).to.be.instanceOf(DestinationTakenError);
    expect((err as Error).message).to.equal(`${dest} was written by another process meanwhile: nothing in it was overwritten, and this run's output is discarded`);
    expect(await readFile(join(dest, 'reasonplug.json'), 'utf8')).to.equal('{"theirs":true}');
    expect(await readdir(root)).to.deep.equal(['out']);
  });
});

describe('progress on a terminal without cursor control (TERM=dumb)', () => {
  it('writes a plain line as each tenth of the way is passed, and one when done: no carriage returns, no escape codes', async () => {
    const out: string[] = [];
    const stream = Object.assign(new Writable({ write: (c, _e, cb) => (out.push(String(c)), cb()) }), { isTTY: true, columns: 200 });
    const bar = progressBar('convert x.gguf', stream, { TERM: 'dumb' })!;
    const big = 64 * 1024 * 1024;
    for (const bytes of [0, big * 0.05, big * 0.12, big * 0.15, big * 0.5, big]) {
      bar.update({ file: 'x.gguf', digest: 'sha256:x', size: big, bytes, resumedFrom: 0, done: bytes === big });
      // (past the bar's 100 ms between redraws)
      await new Promise((r) => setTimeout(r, 110));
    }
    bar.finish();
    const text = out.join('');
    expect(text).to.not.match(/[\r\x1b]/);
    const lines = text.split('\n');
    expect(lines.pop()).to.equal('');
    expect(lines.map((l) => /(\d+)% /.exec(l)![1])).to.deep.equal(['0', '12', '50', '100', '100']);
    expect(lines.at(-1)).to.match(/ done$/);
  });
});
