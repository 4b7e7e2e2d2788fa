/**
 * Chat prompts of models converted from GGUF are tokenized as llama.cpp does (common/chat.cpp): a BOS the template
 * writes first is taken off and the vocabulary's own added, so a model whose vocabulary adds BOS starts every chat
 * with exactly one, whether its template writes `bos_token` or not. Models from other sources keep transformers'
 * rule (the template writes the special tokens).
 */
import { expect } from 'chai';
import { copyFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Engine } from '../src/engine.js';
import { ggufModuleDir } from '../src/gguf/gguf-module.js';
import { TextTokenizer } from '../src/tokenizer/tokenizer.js';
import type { WValue } from './support/gguf-writer.js';
import { bpeTokenizerMeta } from './support/bpe-vocab.js';
import { llamaCpp, storiesTokenizerMeta, writeRandomGguf } from './support/gguf-models.js';
import { useTempCache } from './support/temp-cache.js';

const CHATML =
  "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
const MESSAGES = [
  { role: 'system' as const, content: 'Be brief.' },
  { role: 'user' as const, content: 'Once upon a time' },
];

/** The ids llama.cpp's server runs for a rendered chat prompt: a leading BOS text off, then tokenized adding its specials. */
async function llamaCppChatIds(path: string, rendered: string): Promise<number[]> {
  const model = await (await llamaCpp()).loadModel({ modelPath: path, vocabOnly: true });
  try {
    const addBos = model.tokens.shouldPrependBosToken;
    const bosText = model.tokens.bosString ?? '';
    const body = addBos && bosText && rendered.startsWith(bosText) ? rendered.slice(bosText.length) : rendered;
    return [...(addBos ? [model.tokens.bos as number] : []), ...model.tokenize(body, true)];
  } finally {
    await model.dispose();
  }
}

describe('chat prompts of GGUF models (llama.cpp is the reference)', function () {
  this.timeout(120_000);
  const scratch = useTempCache('reasonplug-gguf-chat-');
  const spec = { arch: 'llama', hidden: 32, layers: 1, heads: 2, kvHeads: 1, ff: 48, seed: 5 };
  const str = (v: string): WValue => ({ t: 'str', v });

  const vocabularies: [string, () => Promise<Record<string, WValue>>][] = [
    ['SentencePiece, adds BOS', storiesTokenizerMeta],
    ['byte-level BPE (llama-bpe), adds BOS', async () => bpeTokenizerMeta('llama-bpe', { addBos: true })],
    ['byte-level BPE (qwen2), no BOS', async () => bpeTokenizerMeta('qwen2')],
  ];
  for (const [label, meta] of vocabularies) {
    for (const [shape, template] of [['ChatML', CHATML], ['{{ bos_token }} + ChatML', `{{ bos_token }}${CHATML}`]] as const) {
      it(`${label}, a template writing ${shape}: the ids llama.cpp runs`, async () => {
        const path = join(scratch.dir, `${label.replace(/\W+/g, '-')}-${shape.length}.gguf`);
        await writeRandomGguf(path, spec, { ...(await meta()), 'tokenizer.chat_template': str(template) });
        const tokenizer = await TextTokenizer.fromDirectory(await ggufModuleDir(path, { cacheDir: scratch.cache }));
        const rendered = tokenizer.applyChatTemplate(MESSAGES);
        const expected = await llamaCppChatIds(path, rendered);
        expect(tokenizer.encodeChat(rendered)).to.deep.equal(expected);
        if (tokenizer.addsBos) expect(expected.filter((id) => id === tokenizer.bosTokenId), 'one BOS').to.have.length(1);
      });
    }
  }

  it('the engine runs those ids for messages; the same tokenizer files outside a module converted from GGUF keep what the template writes', async () => {
    const path = join(scratch.dir, 'engine.gguf');
    await writeRandomGguf(path, spec, { ...(await storiesTokenizerMeta()), 'tokenizer.chat_template': str(CHATML) });
    const engine = await Engine.load({ model: path });
    let rendered: string;
    try {
      const tokenizerDir = engine.info.tokenizer!.dir;
      const tokenizer = await TextTokenizer.fromDirectory(tokenizerDir);
      rendered = tokenizer.applyChatTemplate(MESSAGES);
      const ids = await llamaCppChatIds(path, rendered);
      const result = await engine.generate({ messages: MESSAGES }, { maxTokens: 1 });
      expect(result.usage.promptTokens).to.equal(ids.length);

      const bare = join(scratch.dir, 'bare-tokenizer');
      await mkdir(bare);
      for (const file of ['tokenizer.json', 'tokenizer_config.json']) await copyFile(join(tokenizerDir, file), join(bare, file));
      const plain = await TextTokenizer.fromDirectory(bare);
      expect(plain.encodeChat(rendered)).to.deep.equal(plain.encode(rendered, false));
      expect(plain.encodeChat(rendered)).to.have.length(ids.length - 1);
    } finally {
      await engine.dispose();
    }
  });
});
