import { expect } from 'chai';
import { join } from 'node:path';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { ChatReasoner } from '../src/index.js';
import { buildIdentityProjector, writeProjectorModel } from '@reasonplug/core';
import { PLAIN_TEMPLATE, cacheDir, storiesModule, withChatTemplate } from './support/modules.js';

describe('ChatReasoner with a LiteReason projector', function () {
  this.timeout(60_000);

  it('runs latent steps per the call policy and reports them in response_metadata', async () => {
    const backbone = await withChatTemplate(await storiesModule(), 'stories-latent', PLAIN_TEMPLATE);
    const projector = join(await mkdtemp(join(tmpdir(), 'rp-projector-')), 'identity.onnx');
    await writeProjectorModel(projector, buildIdentityProjector(64)); // stories260K's hidden size
    const model = await ChatReasoner.create({ backbone, projector, cacheDir, maxTokens: 6 });
    try {
      const thought = await model.withConfig({ latent: 'fixed:3' }).invoke('Once upon a time');
      expect(thought.response_metadata.latent).to.deep.equal({ policy: 'fixed:3', steps: 3 });
      expect(thought.usage_metadata?.output_tokens).to.equal(6);
      const plain = await model.invoke('Once upon a time');
      expect(plain.response_metadata.latent).to.deep.equal({ policy: 'marker', steps: 0 });
      const bad = await model.withConfig({ latent: 'fixed:0' }).invoke('x').catch((e: Error) => e);
      expect((bad as Error).message).to.match(/latent: expected marker, never or fixed:K/);
    } finally {
      await model.dispose();
    }
  });
});
