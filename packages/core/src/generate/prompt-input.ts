/**
 * The shape of a call's prompt, checked on the caller's thread before anything is sent: the worker took a number,
 * or a list of ids given as `prompt`, for an empty text and answered from BOS alone (found by fuzzing). What the
 * ids and texts hold (the vocabulary, the context) is checked where the model is.
 */
import { PromptError } from './decode-loop.js';
import type { PromptInput } from '../runtime/protocol.js';

const FORMS = ['prompt', 'promptIds', 'messages'] as const;
const USAGE = 'give { prompt: text or texts }, { promptIds: ids or lists of ids } or { messages: [{ role, content }, …] }';

/** Throws a PromptError naming what is wrong with `input`'s form. */
export function validatePromptInput(input: unknown): asserts input is PromptInput {
  if (input === null || typeof input !== 'object' || Array.isArray(input)) throw new PromptError(`the prompt is ${describe(input)}; ${USAGE}`);
  const given = input as Record<string, unknown>;
  const forms = FORMS.filter((k) => given[k] !== undefined);
  if (forms.length !== 1) throw new PromptError(forms.length === 0 ? `no prompt given; ${USAGE}` : `give one of ${forms.join(' and ')}, not both`);
  const value = given[forms[0]!];
  if (forms[0] === 'prompt') {
    const rule = 'prompt must be a text or a non-empty list of texts';
    if (!Array.isArray(value)) {
      if (typeof value !== 'string') throw new PromptError(`${rule}, not ${describe(value)}`);
    } else {
      const bad = value.findIndex((t) => typeof t !== 'string');
      if (value.length === 0 || bad !== -1) throw new PromptError(`${rule}; ${value.length ? `item ${bad} is ${describe(value[bad])}` : 'the list is empty'}`);
    }
    if (given.suffix !== undefined && typeof given.suffix !== 'string') throw new PromptError(`suffix must be a text, not ${describe(given.suffix)}`);
  } else if (forms[0] === 'promptIds') {
    if (!Array.isArray(value)) throw new PromptError(`promptIds must be a list of ids or of lists of ids, not ${describe(value)}`);
    if (value.length === 0) throw new PromptError('promptIds is empty: give at least one token id');
  } else {
    if (!Array.isArray(value)) throw new PromptError(`messages must be a list of { role, content }, not ${describe(value)}`);
    if (value.length === 0) throw new PromptError('messages is empty: give at least one message');
    value.forEach((m: unknown, i) => {
      if (m === null || typeof m !== 'object' || Array.isArray(m)) throw new PromptError(`messages[${i}] must be an object { role, content }, not ${describe(m)}`);
      const { role } = m as { role?: unknown };
      if (role === undefined) throw new PromptError(`messages[${i}] has no role: give { role, content }, the role a text such as "user"`);
      if (typeof role !== 'string') throw new PromptError(`messages[${i}]'s role must be a text such as "user"; its role is ${describe(role)}`);
    });
    if (given.chatTemplate !== undefined && typeof given.chatTemplate !== 'string') throw new PromptError(`chatTemplate must be a text, not ${describe(given.chatTemplate)}`);
    if (given.tools !== undefined && !Array.isArray(given.tools)) throw new PromptError(`tools must be a list, not ${describe(given.tools)}`);
  }
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  return typeof v === 'string' ? 'a text' : `${typeof v === 'object' ? 'an' : 'a'} ${typeof v}`;
}
