/**
 * `reasonplug-registry`: run the registry, manage its access tokens.
 *
 *   reasonplug-registry serve [--data DIR] [--port 5000] [--host 127.0.0.1] [--auth] [--no-anonymous-pull]
 *                             [--max-manifest-bytes N] [--upload-max-age 7d] [--log-level info]
 *   reasonplug-registry token create --scope 'push:math/*' [--scope ...] [--user NAME]
 *   reasonplug-registry token list | token revoke ID
 *   reasonplug-registry reindex
 *   reasonplug-registry gc [--dry-run] [--delete-untagged] [--min-age 1h]
 *
 * Storage is the directory `--data` unless `--s3-bucket` is given (then `--s3-endpoint`, `--s3-region`,
 * `--s3-prefix`, `--s3-path-style`; credentials come from the AWS SDK's usual sources).
 */
import { readFileSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import type { Level, Logger } from 'pino';
import type { ListeningRegistry } from './server.js';
import type { StorageDriver } from './storage/driver.js';

/**
 * Files Node's loader holds open at once as it loads the commands' modules (it reads a whole level of imports
 * together, zod's locales among them): the built CLI starts from a limit of 98 (Node 20). Under it any failure to
 * load is the limit's.
 */
const FILES_TO_LOAD = 100;

/** The open-files limit, from /proc/self/limits (Linux; Node raised the soft limit to the hard one as it started). */
function openFilesLimit(): number | undefined {
  try {
    const soft = /^Max open files\s+(\d+)\s/m.exec(readFileSync('/proc/self/limits', 'utf8'))?.[1];
    return soft === undefined ? undefined : Number(soft);
  } catch {
    return undefined;
  }
}

/**
 * Ends a start whose loading of the commands' modules failed for want of file descriptors, saying so: past the limit
 * the loader reports EMFILE on a file, or, where a package's package.json was the file it could not open, that the
 * installed package is missing. Any other failure is thrown as it came.
 */
function notStarted(err: unknown, openFiles: number | undefined): never {
  const code = (err as NodeJS.ErrnoException).code;
  const short = code === 'EMFILE' || (code === 'ERR_MODULE_NOT_FOUND' && openFiles !== undefined && openFiles < FILES_TO_LOAD);
  if (!short) throw err;
  const limit = openFiles === undefined ? 'the open-files limit (ulimit -n)' : `an open-files limit of ${openFiles} (ulimit -n)`;
  process.stderr.write(`reasonplug-registry: cannot start with ${limit}: loading it takes about ${FILES_TO_LOAD} open files at once; raise the limit (\`ulimit -n 1024\`) and run it again\n`);
  process.exit(1);
}

// The modules the commands run on are loaded rather than imported so that a failure to load them can be explained.
// The limit is read first: once the loader has used up the descriptors, /proc/self/limits could not be opened either.
const openFiles = openFilesLimit();
const [{ pino, destination }, { errorFields }, { TokenStore }, { collectGarbage }, { openRegistry }, { createRegistryServer }, { probeStorage }, { FilesystemStorage }] = await Promise.all([
  import('pino'),
  import('./http/log-fields.js'),
  import('./auth/tokens.js'),
  import('./registry/garbage.js'),
  import('./registry/registry.js'),
  import('./server.js'),
  import('./storage/driver.js'),
  import('./storage/filesystem.js'),
]).catch((err: unknown) => notStarted(err, openFiles));

const USAGE = `usage:
  reasonplug-registry serve [--data DIR] [--port 5000] [--host 127.0.0.1] [--auth] [--no-anonymous-pull]
                            [--max-manifest-bytes N] [--upload-max-age 7d] [--log-level info]
  reasonplug-registry token create --scope pull|push:GLOB [--scope ...] [--user NAME]
  reasonplug-registry token list
  reasonplug-registry token revoke ID
  reasonplug-registry --version        print the version (also -v, version); --help, -h, help: this text
  reasonplug-registry reindex          rebuild the search index from the tags
  reasonplug-registry gc [--dry-run] [--delete-untagged] [--min-age 1h]
                                       remove blobs no manifest references (after deletes), with
                                       --delete-untagged also manifests no tag reaches; what was
                                       written within --min-age is kept (0 for nothing)
storage (every command): --data DIR (default ./registry-data)
  or --s3-bucket B [--s3-endpoint URL] [--s3-region R] [--s3-prefix P] [--s3-path-style]
scopes: '*' matches within one name component, '**' across: push:math/*, pull:**
--upload-max-age: upload sessions older than this are purged (at start, then daily): 90s, 30m, 12h, 7d, or never`;

const OPTIONS = {
  data: { type: 'string', default: './registry-data' },
  port: { type: 'string', default: '5000' },
  host: { type: 'string', default: '127.0.0.1' },
  auth: { type: 'boolean', default: false },
  'no-anonymous-pull': { type: 'boolean', default: false },
  'max-manifest-bytes': { type: 'string' },
  'upload-max-age': { type: 'string', default: '7d' },
  'log-level': { type: 'string', default: 'info' },
  scope: { type: 'string', multiple: true, default: [] as string[] },
  user: { type: 'string' },
  's3-bucket': { type: 'string' },
  's3-endpoint': { type: 'string' },
  's3-region': { type: 'string' },
  's3-prefix': { type: 'string' },
  's3-path-style': { type: 'boolean', default: false },
  'dry-run': { type: 'boolean', default: false },
  'delete-untagged': { type: 'boolean', default: false },
  'min-age': { type: 'string', default: '1h' },
  help: { type: 'boolean', short: 'h', default: false },
  version: { type: 'boolean', short: 'v', default: false },
} satisfies NonNullable<ParseArgsConfig['options']>;

type Flags = ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true }>>['values'];

class UsageError extends Error {}

/** The storage the flags name; `existing` for commands that only read or tidy what a registry wrote. */
async function storageOf(flags: Flags, existing = false): Promise<StorageDriver> {
  const bucket = flags['s3-bucket'];
  if (bucket === undefined) {
    // A missing directory is created on the first write; a file in its place would fail every one.
    const found = await stat(flags.data).catch(() => undefined);
    if (found && !found.isDirectory()) throw new UsageError(`--data ${flags.data} is not a directory`);
    if (!found && existing) throw new UsageError(`--data ${flags.data} does not exist: give the directory the registry serves from`);
    return new FilesystemStorage(flags.data);
  }
  if (bucket === '') throw new UsageError('--s3-bucket must name a bucket');
  const endpoint = flags['s3-endpoint'];
  if (endpoint !== undefined && !isHttpUrl(endpoint)) {
    throw new UsageError(`--s3-endpoint must be an http:// or https:// URL (got ${JSON.stringify(endpoint)})`);
  }
  // Loaded on demand: the AWS SDK adds ~10 MB to the resident size of a filesystem-backed server.
  const { S3Storage } = await import('./storage/s3.js');
  return new S3Storage({
    bucket,
    prefix: flags['s3-prefix'] ?? '',
    client: {
      region: flags['s3-region'] ?? process.env.AWS_REGION ?? 'us-east-1',
      forcePathStyle: flags['s3-path-style'],
      ...(endpoint ? { endpoint } : {}),
    },
  });
}

function isHttpUrl(text: string): boolean {
  try {
    return ['http:', 'https:'].includes(new URL(text).protocol);
  } catch {
    return false;
  }
}

const UNIT_MS = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/** A positive duration such as `90s`, `30m`, `12h`, `7d` in ms, or undefined when `text` is none. */
function durationMs(text: string): number | undefined {
  const m = /^([1-9]\d*)([smhd])$/.exec(text);
  return m ? Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS] : undefined;
}

/** A duration such as `90s`, `30m`, `12h`, `7d` in ms; `never` is Infinity. */
function duration(name: string, text: string): number {
  const ms = text === 'never' ? Infinity : durationMs(text);
  if (ms === undefined) throw new UsageError(`--${name} must be a positive duration such as 90s, 30m, 12h or 7d, or never`);
  return ms;
}

/** gc's `--min-age` in ms: a duration or 0. Not `never`: keeping everything, the collection would remove nothing. */
function minAge(text: string): number {
  const ms = /^0[smhd]?$/.test(text) ? 0 : durationMs(text);
  if (ms === undefined) throw new UsageError('--min-age must be a duration such as 30m or 1h, or 0');
  return ms;
}

function integer(name: string, text: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (!/^\d+$/.test(text) || Number(text) < min || Number(text) > max) throw new UsageError(`--${name} must be an integer from ${min} to ${max}`);
  return Number(text);
}

const LOG_LEVELS: readonly string[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

function logLevel(text: string): Level | 'silent' {
  if (!LOG_LEVELS.includes(text)) throw new UsageError(`--log-level must be one of ${LOG_LEVELS.join(', ')}`);
  return text as Level | 'silent';
}

async function serve(flags: Flags, args: string[]): Promise<void> {
  noArguments('serve', args);
  // Every flag is read before anything starts, so a bad one is refused without a word logged or a port taken.
  // An empty host (an unset $HOST) would listen on every interface, which only an explicit 0.0.0.0 or :: should.
  if (flags.host.trim() === '') throw new UsageError('--host must name an address (0.0.0.0 or :: to listen on every interface)');
  const port = integer('port', flags.port, 0, 65535);
  const maxManifestBytes = flags['max-manifest-bytes'] === undefined ? undefined : integer('max-manifest-bytes', flags['max-manifest-bytes'], 1);
  const uploadMaxAgeMs = duration('upload-max-age', flags['upload-max-age']);
  const level = logLevel(flags['log-level']);
  if (flags['no-anonymous-pull'] && !flags.auth) throw new UsageError('--no-anonymous-pull needs --auth: without it anyone may pull and push');
  const storage = await storageOf(flags);
  await reachable(storage, flags);
  // The server logs errors through this serializer anyway; the process-wide last line (below) needs it too.
  // Written as logged: pino's default buffers while a write is under way, and what it then flushes as the process
  // exits (after a shutdown, an uncaught exception) lands before the line still being written, or is lost.
  const logger = pino({ level, serializers: { err: errorFields } }, destination({ dest: 1, sync: true }));
  const server = createRegistryServer({
    storage,
    ...(flags.auth ? { auth: { tokens: new TokenStore(storage), anonymousPull: !flags['no-anonymous-pull'] } } : {}),
    ...(maxManifestBytes !== undefined ? { maxManifestBytes } : {}),
    uploadMaxAgeMs,
    logger,
  });
  if (!flags.auth) logger.warn('no --auth: anyone who can reach this address can push');
  lastLine(logger);
  const listening = await server.listen(port, flags.host);
  const stop = (signal: NodeJS.Signals) => {
    // A second signal ends the process at once (Node's default), for an operator who will not wait.
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
    void shutdown(listening, logger, signal);
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

/** Requests running when a signal comes have this long to finish (a blob upload cut mid-body starts over). */
const GRACE_MS = 10_000;
/** Then the handlers of the requests cut have this long to settle: one stuck on an unresponsive backend must not hold the process. */
const SETTLE_MS = 5_000;

/** Drains and closes the server, logging the signal, what was running and the end, then exits. */
async function shutdown(listening: ListeningRegistry, logger: Logger, signal: NodeJS.Signals): Promise<void> {
  const requests = listening.openRequests;
  logger.info({ signal, requests, graceMs: GRACE_MS }, `${signal}: draining ${requests} requests`);
  const closed = listening.close({ graceMs: GRACE_MS }).then(() => true);
  if (await Promise.race([closed, sleep(GRACE_MS + SETTLE_MS).then(() => false)])) logger.info('shutdown complete');
  else logger.warn({ settleMs: SETTLE_MS }, `shutdown: handlers still running ${SETTLE_MS} ms after their requests were cut; exiting anyway`);
  process.exit(0);
}

/**
 * Refuses to serve from storage that does not answer: on a missing bucket every read would look like an empty
 * registry (valid tokens refused as unknown, every manifest 404) while the server reported itself up.
 */
async function reachable(storage: StorageDriver, flags: Flags): Promise<void> {
  try {
    await probeStorage(storage);
  } catch (err) {
    const { name, message } = err as Error;
    const bucket = flags['s3-bucket'];
    const where = bucket === undefined ? `--data ${flags.data}` : `--s3-bucket ${bucket}`;
    const at = flags['s3-endpoint'] ?? 'AWS S3';
    throw new Error(`cannot serve from ${where}: ${name === 'NoSuchBucket' ? `no bucket named ${bucket} at ${at} (create it first)` : `${name}: ${message}`}`);
  }
}

/**
 * The last line, not the defence: request handling contains its own errors. A stray rejection is logged
 * and serving goes on; an uncaught exception is logged and ends the process, as Node advises (state may
 * be half-changed), which is safe because storage recovers at the next start.
 */
function lastLine(logger: Logger): void {
  process.on('unhandledRejection', (err) => logger.error({ err }, 'unhandled rejection (serving goes on)'));
  process.on('uncaughtException', (err) => {
    logger.fatal({ err }, 'uncaught exception: exiting');
    process.exit(70);
  });
}

/** Refuses arguments a command does not take, rather than ignore them. */
function noArguments(command: string, args: string[], takes = 'no arguments'): void {
  if (args.length > 0) throw new UsageError(`${command} takes ${takes} (also got ${args.map((a) => JSON.stringify(a)).join(' ')})`);
}

async function token(flags: Flags, args: string[]): Promise<void> {
  const [sub, ...rest] = args;
  const id = sub === 'revoke' ? rest.shift() : undefined;
  if (sub !== undefined) noArguments(`token ${sub}`, rest, sub === 'revoke' ? 'one ID' : 'no arguments');
  const tokens = new TokenStore(await storageOf(flags, sub === 'list' || sub === 'revoke'));
  if (sub === 'create') {
    if (flags.scope.length === 0) throw new UsageError('token create needs at least one --scope');
    const { token: secret, record } = await tokens.create({ scopes: flags.scope, ...(flags.user ? { user: flags.user } : {}) });
    process.stderr.write(`token ${record.id} for ${record.user}: ${record.scopes.join(' ')} (shown once; store it now)\n`);
    process.stdout.write(secret + '\n');
  } else if (sub === 'list') {
    for (const r of await tokens.list()) process.stdout.write(`${r.id}\t${r.user}\t${r.createdAt}\t${r.scopes.join(' ')}\n`);
  } else if (sub === 'revoke' && id) {
    if (!(await tokens.revoke(id))) throw new Error(`no token ${id} (token list shows the ids)`);
    process.stderr.write(`revoked ${id}\n`);
  } else {
    throw new UsageError('expected: token create | token list | token revoke ID');
  }
}

async function reindex(flags: Flags, args: string[]): Promise<void> {
  noArguments('reindex', args);
  const count = await openRegistry(await storageOf(flags, true)).index.rebuildAll();
  process.stderr.write(`reindexed ${count} repositories\n`);
}

async function gc(flags: Flags, args: string[]): Promise<void> {
  noArguments('gc', args);
  const minAgeMs = minAge(flags['min-age']);
  const dryRun = flags['dry-run'];
  const report = await collectGarbage(await storageOf(flags, true), { dryRun, deleteUntagged: flags['delete-untagged'], minAgeMs });
  for (const m of report.manifests) process.stdout.write(`manifest ${m}\n`);
  for (const b of report.blobs) process.stdout.write(`blob ${b}\n`);
  const mib = (report.bytes / 1048576).toFixed(1);
  process.stderr.write(
    `${dryRun ? 'would remove' : 'removed'} ${report.blobs.length} blobs (${mib} MiB), ${report.links} repository links to them` +
      `${flags['delete-untagged'] ? ` and ${report.manifests.length} untagged manifests` : ''}\n`,
  );
}

async function main(argv: string[]): Promise<void> {
  const { values: flags, positionals } = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true });
  const [command, ...rest] = positionals;
  if (flags.version || command === 'version') {
    const { version } = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
    process.stdout.write(`${version}\n`);
    return;
  }
  if (flags.help || command === undefined || command === 'help') {
    process.stdout.write(USAGE + '\n');
    return;
  }
  if (command === 'serve') await serve(flags, rest);
  else if (command === 'token') await token(flags, rest);
  else if (command === 'reindex') await reindex(flags, rest);
  else if (command === 'gc') await gc(flags, rest);
  else throw new UsageError(`unknown command ${command}`);
}

try {
  await main(process.argv.slice(2));
} catch (err) {
  const usage = err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS');
  process.stderr.write(`reasonplug-registry: ${(err as Error).message}\n${usage ? USAGE + '\n' : ''}`);
  process.exit(usage ? 2 : 1);
}
