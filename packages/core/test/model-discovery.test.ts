/**
 * Finding models where other tools leave them, in the shapes those tools really write: huggingface_hub's revisions
 * (`refs/refs/pr/1`, branch names with `/`, a commit downloaded by hash or a ref moved on), repositories of no
 * organization (`models--gpt2`), projectors by header, its cache's environment variables; LM Studio's home pointer
 * and settings; scheme names in any case; and the names those tools' users type without a scheme.
 */
import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { models } from '../../../test/support/paths.js';
import { GgufValueType } from '../src/gguf/reader.js';
import { ggufModels } from '../src/modules/gguf-pick.js';
import { HfCacheError, hfCachePath, hfCacheRoot, isHfRef } from '../src/modules/hf-cache.js';
import { isLmStudioRef, lmStudioModelFile, lmStudioRoots } from '../src/modules/lmstudio-models.js';
import { listLocalModels, localModelPath } from '../src/modules/local-names.js';
import { ModelNotFoundError } from '../src/modules/locate.js';
import { isOllamaRef } from '../src/modules/ollama-store.js';
import { resolveModelPath } from '../src/registry/resolve-model.js';
import { rejection, thrown } from './support/assertions.js';
import { runReasonplug } from './support/cli.js';
import { makeGguf } from './support/gguf-writer.js';
import { cliGreedyText, withEnv } from './support/greedy-each.js';
import { testDir } from './support/models.js';

const C1 = '1'.repeat(40);
const C2 = '2'.repeat(40);
const C3 = '3'.repeat(40);
const GONE = '5'.repeat(40);

/**
 * Writes `files` as commit `commit` of repository `id` the way huggingface_hub does: blobs named by content, links to
 * them under `snapshots/<commit>/`, and `refs/<revision>` holding the commit for each of `refs`.
 */
async function writeRepo(cache: string, id: string, commit: string, refs: string[], files: Record<string, Buffer | string>): Promise<string> {
  const repo = join(cache, `models--${id.replace('/', '--')}`);
  const snap = join(repo, 'snapshots', commit);
  await mkdir(snap, { recursive: true });
  for (const [path, bytes] of Object.entries(files)) {
    const blob = join(repo, 'blobs', createHash('sha256').update(bytes).digest('hex'));
    await mkdir(dirname(blob), { recursive: true });
    await writeFile(blob, bytes);
    await mkdir(dirname(join(snap, path)), { recursive: true });
    await symlink(relative(dirname(join(snap, path)), blob), join(snap, path));
  }
  for (const ref of refs) {
    await mkdir(dirname(join(repo, 'refs', ref)), { recursive: true });
    await writeFile(join(repo, 'refs', ref), commit);
  }
  return snap;
}

/** A vision projector as llama.cpp writes one, its keys in the sorted order Ollama writes them (`clip.*` first). */
function projector(): Buffer {
  const f32 = (v: number) => ({ t: 'f32' as const, v });
  return makeGguf(
    {
      'clip.has_vision_encoder': { t: 'bool', v: true },
      'clip.vision.image_mean': { t: 'arr', item: GgufValueType.FLOAT32, v: [f32(0.5), f32(0.5), f32(0.5)] },
      'clip.vision.projector_type': { t: 'str', v: 'mlp' },
      'general.architecture': { t: 'str', v: 'clip' },
    },
    [{ name: 'mm.0.weight', dims: [4, 2], type: 0, data: new Uint8Array(32) }],
  );
}

describe('finding models where other tools keep them', function () {
  this.timeout(120_000);
  let cache: string;
  let gguf: Buffer;

  before(async () => {
    cache = join(testDir('discovery'), 'hub');
    gguf = await readFile(models.stories260K);
    await writeRepo(cache, 'someone/pr-GGUF', C1, ['main'], { 'pr-Q4_K_M.gguf': gguf });
    // `hf download --revision refs/pr/1` writes refs/refs/pr/1; a branch may be named feature/x.
    await writeRepo(cache, 'someone/pr-GGUF', C2, ['refs/pr/1', 'feature/x'], { 'pr-Q8_0.gguf': gguf });
    await writeRepo(cache, 'stories260k', C1, ['main'], { 'stories260k.gguf': gguf });
    await writeRepo(cache, 'tiny', C1, ['main'], { 'tiny-Q8_0.gguf': gguf, 'tiny-Q4_0.gguf': gguf });
    // Downloaded by commit only (`hf download --revision <sha>`): no refs.
    await writeRepo(cache, 'someone/pinned-GGUF', C3, [], { 'pinned-Q8_0.gguf': gguf });
    // main has moved on to a commit never downloaded; the old snapshot is still there.
    const moved = await writeRepo(cache, 'someone/moved-GGUF', C1, [], { 'moved-Q8_0.gguf': gguf });
    await mkdir(join(moved, '..', '..', 'refs'));
    await writeFile(join(moved, '..', '..', 'refs', 'main'), GONE);
    // As xtuner/llava-phi-3-8b-gguf names them: the projector's name does not begin with mmproj.
    await writeRepo(cache, 'xtuner/llava-gguf', C1, ['main'], {
      'llava-f16.gguf': gguf,
      'llava-mmproj-f16.gguf': projector(),
      'mmproj-unread.gguf': 'no GGUF header: the name decides',
    });
  });

  it("reads revisions as huggingface_hub writes them: refs/pr/1 in folders, branch names with /, a file after the revision", () => {
    const at = (spec: string) => hfCachePath(spec, cache);
    const pr = join(cache, 'models--someone--pr-GGUF', 'snapshots', C2, 'pr-Q8_0.gguf');
    expect(at('hf://someone/pr-GGUF@refs/pr/1')).to.equal(pr);
    expect(at('hf://someone/pr-GGUF@refs/pr/1:Q8_0')).to.equal(pr);
    expect(at('hf://someone/pr-GGUF@feature/x')).to.equal(pr);
    expect(at('hf://someone/pr-GGUF@refs/pr/1/pr-Q8_0.gguf')).to.equal(pr);
    expect(at(`hf://someone/pr-GGUF@${C2}/pr-Q8_0.gguf`)).to.equal(pr);
    const refusal = (spec: string) => {
      const err = thrown(() => at(spec));
      expect(err, spec).to.be.instanceOf(HfCacheError);
      return err.message;
    };
    // The refs listed are refs, not the folder refs/ that holds a pull request's.
    expect(refusal('hf://someone/pr-GGUF@v9')).to.equal(
      `hf://someone/pr-GGUF@v9: revision v9 of someone/pr-GGUF is not in the cache; it has commits ${C1} (main), ${C2} (feature/x, refs/pr/1), loaded as hf://someone/pr-GGUF@<commit>; hf download someone/pr-GGUF --revision v9`,
    );
    expect(refusal('hf://someone/pr-GGUF@refs/pr/2:Q8_0')).to.match(/revision refs\/pr\/2 of someone\/pr-GGUF is not in the cache; .*; hf download someone\/pr-GGUF --revision refs\/pr\/2$/);
    expect(refusal('hf://someone/pr-GGUF@refs')).to.match(/^hf:\/\/someone\/pr-GGUF@refs: revision refs of someone\/pr-GGUF is not in the cache;/);
  });

  it('takes repositories of no organization (models--gpt2) by the names the listing gives them', async () => {
    expect(hfCachePath('hf://stories260k', cache)).to.equal(join(cache, 'models--stories260k', 'snapshots', C1, 'stories260k.gguf'));
    expect(hfCachePath('hf://Stories260K@main', cache)).to.equal(join(cache, 'models--stories260k', 'snapshots', C1, 'stories260k.gguf'));
    expect(hfCachePath('hf://tiny:Q4_0', cache)).to.equal(join(cache, 'models--tiny', 'snapshots', C1, 'tiny-Q4_0.gguf'));
    expect(thrown(() => hfCachePath('hf://tiny', cache)).message).to.match(/tiny has 2 GGUF files in the cache \(tiny-Q4_0\.gguf, tiny-Q8_0\.gguf\); choose one/);
    const listed = await listLocalModels({ ollamaStores: [join(cache, 'no-ollama')], hfCache: cache, lmStudioRoots: [] });
    const names = listed.map((m) => m.name);
    expect(names).to.include.members(['hf://stories260k', 'hf://tiny/tiny-Q4_0.gguf', 'hf://tiny/tiny-Q8_0.gguf']);
    for (const m of listed.filter((m) => m.path !== undefined)) expect(hfCachePath(m.name, cache), m.name).to.equal(m.path);
  });

  it('says which commits a repository has, and lists a snapshot no ref names by its commit', async () => {
    const refusal = (spec: string) => {
      const err = thrown(() => hfCachePath(spec, cache));
      expect(err, spec).to.be.instanceOf(HfCacheError);
      return err.message;
    };
    expect(refusal('hf://someone/pinned-GGUF')).to.equal(
      `hf://someone/pinned-GGUF: revision main of someone/pinned-GGUF is not in the cache; it has commit ${C3} (no ref names it), loaded as hf://someone/pinned-GGUF@${C3}; hf download someone/pinned-GGUF --revision main`,
    );
    expect(refusal('hf://someone/moved-GGUF')).to.equal(
      `hf://someone/moved-GGUF: revision main of someone/moved-GGUF is not in the cache (main names commit ${GONE}, whose files are not there); it has commit ${C1} (no ref names it), loaded as hf://someone/moved-GGUF@${C1}; hf download someone/moved-GGUF --revision main`,
    );
    const listed = await listLocalModels({ ollamaStores: [join(cache, 'no-ollama')], hfCache: cache, lmStudioRoots: [] });
    const of = (prefix: string) => listed.filter((m) => m.name.startsWith(prefix)).map((m) => [m.name, m.refused ?? m.architecture]);
    expect(of('hf://someone/pinned-GGUF')).to.deep.equal([[`hf://someone/pinned-GGUF@${C3}`, 'llama']]);
    expect(of('hf://someone/moved-GGUF')).to.deep.equal([
      ['hf://someone/moved-GGUF', `main names commit ${GONE}, which is not in the cache`],
      [`hf://someone/moved-GGUF@${C1}`, 'llama'],
    ]);
    // A snapshot a ref names is listed by the ref (main) or not at all (refs/pr/1 is asked for by name).
    expect(of('hf://someone/pr-GGUF')).to.deep.equal([['hf://someone/pr-GGUF', 'llama']]);
    expect(hfCachePath(`hf://someone/pinned-GGUF@${C3}`, cache)).to.equal(join(cache, 'models--someone--pinned-GGUF', 'snapshots', C3, 'pinned-Q8_0.gguf'));
  });

  it("leaves out a vision projector by its header's architecture (clip), by its name where no header is read", () => {
    const snap = join(cache, 'models--xtuner--llava-gguf', 'snapshots', C1);
    expect(ggufModels(snap)).to.deep.equal(['llava-f16.gguf']);
    expect(hfCachePath('hf://xtuner/llava-gguf', cache)).to.equal(join(snap, 'llava-f16.gguf'));
  });

  it('finds the cache as huggingface_hub does: HUGGINGFACE_HUB_CACHE, and ~, $VAR and ${VAR} expanded', () => {
    const home = '/home/u';
    expect(hfCacheRoot({ HOME: home, HUGGINGFACE_HUB_CACHE: '/legacy' })).to.equal('/legacy');
    expect(hfCacheRoot({ HOME: home, HUGGINGFACE_HUB_CACHE: '/legacy', HF_HUB_CACHE: '/new' })).to.equal('/new');
    expect(hfCacheRoot({ HOME: home, HF_HOME: '/h', HUGGINGFACE_HUB_CACHE: '/legacy' })).to.equal('/legacy');
    expect(hfCacheRoot({ HOME: home, HF_HOME: '~/hfhome' })).to.equal('/home/u/hfhome/hub');
    expect(hfCacheRoot({ HOME: home, HF_HUB_CACHE: '$HOME/hub' })).to.equal('/home/u/hub');
    expect(hfCacheRoot({ HOME: home, DISK: '/mnt/d', HF_HUB_CACHE: '${DISK}/hf/$UNSET' })).to.equal('/mnt/d/hf/$UNSET');
    expect(hfCacheRoot({ HOME: home, XDG_CACHE_HOME: '~/xdg' })).to.equal('/home/u/xdg/huggingface/hub');
    expect(hfCacheRoot({ HOME: home, HF_HOME: '/a~b' })).to.equal('/a~b/hub');
  });

  it('takes the schemes in any case', async () => {
    for (const spec of ['HF://a/b', 'HuggingFace://a/b']) expect(isHfRef(spec), spec).to.equal(true);
    expect(isOllamaRef('Ollama://stories:260k')).to.equal(true);
    expect(isLmStudioRef('LMStudio://a/b')).to.equal(true);
    expect(isHfRef('hff://a/b')).to.equal(false);
    await withEnv({ HF_HUB_CACHE: cache }, async () => {
      expect(await localModelPath('HF://stories260k')).to.equal(hfCachePath('hf://stories260k', cache));
    });
  });

  it("finds LM Studio's models where its home pointer and its settings put them", async () => {
    const home = testDir('lmstudio-pointer');
    const moved = join(home, 'elsewhere', 'lmstudio');
    const downloads = join(home, 'big-disk', 'models');
    await mkdir(moved, { recursive: true });
    await writeFile(join(home, '.lmstudio-home-pointer'), `${moved}\n`);
    expect(lmStudioRoots(home)).to.deep.equal([join(moved, 'models'), join(home, '.lmstudio', 'models'), join(home, '.cache', 'lm-studio', 'models')]);
    // `downloadsFolder` of the home's settings.json, as LM Studio's own `lms import` reads it.
    await writeFile(join(moved, 'settings.json'), JSON.stringify({ downloadsFolder: downloads }));
    expect(lmStudioRoots(home)[0]).to.equal(downloads);
    await mkdir(join(downloads, 'lmstudio-community', 'single-GGUF'), { recursive: true });
    await writeFile(join(downloads, 'lmstudio-community', 'single-GGUF', 'single-Q8_0.gguf'), gguf);
    await withEnv({ HOME: home }, async () => {
      expect(lmStudioModelFile('lmstudio://lmstudio-community/single-GGUF')).to.equal(join(downloads, 'lmstudio-community', 'single-GGUF', 'single-Q8_0.gguf'));
    });
    // A pointer to no folder is passed over.
    await writeFile(join(home, '.lmstudio-home-pointer'), join(home, 'gone'));
    expect(lmStudioRoots(home)).to.deep.equal([join(home, '.lmstudio', 'models'), join(home, '.cache', 'lm-studio', 'models')]);
  });

  it("says how a name typed without a scheme loads where Ollama, the Hugging Face cache or LM Studio has it, for --model and pull", async () => {
    const home = testDir('typed-names');
    await mkdir(join(home, '.lmstudio', 'models', 'lmstudio-community', 'single-GGUF'), { recursive: true });
    await writeFile(join(home, '.lmstudio', 'models', 'lmstudio-community', 'single-GGUF', 'single-Q8_0.gguf'), gguf);
    const store = join(home, 'ollama');
    const digest = createHash('sha256').update(gguf).digest('hex');
    await mkdir(join(store, 'blobs'), { recursive: true });
    await writeFile(join(store, 'blobs', `sha256-${digest}`), gguf);
    await mkdir(join(store, 'manifests', 'registry.ollama.ai', 'library', 'stories'), { recursive: true });
    const layer = { mediaType: 'application/vnd.ollama.image.model', digest: `sha256:${digest}`, size: gguf.length };
    await writeFile(join(store, 'manifests', 'registry.ollama.ai', 'library', 'stories', '260k'), JSON.stringify({ schemaVersion: 2, layers: [layer] }));
    const env = { HOME: home, HF_HUB_CACHE: cache, OLLAMA_MODELS: store, REASONPLUG_CACHE: testDir('typed-names-cache'), REASONPLUG_OFFLINE: '1' };

    await withEnv(env, async () => {
      const hint = async (spec: string) => {
        const err = await rejection(resolveModelPath(spec));
        expect(err, spec).to.be.instanceOf(ModelNotFoundError);
        return err.message;
      };
      expect(await hint('someone/pr-GGUF:Q8_0')).to.equal('someone/pr-GGUF:Q8_0 is neither a path nor a registry reference, and the Hugging Face cache has someone/pr-GGUF: --model hf://someone/pr-GGUF:Q8_0');
      expect(await hint('lmstudio-community/single-GGUF')).to.equal(
        'lmstudio-community/single-GGUF is neither a path nor a registry reference, and LM Studio has lmstudio-community/single-GGUF: --model lmstudio://lmstudio-community/single-GGUF',
      );
    });
    const pulled = await runReasonplug(['pull', 'stories:260k'], env);
    expect(pulled.code).to.not.equal(0);
    expect(pulled.stderr).to.contain('; Ollama has pulled stories:260k: reasonplug pull ollama://stories:260k');
    const hf = await runReasonplug(['pull', 'someone/pr-GGUF:Q8_0'], env);
    expect(hf.stderr).to.contain('; the Hugging Face cache has someone/pr-GGUF: reasonplug pull hf://someone/pr-GGUF:Q8_0');
    // The name so given loads, its scheme in any case: the same story as the file's.
    expect(await cliGreedyText('HF://stories260k', env)).to.equal(await cliGreedyText(models.stories260K, env));
  });
});
