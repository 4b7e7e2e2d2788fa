/** Messages between the engine (main thread) and its generation worker. */
import type { DecoderSignature } from '../onnx/signature.js';
import type { ChatMessage } from '../tokenizer/tokenizer.js';
import type { GenerateOptions, GenerationResult, TokenEvent } from '../generate/types.js';
import type { RuntimeOptions } from './decoder-session.js';

/** A prompt in one of the forms the engine takes. A list makes a batch (left-padded). */
export type PromptInput =
  | { prompt: string | string[] }
  | { promptIds: number[] | number[][] }
  | { messages: ChatMessage[]; chatTemplate?: string };

/** What the worker is started with. */
export interface WorkerConfig {
  model: string;
  runtime: RuntimeOptions;
  cacheDir?: string;
}

/** What the engine learns about its model once loaded. */
export interface ModelInfo {
  modelPath: string;
  signature: DecoderSignature;
  /** Logit width of the model. */
  vocabSize: number;
  tokenizer?: { vocabSize: number; bosTokenId?: number; eosTokenIds: number[]; hasChatTemplate: boolean };
  /** What graph preparation did (or could not do). */
  notes: string[];
  /** Intra-op threads of the session; absent means onnxruntime's default (one per physical core). */
  intraOpThreads?: number;
}

export type ToWorker =
  | { type: 'generate'; id: number; input: PromptInput; options: GenerateOptions; abort: SharedArrayBuffer }
  | { type: 'tokenize'; id: number; text: string; addSpecialTokens: boolean }
  | { type: 'dispose' };

/** An error as it crosses the thread boundary (name kept so callers can tell the kinds apart). */
export interface WireError {
  name: string;
  message: string;
}

export type FromWorker =
  | { type: 'ready'; info: ModelInfo }
  | { type: 'failed'; error: WireError }
  /** Tokens in generation order; several per message when tokens come faster than the flush interval. */
  | { type: 'stream'; id: number; events: TokenEvent[] }
  | { type: 'done'; id: number; result: Omit<GenerationResult, 'timing'> & { prefillMs: number; decodeMs: number; decodeSteps: number } }
  | { type: 'encoded'; id: number; ids: number[] }
  | { type: 'error'; id: number; error: WireError };
