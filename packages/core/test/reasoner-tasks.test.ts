/**
 * Reasoners found by task (`Engine.load`'s `reasonerTasks`, `--reasoner-task`): the registry's logit-reasoner for the
 * task whose tokenizer is the backbone's, pulled and named after the task. The trained example modules on
 * reasonplug-registry; the same composition with the reasoner given by path is the reference.
 */
import { expect } from 'chai';
import { join } from 'node:path';
import { Engine } from '../src/engine.js';
import { ModuleNotFoundError, RegistryClientError } from '../src/registry/errors.js';
import { pushModule } from '../src/registry/push.js';
import { startServer } from '../src/serve/server.js';
import { repoRoot } from '../../../test/support/paths.js';
import { rejection } from './support/assertions.js';
import { runReasonplug } from './support/cli.js';
import { testDir } from './support/models.js';
import { startOurRegistry, type OurRegistry } from './support/registries.js';

const example = (name: string) => join(repoRoot, 'examples', 'modules', name);
const PROMPT = 'Q: 17+25=? A:';

describe('reasoners found by task in the registry', function () {
  this.timeout(120_000);
  let registry: OurRegistry;
  const backbone = example('toy-backbone-s');

  before(async () => {
    registry = await startOurRegistry();
    for (const name of ['toy-math-reasoner', 'toy-cipher-reasoner', 'toy-math-policy']) await pushModule(example(name), `${registry.host}/examples/${name}:1.0.0`);
  });
  after(() => registry?.close());

  const greedy = async (engine: Engine) => {
    try {
      return (await engine.generate({ prompt: PROMPT }, { maxTokens: 12 })).rows[0]!.text;
    } finally {
      await engine.dispose();
    }
  };

  it("composes the task's reasoner, named after the task, as the same reasoner given by path", async () => {
    const opts = { registry: { registry: registry.host, cacheDir: testDir('tasks-cache') } };
    const byTask = await Engine.load({ model: backbone, reasonerTasks: [{ task: 'math', weight: 1 }], ...opts });
    expect(byTask.info.reasoners.map((r) => r.name)).to.deep.equal(['math']);
    const byPath = await Engine.load({ model: backbone, reasoners: [{ model: example('toy-math-reasoner'), name: 'math', weight: 1 }] });
    expect(await greedy(byTask)).to.equal(await greedy(byPath));
  });

  it('refuses a task no reasoner of the backbone serves, and a task several repositories serve, naming them', async () => {
    const opts = { registry: { registry: registry.host, cacheDir: testDir('tasks-refused') } };
    const none = await rejection(Engine.load({ model: backbone, reasonerTasks: [{ task: 'poetry' }], ...opts }));
    expect(none).to.be.instanceOf(ModuleNotFoundError);
    expect(none.message).to.match(/has no logit-reasoner for task "poetry" that composes with this backbone \(tokenizer sha256:[0-9a-f]{64}\)/);
    await pushModule(example('toy-cipher-reasoner'), `${registry.host}/others/toy-cipher-reasoner:1.0.0`);
    const two = await rejection(Engine.load({ model: backbone, reasonerTasks: [{ task: 'cipher' }], ...opts }));
    expect(two).to.be.instanceOf(RegistryClientError);
    expect(two.message).to.match(/several logit-reasoners for task "cipher" .*\(examples\/toy-cipher-reasoner, others\/toy-cipher-reasoner\); name the one to use/);
  });

  it('--reasoner-task in generate and serve: the same text as --reasoner, served as <backbone>+<task>', async () => {
    const env = { REASONPLUG_REGISTRY: registry.host, REASONPLUG_CACHE: testDir('tasks-cli') };
    const byTask = await runReasonplug(['generate', '--model', backbone, '--reasoner-task', 'math=1', '--prompt', PROMPT, '--max-tokens', '12', '--json'], env);
    expect(byTask.code, byTask.stderr).to.equal(0);
    const byPath = await runReasonplug(['generate', '--model', backbone, '--reasoner', `${example('toy-math-reasoner')}=1`, '--prompt', PROMPT, '--max-tokens', '12', '--json'], env);
    expect((JSON.parse(byTask.stdout) as { text: string }).text).to.equal((JSON.parse(byPath.stdout) as { text: string }).text);
    const bad = await runReasonplug(['generate', '--model', backbone, '--reasoner-task', 'a+b', '--prompt', PROMPT], env);
    expect(bad.code).to.not.equal(0);
    expect(bad.stderr).to.match(/--reasoner-task a\+b: expected TASK\[=WEIGHT\]/);

    const server = await startServer({ engine: { model: backbone, reasonerTasks: [{ task: 'math' }], registry: { registry: registry.host, cacheDir: env.REASONPLUG_CACHE } }, port: 0 });
    try {
      await server.ready;
      const { data } = (await (await fetch(`${server.url}/v1/models`)).json()) as { data: { id: string }[] };
      expect(data.map((m) => m.id)).to.include('toy-backbone-s+math');
    } finally {
      await server.close();
    }
  });
});
