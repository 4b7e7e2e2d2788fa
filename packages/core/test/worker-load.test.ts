import { expect } from 'chai';
import { existsSync, readFileSync } from 'node:fs';
import { appendFile, mkdir, readdir, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { Tokenizer } from '@huggingface/tokenizers';
import { ModuleIntegrityError, writeModuleDir } from '../src/modules/module-dir.js';
import { randomLlamaWeights, writeLlamaModel } from '../src/onnx/llama-builder.js';
import type { LlamaConfig } from '../src/onnx/llama-spec.js';
import { findPreparedModel, prepareModel } from '../src/runtime/prepare-model.js';
import { TextTokenizer } from '../src/tokenizer/tokenizer.js';
import { rejection } from './support/assertions.js';
import { testDir } from './support/models.js';

const src = resolve(dirname(fileURLToPath(import.meta.url)), '../src');
const config: LlamaConfig = { vocabSize: 64, hiddenSize: 16, numLayers: 1, numHeads: 2, intermediateSize: 32 };

/** The modules `entry` loads when it is imported: static imports and re-exports that carry values (types are erased). */
function staticImports(entry: string): Set<string> {
  const seen = new Set<string>();
  const visit = (file: string) => {
    if (seen.has(file)) return;
    seen.add(file);
    if (!file.startsWith('/')) return;
    const source = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.ES2022);
    for (const node of source.statements) {
      let specifier: ts.Expression | undefined;
      if (ts.isImportDeclaration(node)) {
        const clause = node.importClause;
        const named = clause?.namedBindings;
        const values =
          !clause ||
          (!clause.isTypeOnly &&
            (clause.name !== undefined || (named !== undefined && (ts.isNamespaceImport(named) || named.elements.some((e) => !e.isTypeOnly)))));
        if (values) specifier = node.moduleSpecifier;
      } else if (ts.isExportDeclaration(node) && node.moduleSpecifier && !node.isTypeOnly) {
        const clause = node.exportClause;
        if (!clause || !ts.isNamedExports(clause) || clause.elements.some((e) => !e.isTypeOnly)) specifier = node.moduleSpecifier;
      }
      if (!specifier || !ts.isStringLiteral(specifier)) continue;
      const name = specifier.text;
      visit(name.startsWith('.') ? resolve(dirname(file), name.replace(/\.js$/, '.ts')) : name);
    }
  };
  visit(entry);
  return seen;
}

describe('model worker start-up', function () {
  this.timeout(60_000);

  it('the model workers load neither the manifest schema (zod) nor protobuf when handed their prepared models', () => {
    for (const worker of ['runtime/generation-worker.ts', 'runtime/lane-worker.ts']) {
      const loaded = staticImports(join(src, worker));
      expect(loaded.has(join(src, 'runtime/open-decoder.ts')), `${worker} reaches open-decoder.ts (the walk works)`).to.equal(true);
      for (const heavy of ['zod', 'onnx-proto', join(src, 'modules/manifest.ts'), join(src, 'onnx/proto.ts'), join(src, 'runtime/prepare-model.ts')]) {
        expect(loaded.has(heavy), `${worker} imports ${heavy}`).to.equal(false);
      }
    }
    // The engine's thread, where the prepared models are looked up, has them loaded anyway.
    expect(staticImports(join(src, 'engine.ts'))).to.include.members(['zod', 'onnx-proto', join(src, 'runtime/prepare-model.ts')]);
  });

  it('findPreparedModel gives what prepareModel gives once the graph is cached, and undefined (writing nothing) otherwise', async () => {
    const root = testDir('find-prepared');
    const module = join(root, 'module');
    await mkdir(module);
    await writeLlamaModel(join(module, 'model.onnx'), config, randomLlamaWeights(config, 3), {});
    await writeModuleDir(module, {
      name: 'find-prepared',
      version: '1.0.0',
      kind: 'backbone',
      tasks: ['math'],
      description: 'findPreparedModel test',
      license: 'MIT',
      compat: { tokenizer: `sha256:${'cd'.repeat(32)}`, vocabSize: 64 },
      files: { model: 'model.onnx' },
    });
    const cacheDir = join(root, 'prepared');

    expect(await findPreparedModel(module, cacheDir), 'not prepared yet').to.equal(undefined);
    expect(existsSync(cacheDir), 'a lookup writes no cache entry').to.equal(false);
    const prepared = await prepareModel(module, cacheDir);
    const entries = await readdir(cacheDir);
    expect(await findPreparedModel(module, cacheDir)).to.deep.equal(prepared);
    // Other adaptation options (the latent loop's) are another entry, not prepared yet.
    expect(await findPreparedModel(module, cacheDir, { latent: true })).to.equal(undefined);
    expect(await readdir(cacheDir)).to.deep.equal(entries);

    // A damaged module is not found; preparing it (as the model worker then does) reports why.
    await appendFile(join(module, 'model.onnx'), Buffer.from([0]));
    expect(await findPreparedModel(module, cacheDir)).to.equal(undefined);
    expect(await rejection(prepareModel(module, cacheDir))).to.be.instanceOf(ModuleIntegrityError);
    expect(await findPreparedModel(join(root, 'missing'), cacheDir)).to.equal(undefined);
  });
});

describe('tokenizer vocabulary size', () => {
  const added = (id: number, content: string) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  const tokenizers: Record<string, object> = {
    'BPE (token → id), an added token past the vocabulary': {
      model: { type: 'BPE', vocab: { a: 0, b: 1, ab: 2 }, merges: ['a b'], unk_token: null },
      added_tokens: [added(5, '<x>')],
    },
    'Unigram ([piece, score] by position), an added token inside it': {
      model: { type: 'Unigram', unk_id: 0, vocab: [['<unk>', 0], ['a', -1], ['b', -2], ['ab', -1.5]] },
      added_tokens: [added(0, '<unk>')],
    },
  };
  for (const [name, tokenizer] of Object.entries(tokenizers)) {
    it(`is what the library's get_vocab(true) spans: ${name}`, async () => {
      const dir = testDir('vocab-size');
      await writeFile(join(dir, 'tokenizer.json'), JSON.stringify({ version: '1.0', normalizer: null, pre_tokenizer: null, post_processor: null, decoder: null, ...tokenizer }));
      const library = new Tokenizer(JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8')), {});
      const ids = [...library.get_vocab(true).values()];
      expect((await TextTokenizer.fromDirectory(dir)).vocabSize).to.equal(Math.max(...ids) + 1);
    });
  }
});
