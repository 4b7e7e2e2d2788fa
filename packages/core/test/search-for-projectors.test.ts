/** `reasonplug search --for MODEL` and latent-projectors: besides the tokenizer, the model's hidden size must match. */
import { expect } from 'chai';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Engine } from '../src/engine.js';
import { tokenizerFingerprintOfDir, writeModuleDir } from '../src/modules/module-dir.js';
import { buildProjectorModel, randomProjectorWeights, writeProjectorModel } from '../src/onnx/projector-builder.js';
import { pullModule } from '../src/registry/pull.js';
import { pushModule } from '../src/registry/push.js';
import { runReasonplug } from './support/cli.js';
import { cacheDir, testDir } from './support/models.js';
import { makeModule, storiesConfig } from './support/modules.js';
import { distributionMissing, makeRegistryModule, startDistribution, startOurRegistry, type RunningRegistry } from './support/registries.js';

/** The backbone's hidden size. */
const H = 48;

/** A latent-projector module with a real projector graph of hidden size `hidden`, for the tokenizer `fingerprint`. */
async function projectorModule(name: string, version: string, hidden: number, fingerprint: string): Promise<string> {
  const dir = join(testDir(`${name}-${version}`), name);
  await mkdir(dir, { recursive: true });
  await writeProjectorModel(join(dir, 'model.onnx'), buildProjectorModel({ hiddenSize: hidden }, randomProjectorWeights({ hiddenSize: hidden }, 3)));
  await writeModuleDir(dir, {
    name,
    version,
    kind: 'latent-projector',
    tasks: ['math'],
    description: `projector of hidden size ${hidden}`,
    license: 'MIT',
    compat: { tokenizer: fingerprint, vocabSize: 512, hiddenSize: hidden },
    latent: { open: '<implicit_thought>', close: '</implicit_thought>', maxSteps: 8 },
    files: { model: 'model.onnx' },
  });
  return dir;
}

type Hits = { name: string; versions: { version: string; kind: string }[] }[];

describe('reasonplug search --for MODEL: latent-projectors of its hidden size only', function () {
  this.timeout(120_000);
  let backbone: string;
  let fingerprint: string;

  before(async () => {
    backbone = await makeModule({ name: 'search-for-backbone', kind: 'backbone', config: storiesConfig({ hiddenSize: H }), seed: 31 });
    fingerprint = (await tokenizerFingerprintOfDir(backbone))!;
  });

  /** Pushes the modules every case searches: projectors of the backbone's and of another hidden size, and a backbone. */
  async function publish(host: string): Promise<void> {
    await pushModule(await projectorModule('think-48', '1.0.0', H, fingerprint), `${host}/acme/think-48:1.0.0`);
    // A newer version of the same repository for another backbone: only that version is left out.
    await pushModule(await projectorModule('think-48', '1.1.0', 32, fingerprint), `${host}/acme/think-48:1.1.0`);
    await pushModule(await projectorModule('think-32', '1.0.0', 32, fingerprint), `${host}/acme/think-32:1.0.0`);
    await pushModule(await makeRegistryModule({ name: 'helper', tasks: ['math'], tokenizer: fingerprint }), `${host}/acme/helper:1.0.0`);
  }

  async function search(host: string, args: string[]): Promise<[string, string[]][]> {
    const found = await runReasonplug(['search', '--task', 'math', '--registry', host, '--json', ...args], { REASONPLUG_CACHE: testDir('search-for-cache') });
    expect(found.code, found.stderr).to.equal(0);
    return (JSON.parse(found.stdout) as Hits).map((h) => [h.name, h.versions.map((v) => `${v.version} ${v.kind}`)] as [string, string[]]).sort();
  }

  const registries: [string, () => Promise<RunningRegistry>][] = [
    ['reasonplug-registry (its search extension)', () => startOurRegistry()],
    ['CNCF distribution (its catalog)', () => startDistribution()],
  ];
  for (const [label, start] of registries) {
    it(`leaves out the projector versions of another hidden size, and keeps the other kinds: ${label}`, async function () {
      if (label.startsWith('CNCF') && distributionMissing()) this.skip();
      const registry = await start();
      try {
        await publish(registry.host);
        // The tokenizer alone lists every projector.
        expect(await search(registry.host, ['--kind', 'latent-projector', '--tokenizer', fingerprint])).to.deep.equal([
          ['acme/think-32', ['1.0.0 latent-projector']],
          ['acme/think-48', ['1.1.0 latent-projector', '1.0.0 latent-projector']],
        ]);
        expect(await search(registry.host, ['--kind', 'latent-projector', '--for', backbone])).to.deep.equal([['acme/think-48', ['1.0.0 latent-projector']]]);
        expect(await search(registry.host, ['--for', backbone])).to.deep.equal([
          ['acme/helper', ['1.0.0 backbone']],
          ['acme/think-48', ['1.0.0 latent-projector']],
        ]);
      } finally {
        await registry.close();
      }
    });
  }

  it('lists what the engine runs with the model, and leaves out what it refuses', async () => {
    const registry = await startOurRegistry();
    try {
      await publish(registry.host);
      expect(await search(registry.host, ['--kind', 'latent-projector', '--for', backbone])).to.deep.equal([['acme/think-48', ['1.0.0 latent-projector']]]);
      const pulled = { cacheDir: testDir('search-for-pulled') };
      const listed = (await pullModule(`${registry.host}/acme/think-48@1.0.0`, pulled)).dir;
      const engine = await Engine.load({ model: backbone, projector: listed, cacheDir });
      await engine.dispose();
      const leftOut = (await pullModule(`${registry.host}/acme/think-48@1.1.0`, pulled)).dir;
      const err = await Engine.load({ model: backbone, projector: leftOut, cacheDir }).catch((e: Error) => e);
      expect((err as Error).name).to.equal('ProjectorError');
      expect((err as Error).message).to.match(/hidden size 32 but the backbone's hidden size is 48/);
    } finally {
      await registry.close();
    }
  });
});
