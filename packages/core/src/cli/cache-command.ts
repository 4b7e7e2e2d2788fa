/**
 * `reasonplug cache [--json]` lists what the cache holds and its size; `reasonplug cache clear <part...>|--all`
 * removes parts of it (all of it can be made again; see modules/cache-usage.ts); `reasonplug cache rm <ref...>` removes
 * pulled modules (modules/cache-remove.ts).
 */
import { InvalidArgumentError, type Command } from 'commander';
import { removeModules, type RemovedModule } from '../modules/cache-remove.js';
import { CACHE_PARTS, cacheUsage, clearCache, type CachePart } from '../modules/cache-usage.js';
import { printColumns, sizeText as size } from './columns.js';

async function list(flags: { json?: boolean }): Promise<void> {
  const usage = await cacheUsage();
  if (flags.json) {
    process.stdout.write(`${JSON.stringify(usage)}\n`);
    return;
  }
  printColumns(['PART', 'SIZE', 'ENTRY'], usage.entries.map((e) => [e.part, size(e.bytes), e.name]));
  const total = Object.values(usage.bytes).reduce((a, b) => a + b, 0);
  process.stdout.write(`\n${usage.root}: ${size(total)} (${CACHE_PARTS.map((p) => `${p} ${size(usage.bytes[p])}`).join(', ')})\n`);
}

/** `1.0.0 (sha256:…; tags 1.0.0, latest)`: a removed module's version, digest and the tags that went with it. */
const removedText = (m: RemovedModule) => `${m.version !== undefined ? `${m.version} ` : ''}(${m.digest}${m.tags.length > 0 ? `; tags ${m.tags.join(', ')}` : ''})`;

async function remove(refs: string[], flags: { registry?: string }): Promise<void> {
  const before = await cacheUsage();
  const outcome = await removeModules(refs, flags.registry !== undefined ? { registry: flags.registry } : {});
  const after = await cacheUsage();
  for (const { wholeRepository, modules } of outcome.removed) {
    if (modules.length === 0) continue;
    const name = `${modules[0]!.registry}/${modules[0]!.repository}`;
    if (wholeRepository) process.stderr.write(`removed every cached version of ${name}:\n${modules.map((m) => `  ${removedText(m)}\n`).join('')}`);
    else process.stderr.write(modules.map((m) => `removed ${name} ${removedText(m)}\n`).join(''));
  }
  // (a module directory's files are its blobs' inodes: the blobs that go free the bytes)
  const freed = size(Math.max(0, before.bytes.modules - after.bytes.modules));
  const { blobs } = outcome;
  process.stderr.write(
    outcome.blobsKept
      ? `kept their blobs: a pull is under way, which may link them (\`cache clear modules\` removes them once it ends); ${freed} freed\n`
      : `${blobs.removed} blob(s) removed${blobs.shared > 0 ? `, ${blobs.shared} kept that modules still cached use` : ''}: ${freed} freed\n`,
  );
}

/** Adds `cache`, `cache clear` and `cache rm` to the `reasonplug` program. */
export function addCacheCommand(program: Command): void {
  const cache = program
    .command('cache')
    .description("list what reasonplug's cache holds ($REASONPLUG_CACHE, else ~/.cache/reasonplug) and its size")
    .option('--json', 'one JSON object: the entries, and the bytes of each part')
    .action(list);
  cache
    .command('clear')
    .description('remove parts of the cache (each is made again when needed): gguf conversions, pulled modules, Ollama models pulled by name, prepared graphs (with the saved sessions), saved sessions, stat records')
    .argument('[parts...]', CACHE_PARTS.join(', '))
    .option('--all', 'every part')
    .action(async (parts: string[], flags: { all?: boolean }) => {
      const unknown = parts.filter((p) => !(CACHE_PARTS as readonly string[]).includes(p));
      if (unknown.length > 0) throw new InvalidArgumentError(`unknown cache part ${unknown.join(', ')}; the parts are ${CACHE_PARTS.join(', ')}`);
      const chosen = flags.all ? [...CACHE_PARTS] : (parts as CachePart[]);
      if (chosen.length === 0) throw new InvalidArgumentError(`name the parts to remove (${CACHE_PARTS.join(', ')}) or --all`);
      const before = await cacheUsage();
      const { blobsKept } = await clearCache(chosen);
      const after = await cacheUsage();
      // (prepared graphs hold the saved sessions)
      const removed = [...new Set<CachePart>(chosen.includes('prepared') ? [...chosen, 'sessions'] : chosen)];
      // What is left of them is what the clear kept: other processes' writes under way (and what a pull wrote meanwhile).
      const kept = removed.reduce((n, p) => n + after.bytes[p], 0);
      const freed = Math.max(0, removed.reduce((n, p) => n + before.bytes[p], 0) - kept);
      const keptText = blobsKept
        ? `; kept ${size(kept)} of downloads in progress and the module blobs their pulls link (clear modules again once they end)`
        : kept > 0
          ? `; kept ${size(kept)} of downloads and conversions in progress`
          : '';
      process.stderr.write(`removed ${removed.join(', ')}: ${size(freed)} freed${keptText}\n`);
    });
  cache
    .command('rm')
    .description('remove pulled modules from the cache, with their blobs that no module still cached uses; references resolve against the cache alone (a bare name: every cached version)')
    .argument('<refs...>', '[registry/]namespace/name followed by :tag, @version or @range (the version a pull --offline takes) or @sha256:<hex>; or the bare name')
    .option('--registry <host[:port]>', 'registry for references that name none (default $REASONPLUG_REGISTRY)')
    .action(remove);
}
