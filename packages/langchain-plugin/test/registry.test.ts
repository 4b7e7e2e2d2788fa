import { expect } from 'chai';
import { ChatReasoner } from '../src/index.js';
import { pushModule } from '@reasonplug/core';
import { startOurRegistry, type OurRegistry } from '../../core/test/support/registries.js';
import { testDir } from '../../core/test/support/models.js';
import { PLAIN_TEMPLATE, cacheDir, makeModule, storiesConfig, storiesModule, withChatTemplate } from './support/modules.js';

describe('ChatReasoner with modules from a registry', function () {
  this.timeout(90_000);
  let registry: OurRegistry;
  before(async () => {
    registry = await startOurRegistry();
  });
  after(() => registry?.close());

  it('takes registry references for the backbone and reasoners, and answers as the local modules do', async () => {
    const backbone = await withChatTemplate(await storiesModule(), 'stories-reg', PLAIN_TEMPLATE);
    const reasoner = await makeModule({ name: 'reg-math', config: storiesConfig({ hiddenSize: 32 }), seed: 41 });
    await pushModule(backbone, `${registry.host}/acme/stories-reg:0.1.0`);
    await pushModule(reasoner, `${registry.host}/acme/reg-math:1.0.0`);
    const pulls = testDir('plugin-registry-cache');
    const remote = await ChatReasoner.create({
      backbone: 'acme/stories-reg@^0.1',
      reasoners: [{ module: 'acme/reg-math@^1', weight: 0.7 }],
      registry: { registry: registry.host, cacheDir: pulls },
      cacheDir,
      maxTokens: 8,
    });
    const local = await ChatReasoner.create({ backbone, reasoners: [{ module: reasoner, weight: 0.7 }], cacheDir, maxTokens: 8 });
    try {
      const [a, b] = [await remote.invoke('Once upon a time'), await local.invoke('Once upon a time')];
      expect(a.text).to.equal(b.text);
      expect(a.response_metadata.reasoners).to.deep.equal([{ name: 'reg-math', weight: 0.7 }]);
    } finally {
      await Promise.all([remote.dispose(), local.dispose()]);
    }
  });
});
