/** `reasonplug models`: the models other tools keep on this machine that `--model` takes by name. */
import type { Command } from 'commander';
import { listLocalModels } from '../modules/local-names.js';
import { printColumns, sizeText } from './columns.js';

/** Adds `models` to the `reasonplug` program. */
export function addModelsCommand(program: Command): void {
  program
    .command('models')
    .description("list the models Ollama has pulled, the Hugging Face cache holds and LM Studio has downloaded, by the names --model takes (ollama://…, hf://…, lmstudio://…), and whether reasonplug loads them")
    .option('--json', 'one JSON array: name, path, architecture, tensor types, bytes, and why a model is refused')
    .action(async (flags: { json?: boolean }) => {
      const models = await listLocalModels();
      if (flags.json) return void process.stdout.write(`${JSON.stringify(models, null, 2)}\n`);
      if (models.length === 0) return void process.stdout.write('no models in an Ollama store ($OLLAMA_MODELS, ~/.ollama/models), the Hugging Face cache ($HF_HUB_CACHE, ~/.cache/huggingface/hub) or LM Studio\'s folder (~/.lmstudio/models)\n');
      printColumns(
        ['NAME', 'ARCHITECTURE', 'TENSOR TYPES', 'SIZE', 'LOADS'],
        models.map((m) => [m.name, m.architecture ?? (m.kind === 'directory' ? '(directory)' : ''), (m.tensorTypes ?? []).join(','), m.bytes === undefined ? '' : sizeText(m.bytes), m.refused ? `no: ${m.refused}` : 'yes']),
      );
    });
}
