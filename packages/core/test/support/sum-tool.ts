/**
 * The tool and answer the tool-call tests share: an `add` tool of two integers, as OpenAI's requests give it, and an
 * answer holding their `sum` (its JSON Schema, and as a response format).
 */
export const ADD_TOOL = {
  type: 'function' as const,
  function: { name: 'add', description: 'Add two integers', parameters: { type: 'object', properties: { a: { type: 'integer' }, b: { type: 'integer' } }, required: ['a', 'b'] } },
};

/** An answer `{"sum": n}` and nothing else. */
export const SUM_SCHEMA = { type: 'object', properties: { sum: { type: 'integer' } }, required: ['sum'], additionalProperties: false };

/** {@link SUM_SCHEMA} as the engine's response format. */
export const SUM_FORMAT = { type: 'json_schema' as const, schema: SUM_SCHEMA };
