/**
 * A GGUF chat model as people have it, straight into the LangChain plugin: backbone and reasoner given as
 * .gguf files, the chat template taken from the file's `tokenizer.chat_template`, and the reply equal to
 * llama.cpp's greedy continuation of the same rendered prompt.
 */
import { expect } from 'chai';
import { HumanMessage } from '@langchain/core/messages';
import { copyFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { ChatReasoner } from '../packages/langchain-plugin/src/index.js';
import { GgufValueType } from '../packages/core/src/gguf/reader.js';
import { resolveModelPath } from '../packages/core/src/registry/resolve-model.js';
import { TextTokenizer } from '../packages/core/src/tokenizer/tokenizer.js';
import { rewriteGguf } from '../packages/core/test/support/gguf-writer.js';
import { llamaCppGreedy, llamaCppTokenize, STORIES } from '../packages/core/test/support/gguf-models.js';
import { useTempCache } from '../packages/core/test/support/temp-cache.js';

const TEMPLATE = '{{ bos_token }}{% for message in messages %}{{ message.content }}{% endfor %}';
const MAX = 20;

describe('a GGUF chat model in the LangChain plugin (llama.cpp is the reference)', function () {
  this.timeout(120_000);
  const scratch = useTempCache('reasonplug-gguf-chat-');

  it('ChatReasoner over .gguf backbone and reasoner replies with llama.cpp greedy tokens', async () => {
    const backbone = join(scratch.dir, 'stories-chat.gguf');
    await rewriteGguf(STORIES, backbone, (meta) => {
      meta.set('tokenizer.chat_template', { type: GgufValueType.STRING, value: TEMPLATE });
    });
    // The same model as its own reasoner: the fused logits are 1.5x the backbone's, so the greedy choice is unchanged.
    const reasoner = join(scratch.dir, 'reasoner.gguf');
    await copyFile(backbone, reasoner);

    const model = await ChatReasoner.create({ backbone, reasoners: [{ module: reasoner, weight: 0.5 }], maxTokens: MAX, temperature: 0 });
    let reply;
    try {
      reply = await model.invoke([new HumanMessage('Once upon a time')]);
    } finally {
      await model.dispose();
    }
    // one conversion for both (same digest)
    expect(await readdir(join(scratch.cache, 'gguf'))).to.have.length(1);

    const [prompt] = await llamaCppTokenize(backbone, ['<s>Once upon a time'], true);
    expect(prompt).to.deep.equal([1, 403, 407, 261, 378]);
    expect(reply.usage_metadata?.input_tokens).to.equal(prompt!.length);
    const theirs = await llamaCppGreedy(backbone, prompt!, MAX);
    const tokenizer = await TextTokenizer.fromDirectory(await resolveModelPath(backbone));
    expect(reply.content).to.equal(tokenizer.decode(theirs));
    expect(String(reply.content)).to.match(/^, there was a little/);
  });
});
