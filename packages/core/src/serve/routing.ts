/**
 * How a request finds its route: the path it names, the method it is routed by, the methods each route takes, and the
 * refusal of a request no route takes.
 */
import type { IncomingMessage } from 'node:http';
import { HttpError } from './errors.js';

/**
 * The path a request names: an origin-form target (`/v1/models?x`, RFC 9112 §3.2.1) up to its query, as sent (`//`
 * is an empty segment there, not a host); an absolute-form one (`http://host:8000/v1/models`, §3.2.2) its URL's path.
 */
export function requestPath(target = '/'): string {
  if (target.startsWith('/')) return target.split('?')[0]!;
  return URL.canParse(target) ? new URL(target).pathname : target;
}

/** The OpenAI routes llama.cpp's server also answers without `/v1` (its clients' base URLs may leave it out). */
export const UNPREFIXED = new Set(['/chat/completions', '/completions', '/embeddings', '/responses', '/models']);

/** A request's method as the routes read it: HEAD is answered as GET is (Node writes the headers alone, RFC 9110 §9.3.2). */
export function routedMethod(req: IncomingMessage): string | undefined {
  return req.method === 'HEAD' ? 'GET' : req.method;
}

/** The methods each route takes, as a 405's `Allow` names them (GET's routes take HEAD too; `/v1/models/{id}` is one). */
const ALLOWED = new Map<string, string>([
  ...['/', '/health', '/v1/health', '/metrics', '/v1/models', '/api/version', '/api/tags', '/api/ps'].map((p): [string, string] => [p, 'GET, HEAD']),
  ...['/tokenize', '/detokenize', '/v1/chat/completions', '/v1/completions', '/v1/embeddings', '/v1/responses', '/v1/messages', '/v1/messages/count_tokens', '/api/show', '/api/chat', '/api/generate', '/api/embed', '/api/embeddings'].map(
    (p): [string, string] => [p, 'POST'],
  ),
]);

/**
 * The refusal of a request no route takes: a path routed for another method gets 405 with `Allow` (RFC 9110 §15.5.6,
 * as vLLM's server answers), an unknown one 404 (`served` adds what the server answers there).
 */
export function noRoute(req: IncomingMessage, path: string, served = ''): HttpError {
  const allow = ALLOWED.get(path) ?? (path.startsWith('/v1/models/') ? ALLOWED.get('/v1/models') : undefined);
  if (!allow) return new HttpError(404, `no route ${req.method} ${path}${served}`, 'invalid_request_error', 'not_found');
  return new HttpError(405, `${req.method} ${path} is not allowed: it takes ${allow}`, 'invalid_request_error', 'method_not_allowed', { Allow: allow });
}

/** A model id from a request path; a malformed percent-escape names no model. */
export function modelIdOf(escaped: string): string {
  try {
    return decodeURIComponent(escaped);
  } catch {
    throw new HttpError(404, `no model "${escaped}": the path is not a valid percent-encoded id`, 'invalid_request_error', 'model_not_found');
  }
}
