/**
 * Test modules for the LangChain models: the converted stories260K model and core's builder modules (random
 * weights over the real stories260K tokenizer), given a chat template where a test needs one, plus a reasoner
 * that makes the composition write a given text.
 */
import { cp, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { MANIFEST_FILE, writeModuleDir, type ModuleManifest } from '@reasonplug/core';
import { DataType, makeNode, makeTensor, readModel, writeModel } from '../../../core/src/onnx/proto.js';
import { addLogitBias } from '../../../core/test/support/graph-edits.js';
import { makeModule, storiesConfig } from '../../../core/test/support/modules.js';
import { testDir } from '../../../core/test/support/models.js';

export { makeModule, storiesConfig, storiesModule } from '../../../core/test/support/modules.js';
export { cacheDir } from '../../../core/test/support/models.js';

export { GEMMA_TEMPLATE, TOOLS_TEMPLATE } from '../../../core/test/support/chat-templates.js';

/** The same turns, without tools. */
export const PLAIN_TEMPLATE =
  '{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}';

/** A copy of the module in `source` whose tokenizer_config.json carries `chatTemplate` (its manifest rewritten to match). */
export async function withChatTemplate(source: string, name: string, chatTemplate: string): Promise<string> {
  const dir = join(testDir(name), name);
  await cp(source, dir, { recursive: true });
  const configPath = join(dir, 'tokenizer_config.json');
  const config = JSON.parse(await readFile(configPath, 'utf8'));
  await writeFile(configPath, JSON.stringify({ ...config, chat_template: chatTemplate }));
  const { schemaVersion: _, files, ...manifest } = JSON.parse(await readFile(join(dir, MANIFEST_FILE), 'utf8')) as ModuleManifest;
  await writeModuleDir(dir, { ...manifest, name, files: Object.fromEntries(Object.entries(files).map(([key, f]) => [key, f.path])) });
  return dir;
}

/**
 * A reasoner that writes a script: its logits gain `bias` for `ids[i]` at position `promptLength - 1 + i` and for
 * EOS right after, so composed with a backbone it makes the model write exactly `ids` for a prompt of that length.
 * Positions past the script carry no bias (the table covers `margin` of them; later ones fail the run).
 */
export async function scriptedReasoner(name: string, ids: readonly number[], promptLength: number, bias = 100, margin = 64): Promise<string> {
  const vocab = 512;
  const rows = promptLength + ids.length + margin;
  const table = new Float32Array(rows * vocab);
  [...ids, 2].forEach((id, i) => (table[(promptLength - 1 + i) * vocab + id] = bias));
  return makeModule({
    name,
    config: storiesConfig({ hiddenSize: 32 }),
    seed: 13,
    edit: async (path) => {
      const model = await readModel(path);
      const graph = model.graph!;
      const head = graph.node!.find((n) => n.output!.includes('logits'))!;
      head.output = head.output!.map((o) => (o === 'logits' ? 'logits_unscripted' : o));
      graph.initializer!.push(makeTensor('script', DataType.FLOAT, [rows, vocab], table) as never);
      graph.node!.push(
        makeNode('Gather', ['script', 'position_ids'], ['script_rows'], { axis: 0 }) as never,
        makeNode('Add', ['logits_unscripted', 'script_rows'], ['logits']) as never,
      );
      await writeModel(path, model);
    },
  });
}

let slow: Promise<string> | undefined;

/**
 * A backbone slow enough (milliseconds per token, so seconds for a thousand) that stopping mid-way shows, and
 * that never draws EOS, so it runs to its token limit unless stopped. Built once per test process.
 */
export function slowBackbone(): Promise<string> {
  slow ??= makeModule({
    name: 'slow-backbone',
    kind: 'backbone',
    config: storiesConfig({ hiddenSize: 256, numLayers: 4, numHeads: 8, numKvHeads: 4, intermediateSize: 512 }),
    seed: 3,
    edit: (p) => addLogitBias(p, 512, { 2: -1e4 }),
  });
  return slow;
}
