/**
 * A model's own defaults, applied where a request or a flag says nothing: an Ollama model's system prompt, options
 * (`params`: stop strings, temperature, num_predict, num_ctx) and license layers, in a store laid out as Ollama writes
 * it around the real stories260K with a chat template; and a hub export's `generation_config.json` sampling settings.
 * Each default is checked against the same request giving the value itself to a server started with
 * `modelDefaults: false` (--no-model-defaults), which in turn answers as the route's own defaults do.
 */
import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Engine } from '../src/engine.js';
import { GgufValueType } from '../src/gguf/reader.js';
import { postJson, useServers } from './support/servers.js';
import { rewriteGguf } from './support/gguf-writer.js';
import { STORIES } from './support/gguf-models.js';
import { storiesModule } from './support/modules.js';
import { testDir } from './support/models.js';
import { runReasonplug } from './support/cli.js';
import { useTempCache } from './support/temp-cache.js';

const SYSTEM = 'You are Mario from Super Mario Bros.';
const TEMPLATE = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}";
const PROMPT = [{ role: 'user', content: 'Once upon a time' }];

/** A layer of `bytes` written into the store's blobs, as Ollama names it. */
async function blob(store: string, bytes: Buffer | string, mediaType: string): Promise<{ mediaType: string; digest: string; size: number }> {
  const hex = createHash('sha256').update(bytes).digest('hex');
  await writeFile(join(store, 'blobs', `sha256-${hex}`), bytes);
  return { mediaType, digest: `sha256:${hex}`, size: Buffer.byteLength(bytes) };
}

/** Writes the manifest of `library/<model>:latest` with these layers. */
async function manifest(store: string, model: string, layers: object[]): Promise<void> {
  const dir = join(store, 'manifests', 'registry.ollama.ai', 'library', model);
  await mkdir(dir, { recursive: true });
  const config = { mediaType: 'application/vnd.docker.container.image.v1+json', digest: `sha256:${'0'.repeat(64)}`, size: 2 };
  await writeFile(join(dir, 'latest'), JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.docker.distribution.manifest.v2+json', config, layers }));
}

interface OllamaAnswer {
  message: { content: string };
  prompt_eval_count: number;
  eval_count: number;
  done_reason: string;
}

describe("a model's own defaults (Ollama's layers, generation_config.json)", function () {
  this.timeout(300_000);
  const { serve } = useServers();
  // (GGUF conversions go to the cache of the registry settings, $REASONPLUG_CACHE)
  const scratch = useTempCache('model-defaults-');
  const saved = process.env.OLLAMA_MODELS;
  let store: string;
  let cacheDir: string;
  /** The greedy reply (12 tokens) of the chat with the system prompt given, from a server without the model's defaults. */
  let reply: string;
  /** A piece of `reply` after its start: the model's stop string. */
  let stop: string;
  let plain: string;

  before(async () => {
    store = join(testDir('model-defaults'), 'models');
    cacheDir = scratch.cache;
    await mkdir(join(store, 'blobs'), { recursive: true });
    const gguf = join(testDir('model-defaults-gguf'), 'stories-chat.gguf');
    await rewriteGguf(STORIES, gguf, (meta) => meta.set('tokenizer.chat_template', { type: GgufValueType.STRING, value: TEMPLATE }));
    const model = await blob(store, await readFile(gguf), 'application/vnd.ollama.image.model');
    const system = await blob(store, SYSTEM, 'application/vnd.ollama.image.system');
    const license = await blob(store, 'MIT', 'application/vnd.ollama.image.license');
    await manifest(store, 'mario', [model, system, license]);
    process.env.OLLAMA_MODELS = store;
    // The reply the defaults are to give, asked for with every value explicit, and its stop string.
    plain = await serve({ engine: { model: 'ollama://mario', cacheDir, modelDefaults: false } });
    const explicit = await chat(plain, { messages: [{ role: 'system', content: SYSTEM }, ...PROMPT], options: { temperature: 0, num_predict: 12 } });
    reply = explicit.message.content;
    expect(explicit.eval_count).to.equal(12);
    stop = reply.slice(Math.floor(reply.length / 2), Math.floor(reply.length / 2) + 3);
    expect(stop.trim()).to.not.equal('');
    // The model's options as Ollama's Modelfile PARAMETER lines write them.
    const params = await blob(store, JSON.stringify({ stop: [stop], temperature: 0, num_ctx: 64, num_predict: 12, num_gpu: 1 }), 'application/vnd.ollama.image.params');
    await manifest(store, 'mario', [model, system, params, license]);
  });

  after(() => {
    if (saved === undefined) delete process.env.OLLAMA_MODELS;
    else process.env.OLLAMA_MODELS = saved;
  });

  const chat = async (at: string, body: object) => {
    const res = await postJson(at, '/api/chat', { model: 'mario', stream: false, ...body });
    expect(res.status, await res.clone().text()).to.equal(200);
    return (await res.json()) as OllamaAnswer;
  };

  it('the engine reports them (info.defaults), and takes num_ctx as its context length', async () => {
    const engine = await Engine.load({ model: 'ollama://mario', cacheDir });
    try {
      expect(engine.info.defaults).to.deep.equal({
        sampling: { temperature: 0, stop: [stop], maxTokens: 12 },
        contextLength: 64,
        system: SYSTEM,
        license: ['MIT'],
        parameters: { stop: [stop], temperature: 0, num_ctx: 64, num_predict: 12, num_gpu: 1 },
      });
      expect(engine.info.contextLength).to.equal(64);
    } finally {
      await engine.dispose();
    }
    const off = await Engine.load({ model: 'ollama://mario', cacheDir, modelDefaults: false });
    try {
      expect(off.info.defaults).to.equal(undefined);
      expect(off.info.contextLength).to.be.greaterThan(64);
    } finally {
      await off.dispose();
    }
  });

  it("serve: a chat without a system message gets the model's, with its stop string, limit and temperature, on every route", async () => {
    const url = await serve({ engine: { model: 'ollama://mario', cacheDir } });
    const cut = reply.slice(0, reply.indexOf(stop));
    // The same chat with the system message and the options given, to the server without the model's defaults.
    const given = await chat(plain, { messages: [{ role: 'system', content: SYSTEM }, ...PROMPT], options: { temperature: 0, num_predict: 12, stop: [stop] } });
    expect(given.message.content).to.equal(cut);
    expect(given.done_reason).to.equal('stop');
    const ollama = await chat(url, { messages: PROMPT });
    expect(ollama).to.deep.include({ prompt_eval_count: given.prompt_eval_count, eval_count: given.eval_count, done_reason: 'stop' });
    expect(ollama.message.content).to.equal(cut);
    const generate = (await (await postJson(url, '/api/generate', { model: 'mario', stream: false, prompt: PROMPT[0]!.content })).json()) as { response: string; prompt_eval_count: number };
    expect(generate).to.deep.include({ response: cut, prompt_eval_count: given.prompt_eval_count });
    // Without the system prompt the prompt is shorter: the server without defaults runs the chat as sent.
    expect((await chat(plain, { messages: PROMPT, options: { temperature: 0, num_predict: 1 } })).prompt_eval_count).to.be.lessThan(given.prompt_eval_count);
    const openai = (await (await postJson(url, '/v1/chat/completions', { model: 'mario', messages: PROMPT })).json()) as {
      choices: { message: { content: string }; finish_reason: string }[];
      usage: { prompt_tokens: number };
    };
    expect(openai.choices[0]).to.deep.include({ finish_reason: 'stop' });
    expect(openai.choices[0]!.message.content).to.equal(cut);
    expect(openai.usage.prompt_tokens).to.equal(given.prompt_eval_count);
    const anthropic = (await (await postJson(url, '/v1/messages', { model: 'mario', max_tokens: 20, messages: PROMPT })).json()) as { content: { text: string }[]; stop_reason: string; usage: { input_tokens: number; cache_read_input_tokens: number } };
    expect(anthropic).to.deep.include({ stop_reason: 'stop_sequence' });
    expect(anthropic.content[0]!.text).to.equal(cut);
    // (Anthropic counts the prompt's tokens read from the prefix cache apart)
    expect(anthropic.usage.input_tokens + anthropic.usage.cache_read_input_tokens).to.equal(given.prompt_eval_count);
    const responses = (await (await postJson(url, '/v1/responses', { model: 'mario', input: PROMPT[0]!.content })).json()) as { output_text?: string; output: { content: { text: string }[] }[]; temperature: number };
    expect(responses.output[0]!.content[0]!.text).to.equal(cut);
    expect(responses.temperature).to.equal(0);
    // num_ctx is the context the server serves.
    const { data } = (await (await fetch(`${url}/v1/models`)).json()) as { data: { max_model_len: number }[] };
    expect(data[0]!.max_model_len).to.equal(64);
  });

  it("serve: a request's own values win over the model's (its system message, stop strings, limit)", async () => {
    const url = await serve({ engine: { model: 'ollama://mario', cacheDir } });
    // Its own stop string: the reply runs to the model's limit (num_predict 12).
    const own = await chat(url, { messages: PROMPT, options: { stop: ['zzz'] } });
    expect(own).to.deep.include({ eval_count: 12, done_reason: 'length' });
    expect(own.message.content).to.equal(reply);
    // Its own limit, and a system message of its own (the model's is not added).
    const limited = await chat(url, { messages: [{ role: 'system', content: 'Be brief.' }, ...PROMPT], options: { num_predict: 2, stop: ['zzz'] } });
    const theirs = await chat(plain, { messages: [{ role: 'system', content: 'Be brief.' }, ...PROMPT], options: { num_predict: 2, temperature: 0 } });
    expect(limited).to.deep.include({ eval_count: 2, prompt_eval_count: theirs.prompt_eval_count });
    expect(limited.message.content).to.equal(theirs.message.content);
    const openai = (await (await postJson(url, '/v1/chat/completions', { model: 'mario', messages: PROMPT, max_tokens: 3, stop: ['zzz'] })).json()) as { usage: { completion_tokens: number } };
    expect(openai.usage.completion_tokens).to.equal(3);
  });

  it("/api/show gives the model's system prompt, options (as Modelfile lines) and license; none without its defaults", async () => {
    const url = await serve({ engine: { model: 'ollama://mario', cacheDir } });
    const show = (await (await postJson(url, '/api/show', { model: 'mario' })).json()) as Record<string, unknown>;
    expect(show).to.deep.include({
      system: SYSTEM,
      license: 'MIT',
      parameters: [`stop                           ${JSON.stringify(stop)}`, 'temperature                    0', 'num_ctx                        64', 'num_predict                    12', 'num_gpu                        1'].join('\n'),
    });
    const off = (await (await postJson(plain, '/api/show', { model: 'mario' })).json()) as Record<string, unknown>;
    expect(off).to.deep.include({ license: '', parameters: '' });
    expect(off.system).to.equal(undefined);
  });

  describe("a hub export's generation_config.json", () => {
    const MODEL_VALUES = { temperature: 0.9, top_k: 5, top_p: 0.8, repetition_penalty: 1.3 };
    let withDefaults: string;
    let without: string;
    let exportDir: string;

    before(async () => {
      // A plain export (no module manifest): the converted stories260K's graph and tokenizer, and a generation config.
      const module = await storiesModule();
      exportDir = join(testDir('model-defaults-export'), 'stories');
      await mkdir(exportDir, { recursive: true });
      for (const file of ['model.onnx', 'tokenizer.json', 'tokenizer_config.json']) await copyFile(join(module, file), join(exportDir, file));
      await writeFile(join(exportDir, 'generation_config.json'), JSON.stringify({ do_sample: true, ...MODEL_VALUES, max_new_tokens: 7 }));
      withDefaults = await serve({ engine: { model: exportDir, cacheDir }, name: 'stories' });
      without = await serve({ engine: { model: exportDir, cacheDir, modelDefaults: false }, name: 'stories' });
    });

    /** A completion's text and counts (not its id and time). */
    const complete = async (at: string, body: object) => {
      const { choices, usage } = (await (await postJson(at, '/v1/completions', { model: 'stories', prompt: 'Once upon a time', seed: 42, ...body })).json()) as { choices: { text: string }[]; usage: { completion_tokens: number } };
      return { choices, usage };
    };

    it('its sampling settings and limit are the defaults of requests that leave them out; the off switch restores ours', async () => {
      const defaulted = await complete(withDefaults, {});
      expect(defaulted.usage.completion_tokens).to.equal(7);
      expect(defaulted).to.deep.equal(await complete(without, { ...MODEL_VALUES, max_tokens: 7 }));
      // Without them: OpenAI's temperature 1, no cut, the completions route's 16 tokens.
      expect(await complete(without, {})).to.deep.equal(await complete(withDefaults, { temperature: 1, top_k: 0, top_p: 1, repetition_penalty: 1, max_tokens: 16 }));
      // Ollama's route: the model's values in place of Ollama's own defaults (temperature 0.8, top_k 40, top_p 0.9).
      const ollama = (await (await postJson(withDefaults, '/api/generate', { model: 'stories', prompt: 'Once upon a time', raw: true, stream: false, options: { seed: 42 } })).json()) as { response: string; eval_count: number };
      const ollamaGiven = (await (await postJson(without, '/api/generate', { model: 'stories', prompt: 'Once upon a time', raw: true, stream: false, options: { seed: 42, temperature: 0.9, top_k: 5, top_p: 0.8, repeat_penalty: 1.3, num_predict: 7 } })).json()) as { response: string; eval_count: number };
      expect(ollama).to.deep.include({ response: ollamaGiven.response, eval_count: 7 });
    });

    it('the CLI takes them where flags leave them out; --no-model-defaults does not', async () => {
      const env = { REASONPLUG_CACHE: cacheDir };
      const run = async (...flags: string[]) => {
        const r = await runReasonplug(['generate', '--model', exportDir, '--prompt', 'Once upon a time', '--seed', '42', '--json', ...flags], env);
        expect(r.code, r.stderr).to.equal(0);
        return JSON.parse(r.stdout) as { text: string; usage: { completionTokens: number } };
      };
      const defaulted = await run();
      expect(defaulted.usage.completionTokens).to.equal(7);
      const given = await run('--no-model-defaults', '--temperature', '0.9', '--top-k', '5', '--top-p', '0.8', '--repetition-penalty', '1.3', '--max-tokens', '7');
      expect(defaulted.text).to.equal(given.text);
      expect((await complete(withDefaults, {})).choices[0]!.text).to.equal(defaulted.text);
      expect((await run('--no-model-defaults', '--max-tokens', '9')).usage.completionTokens).to.equal(9);
    });
  });
});
