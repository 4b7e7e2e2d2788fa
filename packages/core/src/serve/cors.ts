/**
 * Calls from browser pages on other origins (CORS, the Fetch standard's protocol), so a web app can talk to the
 * server the way it talks to OpenAI's. Pages served from loopback (http or https on localhost, *.localhost,
 * 127.0.0.0/8 or [::1], any port) may always call; pages from other origins only when listed, `*` for any.
 *
 * A request that names an origin outside the list is refused with 403 before anything runs: otherwise any page the
 * user visits could make the server generate for it with a "simple" request (a `text/plain` POST) that browsers
 * send without asking first, even though the page could not read the answer. Ollama refuses unlisted origins the
 * same way. Requests without an `Origin` header (curl, SDKs, other servers) are not affected.
 *
 * A server listening on loopback alone also refuses requests whose `Host` header names another machine (HostPolicy):
 * that is what a page sends once a rebinding DNS name of its own points at 127.0.0.1, with no `Origin` on a GET.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import { hostname } from 'node:os';
import { HttpError } from './errors.js';

/** The methods the server's routes answer. */
const METHODS = 'GET, POST';
/** How long a browser may reuse a preflight's answer (seconds; Chromium caps it at 7200). */
const PREFLIGHT_MAX_AGE_S = 600;
/**
 * Response headers beyond the CORS-safelisted ones that clients read: OpenAI's SDK waits `Retry-After` after a 429
 * or 503, gives up on `x-should-retry: false`, and gives `x-request-id` as the request's id (Anthropic's SDK reads
 * it as `request-id`).
 */
const EXPOSED = 'Retry-After, x-should-retry, x-request-id, request-id';

/**
 * One configured origin in the form browsers send it (`https://app.example.com`, `http://localhost:3000`), or `*`;
 * throws a RangeError naming what is wrong with anything else (a path, a bare host name, another scheme).
 */
export function corsOriginOf(entry: string): string {
  if (entry === '*') return entry;
  let url: URL;
  try {
    url = new URL(entry);
  } catch {
    throw new RangeError(`${JSON.stringify(entry)} is not an origin: write scheme://host[:port], e.g. https://app.example.com, or * for any origin`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new RangeError(`${JSON.stringify(entry)} is not an http or https origin`);
  if (url.username || url.password || url.search || url.hash || !/^[a-z][a-z0-9+.-]*:\/\/[^/]+\/?$/i.test(entry)) {
    throw new RangeError(`${JSON.stringify(entry)} is not an origin: an origin is scheme://host[:port] with no path, query or user (${url.origin})`);
  }
  return url.origin;
}

/** Whether `--cors-origin` can name `origin` as sent; `null` (file: pages, sandboxed frames) only `*` lets in. */
function listable(origin: string): boolean {
  try {
    return corsOriginOf(origin) === origin;
  } catch {
    return false;
  }
}

/** Whether `origin` is a page served from this machine's loopback interface. */
function isLoopback(origin: string): boolean {
  let url: URL;
  try {
    url = new URL(origin);
  } catch {
    return false; // `null` (file: pages, sandboxed frames) and anything malformed
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return false;
  return isLoopbackName(url.hostname);
}

/** Whether a host name (as a URL gives it) names this machine's loopback interface. */
function isLoopbackName(host: string): boolean {
  return host === 'localhost' || host.endsWith('.localhost') || host === '[::1]' || /^127(\.\d{1,3}){3}$/.test(host) || /^\[::ffff:7f[0-9a-f]{2}:[0-9a-f]{1,4}\]$/.test(host);
}

/**
 * One configured host name (`--allowed-host`) as a `Host` header names it, lowercased, or `*`; throws a RangeError
 * naming what is wrong with anything else (a port, a scheme, a path).
 */
export function allowedHostOf(entry: string): string {
  if (entry === '*') return entry;
  // (no patterns: `*.example.com` would be taken for a name no request sends)
  const name = /^(\[[0-9a-f:.]+\]|[^\s/?#@:*[\]]+)$/i.test(entry) ? hostOf(entry) : '';
  if (!name) throw new RangeError(`${JSON.stringify(entry)} is not a host name: write the name alone, without scheme, port or wildcard (e.g. llm.example.com), or * for any`);
  return name;
}

/** The host name of a `Host` header's value (lowercased, without its port), or '' for one that names none. */
function hostOf(host: string): string {
  try {
    return new URL(`http://${host}`).hostname;
  } catch {
    return '';
  }
}

/**
 * Which host names a server answers when it listens on loopback alone. A page of another site whose name a
 * rebinding DNS points at 127.0.0.1 sends its own name as `Host`, and no `Origin` on a GET (Ollama refuses such
 * requests too), so the names of this machine are served and others refused with 403: `localhost` and
 * `*.localhost`, the machine's host name, IP addresses (an attack needs a name of its own, and an address names
 * none), and the names listed (`--allowed-host`: the name a reverse proxy sends; `*`: any, which turns the check
 * off). A server listening on other addresses serves any name, as does a request without `Host` (HTTP/1.0).
 */
export class HostPolicy {
  private readonly off: boolean;
  private readonly listed: ReadonlySet<string>;
  private readonly machine = hostname().toLowerCase();

  /** `listening`: the address the server listens on; `hosts`: names allowed besides this machine's (each checked by `allowedHostOf`). */
  constructor(listening: string, hosts: readonly string[] = []) {
    const normal = hosts.map(allowedHostOf);
    // (an address in any of its spellings: `0:0:0:0:0:0:0:1` is `[::1]`, `::ffff:127.0.0.1` an IPv4 loopback)
    const address = hostOf(isIP(listening) === 6 ? `[${listening}]` : listening) || listening;
    this.off = normal.includes('*') || !isLoopbackName(address);
    this.listed = new Set(normal);
  }

  /** Refuses `req` with a 403 HttpError saying how to let it in, unless its `Host` names a host served. */
  check(req: IncomingMessage): void {
    const host = req.headers.host;
    if (this.off || host === undefined) return;
    const name = hostOf(host);
    if (name && (isLoopbackName(name) || isIP(name.replace(/^\[(.*)\]$/, '$1')) !== 0 || name === this.machine || this.listed.has(name))) return;
    const allow = name ? `--allowed-host ${name}` : `--allowed-host '*'`;
    throw new HttpError(
      403,
      `requests for host ${JSON.stringify(host)} are not served: this server listens on loopback and answers this machine's names (localhost, ${this.machine}, IP addresses), so that no web page can reach it through a DNS name of its own; have the proxy in front send Host: localhost (nginx: proxy_set_header Host localhost;), or start the server with ${allow}, or with --host ADDRESS to listen beyond loopback`,
      'invalid_request_error',
      'host_not_allowed',
    );
  }
}

/** Which browser origins may call the server: loopback pages always, others as listed. */
export class CorsPolicy {
  private readonly any: boolean;
  private readonly listed: ReadonlySet<string>;

  /** `origins`: origins allowed besides loopback ones, `*` for any (each checked by `corsOriginOf`). */
  constructor(origins: readonly string[] = []) {
    const normal = origins.map(corsOriginOf);
    this.any = normal.includes('*');
    this.listed = new Set(normal);
  }

  /** Whether a page of `origin` (a request's `Origin` header, as the browser sent it) may call. */
  allows(origin: string): boolean {
    return this.any || this.listed.has(origin) || isLoopback(origin);
  }

  /**
   * Sets the CORS headers of the answer to `req` and answers a preflight itself (true: nothing more to do). A
   * request from an origin not allowed is refused with a 403 HttpError naming the flag that allows it.
   */
  apply(req: IncomingMessage, res: ServerResponse): boolean {
    const origin = req.headers.origin;
    if (origin === undefined) return false;
    if (!this.allows(origin)) {
      const how = listable(origin) ? `--cors-origin ${origin} (or --cors-origin '*' for any origin)` : `--cors-origin '*' (any origin; ${JSON.stringify(origin)} cannot be listed)`;
      throw new HttpError(403, `requests from pages of ${origin} are not allowed; start the server with ${how}`, 'invalid_request_error', 'origin_not_allowed');
    }
    // The origin itself, not `*`: it works for credentialed requests too, and caches keep answers apart by Vary.
    res.setHeader('Access-Control-Allow-Origin', origin);
    const requested = req.headers['access-control-request-method'];
    if (req.method !== 'OPTIONS' || typeof requested !== 'string') {
      res.setHeader('Vary', 'Origin');
      res.setHeader('Access-Control-Expose-Headers', EXPOSED);
      return false;
    }
    res.setHeader('Vary', 'Origin, Access-Control-Request-Method, Access-Control-Request-Headers');
    res.setHeader('Access-Control-Allow-Methods', METHODS);
    // The headers the page asked for: Authorization (never covered by a `*`), OpenAI's SDK's x-stainless-*, …
    const headers = req.headers['access-control-request-headers'];
    if (headers) res.setHeader('Access-Control-Allow-Headers', headers);
    // Chromium asks a public page's permission to reach a private address (Private Network Access).
    if (req.headers['access-control-request-private-network'] === 'true') res.setHeader('Access-Control-Allow-Private-Network', 'true');
    res.setHeader('Access-Control-Max-Age', String(PREFLIGHT_MAX_AGE_S));
    res.writeHead(204);
    res.end();
    return true;
  }
}
