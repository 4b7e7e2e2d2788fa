import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { buildProgram } from '../src/cli/main.js';
import { HfCacheError } from '../src/modules/hf-cache.js';
import { DtypeError } from '../src/modules/hub-variants.js';
import { loadModuleDir, writeModuleDir } from '../src/modules/module-dir.js';
import { quantizeModel } from '../src/modules/quantize-module.js';
import { QuantizeError } from '../src/onnx/quantize/quantize-graph.js';
import { DataType, makeNode, makeTensor, readModel, writeModel, type ModelProto, type NodeProto, type TensorProto } from '../src/onnx/proto.js';
import { pullModule } from '../src/registry/pull.js';
import { pushModule } from '../src/registry/push.js';
import { resolveModule } from '../src/registry/lookup.js';
import { bareGreedy } from './support/bare-loop.js';
import { cliPath } from './support/cli.js';
import { testDir } from './support/models.js';
import { makeModule, storiesConfig } from './support/modules.js';
import { startOurRegistry } from './support/registries.js';

const config = storiesConfig({ hiddenSize: 64, intermediateSize: 128 });
const EXPORT_FILES = ['model.onnx', 'tokenizer.json', 'tokenizer_config.json'];

/** A copy of module `src` in a new folder, its manifest at `version`. */
async function withVersion(src: string, version: string): Promise<string> {
  const dir = join(testDir('qsrc-version'), 'module');
  await mkdir(dir);
  const { files, ...fields } = (await loadModuleDir(src)).manifest;
  for (const entry of Object.values(files)) await copyFile(join(src, entry.path), join(dir, entry.path));
  await writeModuleDir(dir, { ...fields, version, files: Object.fromEntries(Object.entries(files).map(([key, entry]) => [key, entry.path])) });
  return dir;
}

/** The module's model and tokenizer files in `dir`, as a plain export holds them. */
async function plainExport(module: string, dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  for (const f of EXPORT_FILES) await copyFile(join(module, f), join(dir, f));
  return dir;
}

/**
 * Stores the float matrices `pick` chooses (a node and its input's index) as onnxruntime's quantizer does with
 * QuantFormat.QDQ: int8 codes with one scale, read through a DequantizeLinear placed before the node. Returns how many.
 */
function storeAsQdq(model: ModelProto, pick: (node: NodeProto, input: number) => boolean): number {
  const graph = model.graph!;
  const inits = new Map((graph.initializer ?? []).map((t) => [t.name!, t as TensorProto]));
  const replaced = new Set<string>();
  const nodes: NodeProto[] = [];
  for (const node of graph.node as NodeProto[]) {
    node.input!.forEach((name, i) => {
      const t = inits.get(name);
      if (!t || t.dataType !== DataType.FLOAT || t.dims!.length !== 2 || !pick(node, i)) return;
      const raw = t.rawData!;
      const values = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
      const scale = values.reduce((m, v) => Math.max(m, Math.abs(v)), 0) / 127;
      const codes = Int8Array.from(values, (v) => Math.round(v / scale));
      graph.initializer!.push(
        makeTensor(`${name}_quantized`, DataType.INT8, t.dims!.map(Number), new Uint8Array(codes.buffer)),
        makeTensor(`${name}_scale`, DataType.FLOAT, [], Float32Array.of(scale)),
      );
      nodes.push(makeNode('DequantizeLinear', [`${name}_quantized`, `${name}_scale`], [`${name}_dequantized`]));
      node.input![i] = `${name}_dequantized`;
      replaced.add(name);
    });
    nodes.push(node);
  }
  graph.node = nodes;
  graph.initializer = graph.initializer!.filter((t) => !replaced.has(t.name!));
  return replaced.size;
}

describe('reasonplug quantize: sources, versions and writes', function () {
  this.timeout(120_000);
  let backbone: string;
  before(async () => {
    backbone = await makeModule({ name: 'qsrc', config, kind: 'backbone', seed: 5 });
  });

  it('derives no version for a prerelease module (the copy would outrank it); one given is pushed beside it, ranges and latest keeping to the original', async () => {
    const beta = await withVersion(backbone, '2.0.0-beta.1');
    const root = testDir('qsrc-pre');
    const err = await quantizeModel(beta, join(root, 'derived')).catch((e: Error) => e);
    expect(err).to.be.instanceOf(QuantizeError);
    expect((err as Error).message).to.match(/qsrc@2\.0\.0-beta\.1 is a prerelease, and its copy as 2\.0\.0-beta\.1\.q4 would rank above it .*--copy-version/);
    expect(await readdir(root)).to.deep.equal([]);
    // Not semver as a manifest takes it; equal to the original's in precedence (build metadata does not count).
    for (const [version, message] of [
      ['v2.0.0-beta.0', /"v2\.0\.0-beta\.0" is not a semantic version/],
      ['2.0.0-beta.1+q4', /2\.0\.0-beta\.1\+q4 ranks as the original's, 2\.0\.0-beta\.1/],
    ] as const) {
      const bad = await quantizeModel(beta, join(root, 'bad'), { version }).catch((e: Error) => e);
      expect(bad, version).to.be.instanceOf(QuantizeError);
      expect((bad as Error).message).to.match(message);
    }
    // A plain export and an .onnx file have no version to give.
    const file = await quantizeModel(join(beta, 'model.onnx'), join(root, 'file.onnx'), { version: '1.0.0' }).catch((e: Error) => e);
    expect((file as Error).message).to.match(/is an \.onnx file, which has no version/);
    expect(await readdir(root)).to.deep.equal([]);

    const q4 = join(root, 'q4');
    await buildProgram().parseAsync(['node', 'reasonplug', 'quantize', beta, q4, '--copy-version', '2.0.0-beta.0.q4']);
    const copy = (await loadModuleDir(q4)).manifest;
    expect(copy.version).to.equal('2.0.0-beta.0.q4');
    expect(copy.provenance?.quantization).to.include({ from: 'qsrc@2.0.0-beta.1', bits: 4 });
    const registry = await startOurRegistry();
    try {
      const repo = `${registry.host}/acme/qsrc`;
      await pushModule(beta, `${repo}:2.0.0-beta.1`);
      await pushModule(q4, `${repo}:2.0.0-beta.0.q4`);
      const opts = { cacheDir: testDir('qsrc-pre-cache') };
      expect((await resolveModule(`${repo}:latest`, opts)).version).to.equal('2.0.0-beta.1');
      expect((await resolveModule(`${repo}@^2.0.0-beta.1`, opts)).version).to.equal('2.0.0-beta.1');
      const pulled = await pullModule(`${repo}:2.0.0-beta.0.q4`, opts);
      expect((await loadModuleDir(pulled.dir)).manifest.provenance?.quantization).to.include({ bits: 4 });
    } finally {
      await registry.close();
    }
  });

  it('refuses QDQ-format weights (DequantizeLinear of int8 constants) as already quantized, by name; QDQ activations are quantized as before', async () => {
    const root = testDir('qsrc-qdq');
    const cases = [
      // onnxruntime's quantizer leaving the LM head float (a common exclusion), every MatMul, the embedding table alone
      // (q, k and v each through the Concat that joins them for their MatMul)
      { name: 'layers', pick: (n: NodeProto, i: number) => (n.opType === 'MatMul' && i === 1 && !n.input![1]!.startsWith('lm_head')) || n.opType === 'Concat', count: 14 },
      { name: 'all', pick: (n: NodeProto, i: number) => (n.opType === 'MatMul' && i === 1) || n.opType === 'Concat', count: 15 },
      { name: 'embedding', pick: (n: NodeProto, i: number) => n.opType === 'Gather' && i === 0, count: 1 },
    ];
    for (const { name, pick, count } of cases) {
      const model = await readModel(join(backbone, 'model.onnx'));
      expect(storeAsQdq(model, pick), name).to.equal(count);
      const path = join(root, `${name}.onnx`);
      await writeModel(path, model);
      expect(await bareGreedy(path, [1, 72, 19], 4), name).to.have.length(4); // a graph onnxruntime runs
      const err = await quantizeModel(path, join(root, `${name}-q4.onnx`)).catch((e: Error) => e);
      expect(err, name).to.be.instanceOf(QuantizeError);
      expect((err as Error).message, name).to.contain(`is already quantized (${count} DequantizeLinear node${count > 1 ? 's' : ''}); quantize the original float model instead`);
    }
    // A quantize-dequantize pair on an activation leaves the weights float.
    const model = await readModel(join(backbone, 'model.onnx'));
    const graph = model.graph!;
    const at = graph.node!.findIndex((n) => n.opType === 'MatMul' && n.input![1] === 'model.layers.0.self_attn.qkv_proj.weight.T');
    const x = graph.node![at]!.input![0]!;
    graph.initializer!.push(makeTensor('act_scale', DataType.FLOAT, [], Float32Array.of(0.05)), makeTensor('act_zero', DataType.UINT8, [], Uint8Array.of(128)));
    graph.node!.splice(at, 0, makeNode('QuantizeLinear', [x, 'act_scale', 'act_zero'], ['act_q']), makeNode('DequantizeLinear', ['act_q', 'act_scale', 'act_zero'], ['act_dq']));
    graph.node![at + 2]!.input![0] = 'act_dq';
    const path = join(root, 'activations.onnx');
    await writeModel(path, model);
    const { report } = await quantizeModel(path, join(root, 'activations-q4.onnx'));
    expect(report.matmuls).to.equal(11);
    expect(await bareGreedy(join(root, 'activations-q4.onnx'), [1, 72, 19], 4)).to.have.length(4);
  });

  it("quantizes a hub export's float graph where its config.json picks a quantized one, saying so; dtype picks as loading does", async () => {
    const root = testDir('qsrc-dtype');
    // (laid out as transformers.js downloads an export: graphs in onnx/, the rest beside it)
    const hub = join(root, 'hub');
    await mkdir(join(hub, 'onnx'), { recursive: true });
    for (const f of EXPORT_FILES) await copyFile(join(backbone, f), join(hub, f === 'model.onnx' ? 'onnx/model.onnx' : f));
    await quantizeModel(join(hub, 'onnx', 'model.onnx'), join(hub, 'onnx', 'model_q4.onnx'));
    await writeFile(join(hub, 'config.json'), JSON.stringify({ model_type: 'llama', 'transformers.js_config': { dtype: 'q4' } }));

    const out = join(root, 'hub-q4');
    const result = await quantizeModel(hub, out);
    expect(result.variant).to.deep.equal({ dtype: 'fp32', passedOver: 'q4' });
    expect((await readdir(out)).sort()).to.deep.equal(['config.json', 'model.onnx', 'tokenizer.json', 'tokenizer_config.json']);
    // The float graph, quantized as it is alone.
    expect(Buffer.compare(await readFile(join(out, 'model.onnx')), await readFile(join(hub, 'onnx', 'model_q4.onnx')))).to.equal(0);

    const fp32 = join(root, 'hub-fp32-q8');
    await buildProgram().parseAsync(['node', 'reasonplug', 'quantize', hub, fp32, '--dtype', 'fp32', '--bits', '8']);
    expect(existsSync(join(fp32, 'tokenizer.json'))).to.equal(true);
    const asked = await quantizeModel(hub, join(root, 'hub-q4-q4'), { dtype: 'q4' }).catch((e: Error) => e);
    expect((asked as Error).message).to.match(/model_q4\.onnx is already quantized \(11 com\.microsoft::MatMulNBits nodes\)/);
    const missing = await quantizeModel(hub, join(root, 'hub-fp16'), { dtype: 'fp16' }).catch((e: Error) => e);
    expect(missing).to.be.instanceOf(DtypeError);
    const module = await quantizeModel(backbone, join(root, 'module'), { dtype: 'fp32' }).catch((e: Error) => e);
    expect(module).to.be.instanceOf(DtypeError);
    expect((module as Error).message).to.match(/is a module directory, which holds one graph/);
  });

  it('refuses hub names of GGUF files before pulling anything, reads other hub names from the cache alone, and takes file: URLs', async () => {
    const root = testDir('qsrc-names');
    const requests: string[] = [];
    const hub = createServer((req, res) => {
      requests.push(req.url ?? '');
      res.writeHead(404).end();
    });
    await new Promise<void>((done) => hub.listen(0, '127.0.0.1', done));
    const saved = { HF_ENDPOINT: process.env['HF_ENDPOINT'], HF_HUB_CACHE: process.env['HF_HUB_CACHE'] };
    process.env['HF_ENDPOINT'] = `http://127.0.0.1:${(hub.address() as AddressInfo).port}`;
    process.env['HF_HUB_CACHE'] = join(root, 'hf-cache');
    try {
      for (const name of ['hf://acme/tiny-GGUF:Q4_K_M', 'huggingface://acme/tiny-GGUF@main:Q8_0', 'hf://acme/tiny-GGUF/tiny-Q4_K_M.gguf']) {
        const err = await quantizeModel(name, join(root, 'gguf')).catch((e: Error) => e);
        expect(err, name).to.be.instanceOf(QuantizeError);
        expect((err as Error).message, name).to.contain(`${name} is a GGUF file, and quantize reads ONNX: convert it first (reasonplug convert gguf ${name} DIR)`);
      }
      const absent = await quantizeModel('hf://acme/absent', join(root, 'absent')).catch((e: Error) => e);
      expect(absent).to.be.instanceOf(HfCacheError);
      expect((absent as Error).message).to.contain('is not in the Hugging Face cache');
      expect(requests).to.deep.equal([]);

      // an export directory the cache holds
      const commit = 'a'.repeat(40);
      const repo = join(root, 'hf-cache', 'models--acme--tiny');
      await plainExport(backbone, join(repo, 'snapshots', commit));
      await mkdir(join(repo, 'refs'));
      await writeFile(join(repo, 'refs', 'main'), commit);
      const fromHub = await quantizeModel('hf://acme/tiny', join(root, 'hub-q4'));
      expect(fromHub.report.matmuls).to.equal(11);
      expect(existsSync(join(root, 'hub-q4', 'tokenizer.json'))).to.equal(true);
    } finally {
      for (const [key, value] of Object.entries(saved)) {
        if (value === undefined) delete process.env[key];
        else process.env[key] = value;
      }
      await new Promise((done) => hub.close(done));
    }

    const dir = await plainExport(backbone, join(root, 'a dir with spaces'));
    const url = pathToFileURL(dir).href;
    expect(url).to.contain('%20');
    const { report } = await quantizeModel(url, join(root, 'url-q4'));
    expect(report.matmuls).to.equal(11);
    expect(existsSync(join(root, 'url-q4', 'tokenizer.json'))).to.equal(true);
  });

  it('names the destination when writing fails (a file where its folder should be, a file-size limit), leaving nothing behind', async function () {
    const root = testDir('qsrc-write');
    const blocker = join(root, 'blocker');
    await writeFile(blocker, '');
    const under = join(blocker, 'sub', 'out');
    const err = await quantizeModel(backbone, under).catch((e: Error) => e);
    expect(err).to.be.instanceOf(QuantizeError);
    expect((err as Error).message).to.contain(`cannot write the quantized copy of ${backbone} into ${under}: ENOTDIR: not a directory, mkdir`);

    if (process.platform === 'win32') this.skip();
    // A write past RLIMIT_FSIZE fails with EFBIG (SIGXFSZ ignored), as a full disk's fails with ENOSPC: no path in it.
    const dir = join(root, 'limited');
    await mkdir(dir);
    const dest = join(dir, 'out');
    const script = 'trap "" XFSZ; ulimit -f 64; exec "$@"';
    const run = await promisify(execFile)('bash', ['-c', script, 'bash', process.execPath, '--import', 'tsx', cliPath, 'quantize', backbone, dest]).then(
      () => ({ code: 0, stderr: '' }),
      (e: { code: number; stderr: string }) => e,
    );
    expect(run.code).to.equal(1);
    expect(run.stderr).to.equal(`reasonplug: QuantizeError: cannot write the quantized copy of ${backbone} into ${dest}: EFBIG: file too large, write\n`);
    expect(await readdir(dir)).to.deep.equal([]);
  });
});
