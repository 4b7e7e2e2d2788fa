/**
 * Tokenizer-side files that are there but broken: a chat template that does not parse (in tokenizer_config.json, in
 * chat_template.jinja, or given to render with) and a tokenizer.json that is a directory are refused with a
 * `TokenizerError` naming the file, not the parser's or the file system's bare error.
 */
import { expect } from 'chai';
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Engine } from '../src/engine.js';
import { ChatTemplateUnsupportedError, TextTokenizer, TokenizerError } from '../src/tokenizer/tokenizer.js';
import { models } from '../../../test/support/paths.js';
import { rejection, thrown } from './support/assertions.js';
import { runReasonplug } from './support/cli.js';
import { cacheDir, testDir } from './support/models.js';

/** Ends inside its loop: the parser fails with a TypeError of its own. */
const UNCLOSED = '{% for m in messages %}\n{{ m.content }}\n';
/** `}` where `}}` belongs: the parser's "Parser Error". */
const MISTYPED = '{% for m in messages %}\n{{ m.content }\n{% endfor %}';

/** The tiny Llama export with its tokenizer_config.json's chat_template set to `template`, and `extra` files beside it. */
async function modelWithTemplate(name: string, template: string, extra: Record<string, string> = {}): Promise<string> {
  const dir = testDir(name);
  for (const f of ['tokenizer.json', 'model.onnx', 'model.onnx.data']) await copyFile(join(models.llamaFp16, f), join(dir, f));
  const config = JSON.parse(await readFile(join(models.llamaFp16, 'tokenizer_config.json'), 'utf8'));
  await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify({ ...config, chat_template: template }));
  for (const [file, text] of Object.entries(extra)) await writeFile(join(dir, file), text);
  return dir;
}

const escaped = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

describe('broken tokenizer files', function () {
  this.timeout(60_000);
  const hi = [{ role: 'user', content: 'Hi!' }];

  it("refuses a model's chat template that does not parse, naming the file it came from", async () => {
    for (const template of [UNCLOSED, MISTYPED]) {
      const dir = await modelWithTemplate('unparsed', template);
      const tok = await TextTokenizer.fromDirectory(dir);
      const err = thrown(() => tok.applyChatTemplate(hi));
      // (the model's own: the renderer's failing, not the caller's, which the server answers as its own fault)
      expect(err).to.be.instanceOf(ChatTemplateUnsupportedError);
      expect(err.message).to.match(new RegExp(`^${escaped(join(dir, 'tokenizer_config.json'))}: chat template does not parse: `));
      expect(() => tok.rendersTools()).to.throw(TokenizerError, /tokenizer_config\.json: chat template does not parse/);
      expect(() => tok.checkChatTemplates()).to.throw(TokenizerError, /tokenizer_config\.json: chat template does not parse/);
      // Text completion does not need the template.
      expect(tok.decode(tok.encode('Hello world', false))).to.equal('Hello world');
    }
    // chat_template.jinja wins over tokenizer_config.json, and is the file named.
    const jinja = await modelWithTemplate('unparsed-jinja', '{{ messages[0].content }}', { 'chat_template.jinja': MISTYPED });
    const tok = await TextTokenizer.fromDirectory(jinja);
    expect(() => tok.applyChatTemplate(hi)).to.throw(TokenizerError, new RegExp(`^${escaped(join(jinja, 'chat_template.jinja'))}: chat template does not parse: Parser Error`));
  });

  it('refuses a given chat template that does not parse as the given one, and renders with a good one', async () => {
    const dir = await modelWithTemplate('given', UNCLOSED);
    const tok = await TextTokenizer.fromDirectory(dir);
    expect(() => tok.applyChatTemplate(hi, { template: MISTYPED })).to.throw(TokenizerError, /^the given chat template does not parse: Parser Error/);
    // (the caller's own template: the caller's fault)
    expect(thrown(() => tok.applyChatTemplate(hi, { template: MISTYPED }))).to.not.be.instanceOf(ChatTemplateUnsupportedError);
    expect(() => TextTokenizer.checkGivenTemplate(UNCLOSED)).to.throw(TokenizerError, /^the given chat template does not parse: /);
    expect(tok.applyChatTemplate(hi, { template: '{{ messages[0].content }}' })).to.equal('Hi!');
  });

  it('a chat through the engine and the CLI says which file holds the template that does not parse', async () => {
    const dir = await modelWithTemplate('engine', UNCLOSED);
    const expected = new RegExp(`${escaped(join(dir, 'tokenizer_config.json'))}: chat template does not parse`);
    const engine = await Engine.load({ model: dir, cacheDir });
    try {
      const err = await rejection(engine.generate({ messages: hi }, { maxTokens: 2 }));
      expect(err).to.be.instanceOf(ChatTemplateUnsupportedError);
      expect(err.message).to.match(expected);
      // Text completion still runs.
      expect((await engine.generate({ prompt: 'Hello' }, { maxTokens: 2 })).rows[0]!.ids).to.have.length(2);
    } finally {
      await engine.dispose();
    }
    const cli = await runReasonplug(['chat', '--model', dir, '--max-tokens', '2'], { REASONPLUG_CACHE: join(testDir('cli-cache'), 'cache') }, 'Hi!\n');
    expect(cli.code).to.not.equal(0);
    expect(cli.stderr).to.match(new RegExp(`^reasonplug: ChatTemplateUnsupportedError: ${expected.source}`));
  });

  it('refuses a tokenizer.json (or chat_template.jinja) that is a directory, naming it', async () => {
    const dir = await modelWithTemplate('tokdir', '{{ messages[0].content }}');
    const asDir = testDir('tokdir-copy');
    for (const f of ['tokenizer_config.json', 'model.onnx', 'model.onnx.data']) await copyFile(join(dir, f), join(asDir, f));
    await mkdir(join(asDir, 'tokenizer.json'));
    const err = await rejection(TextTokenizer.fromDirectory(asDir));
    expect(err).to.be.instanceOf(TokenizerError);
    expect(err.message).to.equal(`${join(asDir, 'tokenizer.json')} is a directory, not a file; download or export it again`);

    await mkdir(join(dir, 'chat_template.jinja'));
    const jinja = await rejection(TextTokenizer.fromDirectory(dir));
    expect(jinja).to.be.instanceOf(TokenizerError);
    expect(jinja.message).to.match(new RegExp(`^${escaped(join(dir, 'chat_template.jinja'))} is a directory`));

    const cli = await runReasonplug(['chat', '--model', asDir, '--max-tokens', '2'], { REASONPLUG_CACHE: join(testDir('cli-cache'), 'cache') }, 'Hi!\n');
    expect(cli.stderr).to.match(new RegExp(`TokenizerError: ${escaped(join(asDir, 'tokenizer.json'))} is a directory`));
    expect(cli.stderr).to.not.match(/EISDIR/);
  });
});
