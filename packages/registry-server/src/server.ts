/** The registry as an Express app, and a listener with settings fit for multi-gigabyte uploads. */
import express, { type Express, type RequestHandler, type Response } from 'express';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pino, type Logger } from 'pino';
import { DEFAULT_UPLOAD_MAX_AGE_MS, Maintenance, type MaintenanceReport } from './registry/maintenance.js';
import { openRegistry } from './registry/registry.js';
import { probeStorage, type StorageDriver } from './storage/driver.js';
import { Access, type AuthConfig, type Caller } from './http/access.js';
import { discovery, resolve, search } from './http/extension-handlers.js';
import { errorFields } from './http/log-fields.js';
import { containStreamErrors, errorBody, identify, notFound, requestLog } from './http/middleware.js';
import { OpenRequests } from './http/open-requests.js';
import { repositoryRoutes } from './http/repository-routes.js';
import { listCatalog } from './http/tags-handler.js';
import type { Services } from './http/services.js';
import { denied } from './errors.js';

/** Options of {@link createRegistryServer}. */
export interface RegistryServerOptions {
  /** Where the registry's objects live: a `FilesystemStorage`, an `S3Storage` or another {@link StorageDriver}. */
  storage: StorageDriver;
  /** Token authentication; without it the registry is open to anyone who can reach it. */
  auth?: AuthConfig;
  /** Largest manifest accepted, in bytes (default 4 MiB); a larger push gets 413. */
  maxManifestBytes?: number;
  /**
   * Receives one structured line per request (default: silent). Errors are logged through a serializer of its
   * own (name, message, stack, code, status, an AWS SDK error's request id), not the logger's.
   */
  logger?: Logger;
  /**
   * Upload sessions started longer ago than this many ms are purged, at start and then daily (default
   * one week, as CNCF distribution; Infinity keeps them).
   */
  uploadMaxAgeMs?: number;
  /** A connection that has not sent its request's headers after this many ms is answered 408 and closed (default 60 s, Node's). */
  headersTimeoutMs?: number;
}

/** A registry that listens ({@link RegistryServer.listen}). */
export interface ListeningRegistry {
  /** e.g. `http://127.0.0.1:5000` */
  url: string;
  /** Requests being answered now. */
  readonly openRequests: number;
  /**
   * Stops listening and closes idle connections, gives the requests being answered up to `graceMs` (default 0)
   * to finish, then cuts the connections left; resolves once running handlers and maintenance have settled.
   * Throws a RangeError unless `graceMs` is a finite number of ms, 0 or more.
   */
  close(opts?: { graceMs?: number }): Promise<void>;
}

/** A registry built by {@link createRegistryServer}, not listening yet. */
export interface RegistryServer {
  /** The Express app serving every route: mount it in your own server, or call {@link RegistryServer.listen}. */
  app: Express;
  /** Listens, and starts the maintenance schedule ({@link RegistryServer.maintain} at once, then periodically). */
  listen(port: number, host?: string): Promise<ListeningRegistry>;
  /** One maintenance pass: removes dead writers' temp files and purges expired upload sessions. */
  maintain(): Promise<MaintenanceReport>;
}

const DEFAULT_MAX_MANIFEST = 4 * 1024 * 1024;

/** Throws a RangeError naming the option unless it is what its doc comment asks for. */
function checkOptions(opts: RegistryServerOptions): void {
  const { maxManifestBytes, uploadMaxAgeMs, headersTimeoutMs } = opts;
  if (headersTimeoutMs !== undefined && !(Number.isSafeInteger(headersTimeoutMs) && headersTimeoutMs > 0)) {
    throw new RangeError(`headersTimeoutMs must be a positive whole number of ms (got ${headersTimeoutMs})`);
  }
  if (maxManifestBytes !== undefined && !(Number.isSafeInteger(maxManifestBytes) && maxManifestBytes > 0)) {
    throw new RangeError(`maxManifestBytes must be a positive integer (got ${maxManifestBytes})`);
  }
  if (uploadMaxAgeMs !== undefined && !(uploadMaxAgeMs > 0)) {
    throw new RangeError(`uploadMaxAgeMs must be a positive number of ms or Infinity (got ${uploadMaxAgeMs})`);
  }
}

/** A request name for this machine's loopback interface (`localhost`, `*.localhost`, 127.x, [::1]). */
const LOOPBACK_NAME = /^(localhost|.+\.localhost|127(\.\d{1,3}){3}|\[::1\])$/;

/**
 * On an open registry, refuses writes that browser pages of other sites send (their `Origin` another host's): a
 * text/plain POST needs no preflight, so any page a developer visits could otherwise upload to a registry on
 * their machine. Registry clients send no `Origin`; reads stay open, as the registry is.
 */
const pageWrites: RequestHandler = (req, _res, next) => {
  const origin = req.headers.origin;
  if (origin === undefined || req.method === 'GET' || req.method === 'HEAD' || req.method === 'OPTIONS') return next();
  let page: URL | undefined;
  try {
    page = new URL(origin);
  } catch {
    // `null` (file: pages, sandboxed frames): never this registry's own
  }
  if (page && (page.host === req.headers.host || LOOPBACK_NAME.test(page.hostname))) return next();
  next(denied(`writes from pages of ${origin} are refused by an open registry; start it with --auth to take writes with a token`));
};

/**
 * `GET /readyz`: 200 when a storage request succeeds, else 503 with the reason (the error's name only: the
 * endpoint is open to anyone, the log has the whole error). The server itself answering is `/healthz`.
 */
async function ready(storage: StorageDriver, res: Response, logger: Logger): Promise<void> {
  try {
    await probeStorage(storage);
  } catch (err) {
    const { name, code } = err as NodeJS.ErrnoException;
    logger.warn({ err }, 'not ready: storage failed');
    res.status(503).json({ status: 'unavailable', reason: `storage: ${code ?? name}` });
    return;
  }
  res.status(200).json({ status: 'ok' });
}

/**
 * Builds the registry (OCI distribution v1.1 plus the `_reasonplug` search and resolve extension, and the probes
 * `/healthz` and `/readyz`) on `opts.storage` as an Express app; nothing listens and no maintenance runs until {@link RegistryServer.listen}. Throws a RangeError
 * when `maxManifestBytes`, `uploadMaxAgeMs` or `headersTimeoutMs` is out of range.
 */
export function createRegistryServer(opts: RegistryServerOptions): RegistryServer {
  checkOptions(opts);
  const logger = (opts.logger ?? pino({ level: 'silent' })).child({}, { serializers: { err: errorFields } });
  const s: Services = {
    ...openRegistry(opts.storage),
    access: new Access(opts.auth, opts.storage),
    maxManifestBytes: opts.maxManifestBytes ?? DEFAULT_MAX_MANIFEST,
    logger,
  };
  // Handlers still running (a write failing after its connection was cut): close() waits for them, so
  // that no storage work outlives the server.
  const inflight = new Set<Promise<unknown>>();
  const tracked =
    (handler: RequestHandler): RequestHandler =>
    (req, res, next) => {
      const work = Promise.resolve(handler(req, res, next));
      inflight.add(work);
      const settled = () => void inflight.delete(work);
      work.then(settled, settled);
      return work; // Express turns a rejection into the error answer
    };
  const open = new OpenRequests();
  const maintenance = new Maintenance(opts.storage, s.uploads, opts.uploadMaxAgeMs ?? DEFAULT_UPLOAD_MAX_AGE_MS, logger);

  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.use(open.track);
  app.use(containStreamErrors(logger));
  app.use(requestLog(logger));
  app.use((_req, res, next) => {
    res.set('Docker-Distribution-API-Version', 'registry/2.0');
    next();
  });
  // Probes for orchestrators and load balancers: outside /v2/ and before authentication, as a probe sends no token.
  app.get('/healthz', (_req, res) => {
    res.status(200).json({ status: 'ok' });
  });
  app.get('/readyz', tracked((_req, res) => ready(opts.storage, res, logger)));
  if (!opts.auth) app.use(pageWrites);
  app.use(tracked(identify(s.access)));
  app.get('/v2/', (_req, res) => {
    // Clients learn how to authenticate from this endpoint's challenge, so it asks even when pulls are open.
    if (s.access.enabled && !res.locals.caller) throw s.access.unauthorized('authentication required');
    res.status(200).json({});
  });
  app.get('/v2/_oci/ext/discover', (_req, res) => {
    res.status(200).json(discovery);
  });
  app.get('/v2/_catalog', tracked((req, res) => listCatalog(s, req, res, res.locals.caller as Caller)));
  app.get('/v2/_reasonplug/search', tracked((req, res) => search(s, req, res, res.locals.caller as Caller)));
  app.get('/v2/_reasonplug/resolve', tracked((req, res) => resolve(s, req, res, res.locals.caller as Caller)));
  app.use(tracked(repositoryRoutes(s)));
  app.use(notFound);
  app.use(errorBody(logger));

  return {
    app,
    maintain: () => maintenance.run(),
    listen: (port, host = '127.0.0.1') =>
      new Promise((resolveListen, reject) => {
        // No overall request timeout: a large blob upload may legitimately take longer than Node's 5 minutes. The
        // headers keep a limit of their own (Node's would follow requestTimeout to 0: idle or trickling sockets would
        // then hold every descriptor), checked at least as often.
        const headersTimeout = opts.headersTimeoutMs ?? 60_000;
        const server = createServer({ requestTimeout: 0, headersTimeout, connectionsCheckingInterval: Math.min(30_000, headersTimeout) }, app);
        server.once('error', reject);
        server.listen(port, host, () => {
          server.off('error', reject);
          // A failure to accept one connection (EMFILE, ECONNABORTED) is no reason to stop serving the others.
          server.on('error', (err) => logger.error({ err }, 'server error'));
          const { address, port: bound } = server.address() as AddressInfo;
          const url = `http://${address.includes(':') ? `[${address}]` : address}:${bound}`;
          logger.info({ url }, 'listening');
          maintenance.start();
          resolveListen({
            url,
            get openRequests() {
              return open.size;
            },
            close: async ({ graceMs = 0 } = {}) => {
              if (!(Number.isFinite(graceMs) && graceMs >= 0)) throw new RangeError(`graceMs must be a finite number of ms, 0 or more (got ${graceMs})`);
              // Stops accepting; Node closes the connections idle now, and each answer from here on closes its own.
              const closed = new Promise<void>((done) => server.close(() => done()));
              if (!(await open.drain(graceMs))) {
                const cut = open.markCut();
                logger.warn({ requests: cut, graceMs }, `shutdown: cutting ${cut.length} requests still running after the grace period`);
              }
              // What is left: connections kept alive past their last answer, and those of the requests just cut.
              server.closeAllConnections();
              await closed;
              await Promise.allSettled([...inflight]);
              await maintenance.stop();
            },
          });
        });
      }),
  };
}
