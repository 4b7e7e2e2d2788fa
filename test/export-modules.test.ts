/**
 * scripts/export-modules.ts, the step from the Python tooling's raw float32 export to module directories: a module it
 * replaces is only replaced by a whole one, and a bad flag leaves it as it was.
 */
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readdir, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { loadModuleDir } from '../packages/core/src/modules/module-dir.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const script = join(root, 'scripts', 'export-modules.ts');
const backbone = join(root, 'examples', 'modules', 'toy-backbone-s');
const CONFIG = { vocabSize: 52, hiddenSize: 16, numLayers: 1, numHeads: 2, intermediateSize: 32, ropeTheta: 10000, rmsNormEps: 1e-5, tieWordEmbeddings: true };

/** A raw export of one tiny llama (random weights), as training/export.py writes it. */
async function rawExport(dir: string, name: string): Promise<void> {
  const at = join(dir, name);
  await mkdir(at, { recursive: true });
  const { hiddenSize: h, vocabSize: v, intermediateSize: f } = CONFIG;
  const shapes: Record<string, number[]> = {
    embed: [v, h],
    finalNorm: [h],
    'layers.0.attnNorm': [h],
    'layers.0.wq': [h, h],
    'layers.0.wk': [h, h],
    'layers.0.wv': [h, h],
    'layers.0.wo': [h, h],
    'layers.0.mlpNorm': [h],
    'layers.0.wGate': [h, f],
    'layers.0.wUp': [h, f],
    'layers.0.wDown': [f, h],
  };
  const tensors: Record<string, { file: string; shape: number[] }> = {};
  for (const [tensor, shape] of Object.entries(shapes)) {
    const values = Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, (_, i) => Math.sin(i + tensor.length) * 0.1);
    await writeFile(join(at, `${tensor}.bin`), Buffer.from(values.buffer));
    tensors[tensor] = { file: `${tensor}.bin`, shape };
  }
  const meta = { name, version: '1.0.0', kind: 'backbone', tasks: ['math'], description: 'a test export' };
  await writeFile(join(at, 'weights.json'), JSON.stringify({ format: 'reasonplug-raw-f32-v1', kind: 'llama', config: CONFIG, tensors, meta }));
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) await copyFile(join(backbone, f), join(at, f));
}

const run = (args: string[]) =>
  promisify(execFile)(process.execPath, ['--import', 'tsx', script, ...args], { cwd: root }).then(
    () => ({ code: 0, stderr: '' }),
    (e: { code?: number; stderr?: string }) => ({ code: e.code ?? 1, stderr: e.stderr ?? '' }),
  );

describe('scripts/export-modules.ts', function () {
  this.timeout(120_000);

  it('writes a verified module; a bad --dtype, or a failure part-way, leaves the module it would replace as it was', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'reasonplug-export-'));
    const [from, to] = [join(dir, 'raw'), join(dir, 'modules')];
    await rawExport(from, 'tiny-export');
    const first = await run(['--from', from, '--to', to, '--dtype', 'fp16']);
    expect(first.code, first.stderr).to.equal(0);
    const module = join(to, 'tiny-export');
    const before = await readFile(join(module, 'reasonplug.json'), 'utf8');
    expect((await loadModuleDir(module)).manifest.name).to.equal('tiny-export');

    const typo = await run(['--from', from, '--to', to, '--dtype', 'f16']);
    expect(typo.code).to.not.equal(0);
    expect(typo.stderr).to.match(/--dtype f16: float32 \(fp32\) or float16 \(fp16\)/);
    // a tensor file cut short: the export fails after it began writing
    await writeFile(join(from, 'tiny-export', 'layers.0.wq.bin'), Buffer.alloc(8));
    const broken = await run(['--from', from, '--to', to]);
    expect(broken.code).to.not.equal(0);
    expect(broken.stderr).to.match(/layers\.0\.wq\.bin: 8 bytes/);
    expect(await readFile(join(module, 'reasonplug.json'), 'utf8')).to.equal(before);
    await loadModuleDir(module); // every file still verifies
    expect(await readdir(to)).to.deep.equal(['tiny-export']);
  });

  it('fails with "nothing to export" where no subdirectory holds weights.json, as a failed training/export.py leaves it', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'reasonplug-export-'));
    const [from, to] = [join(dir, 'raw'), join(dir, 'modules')];
    await mkdir(join(from, 'projector'), { recursive: true });
    const result = await run(['--from', from, '--to', to]);
    expect(result.code).to.not.equal(0);
    expect(result.stderr).to.match(/nothing to export in .*raw: no subdirectory holds weights\.json/);
    expect(existsSync(to)).to.equal(false);
  });
});
