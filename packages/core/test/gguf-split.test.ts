/**
 * Split GGUFs as gguf-split writes them (Qwen's own GGUF repositories ship their files in shards): opened from the
 * first shard, converted to the same module as the whole file (byte for byte), run to llama.cpp's tokens on the same
 * shards, known in the cache by all shards' contents; a missing shard or a later shard given first is refused by name.
 */
import { expect } from 'chai';
import { readdirSync } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Engine } from '../src/engine.js';
import { convertGguf } from '../src/gguf/convert.js';
import { ggufModuleDir } from '../src/gguf/gguf-module.js';
import { GgufError, GgufFile } from '../src/gguf/reader.js';
import { llamaCppGreedy, storiesTokenizerMeta, writeRandomGguf } from './support/gguf-models.js';
import { splitGguf } from './support/gguf-writer.js';
import { useTempCache } from './support/temp-cache.js';

const PROMPT = [1, 403, 407, 261, 378, 432, 383];

describe('split GGUFs (gguf-split shards; llama.cpp is the reference)', function () {
  this.timeout(120_000);
  const scratch = useTempCache('reasonplug-gguf-split-');
  let whole: string;
  let shards: string[];

  before(async () => {
    whole = join(scratch.dir, 'whole.gguf');
    await writeRandomGguf(whole, { arch: 'llama', hidden: 64, layers: 3, heads: 4, kvHeads: 2, ff: 96, untied: true, seed: 21 }, await storiesTokenizerMeta());
    shards = await splitGguf(whole, join(scratch.dir, 'model'), 3);
  });

  it('opens from the first shard with every tensor, and converts to the module of the whole file', async () => {
    const f = await GgufFile.open(shards[0]!);
    try {
      expect(f.shardPaths).to.deep.equal(shards);
      const one = await GgufFile.open(whole);
      try {
        expect(f.tensors.map((t) => t.name)).to.deep.equal(one.tensors.map((t) => t.name));
        expect(new Set(f.tensors.map((t) => t.shard))).to.deep.equal(new Set([0, 1, 2]));
        for (const t of one.tensors) expect(Buffer.from(await f.readTensorBytes(t.name)).equals(Buffer.from(await one.readTensorBytes(t.name))), t.name).to.equal(true);
      } finally {
        await one.close();
      }
    } finally {
      await f.close();
    }
    const fromShards = await convertGguf(shards[0]!, join(scratch.dir, 'from-shards'));
    const fromWhole = await convertGguf(whole, join(scratch.dir, 'from-whole'));
    expect((await readFile(join(fromShards.dir, 'model.onnx'))).equals(await readFile(join(fromWhole.dir, 'model.onnx')))).to.equal(true);
    expect(fromShards.manifest.provenance.convertedFrom.file).to.equal('model-00001-of-00003.gguf');
    expect(fromShards.manifest.provenance.convertedFrom.sha256).to.not.equal(fromWhole.manifest.provenance.convertedFrom.sha256);
  });

  it("runs to llama.cpp's greedy tokens on the same shards, given as the first shard's path", async () => {
    const theirs = await llamaCppGreedy(shards[0]!, PROMPT, 16);
    expect(new Set(theirs).size, `llama.cpp's tokens ${theirs}`).to.be.greaterThan(3);
    const engine = await Engine.load({ model: shards[0]! });
    try {
      const { rows } = await engine.generate({ promptIds: PROMPT }, { maxTokens: 16 });
      expect(rows[0]!.ids.slice(0, theirs.length)).to.deep.equal(theirs);
    } finally {
      await engine.dispose();
    }
  });

  it('is cached by all shards: a changed later shard makes a new module', async () => {
    const cacheDir = join(scratch.dir, 'cache');
    const first = await ggufModuleDir(shards[0]!, { cacheDir });
    expect(await ggufModuleDir(shards[0]!, { cacheDir })).to.equal(first);
    // the last shard rewritten with other values of the same shapes
    const other = join(scratch.dir, 'other.gguf');
    await writeRandomGguf(other, { arch: 'llama', hidden: 64, layers: 3, heads: 4, kvHeads: 2, ff: 96, untied: true, seed: 22 }, await storiesTokenizerMeta());
    const otherShards = await splitGguf(other, join(scratch.dir, 'other'), 3);
    await writeFile(shards[2]!, await readFile(otherShards[2]!));
    expect(await ggufModuleDir(shards[0]!, { cacheDir })).to.not.equal(first);
  });

  it('refuses a missing shard and a later shard given first, by name, and leaves no file open', async () => {
    const openFiles = () => readdirSync('/proc/self/fd').length;
    const before = openFiles();
    const later = await GgufFile.open(shards[1]!).catch((e: unknown) => e);
    expect(later).to.be.instanceOf(GgufError).and.have.property('code', 'missing-shard');
    expect((later as Error).message).to.match(/model-00002-of-00003\.gguf is shard 2 of a GGUF split into 3 files; open its first shard, named "<name>-00001-of-00003\.gguf"/);
    const gone = join(scratch.dir, 'gone');
    const [a] = await splitGguf(whole, gone, 2);
    await rm(`${gone}-00002-of-00002.gguf`);
    const missing = await GgufFile.open(a!).catch((e: unknown) => e);
    expect(missing).to.be.instanceOf(GgufError).and.have.property('code', 'missing-shard');
    expect((missing as Error).message).to.match(/shard 2 \(gone-00002-of-00002\.gguf\) is missing/);
    expect(openFiles()).to.equal(before);
  });
});
