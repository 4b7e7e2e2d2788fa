/**
 * Chat templates that do not parse raise `ChatTemplateError` from `ChatReasoner.create`, saying so: the backbone's
 * (naming the file it came from) once the engine is loaded, one given as `chatTemplate` before anything loads.
 */
import { expect } from 'chai';
import { join } from 'node:path';
import { ChatReasoner, ChatTemplateError } from '../src/index.js';
import { cacheDir, storiesModule, withChatTemplate } from './support/modules.js';

/** Ends inside its loop: the jinja parser fails with a TypeError of its own. */
const UNCLOSED = '{% for m in messages %}\n{{ m.content }}\n';
/** `}` where `}}` belongs. */
const MISTYPED = '{% for m in messages %}{{ m.content }{% endfor %}';

describe('ChatReasoner with a chat template that does not parse', function () {
  this.timeout(60_000);

  it("raises ChatTemplateError naming the backbone's file", async () => {
    for (const [name, template] of [['unclosed', UNCLOSED], ['mistyped', MISTYPED]] as const) {
      const backbone = await withChatTemplate(await storiesModule(), `stories-${name}`, template);
      const err = await ChatReasoner.create({ backbone, cacheDir }).catch((e: Error) => e);
      expect(err, name).to.be.instanceOf(ChatTemplateError);
      expect((err as Error).message, name).to.match(new RegExp(`^${join(backbone, 'tokenizer_config.json').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: chat template does not parse: `));
    }
  });

  it('refuses a chatTemplate option that does not parse before loading anything', async () => {
    // The backbone does not exist: loading it would fail otherwise.
    const err = await ChatReasoner.create({ backbone: '/nonexistent/backbone', chatTemplate: MISTYPED }).catch((e: Error) => e);
    expect(err).to.be.instanceOf(ChatTemplateError);
    expect((err as Error).message).to.match(/^the given chat template does not parse: Parser Error/);
    // Given, it wins over the backbone's own template, which is then not needed.
    const backbone = await withChatTemplate(await storiesModule(), 'stories-overridden', UNCLOSED);
    const model = await ChatReasoner.create({ backbone, cacheDir, maxTokens: 4, chatTemplate: '{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}' });
    try {
      expect((await model.invoke('Once upon a time')).content).to.match(/^, there was/);
    } finally {
      await model.dispose();
    }
  });
});
