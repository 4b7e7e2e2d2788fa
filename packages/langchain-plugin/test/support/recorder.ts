/** A callback handler that records what a model run reports, awaited so that tests see every call in order. */
import { BaseCallbackHandler, type HandleLLMNewTokenCallbackFields, type NewTokenIndices } from '@langchain/core/callbacks/base';
import type { LLMResult } from '@langchain/core/outputs';

export class Recorder extends BaseCallbackHandler {
  name = 'recorder';
  override awaitHandlers = true;
  readonly tokens: string[] = [];
  readonly fields: (HandleLLMNewTokenCallbackFields | undefined)[] = [];
  /** Which prompt and completion each token is of. */
  readonly indices: NewTokenIndices[] = [];
  start: { extraParams?: Record<string, unknown>; metadata?: Record<string, unknown> } | undefined;
  end: LLMResult | undefined;

  /** `onToken` runs after each token is recorded (e.g. to abort after a few). */
  constructor(private readonly onToken: (recorder: Recorder) => void = () => {}) {
    super();
  }

  override handleLLMNewToken(token: string, idx: NewTokenIndices, _runId: string, _parent?: string, _tags?: string[], fields?: HandleLLMNewTokenCallbackFields): void {
    this.tokens.push(token);
    this.fields.push(fields);
    this.indices.push(idx);
    this.onToken(this);
  }

  override handleChatModelStart(
    _llm: unknown,
    _messages: unknown,
    _runId: string,
    _parent?: string,
    extraParams?: Record<string, unknown>,
    _tags?: string[],
    metadata?: Record<string, unknown>,
  ): void {
    this.start = { ...(extraParams ? { extraParams } : {}), ...(metadata ? { metadata } : {}) };
  }

  override handleLLMEnd(output: LLMResult): void {
    this.end = output;
  }
}
