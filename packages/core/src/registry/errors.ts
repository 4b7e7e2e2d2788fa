/**
 * Typed errors of the registry client. Every message names the registry (or the cache) involved and says
 * what to do about it, so the CLI can print it as one line.
 */
import { printable } from './printable.js';

/**
 * Base class of everything the registry client throws on purpose. Its message quotes what registries send (error
 * text, media types, names), so control characters in it are escaped: printing it cannot drive a terminal.
 */
export class RegistryClientError extends Error {
  override name = 'RegistryClientError';

  constructor(message: string, options?: ErrorOptions) {
    super(printable(message), options);
  }
}

/** A module reference (`[registry/]namespace/name[@range|:tag|@sha256:...]`) that does not parse. */
export class InvalidReferenceError extends RegistryClientError {
  override name = 'InvalidReferenceError';
}

/** The registry could not be reached at all (connection refused, TLS failure, reset). */
export class RegistryUnreachableError extends RegistryClientError {
  override name = 'RegistryUnreachableError';
  constructor(
    message: string,
    readonly registry: string,
  ) {
    super(message);
  }
}

/**
 * The cache could not take a file: its disk is full (`ENOSPC`, `EDQUOT`), a file-size limit (`ulimit -f`) stops it
 * (`EFBIG`), or the file system failed otherwise (`code`, the system's error code; `cause`, its error). `path` is the
 * file in the cache. Not the registry's fault: pulling again cannot help until the cause is dealt with.
 */
export class CacheWriteError extends RegistryClientError {
  override name = 'CacheWriteError';
  constructor(
    message: string,
    readonly path: string,
    readonly code: string | undefined,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** An error answer the client has no better name for; `code` is the OCI error code when the body had one. */
export class RegistryResponseError extends RegistryClientError {
  override name = 'RegistryResponseError';
  constructor(
    message: string,
    readonly registry: string,
    readonly status: number,
    readonly code?: string,
  ) {
    super(message);
  }
}

/**
 * The registry wants credentials we do not have (`missing`), refused the ones we sent (`rejected`), or
 * accepted them but they do not grant the scope (`denied`). `scope` is e.g. `repository:acme/math:pull`.
 */
export class RegistryAuthError extends RegistryClientError {
  override name = 'RegistryAuthError';
  constructor(
    message: string,
    readonly registry: string,
    readonly scope: string,
    readonly reason: 'missing' | 'rejected' | 'denied',
    /** What the registry said, where it said something. */
    readonly serverMessage?: string,
  ) {
    super(message);
  }
}

/** Content whose SHA-256 is not the digest it was asked for by; nothing of it is kept. */
export class DigestMismatchError extends RegistryClientError {
  override name = 'DigestMismatchError';
  constructor(
    message: string,
    readonly expected: string,
    readonly actual: string,
  ) {
    super(message);
  }
}

/** A manifest or config from a registry that is oversized, malformed, or not a reasonplug module. */
export class InvalidArtifactError extends RegistryClientError {
  override name = 'InvalidArtifactError';
}

/** An exact version that already exists in the repository with other content. */
export class VersionExistsError extends RegistryClientError {
  override name = 'VersionExistsError';
  constructor(
    message: string,
    readonly existing: string,
    readonly pushed: string,
  ) {
    super(message);
  }
}

/** No version of a repository satisfies the range, or the tag or digest does not exist. */
export class ModuleNotFoundError extends RegistryClientError {
  override name = 'ModuleNotFoundError';
}


/** The registry does not offer the `_reasonplug` extension an operation needs (search). */
export class ExtensionUnavailableError extends RegistryClientError {
  override name = 'ExtensionUnavailableError';
}

/** Offline mode (`--offline`, `REASONPLUG_OFFLINE=1`) and the operation needs the network. */
export class OfflineError extends RegistryClientError {
  override name = 'OfflineError';
}

/** Offline mode, and the module is not in the cache. */
export class NotCachedError extends OfflineError {
  override name = 'NotCachedError';
}
