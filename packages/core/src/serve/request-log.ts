/**
 * One line per request, for whoever runs the server: what was asked, how it was answered, how long it took, and
 * why it failed. Prompts, replies and keys are never written.
 */

/** What the server did with one request, given to `ServeOptions.onRequest` when its answer ends. */
export interface RequestRecord {
  /** When it arrived. */
  time: Date;
  /** Its id, as its answer's `x-request-id` carries it (a client's or a proxy's own where one sent it). */
  requestId: string;
  /** HTTP method. */
  method: string;
  /** The path, without the query. */
  path: string;
  /** The answer's status (a stream that fails after its first token keeps its 200 and has `error`). */
  status: number;
  /** From arrival to the answer's end, or to the client going away. */
  ms: number;
  /** The answer did not reach its end (its row stopped): the client went away, or the shutdown cut it (`cutOff`). */
  aborted: boolean;
  /** The shutdown cut the request off past its deadline (`--shutdown-timeout`), not the client. */
  cutOff?: boolean;
  /** The model the request named (any request whose body named one, refused or not). */
  model?: string;
  /** Prompt tokens, for requests that ran the model. */
  promptTokens?: number;
  /** Tokens generated, for requests that generated. */
  completionTokens?: number;
  /** How the generation ended: `stop`, `length`, `tool_calls`, `abort`, `error`. */
  finishReason?: string;
  /** The error answered, for an error answer or a stream ended by one. */
  error?: string;
}

/** How `reasonplug serve` writes the records: a readable line, a JSON object a line, or nothing. */
export type RequestLogFormat = 'text' | 'json' | 'off';

/** The record as one line (no newline): readable, or a JSON object for log collectors. */
export function formatRequestRecord(r: RequestRecord, format: 'text' | 'json'): string {
  if (format === 'json') return JSON.stringify({ ...r, time: r.time.toISOString(), ms: Math.round(r.ms) });
  // (the id printable without quoting: a client's is kept only so, server.ts)
  const parts = [r.method, r.path, String(r.status), `${Math.round(r.ms)} ms`, `id=${r.requestId}`];
  // A model name is the client's text: quoted when it holds spaces or control characters, so it cannot forge a line.
  if (r.model !== undefined) parts.push(`model=${/^[\x21-\x7e]+$/.test(r.model) ? r.model : JSON.stringify(r.model)}`);
  if (r.promptTokens !== undefined) parts.push(`prompt=${r.promptTokens}`);
  if (r.completionTokens !== undefined) parts.push(`completion=${r.completionTokens}`);
  if (r.finishReason !== undefined) parts.push(`finish=${r.finishReason}`);
  if (r.cutOff) parts.push('cut off by shutdown');
  else if (r.aborted) parts.push('client went away');
  if (r.error !== undefined) parts.push(`error=${JSON.stringify(r.error)}`);
  return parts.join(' ');
}
