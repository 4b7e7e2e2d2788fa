import { expect } from 'chai';
import { cp, mkdir, readdir, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { convertGguf } from '../src/gguf/convert.js';
import { locateModel } from '../src/modules/locate.js';
import { ManifestError, parseManifest, type ModuleManifest } from '../src/modules/manifest.js';
import { loadModuleDir, ModuleIntegrityError, tokenizerFingerprintOfDir, writeModuleDir, type ModuleDirInit } from '../src/modules/module-dir.js';
import { randomLlamaWeights, writeLlamaModel } from '../src/onnx/llama-builder.js';
import { smallConfig, testDir } from './support/models.js';
import { rejection } from './support/assertions.js';

const STORIES = new URL('../../../../shared/models/stories260K/stories260K.gguf', import.meta.url).pathname;
const HEX = 'ab'.repeat(32);
const FINGERPRINT = `sha256:${'cd'.repeat(32)}`;

function validManifest(): Record<string, any> {
  return {
    schemaVersion: 1,
    name: 'math-reasoner',
    version: '1.2.0-beta.1',
    kind: 'backbone',
    tasks: ['math'],
    description: 'A test module.',
    license: 'mit',
    compat: { tokenizer: FINGERPRINT, vocabSize: 96 },
    files: { model: { path: 'model.onnx', sha256: HEX, size: 10 } },
  };
}

/** The ManifestError lines that `mutate` causes in an otherwise valid manifest. */
function refusal(mutate: (m: Record<string, any>) => void): string[] {
  const m = validManifest();
  mutate(m);
  try {
    parseManifest(m, 'reasonplug.json');
  } catch (err) {
    expect(err).to.be.instanceOf(ManifestError);
    expect((err as ManifestError).source).to.equal('reasonplug.json');
    return (err as ManifestError).message.split('\n');
  }
  throw new Error('the manifest was accepted');
}

describe('module manifest', () => {
  it('accepts each kind with the sections it needs, and free-form provenance', () => {
    expect(parseManifest(validManifest(), 'x')).to.deep.equal(validManifest());
    const reasoner = { ...validManifest(), kind: 'logit-reasoner', composition: { defaultWeight: 0.5, mode: 'logprobs' } };
    expect(parseManifest(reasoner, 'x')).to.deep.equal(reasoner);
    const projector = {
      ...validManifest(),
      kind: 'latent-projector',
      compat: { tokenizer: FINGERPRINT, vocabSize: 96, hiddenSize: 32 },
      latent: { open: '<implicit_thought>', close: '</implicit_thought>', maxSteps: 32 },
      provenance: { trainedWith: 'litereason', backbone: 'qwen2.5-0.5b@1.0.0', notes: { epochs: 3 } },
      generation: { bosTokenId: 1, eosTokenIds: [2, 3] },
    };
    expect(parseManifest(projector, 'x')).to.deep.equal(projector);
    for (const name of ['a', 'qwen2.5-math_1.5b', 'x'.repeat(128)]) expect(parseManifest({ ...validManifest(), name }, 'x').name).to.equal(name);
    // 2: the same fields over a graph that may return new keys and values only.
    expect(parseManifest({ ...validManifest(), schemaVersion: 2 }, 'x')).to.deep.equal({ ...validManifest(), schemaVersion: 2 });
  });

  const cases: [string, (m: Record<string, any>) => void, RegExp][] = [
    ['a wrong schemaVersion', (m) => (m.schemaVersion = 3), /^reasonplug\.json: schemaVersion: is 3, .*reads only schemaVersion 1 and 2; upgrade reasonplug/],
    ['a missing schemaVersion', (m) => delete m.schemaVersion, /^reasonplug\.json: schemaVersion: missing; expected 1 or 2$/],
    ['an upper-case name', (m) => (m.name = 'Math'), /^reasonplug\.json: name: expected lower-case letters/],
    ['a name with a doubled separator', (m) => (m.name = 'math--reasoner'), /^reasonplug\.json: name: expected lower-case/],
    ['a name over 128 characters', (m) => (m.name = 'x'.repeat(129)), /^reasonplug\.json: name: must be at most 128 characters, got 129$/],
    ['a version that is not semver', (m) => (m.version = '1.2'), /^reasonplug\.json: version: "1\.2" is not a semantic version/],
    ['a version with a "v" prefix', (m) => (m.version = 'v1.2.3'), /^reasonplug\.json: version: "v1\.2\.3" is not a semantic version/],
    ['an unknown kind', (m) => (m.kind = 'adapter'), /^reasonplug\.json: kind: expected one of "backbone", "logit-reasoner", "latent-projector", got "adapter"$/],
    ['an upper-case task tag', (m) => (m.tasks = ['math', 'Code']), /^reasonplug\.json: tasks\[1\]: expected a lower-case tag/],
    ['a bad tokenizer fingerprint', (m) => (m.compat.tokenizer = HEX), /^reasonplug\.json: compat\.tokenizer: expected "sha256:"/],
    ['a zero vocabSize', (m) => (m.compat.vocabSize = 0), /^reasonplug\.json: compat\.vocabSize: must be > 0, got 0$/],
    ['a fractional hiddenSize', (m) => (m.compat.hiddenSize = 1.5), /^reasonplug\.json: compat\.hiddenSize: expected an integer, got 1\.5$/],
    ['a reasoner without composition', (m) => (m.kind = 'logit-reasoner'), /^reasonplug\.json: composition: required for kind "logit-reasoner"/],
    ['an unknown composition mode', (m) => (m.composition = { defaultWeight: 1, mode: 'probs' }), /^reasonplug\.json: composition\.mode: expected one of "logits", "logprobs", got "probs"$/],
    ['a projector without latent', (m) => ((m.kind = 'latent-projector'), (m.compat.hiddenSize = 8)), /^reasonplug\.json: latent: required for kind "latent-projector"/],
    [
      'a projector without compat.hiddenSize',
      (m) => ((m.kind = 'latent-projector'), (m.latent = { open: '<t>', close: '</t>', maxSteps: 4 })),
      /^reasonplug\.json: compat\.hiddenSize: required for kind "latent-projector"/,
    ],
    ['too many latent steps', (m) => (m.latent = { open: '<t>', close: '</t>', maxSteps: 1025 }), /^reasonplug\.json: latent\.maxSteps: must be <= 1024, got 1025$/],
    ['a missing model file entry', (m) => (m.files = { tokenizer: m.files.model }), /^reasonplug\.json: files\.model: missing; every module lists its ONNX graph/],
    ['a file entry given as a bare path', (m) => ((m.files as Record<string, unknown>).model = 'model.onnx'), /^reasonplug\.json: files\.model: expected \{ path, sha256, size \}.*got "model\.onnx"/],
    ['a bad sha256', (m) => (m.files.model.sha256 = 'abc'), /^reasonplug\.json: files\.model\.sha256: expected 64 hex characters/],
    ['an upper-case sha256', (m) => (m.files.model.sha256 = HEX.toUpperCase()), /^reasonplug\.json: files\.model\.sha256: expected 64 hex characters/],
    ['a negative size', (m) => (m.files.model.size = -1), /^reasonplug\.json: files\.model\.size: must be >= 0, got -1$/],
    ['a path leaving the directory', (m) => (m.files.model.path = '../x'), /^reasonplug\.json: files\.model\.path: "\.\.\/x" leaves the module directory/],
    ['a ".." inside a path', (m) => (m.files.data = { ...m.files.model, path: 'a/../../x' }), /^reasonplug\.json: files\.data\.path: "a\/\.\.\/\.\.\/x" leaves the module directory/],
    ['an absolute path', (m) => (m.files.model.path = '/etc/passwd'), /^reasonplug\.json: files\.model\.path: "\/etc\/passwd" is absolute/],
    ['a Windows drive path', (m) => (m.files.model.path = 'C:/model.onnx'), /^reasonplug\.json: files\.model\.path: "C:\/model\.onnx" is absolute/],
    ['a backslash in a path', (m) => (m.files.model.path = 'onnx\\model.onnx'), /^reasonplug\.json: files\.model\.path: .* contains a backslash/],
    ['an unnormalized path', (m) => (m.files.model.path = './model.onnx'), /^reasonplug\.json: files\.model\.path: "\.\/model\.onnx" is not normalized/],
    ['the manifest listed as a file', (m) => (m.files.model.path = 'reasonplug.json'), /^reasonplug\.json: files\.model\.path: "reasonplug\.json" is the manifest itself/],
    ['two entries with one path', (m) => (m.files.copy = { ...m.files.model }), /^reasonplug\.json: files\.copy\.path: "model\.onnx" is already listed as files\.model$/],
    ['a negative eos id', (m) => (m.generation = { eosTokenIds: [2, -1] }), /^reasonplug\.json: generation\.eosTokenIds\[1\]: must be >= 0, got -1$/],
    ['a misspelled field', (m) => (m.compat.hiddensize = 8), /^reasonplug\.json: compat\.hiddensize: unknown field/],
    ['a provenance.convertedFrom of the wrong type', (m) => (m.provenance = { convertedFrom: 3 }), /^reasonplug\.json: provenance\.convertedFrom: expected a string or an object$/],
  ];
  for (const [what, mutate, line] of cases) {
    it(`refuses ${what}, naming the field`, () => {
      const lines = refusal(mutate);
      expect(lines).to.have.lengthOf(1, lines.join('\n'));
      expect(lines[0]).to.match(line);
    });
  }

  it('reports every problem at once, one line each, and non-objects plainly', () => {
    const lines = refusal((m) => {
      m.version = 'latest';
      m.files.model.sha256 = 'xyz';
      delete m.license;
    });
    expect(lines).to.deep.equal([
      'reasonplug.json: version: "latest" is not a semantic version (e.g. "1.0.0", "2.1.0-beta.1")',
      'reasonplug.json: license: missing; expected a string',
      "reasonplug.json: files.model.sha256: expected 64 hex characters (the file's SHA-256, lower-case)",
    ]);
    expect(() => parseManifest([1], 'm.json')).to.throw(ManifestError, /^m\.json: expected an object, got an array$/);
  });
});

describe('module directories', () => {
  let stories: string;
  let converted: ModuleManifest;

  before(async () => {
    const res = await convertGguf(STORIES, join(testDir('stories'), 'module'));
    stories = res.dir;
    converted = res.manifest; // also checks at compile time that the converter's manifest type fits the schema's
  });

  /** A fresh copy of the converted module, to damage. */
  async function storiesCopy(): Promise<string> {
    const dir = join(testDir('copy'), 'module');
    await cp(stories, dir, { recursive: true });
    return dir;
  }

  it('validates and loads a module converted from stories260K', async () => {
    expect(parseManifest(converted, 'converted')).to.deep.equal(converted);
    const loaded = await loadModuleDir(stories);
    expect(loaded.dir).to.equal(stories);
    expect(loaded.manifest).to.deep.equal(JSON.parse(await readFile(join(stories, 'reasonplug.json'), 'utf8')));
    expect(loaded.files).to.deep.equal({
      model: join(stories, 'model.onnx'),
      tokenizer: join(stories, 'tokenizer.json'),
      tokenizerConfig: join(stories, 'tokenizer_config.json'),
    });
    expect(await tokenizerFingerprintOfDir(stories)).to.equal(converted.compat.tokenizer);

    const location = await locateModel(stories);
    expect(location).to.deep.include({ modelPath: join(stories, 'model.onnx'), tokenizerDir: stories, generation: { bosTokenId: 1, eosTokenIds: [2] } });
    expect(location.manifest).to.deep.equal(loaded.manifest);
  });

  it('refuses a file with one byte flipped, naming it and both hashes; verify: false skips the hash', async () => {
    const dir = await storiesCopy();
    const path = join(dir, 'model.onnx');
    const bytes = await readFile(path);
    bytes[bytes.length >> 1] ^= 0xff;
    await writeFile(path, bytes);
    const err = await rejection(loadModuleDir(dir));
    expect(err).to.be.instanceOf(ModuleIntegrityError);
    expect(err).to.include({ file: 'model', path, problem: 'sha256', expected: converted.files.model.sha256 });
    expect((err as ModuleIntegrityError).actual).to.match(/^[0-9a-f]{64}$/).and.not.equal(converted.files.model.sha256);
    expect(err.message).to.contain(path).and.contain(converted.files.model.sha256).and.match(/download the module again/).and.contain("write the module again (with the command that made it").and.not.contain("reasonplug pack");
    await rejection(locateModel(dir)).then((e) => expect(e).to.be.instanceOf(ModuleIntegrityError));
    expect((await loadModuleDir(dir, { verify: false })).files.model).to.equal(path);
  });

  it('refuses a truncated file by its size, even without verification', async () => {
    const dir = await storiesCopy();
    const path = join(dir, 'tokenizer.json');
    await truncate(path, 100);
    for (const verify of [true, false]) {
      const err = await rejection(loadModuleDir(dir, { verify }));
      expect(err).to.be.instanceOf(ModuleIntegrityError);
      expect(err).to.include({ file: 'tokenizer', path, problem: 'size', expected: converted.files.tokenizer.size, actual: 100 });
      expect(err.message).to.contain(`is 100 bytes but the manifest says ${converted.files.tokenizer.size}`);
    }
  });

  it('refuses a missing file, a missing manifest and a manifest that is not JSON', async () => {
    const dir = await storiesCopy();
    await rm(join(dir, 'tokenizer_config.json'));
    const missing = await rejection(loadModuleDir(dir));
    expect(missing).to.be.instanceOf(ModuleIntegrityError).and.include({ file: 'tokenizerConfig', problem: 'missing' });
    expect(missing.message).to.contain(join(dir, 'tokenizer_config.json')).and.contain('missing');

    await rm(join(dir, 'reasonplug.json'));
    const noManifest = await rejection(loadModuleDir(dir));
    expect(noManifest).to.be.instanceOf(ManifestError);
    expect(noManifest.message).to.equal(`${join(dir, 'reasonplug.json')}: not found, so ${dir} is not a module directory; make one with \`reasonplug convert\` (or writeModuleDir in code)`);

    await writeFile(join(dir, 'reasonplug.json'), '{ "schemaVersion": 1,');
    const notJson = await rejection(loadModuleDir(dir));
    expect(notJson).to.be.instanceOf(ManifestError);
    expect(notJson.message).to.match(/reasonplug\.json: not valid JSON/);
  });

  it('refuses a manifest that is a directory by its path, not as a bare EISDIR', async () => {
    const dir = await storiesCopy();
    const manifest = join(dir, 'reasonplug.json');
    await rm(manifest);
    await mkdir(manifest);
    const err = await rejection(loadModuleDir(dir));
    expect(err).to.be.instanceOf(ManifestError);
    expect(err.message).to.contain(`${manifest}: is a directory, not the module's manifest file; download the module again`);
  });

  it('refuses an invalid manifest on disk, naming the file and the field', async () => {
    const dir = await storiesCopy();
    const manifest = JSON.parse(await readFile(join(dir, 'reasonplug.json'), 'utf8'));
    manifest.files.model.path = '../../model.onnx';
    await writeFile(join(dir, 'reasonplug.json'), JSON.stringify(manifest));
    const err = await rejection(locateModel(dir));
    expect(err).to.be.instanceOf(ManifestError);
    expect(err.message).to.equal(`${join(dir, 'reasonplug.json')}: files.model.path: "../../model.onnx" leaves the module directory (".." is not allowed)`);
  });

  describe('writeModuleDir', () => {
    let dir: string;
    const init = (): ModuleDirInit => ({
      name: 'small-reasoner',
      version: '0.2.0',
      kind: 'logit-reasoner',
      tasks: ['math', 'gsm8k'],
      description: 'A random test reasoner.',
      license: 'apache-2.0',
      compat: { tokenizer: converted.compat.tokenizer, vocabSize: smallConfig.vocabSize },
      composition: { defaultWeight: 1, mode: 'logits' },
      provenance: { trainedWith: 'test', backbone: 'stories260k@0.1.0' },
      files: { tokenizer: 'tokenizer.json', model: 'onnx/model.onnx' },
    });

    before(async () => {
      dir = testDir('written');
      await mkdir(join(dir, 'onnx'));
      await writeLlamaModel(join(dir, 'onnx', 'model.onnx'), smallConfig, randomLlamaWeights(smallConfig, 3, 0.08));
      await cp(join(stories, 'tokenizer.json'), join(dir, 'tokenizer.json'));
    });

    it('writes a manifest that loadModuleDir accepts, in a stable form, atomically', async () => {
      const manifest = await writeModuleDir(dir, init());
      const text = await readFile(join(dir, 'reasonplug.json'), 'utf8');
      expect(text).to.equal(JSON.stringify(manifest, null, 2) + '\n');
      expect(Object.keys(manifest)).to.deep.equal([
        'schemaVersion', 'name', 'version', 'kind', 'tasks', 'description', 'license', 'compat', 'composition', 'files', 'provenance',
      ]);
      expect(Object.keys(manifest.files)).to.deep.equal(['model', 'tokenizer']);
      expect(manifest.files.tokenizer).to.deep.equal(converted.files.tokenizer);
      expect(manifest.files.model.path).to.equal('onnx/model.onnx');

      const loaded = await loadModuleDir(dir);
      expect(loaded.manifest).to.deep.equal(manifest);
      expect(loaded.files.model).to.equal(join(dir, 'onnx', 'model.onnx'));

      expect(await writeModuleDir(dir, init())).to.deep.equal(manifest);
      expect(await readFile(join(dir, 'reasonplug.json'), 'utf8')).to.equal(text);
      expect((await readdir(dir)).sort()).to.deep.equal(['onnx', 'reasonplug.json', 'tokenizer.json']);
    });

    it('refuses an invalid manifest before reading any file, and a file that is not there', async () => {
      const outside = await rejection(writeModuleDir(dir, { ...init(), files: { model: '../secret.onnx' } }));
      expect(outside).to.be.instanceOf(ManifestError);
      expect(outside.message).to.match(/reasonplug\.json: files\.model\.path: "\.\.\/secret\.onnx" leaves the module directory/);

      const noComposition = { ...init() };
      delete noComposition.composition;
      expect(await rejection(writeModuleDir(dir, noComposition))).to.be.instanceOf(ManifestError).with.property('message').that.match(/composition: required/);

      const missing = await rejection(writeModuleDir(dir, { ...init(), files: { model: 'onnx/model.onnx', extra: 'nope.bin' } }));
      expect(missing).to.be.instanceOf(ModuleIntegrityError).and.include({ file: 'extra', problem: 'missing' });
      expect(missing.message).to.contain(join(dir, 'nope.bin')).and.contain('does not exist');
    });
  });

  describe('tokenizerFingerprintOfDir', () => {
    it('is the same for one vocabulary in two directories, different for another, undefined without tokenizer.json', async () => {
      const tj = JSON.parse(await readFile(join(stories, 'tokenizer.json'), 'utf8'));
      const same = testDir('same-tokenizer');
      await writeFile(join(same, 'tokenizer.json'), JSON.stringify(tj)); // another layout of the same file
      expect(await tokenizerFingerprintOfDir(same)).to.equal(await tokenizerFingerprintOfDir(stories));

      const vocab = tj.model.vocab;
      if (Array.isArray(vocab)) vocab[100][0] = '▁renamed';
      else {
        const [token, id] = Object.entries(vocab)[100] as [string, number];
        delete vocab[token];
        vocab['▁renamed'] = id;
      }
      const other = testDir('other-tokenizer');
      await writeFile(join(other, 'tokenizer.json'), JSON.stringify(tj));
      const fingerprint = await tokenizerFingerprintOfDir(other);
      expect(fingerprint).to.match(/^sha256:[0-9a-f]{64}$/).and.not.equal(converted.compat.tokenizer);

      expect(await tokenizerFingerprintOfDir(testDir('no-tokenizer'))).to.equal(undefined);
    });
  });
});
