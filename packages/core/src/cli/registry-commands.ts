/**
 * `reasonplug pack | push | pull | search | resolve`: modules to and from OCI registries.
 * Data goes to stdout (a manifest, a directory, a digest, results), messages and progress to stderr.
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import { packModule } from '../registry/artifact.js';
import { MODULE_KINDS } from '../modules/manifest.js';
import type { SearchHit } from '../registry/extension.js';
import { filterProjectorsByHiddenSize, resolveModule, searchModules } from '../registry/lookup.js';
import { printable } from '../registry/printable.js';
import { progressBar } from '../registry/progress.js';
import { pullModule } from '../registry/pull.js';
import { parseRef } from '../registry/reference.js';
import { pullOllamaModel } from '../registry/ollama-pull.js';
import { isOllamaRef } from '../modules/ollama-store.js';
import { isLocalModelName, localModelPath } from '../modules/local-names.js';
import { locateModel } from '../modules/locate.js';
import { UnsupportedModelError } from '../onnx/signature.js';
import { projectorHiddenSize } from '../runtime/prepare-model.js';
import { localNameHints, resolveModelPath } from '../registry/resolve-model.js';
import { InvalidReferenceError } from '../registry/errors.js';
import { tokenizerFingerprintOf } from '../tokenizer/fingerprint.js';
import { ggufWithProgress } from './model-flags.js';
import type { TransferProgress } from '../registry/download.js';
import { pushModule } from '../registry/push.js';
import { printColumns } from './columns.js';
import { settingsFrom, type RegistryOptions } from '../registry/settings.js';

interface ConnectionFlags {
  registry?: string;
  plainHttp?: boolean;
  token?: string;
  offline?: boolean;
}

/** Adds the connection options every registry command takes. */
function connection(cmd: Command, offline: boolean): Command {
  cmd
    .option('--registry <host[:port]>', 'registry for references that name none: host[:port], or http(s)://host[:port] (http: plain HTTP with it) (default $REASONPLUG_REGISTRY)')
    .option('--plain-http', 'talk HTTP, not HTTPS, to a registry that is not on loopback')
    .option('--token <token>', 'bearer token, or user:token for Basic auth (default $REASONPLUG_TOKEN)');
  if (offline) cmd.option('--offline', 'read the cache only, never the network (or REASONPLUG_OFFLINE=1)');
  return cmd;
}

/**
 * The registry settings of the flags. A `--token` given with a module reference goes to the registry that reference
 * names (`push ./m ghcr.io/acme/m --token T`); otherwise, as `$REASONPLUG_TOKEN`, to `--registry`'s.
 */
function options(flags: ConnectionFlags, reference?: string): RegistryOptions {
  const named = flags.token !== undefined && reference !== undefined ? parseRef(reference, settingsFrom({ ...(flags.registry !== undefined ? { registry: flags.registry } : {}) }).registry).registry : undefined;
  return {
    ...(flags.registry !== undefined ? { registry: flags.registry } : {}),
    ...(flags.plainHttp ? { plainHttp: true } : {}),
    ...(flags.token !== undefined ? { token: flags.token, ...(named !== undefined ? { tokenFor: named } : {}) } : {}),
    ...(flags.offline ? { offline: true } : {}),
  };
}

const say = (text: string) => process.stderr.write(`${text}\n`);
const mib = (n: number) => `${(n / (1024 * 1024)).toFixed(1)} MiB`;

function printHits(hits: SearchHit[]): void {
  if (hits.length === 0) {
    say('no modules found');
    return;
  }
  // Every field is the registry's text: none may reach the terminal as a control sequence.
  const rows = hits.flatMap((h) =>
    h.versions.map((v) => [h.name, v.version ?? '-', v.kind ?? '-', v.tasks.join(',') || '-', v.tags.join(',')].map(printable)),
  );
  printColumns(['NAME', 'VERSION', 'KIND', 'TASKS', 'TAGS'], rows);
}

/** Adds the registry commands to the `reasonplug` program. */
export function addRegistryCommands(program: Command): void {
  program
    .command('pack')
    .description('validate a module directory and print the OCI manifest it is pushed as')
    .argument('<dir>', 'module directory (reasonplug.json and its files)')
    .action(async (dir: string) => {
      const packed = await packModule(dir);
      const size = packed.files.reduce((n, f) => n + f.descriptor.size, 0);
      process.stdout.write(`${JSON.stringify(packed.manifest, null, 2)}\n`);
      say(`${packed.module.name}@${packed.module.version}: ${packed.files.length} files, ${mib(size)}, manifest ${packed.digest}`);
    });

  connection(
    program
      .command('push')
      .description('push a module directory; tags its exact version, and latest where it is the newest release')
      .argument('<dir>', 'module directory')
      .argument('<ref>', "REGISTRY/namespace/name[:VERSION] (the module's version; VERSION, if given, must be it)")
      .option('--force', 'replace an existing version with other content, where the registry allows it')
      .option('--latest', 'move latest to this version even where the repository holds a newer release')
      .option('--no-latest', 'leave latest where it is'),
    false,
  ).action(async (dir: string, ref: string, flags: ConnectionFlags & { force?: boolean; latest?: boolean }) => {
    const bar = progressBar(`push ${ref}`);
    const r = await pushModule(dir, ref, {
      ...options(flags, ref),
      ...(flags.force ? { force: true } : {}),
      ...(flags.latest !== undefined ? { latest: flags.latest } : {}),
      ...(bar ? { onProgress: (p) => bar.update(p) } : {}),
    }).finally(() => bar?.finish());
    process.stdout.write(`${r.registry}/${r.repository}@${r.digest}\n`);
    say(`pushed ${r.registry}/${r.repository} ${r.version} (tags ${r.tags.join(', ')}; ${mib(r.uploaded)} uploaded, ${r.skipped} blobs already there)`);
  });

  connection(
    program
      .command('pull')
      .description("pull a module into the cache and print its directory; or a GGUF model by its Ollama name (ollama://…, from Ollama's registry) or its Hugging Face name (hf://org/repo:QUANT, from the hub unless its cache has it) and print its file")
      .argument('<ref>', '[registry/]namespace/name followed by @range, :tag or @sha256:<hex>; ollama://[host/][namespace/]model[:tag]; hf://org/repo[:QUANT]'),
    true,
  ).action(async (ref: string, flags: ConnectionFlags) => {
    const bar = progressBar(`pull ${ref}`);
    const onProgress = bar ? { onProgress: (p: TransferProgress) => bar.update(p) } : {};
    // Offline, an Ollama name is the file a store on this machine has (the error lists what the stores hold).
    if (isOllamaRef(ref) && !settingsFrom(options(flags)).offline) {
      process.stdout.write(`${await pullOllamaModel(ref, { ...options(flags), ...onProgress }).finally(() => bar?.finish())}\n`);
      say(`pulled ${ref}`);
      return;
    }
    if (isLocalModelName(ref)) {
      // The cache's or a store's file when it has it; else pulled through the hub's Ollama registry (online). LM
      // Studio's names are of files on this machine only: their path.
      process.stdout.write(`${await localModelPath(ref, { ...options(flags), ...onProgress }).finally(() => bar?.finish())}\n`);
      return;
    }
    const r = await pullModule(ref, { ...options(flags, ref), ...onProgress })
      .catch((err: unknown) => {
        // A model another tool keeps, named as that tool's users type it: say how it is pulled.
        const hints = err instanceof InvalidReferenceError ? localNameHints(ref) : [];
        if (hints.length === 0) throw err;
        throw new InvalidReferenceError(`${(err as Error).message}; ${hints.map((h) => `${h.holder}: reasonplug pull ${h.name}`).join('; ')}`);
      })
      .finally(() => bar?.finish());
    process.stdout.write(`${r.dir}\n`);
    say(`${r.cached ? 'cached' : 'pulled'} ${r.pinned} (version ${r.version})`);
    if (r.repaired.length > 0) say(`repaired ${r.repaired.join(', ')}: the cached copy failed verification and was downloaded again`);
  });

  connection(
    program
      .command('search')
      .description("search a registry for modules (reasonplug-registry answers it; other registries through their catalog)")
      .option('--task <task>', 'modules trained for this task')
      .addOption(new Option('--kind <kind>', 'module kind').choices([...MODULE_KINDS]))
      .option('--tokenizer <fingerprint>', 'modules for this tokenizer (sha256:...)')
      .addOption(
        new Option('--for <model>', "modules that compose with this model (its tokenizer's fingerprint; for latent-projectors also its hidden size): a path, a GGUF file, ollama://…, hf://… or a registry reference").conflicts('tokenizer'),
      )
      .option('--json', 'print the results as JSON'),
    false,
  ).action(async (flags: ConnectionFlags & { task?: string; kind?: string; tokenizer?: string; for?: string; json?: boolean }) => {
    // (pulled or converted as loading would)
    const model = flags.for !== undefined ? { spec: flags.for, path: await resolveModelPath(await ggufWithProgress(flags.for), options(flags)) } : undefined;
    const tokenizer = model ? await modelTokenizer(model.path, model.spec) : flags.tokenizer;
    const query = {
      ...(flags.task !== undefined ? { task: flags.task } : {}),
      ...(flags.kind !== undefined ? { kind: flags.kind } : {}),
      ...(tokenizer !== undefined ? { tokenizer } : {}),
    };
    let hits = await searchModules(query, options(flags));
    // A latent-projector also needs the model's hidden size, which only costs something to learn when one is found.
    if (model && hits.some((h) => h.versions.some((v) => v.kind === 'latent-projector'))) {
      hits = await filterProjectorsByHiddenSize(hits, await hiddenSizeFor(model.path, model.spec), options(flags));
    }
    // (JSON escapes C0 control characters, not C1 ones; `printable` writes those as JSON does.)
    if (flags.json) process.stdout.write(`${printable(JSON.stringify(hits))}\n`);
    else printHits(hits);
  });

  connection(
    program
      .command('resolve')
      .description('resolve a reference to an exact version and manifest digest')
      .argument('<ref>', '[registry/]namespace/name@RANGE (or :tag, @sha256:...)')
      .option('--json', 'print the result as JSON'),
    true,
  ).action(async (ref: string, flags: ConnectionFlags & { json?: boolean }) => {
    const r = await resolveModule(ref, options(flags, ref));
    // The version may be a manifest annotation, the registry's text.
    if (flags.json) process.stdout.write(`${printable(JSON.stringify(r))}\n`);
    else process.stdout.write(`${r.registry}/${r.repository}@${printable(r.version ?? '?')} ${r.pinned}\n`);
  });
}

/** The tokenizer fingerprint modules must declare to compose with the model at `path` (`spec`, as given). */
async function modelTokenizer(path: string, spec: string): Promise<string> {
  const fingerprint = await tokenizerFingerprintOf(await locateModel(path));
  if (fingerprint === undefined) throw new InvalidArgumentError(`--for ${spec}: the model has no tokenizer.json, so no module can be matched to it`);
  return fingerprint;
}

/** {@link projectorHiddenSize} of the model at `path` (`spec`, as given); undefined, with a note, where no projector runs with it. */
async function hiddenSizeFor(path: string, spec: string): Promise<number | undefined> {
  return projectorHiddenSize(path).catch((err: unknown) => {
    if (!(err instanceof UnsupportedModelError)) throw err;
    say(`--for ${spec}: no latent-projector runs with this model (${err.message})`);
    return undefined;
  });
}
