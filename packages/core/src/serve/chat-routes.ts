/**
 * The chat routes: OpenAI's chat completions, its Responses API and Anthropic's Messages API, each the chat turn
 * (chat-turn.ts) a request amounts to, answered in its API's shape, whole or streamed.
 */
import type { ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import type { GenerationResult, TokenEvent } from '../generate/types.js';
import type { PromptInput } from '../runtime/protocol.js';
import { anthropicError, openEventStream, sendJson, Sse, SSE_KEEP_ALIVE } from './answer-writers.js';
import { chatPrompt, chatTurn } from './chat-turn.js';
import { ChatChoice, finishReason, type ChatDelta } from './choices.js';
import { toHttpError, type HttpError } from './errors.js';
import { MessageOutput, stopReason } from './messages-output.js';
import { parseMessagesRequest } from './messages-request.js';
import { itemId, NamedEvents, type BlockOutput, type Event } from './reply-blocks.js';
import type { ChatRequest } from './requests.js';
import type { ResponseItems } from './response-items.js';
import { ResponseOutput } from './responses-output.js';
import type { ResponsesRequest } from './responses-request.js';
import type { ChatModel, Served } from './served.js';
import { latentUsage, responseUsage, usageJson } from './usage.js';

/** `/v1/chat/completions`: the chat turn answered as a chat completion of `n` choices, whole or as a stream of chunks. */
export async function chat(l: Served, request: ChatRequest, res: ServerResponse): Promise<void> {
  const { prompt, parsing } = chatTurn(l, request);
  const id = `chatcmpl-${randomUUID()}`;
  const created = Math.floor(Date.now() / 1000);
  const base = { id, created, model: request.model, system_fingerprint: 'reasonplug' };
  // vLLM's `echo`: the content opens with the text of a last message in the reply's role (the one continued).
  const last = request.messages.at(-1);
  const echoed = request.echo && last?.role === 'assistant' ? last.content : '';
  const withEcho = (choice: object) => {
    if (!echoed) return choice;
    const { message } = choice as { message: { content: string | null } };
    return { ...choice, message: { ...message, content: echoed + (message.content ?? '') } };
  };

  // n choices are n rows of one call (row j samples from seed + j).
  const input: PromptInput = { promptIds: request.n === 1 ? prompt.ids : Array.from({ length: request.n }, () => prompt.ids) };
  await l.runner.run(l, request, input, res, async (stream, first, rest, clock) => {
    const choices = Array.from({ length: request.n }, () => new ChatChoice(parsing, request.logprobs));
    // (special tokens kept: a thought's tags may be special tokens, harmony's are)
    const decode = (ids: number[]) => l.tokenizer!.decode(ids, false);
    const usage = (result: GenerationResult) => {
      const reasoning = result.rows.reduce((sum, row, index) => sum + choices[index]!.reasoningTokens(row, decode), 0);
      const details = usageJson(result, request.n);
      return { ...details, completion_tokens_details: { reasoning_tokens: reasoning, ...details.completion_tokens_details } };
    };
    if (!request.stream) {
      const result = await l.runner.drain(stream, first, rest, clock);
      const answers = result.rows.map((row, index) => choices[index]!.message(row));
      sendJson(res, 200, { ...base, object: 'chat.completion', choices: answers.map(({ choice }, index) => ({ index, ...withEcho(choice) })), usage: usage(result) });
      return answers[0]!.finish;
    }
    const sse = new Sse(res);
    const send = (index: number, { delta, logprobs, finish }: ChatDelta) =>
      sse.send({ ...base, object: 'chat.completion.chunk', choices: [{ index, delta, logprobs, finish_reason: finish }], ...(request.includeUsage ? { usage: null } : {}) });
    choices.forEach((choice, index) => send(index, choice.start()));
    // (as vLLM streams it: a delta of its own after the role's)
    if (echoed) choices.forEach((_, index) => send(index, { delta: { content: echoed }, logprobs: null, finish: null }));
    const result = await l.runner.streamChoices(stream, first, rest, clock, request.n, {
      token: ({ row, text, logprobs }) => choices[row]!.push(text, logprobs).forEach((delta) => send(row, delta)),
      end: (index, reason) => choices[index]!.end(reason).forEach((delta) => send(index, delta)),
    });
    if (request.includeUsage) sse.send({ ...base, object: 'chat.completion.chunk', choices: [], usage: usage(result) });
    sse.done();
    return choices[0]!.finish(result.rows[0]!.finishReason);
  }, request.stream ? SSE_KEEP_ALIVE : undefined);
}

/**
 * `/v1/responses`: the chat turn the request amounts to, answered as a response object or its event stream; its
 * output items are kept in `items` (under `scope`) for later references once it is finished, whole or streamed (unless
 * `store: false`).
 */
export async function responses(l: Served, request: ResponsesRequest, res: ServerResponse, items: ResponseItems, scope: string): Promise<void> {
  const chatRequest = request.chat;
  const { prompt, parsing } = chatTurn(l, chatRequest);
  const output = new ResponseOutput(parsing, chatRequest.logprobs);
  const base = { id: itemId('resp'), object: 'response', created_at: Math.floor(Date.now() / 1000), model: chatRequest.model, ...request.echo };
  const response = (result?: GenerationResult) => {
    const cut = result && result.rows[0]!.finishReason === 'length';
    return {
      ...base,
      status: !result ? 'in_progress' : cut ? 'incomplete' : 'completed',
      incomplete_details: cut ? { reason: 'max_output_tokens' } : null,
      error: null,
      output: result ? output.items : [],
      // (the effort the template was given, as the request set it)
      reasoning: { effort: typeof chatRequest.templateKwargs?.reasoning_effort === 'string' ? chatRequest.templateKwargs.reasoning_effort : null, summary: null },
      store: request.store,
      truncation: 'disabled',
      usage: result ? responseUsage(result, output.reasoningTokens(result.rows[0]!.ids, (ids) => l.tokenizer!.decode(ids, false))) : null,
    };
  };
  const finished = (result: GenerationResult) => {
    if (request.store) items.keep(output.items, scope);
    return response(result);
  };
  await answerInBlocks(l, chatRequest, prompt.ids, res, output, {
    whole: finished,
    opening: () => [
      { type: 'response.created', response: response() },
      { type: 'response.in_progress', response: response() },
    ],
    closing: (result) => {
      const done = finished(result);
      return [{ type: done.status === 'completed' ? 'response.completed' : 'response.incomplete', response: done }];
    },
    error: ({ message, code, param }) => ({ type: 'error', code, message, param }),
    keepAlive: SSE_KEEP_ALIVE,
    numbered: true,
  });
}

/** `/v1/messages` (Anthropic's Messages API): the chat turn the request amounts to, answered as a message or its event stream. */
export async function messages(l: Served, request: ReturnType<typeof parseMessagesRequest>, res: ServerResponse): Promise<void> {
  const { prompt, parsing } = chatTurn(l, request);
  const output = new MessageOutput(parsing, request.thoughtOmitted);
  const id = itemId('msg');
  // (the fields the SDK's types hold always present: no container, refusal or cache diagnostics here)
  const message = (content: object[], stop: string | null, usage: object, sequence: string | null = null) => ({
    id,
    type: 'message',
    role: 'assistant',
    model: request.model,
    content,
    stop_reason: stop,
    stop_sequence: sequence,
    stop_details: null,
    container: null,
    diagnostics: null,
    usage,
  });
  // Anthropic counts the tokens read from the cache apart: the prompt is input_tokens + cache_read_input_tokens.
  const counts = (input: number, cached: number, output: number, thinking: number | null) => ({
    input_tokens: input - cached,
    output_tokens: output,
    cache_read_input_tokens: cached,
    cache_creation_input_tokens: 0,
    output_tokens_details: thinking === null ? null : { thinking_tokens: thinking },
    server_tool_use: null,
  });
  // A message's usage (message_delta's has only the counts), as the SDK's types hold it: nothing is written to a
  // cache by request, one tier and speed.
  const usage = (counted: ReturnType<typeof counts>) => ({ ...counted, cache_creation: { ephemeral_5m_input_tokens: 0, ephemeral_1h_input_tokens: 0 }, inference_geo: null, service_tier: 'standard', speed: 'standard' });
  const final = (result: GenerationResult) => ({
    ...counts(result.usage.promptTokens, result.usage.cachedPromptTokens ?? 0, result.usage.completionTokens, output.reasoningTokens(result.rows[0]!.ids, (ids) => l.tokenizer!.decode(ids, false))),
    ...latentUsage(result),
  });
  const stop = (result: GenerationResult) => stopReason(result.rows[0]!, output.called, request.options.maxTokens!);
  await answerInBlocks(l, request, prompt.ids, res, output, {
    whole: (result) => message(output.content, stop(result), usage(final(result)), result.rows[0]!.stopString ?? null),
    opening: (first) => [{ type: 'message_start', message: message([], null, usage(counts(prompt.ids.length, first?.cachedPromptTokens ?? 0, 0, null))) }],
    closing: (result) => [
      { type: 'message_delta', delta: { stop_reason: stop(result), stop_sequence: result.rows[0]!.stopString ?? null, stop_details: null, container: null }, usage: final(result) },
      { type: 'message_stop' },
    ],
    error: (err) => anthropicError(err, res),
    keepAlive: ANTHROPIC_PING,
    numbered: false,
  });
}

/** The event Anthropic's streams keep alive with (its SDKs skip it). */
const ANTHROPIC_PING = `event: ping\ndata: ${JSON.stringify({ type: 'ping' })}\n\n`;

/** `/v1/messages/count_tokens` (Anthropic's): the tokens of the prompt a Messages request would run. */
export function countTokens(l: ChatModel, body: unknown, res: ServerResponse): void {
  const request = parseMessagesRequest(body, true);
  l.models.resolve(request.model); // 404 unless served
  sendJson(res, 200, { input_tokens: chatPrompt(l, request).ids.length });
}

/**
 * Answers a chat turn in a block-shaped API (Responses, Messages): whole, or as its named events between its
 * opening and closing ones; a failure once the stream has opened (its first token, or keep-alives while it waited for
 * one) ends it with the API's error event.
 */
async function answerInBlocks(
  l: Served,
  request: ChatRequest,
  promptIds: number[],
  res: ServerResponse,
  output: BlockOutput<Event>,
  api: {
    whole: (result: GenerationResult) => object;
    /** The stream's opening events, given its first token (a stream that ends before one gives none). */
    opening: (first: TokenEvent | undefined) => Event[];
    closing: (result: GenerationResult) => Event[];
    error: (err: HttpError) => Event;
    /** What a stream writes to keep alive while it waits for its first token (request-runner.ts). */
    keepAlive: string;
    /** Whether events carry a `sequence_number`. */
    numbered: boolean;
  },
): Promise<void> {
  const finish = (result: GenerationResult) => (output.called ? 'tool_calls' : finishReason(result.rows[0]!.finishReason));
  const events = new NamedEvents((chunk) => res.destroyed || res.write(chunk), api.numbered);
  try {
    await l.runner.run(l, request, { promptIds }, res, async (stream, first, rest, clock) => {
      if (!request.stream) {
        // Token by token, as a stream would give them: log-probabilities ride with the text they became.
        const result = await l.runner.drain(stream, first, rest, clock, (e) => output.push(e.text, e.logprobs));
        output.end(result.rows[0]!.finishReason === 'length');
        sendJson(res, 200, api.whole(result));
        return finish(result);
      }
      openEventStream(res);
      events.send(api.opening(first.done ? undefined : first.value));
      const result = await l.runner.drain(stream, first, rest, clock, (e) => events.send(output.push(e.text, e.logprobs)));
      events.send([...output.end(result.rows[0]!.finishReason === 'length'), ...api.closing(result)]);
      if (!res.destroyed) res.end();
      return finish(result);
    }, request.stream ? api.keepAlive : undefined);
  } catch (err) {
    if (!request.stream || !res.headersSent || res.writableEnded) throw err;
    const error = toHttpError(err);
    l.runner.note(res, { error: error.message });
    events.send([api.error(error)]);
    if (!res.destroyed) res.end();
  }
}
