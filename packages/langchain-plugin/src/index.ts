/**
 * @reasonplug/langchain — a frozen backbone composed with reasoner modules, as a LangChain.js chat model
 * (`ChatReasoner`) and text-completion model (`ReasonerLLM`), and the backbone's embeddings (`BackboneEmbeddings`).
 */
export { ChatReasoner, type ChatReasonerCallOptions, type ChatReasonerOptions } from './chat-model.js';
export { ReasonerLLM, type ReasonerLLMCallOptions, type ReasonerLLMOptions } from './llm.js';
export { BackboneEmbeddings, EmbeddingsOptionsSchema, type EmbeddingsOptions } from './embeddings.js';
export { CallOptionsSchema, ChatModelOptionsSchema, ModelOptionsSchema } from './options.js';
export type {
  ChatCallOptions,
  ChatModelOptions,
  GenerationOptions,
  ModelOptions,
  OpenAIResponseFormat,
  ProgressListener,
  ReasonerCallOptions,
  ReasonerWeight,
} from './option-types.js';
export {
  ChatTemplateError,
  ReasonerOptionsError,
  ToolsNotSupportedError,
  UnknownReasonerError,
  UnsupportedMessageError,
  type OptionIssue,
} from './errors.js';
