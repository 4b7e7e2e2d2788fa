/** Starts a worker thread from a module beside this one, from compiled JS or (in development) TypeScript. */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';

const fromSource = import.meta.url.endsWith('.ts');

/** Spawns `runtime/<name>.js` (or `.ts` when running from sources) with `workerData`. */
export function spawnWorker(name: string, workerData: unknown): Worker {
  return workerAt(new URL(`./${name}${fromSource ? '.ts' : '.js'}`, import.meta.url), workerData);
}

/** Starts the worker module at `url`, a TypeScript one through tsx when running from sources. */
export function workerAt(url: URL, workerData: unknown): Worker {
  if (!fromSource) return new Worker(url, { workerData });
  // Node 20 does not share module hooks with workers, and tsx registers its hooks on the main thread only.
  const tsxApi = pathToFileURL(join(dirname(createRequire(import.meta.url).resolve('tsx/package.json')), 'dist/esm/api/index.mjs')).href;
  const boot = `import(${JSON.stringify(tsxApi)}).then((tsx) => { tsx.register(); return import(${JSON.stringify(url.href)}); });`;
  return new Worker(boot, { eval: true, workerData });
}

/** An error as it crosses a thread boundary (its name kept so callers can tell the kinds apart). */
export interface WireError {
  name: string;
  message: string;
  /** Its own fields of plain values (a `GenerateOptionsError`'s `option`, a `GgufError`'s `code`). */
  fields?: Record<string, string | number | boolean>;
  /** Its stack on the thread it was raised in. */
  stack?: string;
  /** Its `cause` (onnxruntime's own error under an `OnnxFormatError`), flattened in turn. */
  cause?: WireError;
}

/**
 * Causes carried under an error at most: a chain is seldom more than two deep, and one that loops (an error its own
 * cause's cause) must end.
 */
const MAX_CAUSES = 4;

/** Flattens an error for postMessage, with its chain of causes (`cause` is not enumerable: it would be lost). */
export function toWire(err: unknown, causes = MAX_CAUSES): WireError {
  const plain = (v: unknown): v is string | number | boolean => ['string', 'number', 'boolean'].includes(typeof v);
  const fields = err !== null && typeof err === 'object' ? Object.entries(err).filter(([k, v]) => !['name', 'message', 'stack', 'cause'].includes(k) && plain(v)) : [];
  const { stack, cause } = (err ?? {}) as { stack?: unknown; cause?: unknown };
  return {
    name: (err as Error)?.name ?? 'Error',
    message: (err as Error)?.message ?? String(err),
    ...(fields.length > 0 ? { fields: Object.fromEntries(fields) as Record<string, string | number | boolean> } : {}),
    ...(typeof stack === 'string' ? { stack } : {}),
    ...(cause !== undefined && causes > 0 ? { cause: toWire(cause, causes - 1) } : {}),
  };
}

/** Rebuilds an error received from another thread as an Error keeping its name, fields, stack and causes. */
export function fromWire(error: WireError): Error {
  const e = new Error(error.message, error.cause ? { cause: fromWire(error.cause) } : undefined);
  Object.assign(e, error.fields, { name: error.name });
  if (error.stack !== undefined) e.stack = error.stack;
  return e;
}
