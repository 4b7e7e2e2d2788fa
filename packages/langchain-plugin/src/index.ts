/**
 * @reasonplug/langchain — a frozen backbone composed with reasoner modules, as a LangChain.js chat model
 * (`ChatReasoner`) and text-completion model (`ReasonerLLM`).
 */
export { ChatReasoner, type ChatReasonerCallOptions, type ChatReasonerOptions } from './chat-model.js';
export { ReasonerLLM, type ReasonerLLMCallOptions, type ReasonerLLMOptions } from './llm.js';
export {
  CallOptionsSchema,
  ChatModelOptionsSchema,
  ModelOptionsSchema,
  type ChatModelOptions,
  type ModelOptions,
  type ReasonerCallOptions,
} from './options.js';
export {
  ChatTemplateError,
  ReasonerOptionsError,
  ToolsNotSupportedError,
  UnknownReasonerError,
  UnsupportedMessageError,
  type OptionIssue,
} from './errors.js';
