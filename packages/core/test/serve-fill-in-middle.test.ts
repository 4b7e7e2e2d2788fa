/**
 * Fill-in-the-middle through `reasonplug serve`'s `/v1/completions` `suffix`: a Qwen2.5-Coder-shaped GGUF (its FIM
 * tokens in a byte-level BPE vocabulary) writes the code between a prefix and a suffix as node-llama-cpp's infill writes
 * it on the same file, token for token, as do the engine's text input and the CLI's `--suffix`; a SentencePiece code
 * model's prompt as llama.cpp's server lays it out and tokenizes it; a model without FIM tokens and requests FIM cannot
 * take get 400s.
 */
import { expect } from 'chai';
import { join } from 'node:path';
import { startServer, type RunningServer } from '../src/serve/server.js';
import { Engine } from '../src/engine.js';
import { convertGguf } from '../src/gguf/convert.js';
import { TextTokenizer } from '../src/tokenizer/tokenizer.js';
import { coderTokenizerMeta } from './support/bpe-vocab.js';
import { llamaCppGreedy, llamaCppInfill, llamaCppTokenize, storiesTokenizerMeta, writeRandomGguf } from './support/gguf-models.js';
import type { WValue } from './support/gguf-writer.js';
import { storiesModule } from './support/modules.js';
import { useTempCache } from './support/temp-cache.js';
import { runReasonplug } from './support/cli.js';

const PREFIX = 'def add(a, b):\n    ';
const SUFFIX = '\n\nprint(add(2, 3))\n';
const STEPS = 20;

describe('reasonplug serve: fill-in-the-middle (/v1/completions with a suffix; llama.cpp is the reference)', function () {
  this.timeout(180_000);
  const scratch = useTempCache('reasonplug-fim-');
  let path: string;
  let module: string;
  let server: RunningServer;
  let plain: RunningServer;
  const complete = (on: RunningServer, body: Record<string, unknown>) =>
    fetch(`${on.url}/v1/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ model: 'coder', temperature: 0, max_tokens: STEPS, ...body }) });

  before(async () => {
    path = join(scratch.dir, 'coder.gguf');
    await writeRandomGguf(path, { arch: 'qwen2', hidden: 64, layers: 2, heads: 4, kvHeads: 2, ff: 96, qkvBias: true, untied: true, seed: 12 }, coderTokenizerMeta());
    module = (await convertGguf(path, join(scratch.dir, 'coder'))).dir;
    server = await startServer({ engine: { model: module }, name: 'coder', port: 0 });
    plain = await startServer({ engine: { model: await storiesModule() }, name: 'coder', port: 0 });
    await Promise.all([server.ready, plain.ready]);
  });
  after(async () => {
    await Promise.all([server?.close(), plain?.close()]);
  });

  it("the prompt and the tokens written between the prefix and the suffix are node-llama-cpp's infill's, and the server writes their text", async () => {
    const theirs = await llamaCppInfill(path, PREFIX, SUFFIX, STEPS);
    const tokenizer = await TextTokenizer.fromDirectory(module);
    // [prefix token] prefix [suffix token] suffix [middle token]: this vocabulary adds no BOS
    const prompt = tokenizer.encodeFillInMiddle(PREFIX, SUFFIX);
    const fim = tokenizer.fimTokens!;
    expect([prompt[0], prompt.at(-1)]).to.deep.equal([fim.prefix, fim.middle]);
    expect(prompt).to.include(fim.suffix);
    expect(theirs.context.slice(0, prompt.length)).to.deep.equal(prompt);
    const written = theirs.context.slice(prompt.length);
    expect(written.length).to.be.greaterThan(STEPS / 2);
    expect(new Set(written).size, `node-llama-cpp's tokens ${written}`).to.be.greaterThan(3);
    const engine = await Engine.load({ model: module });
    let ids: number[];
    try {
      ids = (await engine.generate({ promptIds: prompt }, { maxTokens: STEPS })).rows[0]!.ids;
      // the engine's own text input: the prefix as the prompt, with the suffix
      const own = await engine.generate({ prompt: PREFIX, suffix: SUFFIX }, { maxTokens: STEPS });
      expect(own.rows[0]!.ids).to.deep.equal(ids);
      expect(own.usage.promptTokens).to.equal(prompt.length);
    } finally {
      await engine.dispose();
    }
    expect(ids.slice(0, written.length)).to.deep.equal(written);
    // and the CLI's
    const cli = await runReasonplug(['generate', '--model', module, '--prompt', PREFIX, '--suffix', SUFFIX, '--max-tokens', String(STEPS), '--json'], {});
    expect(cli.code, cli.stderr).to.equal(0);
    expect((JSON.parse(cli.stdout) as { ids: number[] }).ids).to.deep.equal(ids);
    expect(tokenizer.decode(ids).startsWith(theirs.text), 'node-llama-cpp\'s text begins ours').to.equal(true);

    const res = await complete(server, { prompt: PREFIX, suffix: SUFFIX });
    expect(res.status).to.equal(200);
    const body = (await res.json()) as { choices: { text: string }[]; usage: { prompt_tokens: number; completion_tokens: number } };
    expect(body.choices[0]!.text).to.equal(tokenizer.decode(ids));
    expect(body.usage).to.include({ prompt_tokens: prompt.length, completion_tokens: ids.length });
    const streamed = await complete(server, { prompt: PREFIX, suffix: SUFFIX, stream: true });
    const text = (await streamed.text())
      .split('\n')
      .filter((l) => l.startsWith('data: {'))
      .map((l) => (JSON.parse(l.slice(6)) as { choices: { text: string }[] }).choices[0]?.text ?? '')
      .join('');
    expect(text).to.equal(body.choices[0]!.text);
  });

  it("a SentencePiece code model (CodeLlama's ▁<PRE>, ▁<SUF>, ▁<MID> control tokens): the prompt as llama.cpp's server lays it out, its greedy tokens", async () => {
    const meta = await storiesTokenizerMeta();
    const extra = ['▁<PRE>', '▁<SUF>', '▁<MID>', '▁<EOT>'];
    for (const [key, item] of [
      ['tokenizer.ggml.tokens', (v: string): WValue => ({ t: 'str', v })],
      ['tokenizer.ggml.scores', (): WValue => ({ t: 'f32', v: 0 })],
      ['tokenizer.ggml.token_type', (): WValue => ({ t: 'i32', v: 3 })],
    ] as const) {
      const arr = meta[key]!;
      if (arr.t !== 'arr') throw new Error(key);
      arr.v.push(...extra.map(item));
    }
    const gguf = join(scratch.dir, 'codellama.gguf');
    await writeRandomGguf(gguf, { arch: 'llama', hidden: 64, layers: 2, heads: 4, kvHeads: 2, ff: 96, untied: true, seed: 13 }, meta);
    const dir = (await convertGguf(gguf, join(scratch.dir, 'codellama'))).dir;
    const [before, after] = ['def add(a, b):', '\n    return a + b\n'];
    // llama.cpp's server: BOS, the prefix token, the prefix and the suffix tokenized as llama.cpp tokenizes text (its
    // SentencePiece space before each), the middle token. (node-llama-cpp's infill drops those leading spaces.)
    const [pre, suf] = await llamaCppTokenize(gguf, [before, after]);
    const reference = [1, 512, ...pre!, 513, ...suf!, 514];
    const tokenizer = await TextTokenizer.fromDirectory(dir);
    expect(tokenizer.fimTokens).to.deep.equal({ prefix: 512, suffix: 513, middle: 514 });
    expect(tokenizer.encodeFillInMiddle(before, after)).to.deep.equal(reference);
    const theirs = await llamaCppGreedy(gguf, reference, STEPS);
    expect(new Set(theirs).size, `llama.cpp's tokens ${theirs}`).to.be.greaterThan(3);
    const engine = await Engine.load({ model: dir });
    try {
      const ids = (await engine.generate({ prompt: before, suffix: after }, { maxTokens: STEPS })).rows[0]!.ids;
      expect(ids.slice(0, theirs.length)).to.deep.equal(theirs);
    } finally {
      await engine.dispose();
    }
  });

  it("control tokens spelt in the code are characters, as node-llama-cpp's infill reads them; an empty prefix (the start of a file) is an insertion too", async () => {
    const [prefix, suffix] = ['eos = "<|endoftext|>"\nsep = "<|file_sep|>"\n', '\nprint(eos)\n'];
    const tokenizer = await TextTokenizer.fromDirectory(module);
    const prompt = tokenizer.encodeFillInMiddle(prefix, suffix);
    const theirs = await llamaCppInfill(path, prefix, suffix, 4);
    expect(theirs.context.slice(0, prompt.length)).to.deep.equal(prompt);
    const control = ['<|endoftext|>', '<|file_sep|>'].map((t) => tokenizer.tokenId(t)!);
    expect(prompt.filter((id) => control.includes(id))).to.deep.equal([]);
    // (as text to complete, outside an insertion, the same characters are still the model's tokens)
    expect(tokenizer.encode(prefix, false).filter((id) => control.includes(id))).to.deep.equal(control);

    const start = await complete(server, { prompt: '', suffix: SUFFIX, max_tokens: 4 });
    expect(start.status).to.equal(200);
    const usage = ((await start.json()) as { usage: { prompt_tokens: number } }).usage;
    expect(usage.prompt_tokens).to.equal(tokenizer.encodeFillInMiddle('', SUFFIX).length);
    const ollama = await fetch(`${server.url}/api/generate`, { method: 'POST', body: JSON.stringify({ model: 'coder', prompt: '', suffix: SUFFIX, stream: false, options: { num_predict: 4 } }) });
    expect(((await ollama.json()) as { prompt_eval_count: number }).prompt_eval_count).to.equal(usage.prompt_tokens);
    // without a suffix an empty prompt is still refused
    expect((await complete(server, { prompt: '' })).status).to.equal(400);
  });

  it('400s: a suffix for a model without FIM tokens, echo with a suffix, token ids with a suffix', async () => {
    const cases: [RunningServer, Record<string, unknown>, string, RegExp][] = [
      [plain, { prompt: PREFIX, suffix: SUFFIX }, 'suffix', /no fill-in-the-middle tokens/],
      [server, { prompt: PREFIX, suffix: SUFFIX, echo: true }, 'echo', /echo cannot be combined with suffix/],
      [server, { prompt: [1, 2, 3], suffix: SUFFIX }, 'prompt', /with a suffix, prompt must be text/],
      [server, { prompt: PREFIX, suffix: 7 }, 'suffix', /suffix must be a string/],
    ];
    for (const [on, body, param, message] of cases) {
      const res = await complete(on, body);
      expect(res.status, JSON.stringify(body)).to.equal(400);
      const { error } = (await res.json()) as { error: { message: string; param: string } };
      expect(error.param).to.equal(param);
      expect(error.message).to.match(message);
    }
    // an empty suffix is no insertion (OpenAI's default): a plain completion
    expect((await complete(plain, { prompt: 'Once upon a time', suffix: '' })).status).to.equal(200);
  });
});
