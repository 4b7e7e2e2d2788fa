import { expect } from 'chai';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { declaredArchitecture } from '../src/modules/declared-architecture.js';
import type { ModuleManifest } from '../src/modules/manifest.js';
import { testDir } from './support/models.js';

describe('declaredArchitecture', () => {
  it("reads a hub export's config.json model_type (one level above onnx/), else a converted module's recorded GGUF architecture", async () => {
    const hub = testDir('declared-architecture-hub');
    await mkdir(join(hub, 'onnx'), { recursive: true });
    await writeFile(join(hub, 'config.json'), JSON.stringify({ model_type: 'qwen2', max_position_embeddings: 32768 }));
    expect(await declaredArchitecture({ modelPath: join(hub, 'onnx', 'model_q4.onnx'), tokenizerDir: hub })).to.equal('qwen2');

    const converted = testDir('declared-architecture-module');
    await mkdir(converted, { recursive: true });
    const manifest = { provenance: { convertedFrom: { file: 'x.gguf', sha256: 'a'.repeat(64), format: 'gguf', architecture: 'gemma3' } } } as unknown as ModuleManifest;
    expect(await declaredArchitecture({ modelPath: join(converted, 'model.onnx'), manifest })).to.equal('gemma3');
    // a config.json without model_type, and a manifest without a conversion, declare none
    await writeFile(join(converted, 'config.json'), JSON.stringify({ max_position_embeddings: 512 }));
    expect(await declaredArchitecture({ modelPath: join(converted, 'model.onnx') })).to.equal(undefined);
  });
});
