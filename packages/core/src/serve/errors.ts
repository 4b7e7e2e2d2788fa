/** Errors of the OpenAI-compatible server, in OpenAI's shape: `{"error":{"message","type","code"}}`. */

/** An error answered with `status` and OpenAI's error body; `headers` go with it (e.g. `Retry-After`). */
export class HttpError extends Error {
  override name = 'HttpError';
  constructor(
    readonly status: number,
    message: string,
    /** OpenAI's error type: `invalid_request_error`, `authentication_error`, `rate_limit_error`, `server_error`, … */
    readonly type: string,
    /** A short machine-readable code, e.g. `model_not_found`, or the offending parameter's name. */
    readonly code: string | null = null,
    readonly headers: Record<string, string> = {},
    /** The request parameter at fault, when there is one (OpenAI's `param`). */
    readonly param: string | null = null,
  ) {
    super(message);
  }

  /** The JSON body of the answer. */
  body(): { error: { message: string; type: string; code: string | null; param: string | null } } {
    return { error: { message: this.message, type: this.type, code: this.code, param: this.param } };
  }
}

/** A 400 for a bad request body, naming the parameter. */
export const badRequest = (message: string, param: string | null = null, code: string | null = null) =>
  new HttpError(400, message, 'invalid_request_error', code ?? (param ? 'invalid_value' : null), {}, param);

/** Engine errors that mean the request, not the server, is at fault (raised before or as generation starts). */
const REQUEST_FAULTS = new Set([
  'GenerateOptionsError',
  'CompositionOptionsError',
  'SamplingOptionsError',
  'ConstraintError',
  'ReasonerSelectionError',
  'WeightScheduleError',
  'LatentPolicyError',
  'PromptError',
  'TokenizerError',
  'EmbedInputError',
]);

/** How the engine words an input past the context (prompts, texts to tokenize, embedding inputs). */
const PAST_CONTEXT = /(more|longer) than the context length of/;

/** The request field that holds the input at each endpoint, named by a context overflow's `param`. */
function inputParam(path: string): string | null {
  if (path.endsWith('/chat/completions') || path.endsWith('/messages') || path === '/api/chat') return 'messages';
  if (path.endsWith('/completions') || path === '/api/generate') return 'prompt';
  if (path.endsWith('/embeddings') || path.endsWith('/responses') || path === '/api/embed' || path === '/api/embeddings') return 'input';
  return null;
}

/**
 * The request field of the option an engine error names (`logitBias` → `logit_bias`: the request's fields are the
 * options in snake case), if it names one.
 */
function optionParam(e: Error): string | null {
  // (the latent policy is the body extension's: a server without a projector refuses `marker`)
  if (e.name === 'LatentPolicyError') return 'reasonplug.latent';
  const option = (e as { option?: unknown }).option;
  return typeof option === 'string' ? option.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`) : null;
}

/**
 * Maps anything thrown while serving `path` to an {@link HttpError}: request faults to 400 (an input past the
 * context as OpenAI's `context_length_exceeded`, which clients such as LiteLLM act on), the rest to 500. A chat template
 * the renderer cannot run is the server's fault, whatever the messages (`chat_template_unsupported`); one that refuses
 * them with its own `raise_exception` is a TokenizerError, the request's.
 */
export function toHttpError(err: unknown, path = ''): HttpError {
  if (err instanceof HttpError) return err;
  const e = err as Error;
  // (by name: raised in a generation worker, it comes back as an EngineError of that name)
  if (e?.name === 'ChatTemplateUnsupportedError') return new HttpError(500, `${e.name}: ${e.message}`, 'server_error', 'chat_template_unsupported');
  if (REQUEST_FAULTS.has(e?.name) && PAST_CONTEXT.test(e.message)) return badRequest(`${e.name}: ${e.message}`, inputParam(path), 'context_length_exceeded');
  if (REQUEST_FAULTS.has(e?.name)) return badRequest(`${e.name}: ${e.message}`, optionParam(e), e.name);
  return new HttpError(500, `${e?.name ?? 'Error'}: ${e?.message ?? String(err)}`, 'server_error', 'internal_error');
}
