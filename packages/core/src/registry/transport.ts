/**
 * HTTP to one registry: base URL, authentication (retrying once after a challenge), and turning failures
 * into typed errors that name the registry, the request and the OCI error code.
 */
import { Authenticator } from './auth.js';
import { RegistryResponseError, RegistryUnreachableError } from './errors.js';
import { registryUrl } from './reference.js';

/** Which registry a {@link Transport} talks to, and how. */
export interface TransportOptions {
  /** `host[:port]` */
  registry: string;
  /** Plain HTTP instead of HTTPS (loopback registries get plain HTTP anyway). */
  plainHttp?: boolean;
  /** Token, or `user:token`. */
  credential?: string;
}

/** One request of {@link Transport.request}. */
export interface RequestOptions {
  /** Authorization scope, e.g. `repository:acme/math:pull`. */
  scope: string;
  /** Request headers (the authorization header is the transport's). */
  headers?: Record<string, string>;
  /** Makes the body; called again when the request is repeated after an auth challenge. */
  body?: () => NonNullable<RequestInit['body']>;
  /** Statuses handed back to the caller instead of thrown (2xx always are). */
  allow?: readonly number[];
  /** Aborts the request. */
  signal?: AbortSignal;
}

/** Error details the OCI error JSON body carries. */
interface OciErrors {
  errors?: { code?: unknown; message?: unknown }[];
}

const ERROR_BODY_LIMIT = 64 * 1024;
const USER_AGENT = 'reasonplug-registry-client/1';

/** HTTP to one registry: its base URL, authentication (answering one challenge), failures as typed errors. */
export class Transport {
  /** `host[:port]`, as given. */
  readonly registry: string;
  /** `https://host[:port]` (or `http://`), which request paths are relative to. */
  readonly baseUrl: string;
  /** The registry's origin: the only one its credentials go to. */
  private readonly origin: string;
  private readonly auth: Authenticator;

  /** A transport to `opts.registry`; nothing is sent before the first request. */
  constructor(opts: TransportOptions) {
    this.registry = opts.registry;
    this.baseUrl = registryUrl(opts.registry, opts.plainHttp);
    this.origin = new URL(this.baseUrl).origin;
    this.auth = new Authenticator(opts.registry, opts.credential, (url, headers) => this.send('GET', url, headers));
  }

  /**
   * Sends a request to `path` (relative to the registry, or an absolute `Location` or `Link`), answering one auth
   * challenge. Credentials go to the registry's own origin only: a URL it names on another origin gets none, as a
   * redirect to one does (fetch drops them), and its challenge is not answered.
   */
  async request(method: string, path: string | URL, opts: RequestOptions): Promise<Response> {
    const url = new URL(path, this.baseUrl);
    const own = url.origin === this.origin;
    let authorization = own ? this.auth.header(opts.scope) : undefined;
    for (let attempt = 0; ; attempt++) {
      const headers = { ...opts.headers, ...(authorization ? { authorization } : {}) };
      const res = await this.send(method, url, headers, opts.body?.(), opts.signal);
      if (res.ok || opts.allow?.includes(res.status)) return res;
      const { code, message } = await readError(res);
      if (res.status === 401 && !own) {
        throw new RegistryResponseError(
          `registry ${this.registry}: ${method} ${url.origin}${url.pathname} asks for credentials, and the registry's are not sent to another origin`,
          this.registry,
          401,
          code,
        );
      }
      if (res.status === 401) {
        // A second 401 means the credentials themselves are refused; the first may just ask for them.
        if (attempt > 0) throw this.auth.error('rejected', opts.scope, message);
        authorization = await this.auth.answer(res.headers.get('www-authenticate'), opts.scope, message);
        continue;
      }
      if (res.status === 403) throw this.auth.error('denied', opts.scope, message);
      throw new RegistryResponseError(
        `registry ${this.registry}: ${method} ${url.pathname} failed with ${res.status}${code ? ` ${code}` : ''}${message ? `: ${message}` : ''}`,
        this.registry,
        res.status,
        code,
      );
    }
  }

  private async send(
    method: string,
    url: URL,
    headers: Record<string, string>,
    body?: RequestInit['body'],
    signal?: AbortSignal,
  ): Promise<Response> {
    try {
      return await fetch(url, {
        method,
        headers: { 'user-agent': USER_AGENT, ...headers },
        ...(body !== undefined ? { body, duplex: 'half' as const } : {}),
        ...(signal ? { signal } : {}),
      });
    } catch (err) {
      if (signal?.aborted) throw err;
      throw unreachable(this.registry, url, err);
    }
  }
}

function unreachable(registry: string, url: URL, err: unknown): RegistryUnreachableError {
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  const why = cause?.code ?? cause?.message ?? (err as Error).message;
  const hint =
    url.protocol === 'https:' && /SSL|EPROTO|wrong version/i.test(`${cause?.code} ${cause?.message}`)
      ? '; it may serve plain HTTP: pass --plain-http'
      : '; check the address and that the registry is running';
  return new RegistryUnreachableError(`cannot reach registry ${registry} at ${url.origin}: ${why}${hint}`, registry);
}

/** Code and message of an OCI error body (first error), or the start of a non-JSON body. */
async function readError(res: Response): Promise<{ code?: string; message?: string }> {
  const text = (await readAtMost(res, ERROR_BODY_LIMIT)).toString('utf8').trim();
  try {
    const first = (JSON.parse(text) as OciErrors).errors?.[0];
    return {
      ...(typeof first?.code === 'string' ? { code: first.code } : {}),
      ...(typeof first?.message === 'string' ? { message: first.message } : {}),
    };
  } catch {
    return text ? { message: text.slice(0, 200) } : {};
  }
}

/** Reads up to `limit` bytes of a body and drops the rest. */
async function readAtMost(res: Response, limit: number): Promise<Buffer> {
  if (!res.body) return Buffer.alloc(0);
  const chunks: Buffer[] = [];
  let size = 0;
  const reader = res.body.getReader();
  try {
    while (size < limit) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(Buffer.from(value));
      size += value.length;
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
  return Buffer.concat(chunks).subarray(0, limit);
}

/**
 * Reads a whole body, refusing one larger than `limit` bytes (by `Content-Length` before reading, or
 * while reading). `tooLarge` builds the error.
 */
export async function readLimited(res: Response, limit: number, tooLarge: (size: string) => Error): Promise<Buffer> {
  const declared = Number(res.headers.get('content-length') ?? NaN);
  if (declared > limit) {
    await res.body?.cancel();
    throw tooLarge(`${declared} bytes`);
  }
  const body = await readAtMost(res, limit + 1);
  if (body.length > limit) throw tooLarge(`more than ${limit} bytes`);
  return body;
}
