/** Starts a worker thread from a module beside this one, from compiled JS or (in development) TypeScript. */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';

const fromSource = import.meta.url.endsWith('.ts');

/** Spawns `runtime/<name>.js` (or `.ts` when running from sources) with `workerData`. */
export function spawnWorker(name: string, workerData: unknown): Worker {
  const url = new URL(`./${name}${fromSource ? '.ts' : '.js'}`, import.meta.url);
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
}

/** Flattens an error for postMessage. */
export function toWire(err: unknown): WireError {
  const plain = (v: unknown): v is string | number | boolean => ['string', 'number', 'boolean'].includes(typeof v);
  const fields = err !== null && typeof err === 'object' ? Object.entries(err).filter(([k, v]) => k !== 'name' && k !== 'message' && plain(v)) : [];
  return {
    name: (err as Error)?.name ?? 'Error',
    message: (err as Error)?.message ?? String(err),
    ...(fields.length > 0 ? { fields: Object.fromEntries(fields) as Record<string, string | number | boolean> } : {}),
  };
}

/** Rebuilds an error received from another thread, keeping its name. */
export function fromWire(error: WireError): Error {
  const e = new Error(error.message);
  e.name = error.name;
  return e;
}
