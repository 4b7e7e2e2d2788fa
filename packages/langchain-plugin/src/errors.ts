/**
 * Errors this package raises, one class per kind so that callers can tell them apart. An aborted or timed-out
 * call raises LangChain's own `ModelAbortError` (from `@langchain/core/errors`), which carries the partial output.
 */

/** One problem with an option: the field (e.g. `reasoners[0].weight`, empty for the whole object) and what is wrong. */
export interface OptionIssue {
  path: string;
  message: string;
}

/** Raised for options that break the schema, at creation or per call; one message line per problem. */
export class ReasonerOptionsError extends Error {
  override name = 'ReasonerOptionsError';

  constructor(
    /** Which options: `ChatReasoner.create`, `call options`, ... */
    readonly where: string,
    readonly issues: readonly OptionIssue[],
  ) {
    super(issues.map((i) => `${where}: ${i.path ? `${i.path}: ` : ''}${i.message}`).join('\n'));
  }
}

/**
 * Raised when a call names a reasoner that the model did not load. Reasoners are chosen per call among the
 * loaded ones; loading another would mean a second copy of the backbone, so it is never done behind a call.
 */
export class UnknownReasonerError extends Error {
  override name = 'UnknownReasonerError';

  constructor(
    readonly requested: string,
    readonly loaded: readonly string[],
  ) {
    super(
      `no reasoner named "${requested}" is loaded (loaded: ${loaded.join(', ') || 'none'}); ` +
        'list its module in create({ reasoners }) to be able to choose it per call',
    );
  }
}

/** Raised by `ChatReasoner.create` when the backbone has no tokenizer or no chat template and none is given. */
export class ChatTemplateError extends Error {
  override name = 'ChatTemplateError';
}

/** Raised when tools are bound but the chat template does not render them, or a tool choice cannot be honoured. */
export class ToolsNotSupportedError extends Error {
  override name = 'ToolsNotSupportedError';
}

/** Raised for messages a text model cannot take: images, audio, unknown message types. */
export class UnsupportedMessageError extends Error {
  override name = 'UnsupportedMessageError';
}
