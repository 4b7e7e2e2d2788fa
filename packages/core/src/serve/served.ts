/**
 * What the routes share: the loaded model, the server's options that shape a chat turn, and the runner every request
 * that uses the engine goes through. A route takes the least of these it needs.
 */
import type { Engine } from '../engine.js';
import type { TextTokenizer } from '../tokenizer/tokenizer.js';
import type { SamplingDefaults } from '../modules/model-defaults.js';
import type { ServedModels } from './models.js';
import type { RequestRunner } from './request-runner.js';
import type { ServeOptions } from './server.js';

/** What serving needs once the model is loaded. */
export interface Loaded {
  engine: Engine;
  models: ServedModels;
  tokenizer?: TextTokenizer;
  /** Positions one row may use (the model's context length, else 2048), for the KV capacity without a budget. */
  contextLength: number;
}

/** The server's options a chat turn reads (chat-turn.ts), as they were given to `startServer`. */
type ChatOptions = Pick<ServeOptions, 'chatTemplate' | 'chatTemplateKwargs' | 'toolCallSyntax' | 'reasoningFormat' | 'thinkingBudget'>;

/** The loaded model with the options its chat turns are rendered and read with. */
export interface ChatModel extends Loaded {
  readonly options: ChatOptions;
}

/** What a route serves with: the chat model, and the runner of its requests. */
export interface Served extends ChatModel {
  readonly runner: RequestRunner;
}

/** The served model's own sampling defaults, which a request's body gets where it says nothing (defaults-request.ts). */
export function sampling(l: Loaded): SamplingDefaults | undefined {
  return l.engine.info.defaults?.sampling;
}
