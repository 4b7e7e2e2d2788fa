/**
 * What of an error and of a request URL may go into the log. Tokens never appear in logs, and neither do the
 * signing details an S3 error echoes back (its access key id, the signature, the canonical request).
 */

/** Query parameters of the protocol (OCI distribution and the `_reasonplug` extension): logged as sent. */
const PROTOCOL_PARAMETERS = new Set(['digest', 'n', 'last', 'mount', 'from', 'artifactType', 'task', 'kind', 'tokenizer', 'name', 'range']);

const REDACTED = '[REDACTED]';

/** A parameter name kept beside its redacted value; a part without `=`, or with a name unlike one, may itself be the secret (`?<token>`). */
const PARAMETER_NAME = /^[A-Za-z0-9_.-]{1,32}$/;

/** `url` (a request target) with the value of every query parameter but the protocol's own replaced by `[REDACTED]`. */
export function loggedUrl(url: string): string {
  const q = url.indexOf('?');
  if (q < 0) return url;
  const parts = url.slice(q + 1).split('&').map((part) => {
    const eq = part.indexOf('=');
    const key = eq < 0 ? part : part.slice(0, eq);
    if (part === '' || PROTOCOL_PARAMETERS.has(decoded(key))) return part;
    return eq >= 0 && PARAMETER_NAME.test(key) ? `${key}=${REDACTED}` : REDACTED;
  });
  return `${url.slice(0, q)}?${parts.join('&')}`;
}

/** A parameter name decoded; '' (no parameter's) when its percent-encoding is malformed. */
function decoded(key: string): string {
  try {
    return decodeURIComponent(key);
  } catch {
    return '';
  }
}

const MAX_CAUSES = 5;

/**
 * pino's `err` serializer, in place of its standard one, which copies every enumerable field: an AWS SDK error
 * carries S3's whole error document (`AWSAccessKeyId`, `SignatureProvided`, `StringToSign`, `CanonicalRequest`).
 * Keeps what identifies the failure (name, message, stack, code, status, the SDK's request id and HTTP status)
 * and drops the rest.
 */
export function errorFields(err: unknown): unknown {
  return fields(err, 0);
}

function fields(err: unknown, depth: number): unknown {
  if (typeof err !== 'object' || err === null) return err;
  const e = err as Partial<Error> & { code?: unknown; status?: unknown; $metadata?: { requestId?: unknown; httpStatusCode?: unknown } };
  return {
    type: e.name ?? e.constructor?.name ?? 'Error',
    message: String(e.message ?? ''),
    ...(e.stack !== undefined ? { stack: e.stack } : {}),
    ...(e.code !== undefined ? { code: e.code } : {}),
    ...(e.status !== undefined ? { status: e.status } : {}),
    ...(e.$metadata ? { $metadata: { requestId: e.$metadata.requestId, httpStatusCode: e.$metadata.httpStatusCode } } : {}),
    // A cause may be an SDK error too; a chain that loops back on itself is cut short.
    ...(e.cause !== undefined && depth < MAX_CAUSES ? { cause: fields(e.cause, depth + 1) } : {}),
  };
}
