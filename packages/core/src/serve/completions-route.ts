/**
 * `/v1/completions`: text (or token ids) continued as given, around a `suffix` for fill-in-the-middle, or scored
 * (`echo` with `logprobs`), in OpenAI's legacy completion shape.
 */
import type { ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import type { PromptInput } from '../runtime/protocol.js';
import { DECODE_LOOK_BEHIND, type TextTokenizer } from '../tokenizer/tokenizer.js';
import { sendJson, Sse, SSE_KEEP_ALIVE } from './answer-writers.js';
import { finishReason } from './choices.js';
import { badRequest, type HttpError } from './errors.js';
import { completionLogprobs, HeldEntries, joinLegacy, promptLegacyLogprobs, shownEntries, TextOffsets, type LegacyLogprobs } from './logprobs.js';
import { keptPromptTokens, lastTokens } from './prompt-truncation.js';
import type { CompletionRequest } from './requests.js';
import type { Loaded, Served } from './served.js';
import { usageJson } from './usage.js';

/** `/v1/completions`: each prompt's `n` choices (with `echo` and `max_tokens: 0`, its own tokens scored alone), whole or streamed. */
export async function completion(l: Served, request: CompletionRequest, res: ServerResponse): Promise<void> {
  // (no limit asked for, llama.cpp's `n_predict: -1`: to the end of the context, as a chat reply runs)
  request.options.maxTokens ??= l.contextLength;
  const p = request.prompt;
  const isIds = typeof p !== 'string' && typeof p[0] === 'number';
  const prompts: (string | number[])[] = typeof p === 'string' || isIds ? [p as string | number[]] : (p as (string | number[])[]);
  // Choice i·n + j is the j-th of prompt i (OpenAI's order), a row of its own that samples from seed + j as vLLM's
  // (the engine seeds a prompt's repeats in a call so): choice i·n is prompt i sent alone.
  const ran = completionPrompts(l, request, prompts);
  // (refused before anything runs: a stream would have sent its 200 before the echo needed the text)
  if (request.echo && !l.tokenizer && ran.some((x) => typeof x !== 'string')) throw badRequest('echo of token ids needs the model tokenizer', 'echo');
  const rows = ran.flatMap((x) => Array.from({ length: request.n }, () => x));
  if (request.suffix !== undefined && !l.tokenizer?.fimTokens) throw noFillInMiddle(l);
  const input: PromptInput =
    typeof rows[0] === 'string' ? { prompt: rows as string[], ...(request.suffix !== undefined ? { suffix: request.suffix } : {}) } : { promptIds: rows as number[][] };
  // A text that ran as given is echoed as given; one that ran as ids of its own (its last tokens, or no BOS) and ids
  // are echoed as the text of the ids that ran, which the echoed tokens' offsets index.
  // (once per row: ids are decoded)
  const echoes = rows.map((ids, row) => {
    if (!request.echo) return '';
    const given = ran[Math.floor(row / request.n)]!;
    return typeof given === 'string' ? given : l.tokenizer!.decode(ids as number[]);
  });
  const echoOf = (row: number) => echoes[row]!;
  const id = `cmpl-${randomUUID()}`;
  const base = { id, created: Math.floor(Date.now() / 1000), model: request.model, system_fingerprint: 'reasonplug' };
  const arrival = performance.now();
  // Echoed with logprobs, the prompt's own tokens open each choice's lists, scored after the tokens before them.
  const scored = request.echo && (request.logprobs || request.scoreOnly) ? await echoedLogprobs(l, request, ran, res) : undefined;
  const echoedOf = (row: number) => (request.logprobs ? scored?.[Math.floor(row / request.n)] : undefined);
  const withEcho = (row: number, after: LegacyLogprobs) => {
    const echoed = echoedOf(row);
    return echoed ? joinLegacy(echoed, after) : after;
  };
  if (request.scoreOnly) {
    const promptTokens = scored!.reduce((n, s) => n + s.tokens.length, 0);
    return scoreOnly(l, request, rows.map((_, row) => ({ text: echoOf(row), logprobs: echoedOf(row) ?? null })), { promptTokens, arrival }, base, res);
  }

  await l.runner.run(l, request, input, res, async (stream, first, rest, clock) => {
    if (!request.stream) {
      const result = await l.runner.drain(stream, first, rest, clock);
      sendJson(res, 200, {
        ...base,
        object: 'text_completion',
        choices: result.rows.map((row, index) => ({
          index,
          text: echoOf(index) + row.text,
          logprobs: request.logprobs ? withEcho(index, completionLogprobs(shownEntries(row.logprobs ?? [], row.text.length), new TextOffsets(echoOf(index)).push(row.text))) : null,
          finish_reason: finishReason(row.finishReason),
        })),
        usage: usageJson(result, request.n),
      });
      return finishReason(result.rows[0]!.finishReason);
    }
    const sse = new Sse(res);
    // Per choice: tokens not listed yet, placed by the reply's text sent.
    const held = rows.map(() => new HeldEntries());
    const offsets = rows.map((_, row) => new TextOffsets(echoOf(row)));
    const send = (index: number, text: string, logprobs: LegacyLogprobs | null, finish: string | null = null) =>
      sse.send({ ...base, object: 'text_completion', choices: [{ index, text, logprobs, finish_reason: finish }], ...(request.includeUsage ? { usage: null } : {}) });
    const chunk = (index: number, text: string, finish: string | null = null) => {
      let logprobs: LegacyLogprobs | null = null;
      if (request.logprobs) {
        // (text a stop string's possible start held back may come out while later tokens' own text is still held)
        offsets[index]!.push(text);
        const out = held[index]!.released();
        if (out.length > 0 || finish) logprobs = completionLogprobs(out, offsets[index]!);
      }
      send(index, text, logprobs, finish);
    };
    if (request.echo) rows.forEach((_, row) => send(row, echoOf(row), echoedOf(row) ?? null));
    const result = await l.runner.streamChoices(stream, first, rest, clock, rows.length, {
      token: ({ row, text, logprobs }) => {
        held[row]!.push(text, logprobs);
        if (text) chunk(row, text);
      },
      end: (index, reason) => {
        held[index]!.end();
        chunk(index, '', finishReason(reason));
      },
    });
    if (request.includeUsage) sse.send({ ...base, object: 'text_completion', choices: [], usage: usageJson(result, request.n) });
    sse.done();
    return finishReason(result.rows[0]!.finishReason);
  }, request.stream ? SSE_KEEP_ALIVE : undefined);
}

/**
 * A completion's prompts as the engine runs them: text as given, unless the request has it tokenized its own way
 * (vLLM's `add_special_tokens: false`, or `truncate_prompt_tokens`, which given ids take too).
 */
function completionPrompts(l: Loaded, request: CompletionRequest, prompts: (string | number[])[]): (string | number[])[] {
  const keep = keptPromptTokens(l, request);
  if (keep === undefined && request.addSpecialTokens) return prompts;
  const param = keep === undefined ? 'add_special_tokens' : 'truncate_prompt_tokens';
  // (a fill-in-the-middle prompt is written around the model's own tokens, BOS first where the tokenizer adds it)
  if (request.suffix !== undefined) throw badRequest(`${param} cannot be combined with suffix`, param);
  const tokenizer = l.tokenizer;
  return prompts.map((prompt) => {
    if (typeof prompt !== 'string') return keep === undefined ? prompt : prompt.slice(Math.max(0, prompt.length - keep));
    if (!tokenizer) throw badRequest(`${param} needs the model tokenizer to tokenize the prompt`, param);
    const encode = (text: string, within?: number) => tokenizer.encode(text, request.addSpecialTokens, within);
    return keep === undefined ? encode(prompt, l.engine.info.contextLength) : lastTokens(encode, prompt, keep);
  });
}

/**
 * The legacy lists of each prompt's own tokens (`echo` with `logprobs`), scored by the model the request names;
 * admitted as any request (the generation after it is admitted again). A streamed request's keep-alives start here,
 * while it waits in the queue and is scored (lm-evaluation-harness sends such requests, which a proxy's read
 * timeout would otherwise cut off).
 */
async function echoedLogprobs(l: Served, request: CompletionRequest, prompts: (string | number[])[], res: ServerResponse): Promise<LegacyLogprobs[]> {
  const named = l.models.resolve(request.model).map((name) => ({ name }));
  if (request.reasoners) l.models.checkExtension(request.reasoners);
  const reasoners = request.reasoners ?? named;
  const input = typeof prompts[0] === 'string' ? { texts: prompts as string[] } : { ids: prompts as number[][] };
  const { prompts: scored } = await l.runner.admitted(
    res,
    () => l.engine.promptLogprobs(input, { topLogprobs: request.options.logprobs ?? 0, reasoners, ...(request.options.mode ? { mode: request.options.mode } : {}) }),
    request.stream ? SSE_KEEP_ALIVE : undefined,
  );
  const tokenizer = l.tokenizer;
  return scored.map(({ ids, logprobs }) => {
    const first = tokenizer ? tokenizer.decode([ids[0]!], false) : `token_id:${ids[0]}`;
    return promptLegacyLogprobs(logprobs, first, ids.map((_, j) => (tokenizer ? visibleText(tokenizer, ids, j) : '')));
  });
}

/** `max_tokens: 0` with `echo`: each choice the prompt alone (with its scores), nothing generated. */
function scoreOnly(
  l: Served,
  request: CompletionRequest,
  choices: { text: string; logprobs: LegacyLogprobs | null }[],
  { promptTokens, arrival }: { promptTokens: number; arrival: number },
  base: object,
  res: ServerResponse,
): void {
  // (as usageJson writes it: the prompts were scored apart from the prefix cache, which gave none of their tokens)
  const usage = { prompt_tokens: promptTokens, completion_tokens: 0, total_tokens: promptTokens, prompt_tokens_details: { cached_tokens: 0 } };
  l.runner.note(res, { model: request.model, finishReason: 'length', promptTokens, completionTokens: 0 });
  // Scored requests count as any other in /metrics (lm-evaluation-harness sends thousands of them).
  l.runner.metrics.promptTokens += promptTokens;
  l.runner.metrics.countFinished('length');
  l.runner.metrics.e2e.observe((performance.now() - arrival) / 1000);
  const choice = (c: (typeof choices)[number], index: number) => ({ index, text: c.text, logprobs: c.logprobs, finish_reason: 'length' });
  if (!request.stream) return sendJson(res, 200, { ...base, object: 'text_completion', choices: choices.map(choice), usage });
  const sse = new Sse(res);
  // (OpenAI's: with include_usage, every chunk before the usage's own has `usage: null`)
  choices.forEach((c, index) => sse.send({ ...base, object: 'text_completion', choices: [choice(c, index)], ...(request.includeUsage ? { usage: null } : {}) }));
  if (request.includeUsage) sse.send({ ...base, object: 'text_completion', choices: [], usage });
  sse.done();
}

/**
 * The decoded text token `j` of `ids` writes (special tokens such as BOS none): the text after the tokens before it,
 * read over a few of them so that a word's leading space counts where the decoder writes it.
 */
function visibleText(tokenizer: TextTokenizer, ids: readonly number[], j: number): string {
  return tokenizer.textsAfter(ids.slice(Math.max(0, j - DECODE_LOOK_BEHIND), j), [ids[j]!], true)[0]!;
}

/** The refusal of a `suffix` for a model without fill-in-the-middle tokens. */
export function noFillInMiddle(l: Loaded): HttpError {
  return badRequest(`the model ${l.models.backbone} has no fill-in-the-middle tokens (such as <|fim_prefix|>, <|fim_suffix|> and <|fim_middle|>): suffix needs a code model`, 'suffix', 'no_fill_in_middle');
}
