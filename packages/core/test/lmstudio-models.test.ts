/**
 * Models LM Studio has downloaded (`lmstudio://publisher/model[:QUANT]`, `lmstudio://publisher/model/file.gguf`):
 * folders laid out as LM Studio keeps them (`<root>/<publisher>/<model>/<file>.gguf`) holding the real stories260K.
 */
import { expect } from 'chai';
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { models } from '../../../test/support/paths.js';
import { LmStudioModelError, lmStudioModelFile } from '../src/modules/lmstudio-models.js';
import { listLocalModels } from '../src/modules/local-names.js';
import { thrown } from './support/assertions.js';
import { greedyFromEach } from './support/greedy-each.js';
import { testDir } from './support/models.js';

describe('models LM Studio has downloaded (lmstudio://)', function () {
  this.timeout(120_000);
  let home: string;
  let root: string;
  let older: string;

  before(async () => {
    home = testDir('lmstudio-home');
    root = join(home, '.lmstudio', 'models');
    older = join(home, '.cache', 'lm-studio', 'models');
    const put = async (base: string, path: string) => {
      await mkdir(join(base, path, '..'), { recursive: true });
      if (path.endsWith('.gguf') && !path.includes('mmproj')) await copyFile(models.stories260K, join(base, path));
      else await writeFile(join(base, path), 'not a model');
    };
    for (const f of ['stories-Q4_K_M.gguf', 'stories-Q8_0.gguf', 'mmproj-stories-f16.gguf']) await put(root, `lmstudio-community/Stories-GGUF/${f}`);
    await put(root, 'someone/tiny-GGUF/tiny.gguf');
    await put(root, 'mlx-community/Tiny-4bit/model.safetensors');
    await put(older, 'old/legacy-GGUF/legacy.Q8_0.gguf');
  });

  it('finds a model by quantization, the only file, Q4_K_M among several, a file by path, in either folder', () => {
    const at = (spec: string) => lmStudioModelFile(spec, [root, older]);
    const stories = join(root, 'lmstudio-community', 'Stories-GGUF');
    expect(at('lmstudio://lmstudio-community/Stories-GGUF:Q8_0')).to.equal(join(stories, 'stories-Q8_0.gguf'));
    expect(at('lmstudio://lmstudio-community/Stories-GGUF')).to.equal(join(stories, 'stories-Q4_K_M.gguf'));
    expect(at('lmstudio://LMStudio-Community/stories-gguf/stories-Q8_0.gguf')).to.equal(join(stories, 'stories-Q8_0.gguf'));
    expect(at('lmstudio://someone/tiny-GGUF')).to.equal(join(root, 'someone', 'tiny-GGUF', 'tiny.gguf'));
    expect(at('lmstudio://old/legacy-GGUF')).to.equal(join(older, 'old', 'legacy-GGUF', 'legacy.Q8_0.gguf'));
  });

  it('refuses what it cannot answer, naming it with what LM Studio has', () => {
    const refusal = (spec: string) => {
      const err = thrown(() => lmStudioModelFile(spec, [root, older]));
      expect(err, spec).to.be.instanceOf(LmStudioModelError);
      return err.message;
    };
    for (const spec of ['lmstudio://', 'lmstudio://pub', 'lmstudio://pub/../x', 'lmstudio://pub/m:Q8_0/f.gguf', 'lmstudio://../x']) expect(refusal(spec), spec).to.match(/is not an LM Studio model name/);
    expect(refusal('lmstudio://nobody/none')).to.equal(
      `lmstudio://nobody/none: LM Studio has not downloaded nobody/none into ${root} or ${older}; it has lmstudio-community/Stories-GGUF, mlx-community/Tiny-4bit, old/legacy-GGUF, someone/tiny-GGUF`,
    );
    expect(refusal('lmstudio://lmstudio-community/Stories-GGUF:Q6_K')).to.match(/no GGUF file of lmstudio-community\/Stories-GGUF is Q6_K; it has stories-Q4_K_M\.gguf, stories-Q8_0\.gguf$/);
    for (const spec of ['lmstudio://mlx-community/Tiny-4bit', 'lmstudio://mlx-community/Tiny-4bit:Q4_K_M']) {
      expect(refusal(spec)).to.equal(`${spec}: mlx-community/Tiny-4bit has no GGUF files (an MLX model is not read)`);
    }
    expect(refusal('lmstudio://someone/tiny-GGUF/other.gguf')).to.match(/other\.gguf is not among someone\/tiny-GGUF's files/);
  });

  it('lists every model by the name that loads it; the engine loads one by name as by path', async () => {
    const listed = await listLocalModels({ ollamaStores: [join(home, 'no-ollama')], hfCache: join(home, 'no-hf'), lmStudioRoots: [root, older] });
    expect(listed.map((m) => [m.name, m.refused ?? m.architecture])).to.deep.equal([
      ['lmstudio://lmstudio-community/Stories-GGUF/stories-Q4_K_M.gguf', 'llama'],
      ['lmstudio://lmstudio-community/Stories-GGUF/stories-Q8_0.gguf', 'llama'],
      ['lmstudio://mlx-community/Tiny-4bit', 'no GGUF files (an MLX model is not read)'],
      ['lmstudio://old/legacy-GGUF', 'llama'],
      ['lmstudio://someone/tiny-GGUF', 'llama'],
    ]);
    // By default LM Studio's folders are found under the home directory.
    const [direct, named] = await greedyFromEach([models.stories260K, 'lmstudio://someone/tiny-GGUF'], { HOME: home });
    expect(named).to.deep.equal(direct);
  });
});
