/**
 * The constraint a request asks for, in the fields OpenAI-compatible servers take: OpenAI's `response_format`;
 * vLLM's `guided_json`, `guided_regex`, `guided_choice` and `guided_grammar`, and their later form
 * `structured_outputs: {json, regex, choice, grammar, json_object}`; llama.cpp's `json_schema`, `grammar` (GBNF,
 * which XGrammar's EBNF reads) and `response_format: {type: "json_object", schema}`. Clients written for those servers (outlines' and instructor's vLLM modes, ChatOpenAI's
 * `modelKwargs`) send them as they are. A request asks for one; two are refused by name, as vLLM refuses them.
 */
import { prepareJsonSchema } from '../constrain/json-schema.js';
import { literalTrie } from '../constrain/literal-trie.js';
import { ConstraintError, type ResponseFormat } from '../constrain/types.js';
import { badRequest } from './errors.js';
import { isObject, type Body } from './requests.js';

/** vLLM's `guided_decoding_backend` values: the constraint's language is the same whichever backend is named. */
const BACKENDS = new Set(['auto', 'xgrammar', 'guidance', 'outlines', 'lm-format-enforcer']);

/** The request's constraint, if it asks for one (a 400 naming the fields where it asks for two, or one is malformed). */
export function constraintOf(body: Body): ResponseFormat | undefined {
  const asked: { param: string; format: ResponseFormat }[] = [];
  const add = (param: string, format: ResponseFormat | undefined) => {
    if (format) asked.push({ param, format });
  };
  add('response_format', responseFormatOf(body.response_format));
  add('guided_json', present(body.guided_json) ? jsonSchemaOf(body.guided_json, 'guided_json') : undefined);
  add('guided_regex', present(body.guided_regex) ? regexOf(body.guided_regex, 'guided_regex') : undefined);
  add('guided_choice', present(body.guided_choice) ? choiceOf(body.guided_choice, 'guided_choice') : undefined);
  add('guided_grammar', present(body.guided_grammar) ? grammarOf(body.guided_grammar, 'guided_grammar') : undefined);
  add('json_schema', present(body.json_schema) ? jsonSchemaOf(body.json_schema, 'json_schema') : undefined);
  add('grammar', present(body.grammar) ? grammarOf(body.grammar, 'grammar') : undefined);
  for (const [param, format] of structuredOutputsOf(body.structured_outputs)) add(param, format);
  if (present(body.guided_whitespace_pattern)) {
    throw badRequest('guided_whitespace_pattern is not supported: the constraint takes one blank or newline, or none, wherever JSON allows whitespace', 'guided_whitespace_pattern');
  }
  const backend = body.guided_decoding_backend;
  if (present(backend) && (typeof backend !== 'string' || !BACKENDS.has(backend.split(':')[0]!))) {
    throw badRequest(`guided_decoding_backend must be one of ${[...BACKENDS].join(', ')} (XGrammar enforces each)`, 'guided_decoding_backend');
  }
  if (asked.length > 1) {
    throw badRequest(`a request takes one constraint: ${asked.map((a) => a.param).join(' and ')} were both given`, asked[1]!.param);
  }
  return asked[0]?.format;
}

/**
 * Refuses, as the request's fault, a tool's parameters schema the constraint cannot enforce: a 400 naming the tool and
 * the field that holds the schema (`param`), with OpenAI's code for it, `invalid_function_parameters`. Called for the
 * tools a tool-call constraint is built from (any `tool_choice` but `none`; under `none` tools are only shown).
 */
export function checkToolSchema(schema: unknown, tool: string, param: string): void {
  checkSchema(schema, param, `${param} of tool ${JSON.stringify(tool)}`, 'invalid_function_parameters');
}

/**
 * Refuses a schema the constraint cannot enforce (`prepareJsonSchema`'s refusals, which include what the grammar
 * compile is known to fail on) while the request is read, naming the field that holds it (`param`; `about` opens the
 * message): refused by the engine as the request runs, its error named no field.
 */
function checkSchema(schema: unknown, param: string, about: string, code: string): void {
  try {
    prepareJsonSchema(schema);
  } catch (err) {
    if (!(err instanceof ConstraintError)) throw err;
    throw badRequest(`${about}: ${err.message}`, param, code);
  }
}

/**
 * Refuses a response format's JSON Schema the constraint cannot enforce: a 400 naming `param`, the field that holds
 * it in the request (the engine's code for it, `ConstraintError`). The other APIs' readers check their own fields
 * with it before they translate them into chat's `response_format`.
 */
export function checkFormatSchema(schema: unknown, param: string): void {
  checkSchema(schema, param, param, 'ConstraintError');
}

/** A constraint field's JSON Schema, checked (see {@link checkFormatSchema}). */
function checkedSchema(schema: Record<string, unknown> | boolean, param: string): ResponseFormat {
  checkFormatSchema(schema, param);
  return { type: 'json_schema', schema };
}

/** Whether a field is given (JSON null is not). */
const present = (v: unknown): boolean => v !== undefined && v !== null;

/**
 * OpenAI's `response_format`: `text` (none), `json_object`, or `json_schema` with its schema under `json_schema.schema`;
 * llama.cpp's `json_object` with a `schema` beside its type is that schema's constraint.
 */
function responseFormatOf(v: unknown): ResponseFormat | undefined {
  if (!present(v)) return undefined;
  if (!isObject(v)) throw badRequest('response_format must be an object such as {"type": "json_object"}', 'response_format');
  if (v.type === 'text') return undefined;
  if (v.type === 'json_object') return present(v.schema) ? jsonSchemaOf(v.schema, 'response_format.schema') : { type: 'json_object' };
  if (v.type === 'json_schema') {
    const spec = v.json_schema;
    if (!isObject(spec) || (spec.schema !== undefined && !isObject(spec.schema) && typeof spec.schema !== 'boolean')) {
      throw badRequest('response_format.json_schema must be an object with a JSON Schema under "schema"', 'response_format.json_schema');
    }
    // `strict: false` asks for less than is enforced: the reply follows the schema either way.
    return checkedSchema((spec.schema ?? true) as Record<string, unknown> | boolean, 'response_format.json_schema.schema');
  }
  throw badRequest(`response_format.type ${JSON.stringify(v.type)} is not one of text, json_object, json_schema`, 'response_format.type');
}

/** A JSON Schema given as an object, a boolean, or JSON text of one (vLLM takes all three). */
function jsonSchemaOf(v: unknown, param: string): ResponseFormat {
  let schema = v;
  if (typeof v === 'string') {
    try {
      schema = JSON.parse(v) as unknown;
    } catch {
      throw badRequest(`${param} must be a JSON Schema (an object, or its JSON text); this text is not JSON`, param);
    }
  }
  if (!isObject(schema) && typeof schema !== 'boolean') throw badRequest(`${param} must be a JSON Schema (an object, or its JSON text)`, param);
  return checkedSchema(schema, param);
}

function regexOf(v: unknown, param: string): ResponseFormat {
  if (typeof v !== 'string' || v === '') throw badRequest(`${param} must be a non-empty regular expression`, param);
  return { type: 'regex', pattern: v };
}

function grammarOf(v: unknown, param: string): ResponseFormat {
  if (typeof v !== 'string' || !v.trim()) throw badRequest(`${param} must be the text of a grammar (GBNF/EBNF, with a root rule)`, param);
  return { type: 'grammar', grammar: v };
}

/** One of the strings, exactly: a grammar of their literals (JSON's escapes are the grammar's). */
function choiceOf(v: unknown, param: string): ResponseFormat {
  if (!Array.isArray(v) || v.length === 0 || v.some((c) => typeof c !== 'string' || c === '')) {
    throw badRequest(`${param} must be a non-empty list of non-empty strings`, param);
  }
  // (a prefix tree: the grammar engine mis-accepts an alternation of literals that share a prefix)
  return { type: 'grammar', grammar: `root ::= ${literalTrie(v as string[])}` };
}

/** vLLM's `structured_outputs` object: each constraint field it holds, under its own name. */
function structuredOutputsOf(v: unknown): [string, ResponseFormat][] {
  if (!present(v)) return [];
  const param = 'structured_outputs';
  if (!isObject(v)) throw badRequest(`${param} must be an object such as {"choice": ["yes", "no"]}`, param);
  const out: [string, ResponseFormat][] = [];
  for (const [key, value] of Object.entries(v)) {
    if (!present(value) || value === false) continue;
    const at = `${param}.${key}`;
    if (key === 'json') out.push([at, jsonSchemaOf(value, at)]);
    else if (key === 'regex') out.push([at, regexOf(value, at)]);
    else if (key === 'choice') out.push([at, choiceOf(value, at)]);
    else if (key === 'grammar') out.push([at, grammarOf(value, at)]);
    else if (key === 'json_object') {
      if (value !== true) throw badRequest(`${at} must be true`, at);
      out.push([at, { type: 'json_object' }]);
    } else if (key === 'disable_any_whitespace' || key === 'disable_fallback') {
      // Settings of vLLM's backends, taken either way: one blank or newline, or none, wherever JSON allows whitespace
      // (compact JSON passes, not forced), and no other backend falls in.
      if (typeof value !== 'boolean') throw badRequest(`${at} must be true or false`, at);
    } else throw badRequest(`${at} is not supported: give json, regex, choice, grammar or json_object`, at);
  }
  return out;
}
