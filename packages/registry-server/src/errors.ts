/**
 * Typed registry errors. Each carries the OCI distribution error code and HTTP status, so handlers throw
 * and one error middleware writes the `{"errors":[...]}` body.
 */

/** Error codes of the OCI distribution spec, plus UNKNOWN for server faults. */
export type ErrorCode =
  | 'BLOB_UNKNOWN'
  | 'BLOB_UPLOAD_INVALID'
  | 'BLOB_UPLOAD_UNKNOWN'
  | 'DIGEST_INVALID'
  | 'MANIFEST_BLOB_UNKNOWN'
  | 'MANIFEST_INVALID'
  | 'MANIFEST_UNKNOWN'
  | 'NAME_INVALID'
  | 'NAME_UNKNOWN'
  | 'SIZE_INVALID'
  | 'UNAUTHORIZED'
  | 'DENIED'
  | 'UNSUPPORTED'
  | 'TOOMANYREQUESTS'
  | 'UNKNOWN';

/** An error the HTTP layer reports to the client as OCI error JSON. */
export class RegistryError extends Error {
  override readonly name = 'RegistryError';
  /**
   * @param code the OCI error code in the JSON body
   * @param status the HTTP status
   * @param detail the error's `detail` in the body
   */
  constructor(
    readonly code: ErrorCode,
    readonly status: number,
    message: string,
    readonly detail?: unknown,
    /** Response headers that belong to this error (e.g. `Range` on a 416). */
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

export const blobUnknown = (digest: string) => new RegistryError('BLOB_UNKNOWN', 404, 'blob unknown to registry', { digest });
export const uploadUnknown = (id: string) =>
  new RegistryError('BLOB_UPLOAD_UNKNOWN', 404, 'blob upload unknown to registry', { uuid: id });
export const uploadInvalid = (message: string, detail?: unknown) =>
  new RegistryError('BLOB_UPLOAD_INVALID', 400, message, detail);
export const digestInvalid = (message: string, detail?: unknown) =>
  new RegistryError('DIGEST_INVALID', 400, message, detail);
export const sizeInvalid = (message: string, detail?: unknown) => new RegistryError('SIZE_INVALID', 400, message, detail);
export const manifestInvalid = (message: string, detail?: unknown) =>
  new RegistryError('MANIFEST_INVALID', 400, message, detail);
export const manifestUnknown = (reference: string, message = 'manifest unknown to registry') =>
  new RegistryError('MANIFEST_UNKNOWN', 404, message, { reference });
export const manifestBlobUnknown = (digest: string) =>
  new RegistryError('MANIFEST_BLOB_UNKNOWN', 400, 'manifest references a blob unknown to this repository', { digest });
export const nameInvalid = (name: string, why = 'invalid repository name') =>
  new RegistryError('NAME_INVALID', 400, why, { name });
export const nameUnknown = (name: string) =>
  new RegistryError('NAME_UNKNOWN', 404, 'repository name not known to registry', { name });
export const denied = (message: string, detail?: unknown) => new RegistryError('DENIED', 403, message, detail);
