import { expect } from 'chai';
import { mkdir, copyFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { TextTokenizer, TokenizerError } from '../src/tokenizer/tokenizer.js';
import { startServer } from '../src/serve/server.js';
import { Engine } from '../src/engine.js';
import { models } from '../../../test/support/paths.js';
import { cacheDir, testDir } from './support/models.js';

const ZEPHYR_LIKE =
  "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}{{ eos_token }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}";

describe('chat templates', () => {
  it('renders the template from tokenizer_config.json with messages, special tokens and the generation prompt', async () => {
    const dir = testDir('chat');
    await mkdir(dir, { recursive: true });
    for (const f of ['tokenizer.json', 'model.onnx', 'model.onnx.data']) await copyFile(join(models.llamaFp16, f), join(dir, f));
    const config = JSON.parse(await readFile(join(models.llamaFp16, 'tokenizer_config.json'), 'utf8'));
    await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify({ ...config, chat_template: ZEPHYR_LIKE }));
    const tok = await TextTokenizer.fromDirectory(dir);
    const text = tok.applyChatTemplate([
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'Hi!' },
    ]);
    expect(text).to.equal('<|system|>\nBe brief.</s>\n<|user|>\nHi!</s>\n<|assistant|>\n');

    const engine = await Engine.load({ model: dir, cacheDir });
    try {
      expect(engine.info.tokenizer?.hasChatTemplate).to.equal(true);
      const r = await engine.generate({ messages: [{ role: 'user', content: 'Hi!' }] }, { maxTokens: 4 });
      // the prompt is the rendered template, tokenized without adding BOS a second time
      const expectedPrompt = tok.encode('<|user|>\nHi!</s>\n<|assistant|>\n', false);
      expect(r.usage.promptTokens).to.equal(expectedPrompt.length);
      // Tools and the template's own variables reach the template.
      const template = '{% if tools %}{{ tools | tojson }}{% endif %}{{ preamble }}{% for m in messages %}{{ m.content }}{% endfor %}';
      const tools = [{ type: 'function', function: { name: 'add', parameters: { type: 'object' } } }];
      const shown = await engine.generate({ messages: [{ role: 'user', content: 'Hi!' }], chatTemplate: template, tools, chatTemplateKwargs: { preamble: 'Be brief. ' } }, { maxTokens: 1 });
      const rendered = tok.applyChatTemplate([{ role: 'user', content: 'Hi!' }], { template, tools, extra: { preamble: 'Be brief. ' } });
      expect(rendered).to.equal('[{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]Be brief. Hi!');
      expect(shown.usage.promptTokens).to.equal(tok.encode(rendered, false).length);
    } finally {
      await engine.dispose();
    }
  });

  it("renders the real model's Llama-2 template", async () => {
    const tok = await TextTokenizer.fromDirectory(models.llamaFp16);
    expect(tok.applyChatTemplate([{ role: 'user', content: ' Hi! ' }])).to.equal('<s>[INST] Hi! [/INST]');
  });

  it("a template's refusal (the Llama-2 template's alternating roles) is the caller's error: TokenizerError, and 400 from the server", async () => {
    const tok = await TextTokenizer.fromDirectory(models.llamaFp16);
    const twice = [
      { role: 'user', content: 'Hi!' },
      { role: 'user', content: 'Hi again!' },
    ];
    expect(() => tok.applyChatTemplate(twice)).to.throw(TokenizerError, /the chat template cannot render these messages: Conversation roles must alternate/);
    const server = await startServer({ engine: { model: models.llamaFp16, cacheDir }, port: 0 });
    try {
      await server.ready;
      const res = await fetch(`${server.url}/v1/chat/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ model: 'tiny-random-llama-fp16', messages: twice, max_tokens: 2 }) });
      const body = (await res.json()) as { error: { message: string; type: string } };
      expect(res.status, body.error.message).to.equal(400);
      expect(body.error).to.deep.include({ type: 'invalid_request_error' });
      expect(body.error.message).to.match(/Conversation roles must alternate/);
    } finally {
      await server.close();
    }
  });

  it('says clearly when a model has no chat template', async () => {
    const dir = testDir('nochat');
    await copyFile(join(models.llamaFp16, 'tokenizer.json'), join(dir, 'tokenizer.json'));
    const config = JSON.parse(await readFile(join(models.llamaFp16, 'tokenizer_config.json'), 'utf8'));
    delete config.chat_template;
    await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify(config));
    const tok = await TextTokenizer.fromDirectory(dir);
    expect(() => tok.applyChatTemplate([{ role: 'user', content: 'x' }])).to.throw(/no chat template/);
  });

  it("renders a conversation with tools with the model's named tool_use template, as transformers.js does; from a GGUF too", async () => {
    const toolUse =
      '{% if tools %}<|tools|>{% for t in tools %}{{ t.function.name }};{% endfor %}{% endif %}' +
      '{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<|assistant|><tool_call>{% endif %}';
    const dir = testDir('named-templates');
    await mkdir(dir, { recursive: true });
    await copyFile(join(models.llamaFp16, 'tokenizer.json'), join(dir, 'tokenizer.json'));
    const config = JSON.parse(await readFile(join(models.llamaFp16, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
    const named = { ...config, chat_template: [{ name: 'default', template: ZEPHYR_LIKE }, { name: 'tool_use', template: toolUse }] };
    await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify(named));
    const tok = await TextTokenizer.fromDirectory(dir);
    const messages = [{ role: 'user' as const, content: 'Add 2 and 3' }];
    const tools = [{ type: 'function', function: { name: 'add', parameters: { type: 'object' } } }];
    const { PreTrainedTokenizer } = await import('@huggingface/transformers');
    const reference = new PreTrainedTokenizer(JSON.parse(await readFile(join(dir, 'tokenizer.json'), 'utf8')) as object, named);
    const theirs = (withTools: boolean) => reference.apply_chat_template(messages, { tokenize: false, add_generation_prompt: true, ...(withTools ? { tools } : {}) }) as string;
    expect(tok.applyChatTemplate(messages, { tools })).to.equal(theirs(true)).and.equal('<|tools|>add;<|user|>Add 2 and 3<|assistant|><tool_call>');
    expect(tok.applyChatTemplate(messages)).to.equal(theirs(false)).and.equal('<|user|>\nAdd 2 and 3</s>\n<|assistant|>\n');
    expect(tok.rendersTools()).to.equal(true);
    // a GGUF's tokenizer.chat_template.tool_use comes along as the same named template
    const { tokenizerFromGguf } = await import('../src/gguf/tokenizer-from-gguf.js');
    const { bpeTokenizerMeta, plain } = await import('./support/bpe-vocab.js');
    const meta = Object.fromEntries(Object.entries(bpeTokenizerMeta('qwen2', { chatTemplate: ZEPHYR_LIKE })).map(([k, v]) => [k, plain(v)]));
    const fromGguf = tokenizerFromGguf({ ...meta, 'tokenizer.chat_template.tool_use': toolUse });
    expect(fromGguf.tokenizerConfig.chat_template).to.deep.equal([
      { name: 'default', template: ZEPHYR_LIKE },
      { name: 'tool_use', template: toolUse },
    ]);
  });
});
