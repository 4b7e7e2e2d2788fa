import { expect } from 'chai';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { InMemoryCache } from '@langchain/core/caches';
import { ChatReasoner, ReasonerLLM } from '../src/index.js';
import { pushModule } from '@reasonplug/core';
import { startOurRegistry, type OurRegistry } from '../../core/test/support/registries.js';
import { testDir } from '../../core/test/support/models.js';
import { PLAIN_TEMPLATE, cacheDir, makeModule, storiesConfig, storiesModule, withChatTemplate } from './support/modules.js';

describe('models with modules from a registry', function () {
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
      expect(a.response_metadata.reasoners).to.deep.equal([{ name: 'reg-math', weight: 0.7, mode: 'logits' }]);
    } finally {
      await Promise.all([remote.dispose(), local.dispose()]);
    }
  });

  it('identifies a reasoner given by a range by the version it loaded, so models before and after a push share no cache entry', async () => {
    const v1 = await makeModule({ name: 'range-math', config: storiesConfig({ hiddenSize: 32 }), seed: 41 });
    await pushModule(v1, `${registry.host}/acme/range-math:1.0.0`);
    const options = {
      backbone: await storiesModule(),
      reasoners: [{ module: 'acme/range-math@^1', weight: 3 }],
      registry: { registry: registry.host, cacheDir: testDir('plugin-range-cache') },
      cacheDir,
      maxTokens: 12,
    };
    const cache = new InMemoryCache();
    const before = await ReasonerLLM.create({ ...options, cache });
    const models = [before];
    try {
      const v2 = await makeModule({ name: 'range-math', config: storiesConfig({ hiddenSize: 32 }), seed: 77 });
      const manifest = JSON.parse(await readFile(join(v2, 'reasonplug.json'), 'utf8'));
      await writeFile(join(v2, 'reasonplug.json'), JSON.stringify({ ...manifest, version: '1.1.0' }));
      await pushModule(v2, `${registry.host}/acme/range-math:1.1.0`);
      const after = await ReasonerLLM.create({ ...options, cache });
      const uncached = await ReasonerLLM.create(options);
      models.push(after, uncached);
      const key = (m: ReasonerLLM) => m._getSerializedCacheKeyParametersForCall({} as never);
      expect(key(after)).to.not.equal(key(before));
      const first = await before.invoke('Once upon a time');
      const own = await uncached.invoke('Once upon a time');
      expect(own, 'the two versions answer differently').to.not.equal(first);
      expect(await after.invoke('Once upon a time')).to.equal(own);
    } finally {
      await Promise.all(models.map((m) => m.dispose()));
    }
  });
});
