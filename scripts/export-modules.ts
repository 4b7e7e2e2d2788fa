/**
 * Turns the raw float32 weights written by the Python tooling (`training/export.py` → `training/out/export/<name>/`)
 * into module directories under `examples/modules/<name>/`: model.onnx built by the project's own builders
 * (writeLlamaModel / buildProjectorModel), the shared tokenizer files, and a full `reasonplug.json`.
 *
 *   npx tsx scripts/export-modules.ts [--from training/out/export] [--to examples/modules] [--dtype float16|fp16]
 */
import { copyFile, mkdir, readdir, readFile, rename, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { writeLlamaModel } from '../packages/core/src/onnx/llama-builder.js';
import type { LlamaConfig, LlamaLayerWeights, LlamaWeights } from '../packages/core/src/onnx/llama-spec.js';
import { buildProjectorModel, writeProjectorModel, type SwiGluWeights } from '../packages/core/src/onnx/projector-builder.js';
import { writeModuleDir } from '../packages/core/src/modules/module-dir.js';
import { tokenizerFingerprint } from '../packages/core/src/tokenizer/fingerprint.js';

interface TensorRef {
  file: string;
  shape: number[];
}
interface RawExport {
  format: 'reasonplug-raw-f32-v1';
  kind: 'llama' | 'projector';
  config: Record<string, unknown>;
  tensors: Record<string, TensorRef>;
  meta: {
    name: string;
    version: string;
    kind: 'backbone' | 'logit-reasoner' | 'latent-projector';
    tasks: string[];
    description: string;
    provenance?: Record<string, unknown>;
    composition?: { defaultWeight: number; mode: 'logits' | 'logprobs' };
    latent?: { open: string; close: string; maxSteps: number; tokensPerStep?: number };
  };
}

const { values } = parseArgs({
  options: {
    from: { type: 'string', default: 'training/out/export' },
    to: { type: 'string', default: 'examples/modules' },
    dtype: { type: 'string', default: 'float32' },
  },
});
const from = resolve(values.from!);
const to = resolve(values.to!);
// (the CLI's names too: a typo must not get as far as the modules it would replace)
const DTYPES: Record<string, 'float32' | 'float16'> = { float32: 'float32', fp32: 'float32', float16: 'float16', fp16: 'float16' };
const dtype = DTYPES[values.dtype!];
if (!dtype) throw new Error(`--dtype ${values.dtype}: float32 (fp32) or float16 (fp16)`);

async function readTensor(dir: string, ref: TensorRef): Promise<Float32Array> {
  const buf = await readFile(join(dir, ref.file));
  const n = ref.shape.reduce((a, b) => a * b, 1);
  if (buf.byteLength !== n * 4) throw new Error(`${join(dir, ref.file)}: ${buf.byteLength} bytes, shape ${ref.shape} needs ${n * 4}`);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = buf.readFloatLE(i * 4);
  return out;
}

async function llamaWeights(dir: string, raw: RawExport, config: LlamaConfig): Promise<LlamaWeights> {
  const t = (name: string) => {
    const ref = raw.tensors[name];
    if (!ref) throw new Error(`${dir}: tensor ${name} is missing from weights.json`);
    return readTensor(dir, ref);
  };
  const layers: LlamaLayerWeights[] = [];
  for (let i = 0; i < config.numLayers; i++) {
    const p = `layers.${i}.`;
    layers.push({
      attnNorm: await t(p + 'attnNorm'),
      wq: await t(p + 'wq'),
      wk: await t(p + 'wk'),
      wv: await t(p + 'wv'),
      wo: await t(p + 'wo'),
      mlpNorm: await t(p + 'mlpNorm'),
      wGate: await t(p + 'wGate'),
      wUp: await t(p + 'wUp'),
      wDown: await t(p + 'wDown'),
    });
  }
  return { embed: await t('embed'), layers, finalNorm: await t('finalNorm'), lmHead: config.tieWordEmbeddings ? undefined : await t('lmHead') };
}

// (a directory without weights.json is what a failed export leaves: exporting nothing from it must not pass for success)
const names = existsSync(from) ? (await readdir(from)).sort().filter((name) => existsSync(join(from, name, 'weights.json'))) : [];
if (names.length === 0) throw new Error(`nothing to export in ${from}: no subdirectory holds weights.json; run training/export.py first (training/README.md)`);
for (const name of names) {
  const src = join(from, name);
  const raw = JSON.parse(await readFile(join(src, 'weights.json'), 'utf8')) as RawExport;
  if (raw.format !== 'reasonplug-raw-f32-v1') throw new Error(`${src}: unknown format ${raw.format}`);
  // Written beside the module it replaces and renamed over it once whole: a failure leaves the old one as it was.
  const final = join(to, raw.meta.name);
  const dst = `${final}.${process.pid}.tmp`;
  await rm(dst, { recursive: true, force: true });
  await mkdir(dst, { recursive: true });
  try {
    const tokenizerJson = JSON.parse(await readFile(join(src, 'tokenizer.json'), 'utf8')) as object;
    await copyFile(join(src, 'tokenizer.json'), join(dst, 'tokenizer.json'));
    await copyFile(join(src, 'tokenizer_config.json'), join(dst, 'tokenizer_config.json'));
    let hiddenSize: number;
    let vocabSize: number;
    if (raw.kind === 'llama') {
      const config = raw.config as unknown as LlamaConfig;
      await writeLlamaModel(join(dst, 'model.onnx'), config, await llamaWeights(src, raw, config), { dtype });
      hiddenSize = config.hiddenSize;
      vocabSize = config.vocabSize;
    } else {
      const c = raw.config as { hiddenSize: number; innerSize: number; layers: number; vocabSize: number };
      const layers: SwiGluWeights[] = [];
      for (let i = 0; i < c.layers; i++) {
        layers.push({
          gate: await readTensor(src, raw.tensors[`layers.${i}.gate`]!),
          up: await readTensor(src, raw.tensors[`layers.${i}.up`]!),
          down: await readTensor(src, raw.tensors[`layers.${i}.down`]!),
        });
      }
      await writeProjectorModel(join(dst, 'model.onnx'), buildProjectorModel({ hiddenSize: c.hiddenSize, innerSize: c.innerSize, layers: c.layers }, layers));
      hiddenSize = c.hiddenSize;
      vocabSize = c.vocabSize;
    }
    const m = raw.meta;
    const manifest = await writeModuleDir(dst, {
      name: m.name,
      version: m.version,
      kind: m.kind,
      tasks: m.tasks,
      description: m.description,
      license: 'MIT',
      compat: { tokenizer: tokenizerFingerprint(tokenizerJson), vocabSize, hiddenSize },
      ...(m.composition ? { composition: m.composition } : {}),
      ...(m.latent ? { latent: m.latent } : {}),
      ...(m.kind === 'backbone' ? { generation: { bosTokenId: 1, eosTokenIds: [2] } } : {}),
      ...(m.provenance ? { provenance: m.provenance } : {}),
      files: { model: 'model.onnx', tokenizer: 'tokenizer.json', tokenizerConfig: 'tokenizer_config.json' },
    });
    await rm(final, { recursive: true, force: true });
    await rename(dst, final);
    const bytes = Object.values(manifest.files).reduce((n, f) => n + f.size, 0);
    console.log(`${m.name}@${m.version} (${m.kind}, ${m.tasks.join(',')}): ${(bytes / 1024).toFixed(0)} KiB → ${final}`);
  } catch (err) {
    await rm(dst, { recursive: true, force: true });
    throw err;
  }
}
