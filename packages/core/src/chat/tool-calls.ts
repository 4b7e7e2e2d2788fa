/**
 * Tool calls in generated text, in the syntax the chat template teaches and the tool-call constraint enforces
 * (`constrain/tool-syntax.ts`): Hermes/Qwen's `<tool_call>{"name": "add", "arguments": {"a": 1}}</tool_call>`
 * blocks, Llama 3's `{"name": "add", "parameters": {"a": 1}}` ending the reply, Mistral's
 * `[TOOL_CALLS] [{"name": "add", "arguments": {"a": 1}}, …]` ending it (Granite's the same after `<|tool_call|>`),
 * or its later `[TOOL_CALLS]add[ARGS]{"a": 1}` calls (Small 3.2's `[TOOL_CALLS]add[CALL_ID]a1b2c3d4e[ARGS]{"a": 1}`), or
 * DeepSeek's fenced calls between `<｜tool▁calls▁begin｜>` and `<｜tool▁calls▁end｜>`, or Cohere's list between
 * `<|START_ACTION|>` and `<|END_ACTION|>` (Command R+'s after `Action:` in a ```json fence), or Qwen3-Coder's and
 * GLM-4.5's calls in tags, whose values are typed by the tools' parameter schemas where given. A streaming splitter: text outside calls streams on as content, text that may
 * still turn into the opening of a call is held back, and each call becomes one parsed call, its arguments the JSON
 * text the model wrote (`1.0`, or an integer past 2^53, would change going through a JavaScript value). Shared by the
 * OpenAI server and the LangChain plugin, so both read a model's calls the same way.
 */
import { randomInt, randomUUID } from 'node:crypto';
import { partialTagAt } from './partial-tag.js';
import { regexLiteral } from '../constrain/regex-rewrite.js';
import { isJson, listPrefix, objectPrefix } from './partial-json.js';
import { TOOL_CALL_SYNTAX, type ToolCallForm, type ToolCallSyntax, type XmlCallForm } from '../constrain/tool-syntax.js';
import { isStringSchema } from '../constrain/xml-calls.js';
import type { JsonSchema } from '../constrain/types.js';

/**
 * The bound tools' parameter schemas by tool name: how a syntax that writes argument values without their JSON type
 * (a string and a number alike, Qwen3-Coder's and GLM-4.5's) reads them back.
 */
export type ToolParameters = Readonly<Record<string, JsonSchema>>;

/** One call the model wrote. */
export interface ParsedToolCall {
  /** A fresh unique id ({@link toolCallId}), or the one the model wrote (Mistral Nemo and Small 3.2 write their calls' ids). */
  id: string;
  /** The tool's name, when the block was JSON with a string `name`. */
  name?: string;
  /**
   * The arguments as JSON text, as the model wrote them (`arguments`, or `parameters` as Llama 3 writes); for a
   * block that is not such JSON, the block's raw text, so nothing the model wrote is dropped.
   */
  arguments: string;
  /**
   * The reply was cut off (its token limit) inside this call: `arguments` is what was written of them, the start of
   * their JSON (as OpenAI gives such a call's `arguments`), not valid JSON.
   */
  partial?: true;
}

/** What one piece of generated text turned into. */
export interface SplitToolText {
  content: string;
  toolCalls: ParsedToolCall[];
}

/**
 * Separates content from tool calls in text that arrives piece by piece. Whitespace before the first call, between
 * calls and after the last one is their layout (a template writes one call per line), not content: it is dropped,
 * and given out only when more text follows it.
 */
export class ToolCallTextSplitter {
  /**
   * Text held back and searched again with the next piece: outside a call, a possible opening; in one, what may be
   * the start of its close (all of it until a fenced syntax's fence is read). The text held before it, `body` and
   * `blank`, is not read until it is given out, so a long call or run of blanks costs no more per piece than a short
   * one (a growing string read with each piece is copied whole each time).
   */
  private pending = '';
  /** The open call's text before `pending`: no close in it. */
  private body = '';
  /** Whitespace outside a call before `pending`, held back as the layout after a call. */
  private blank = '';
  private inBlock = false;
  /** Whether the open call's fence (a fenced syntax's) has been read, its calls' text after it in `body`. */
  private fenced = false;
  /** Whether nothing but whitespace came since the reply began or the last call closed. */
  private afterCall = true;
  /** Whether the last block closed held only the syntax's direct answer (`directly-answer`): the answer follows it. */
  private answers = false;
  /** The opening of the block now open, or the syntax's own (what an unclosed block gives back as text). */
  private begin: string;
  /** Every opening of a block. */
  private readonly begins: readonly string[];
  /** What closes a call; none: the call (or list of calls) runs to the end of the reply. */
  private readonly close: string | undefined;
  private readonly form: ToolCallForm;

  constructor(
    private readonly syntax: ToolCallSyntax = 'hermes',
    private readonly parameters?: ToolParameters,
  ) {
    this.form = TOOL_CALL_SYNTAX[syntax];
    this.begin = this.form.begin;
    this.begins = [this.form.begin, ...(this.form.alsoBegins ?? [])];
    this.close = this.form.end;
  }

  /** Where the first opening in the text is, and which; undefined: none. */
  private opening(text: string): { at: number; begin: string } | undefined {
    let first: { at: number; begin: string } | undefined;
    for (const begin of this.begins) {
      const at = text.indexOf(begin);
      if (at !== -1 && (first === undefined || at < first.at)) first = { at, begin };
    }
    return first;
  }

  /** How many characters at the end of `text` may be the start of an opening. */
  private partialOpening(text: string): number {
    return Math.max(...this.begins.map((b) => partialTagAt(text, b)));
  }

  /** Takes the next piece of text. */
  push(text: string): SplitToolText {
    this.pending += text;
    const out: SplitToolText = { content: '', toolCalls: [] };
    for (;;) {
      if (this.inBlock) {
        if (this.form.fence && !this.fenced) {
          const from = fenceEnd(this.pending, this.form.fence);
          if (from === undefined) break;
          if (from === -1) {
            // (`Action:` in the model's words, no fence after it: text, and the text after it is read on)
            out.content += this.content(this.begin);
            this.inBlock = false;
            continue;
          }
          this.body = this.pending.slice(0, from);
          this.pending = this.pending.slice(from);
          this.fenced = true;
        }
        // A call that has no closing text ends where the next one opens (`mistral-args`), that opening kept.
        const close = this.close ?? (this.form.args ? this.form.begin : undefined);
        const at = close === undefined ? -1 : this.pending.indexOf(close);
        if (close === undefined || at === -1) {
          const free = this.pending.length - (close === undefined ? 0 : partialTagAt(this.pending, close));
          this.body += this.pending.slice(0, free);
          this.pending = this.pending.slice(free);
          break;
        }
        const calls = parseToolCalls(this.body + this.pending.slice(0, at), this.syntax, this.parameters);
        out.toolCalls.push(...calls);
        this.answers = this.form.direct !== undefined && calls.length === 0;
        this.afterCall = true;
        this.body = '';
        this.pending = this.pending.slice(this.close === undefined ? at : at + close.length);
      } else {
        const found = this.opening(this.pending);
        if (!found) break;
        const { at, begin } = found;
        this.begin = begin;
        out.content += this.content(this.pending.slice(0, at));
        this.pending = this.pending.slice(this.form.beginsJson ? at : at + begin.length);
        this.fenced = false;
      }
      this.inBlock = !this.inBlock;
    }
    if (!this.inBlock) {
      const free = this.pending.length - this.partialOpening(this.pending);
      const text = this.pending.slice(0, free);
      if (this.layout(text)) this.blank += text;
      else out.content += this.content(text);
      this.pending = this.pending.slice(free);
    }
    return out;
  }

  /**
   * Ends the text: what was held back is content, and so is an unclosed block, which is no tool call; calls that
   * run to the end of the reply (`json`, `mistral`) are parsed now. A reply `cut` off by its token limit gives its
   * open block's calls instead, the last one `partial` ({@link cutToolCalls}), and drops a held-back opening: the
   * start of the next call, which is no content either.
   */
  end(cut = false): SplitToolText {
    const out: SplitToolText = { content: '', toolCalls: [] };
    const block = this.body + this.pending;
    if (!this.inBlock) out.content = this.content(cut ? this.pending.slice(0, this.pending.length - this.partialOpening(this.pending)) : this.pending);
    else if (cut) out.toolCalls.push(...cutToolCalls(block, this.syntax, this.parameters));
    else if (this.close === undefined) out.toolCalls.push(...parseToolCalls(block, this.syntax, this.parameters));
    else out.content = this.begin + block;
    this.pending = this.body = this.blank = '';
    this.inBlock = false;
    this.afterCall = true;
    this.answers = false;
    return out;
  }

  /** Whether text outside a block, after the held `blank`, is (so far) only the layout after a call. */
  private layout(text: string): boolean {
    return this.afterCall && text.trim() === '';
  }

  /**
   * Text outside a block, after the held `blank`, as content with it: none if it is layout; once anything else comes,
   * layout no longer.
   */
  private content(text: string): string {
    const blank = this.blank;
    this.blank = '';
    if (this.layout(text)) return '';
    const answer = this.answers && this.afterCall;
    this.afterCall = false;
    return answer ? text.trimStart() : blank + text;
  }
}

/**
 * Where the calls start in the text after a fenced syntax's opening (`Action:`): after blanks and the fence; undefined
 * while the text may still become the fence, -1 where it is no fence.
 */
function fenceEnd(text: string, fence: string): number | undefined {
  const rest = text.trimStart();
  if (rest.startsWith(fence)) return text.length - rest.length + fence.length;
  return fence.startsWith(rest) ? undefined : -1;
}

/** A fenced block's text without its opening fence and language tag (Command R+'s ```json). */
function unfenced(body: string, fence: string): string {
  const rest = body.trimStart();
  return rest.startsWith(fence) ? rest.slice(fence.length).replace(/^json\b/, '') : body;
}

/** Letters and digits, of which Mistral's templates want call ids made. */
const ALPHANUMERIC = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';

/** A call id Mistral's templates take (they raise an error on any other). */
const MISTRAL_ID = /^[a-zA-Z0-9]{9}$/;

/**
 * A fresh call id: `call_<uuid>`; for Mistral's syntaxes, nine letters and digits, the only ids Mistral's templates
 * render (they raise an error on any other when the call goes back to the model).
 */
export function toolCallId(syntax: ToolCallSyntax = 'hermes'): string {
  if (!syntax.startsWith('mistral')) return `call_${randomUUID()}`;
  let id = '';
  for (let i = 0; i < 9; i++) id += ALPHANUMERIC[randomInt(ALPHANUMERIC.length)];
  return id;
}

/**
 * The calls of one block (`mistral`: of its list). A block that is not such JSON becomes one call with the raw
 * text as its arguments, so nothing the model wrote is dropped. A call of the syntax's `direct` tool is none.
 */
export function parseToolCalls(body: string, syntax: ToolCallSyntax = 'hermes', parameters?: ToolParameters): ParsedToolCall[] {
  const form: ToolCallForm = TOOL_CALL_SYNTAX[syntax];
  if (form.xml) return [taggedCall(body, form.xml, syntax, parameters)];
  if (form.args) return [namedCall(body, form.args, form.id, syntax)];
  if (form.each) return fencedCalls(body, form.each, syntax);
  const text = form.fence ? unfenced(body, form.fence) : body;
  const list = form.list && isJson(text) ? listPrefix(text) : undefined;
  const calls = list?.length ? list.map((element) => parseToolCall(element.raw, syntax)) : [parseToolCall(text, syntax)];
  return withoutDirect(calls, form);
}

/** The calls that call a tool: those of the form's `direct` tool (Cohere's `directly-answer`) left out. */
function withoutDirect(calls: ParsedToolCall[], form: ToolCallForm): ParsedToolCall[] {
  return form.direct === undefined ? calls : calls.filter((c) => c.name !== form.direct);
}

/** A regular expression of a form's text, each run of whitespace in it optional (models drop or add a newline there). */
function tagPattern(text: string): string {
  return text
    .split(/(\s+)/)
    .map((part) => (/^\s+$/.test(part) ? `(?:${part.replace(/\n/g, '\\n')})?` : regexLiteral(part)))
    .join('');
}

/**
 * A call in tags (Qwen3-Coder's `<function=name>` and `<parameter=key>` values, GLM-4.5's name and `<arg_key>`/`<arg_value>`
 * pairs) as a call: each value a string where its parameter's schema is a string's, else its JSON (Python's `True` and
 * `False` for a boolean, as templates render them), else, not JSON, the text as a string; text without a name is one
 * raw call.
 */
function taggedCall(body: string, xml: XmlCallForm, syntax: ToolCallSyntax, parameters: ToolParameters | undefined): ParsedToolCall {
  const id = toolCallId(syntax);
  const named = taggedName(body, xml);
  if (!named) return { id, arguments: body.trim() };
  const { args } = taggedArguments(body.slice(named.end), xml, propertiesOf(parameters, named.name));
  return { id, name: named.name, arguments: objectJson(args) };
}

/** A tagged call's name and where it ends; `whole` once the tag after it is written. Undefined: the text names none. */
function taggedName(body: string, xml: XmlCallForm): { name: string; end: number; whole: boolean } | undefined {
  const open = xml.name[0].trim();
  const from = open ? body.indexOf(open) : 0;
  if (from === -1) return undefined;
  const start = from + open.length;
  const ends = [xml.name[1].trim() || '\n', xml.key[0].trim()].map((t) => body.indexOf(t, start)).filter((i) => i !== -1);
  const end = ends.length ? Math.min(...ends) : body.length;
  const name = body.slice(start, end).trim();
  return name ? { name, end, whole: ends.length > 0 } : undefined;
}

/**
 * The arguments written whole in `text` (a tagged call after its name), each key's value as JSON text typed by
 * `properties`, and where the last ends.
 */
function taggedArguments(text: string, xml: XmlCallForm, properties: Record<string, unknown>): { args: Map<string, string>; end: number } {
  const args = new Map<string, string>();
  let end = 0;
  const argument = new RegExp(`${tagPattern(xml.key[0])}([\\s\\S]*?)${tagPattern(xml.key[1])}([\\s\\S]*?)${tagPattern(xml.value)}`, 'g');
  for (const match of text.matchAll(argument)) {
    const key = match[1]!.trim();
    args.set(key, typedJson(match[2]!, properties[key]));
    end = match.index + match[0].length;
  }
  return { args, end };
}

/** The properties of a bound tool's parameter schema, by name (none when the tool or its schema is not known). */
function propertiesOf(parameters: ToolParameters | undefined, name: string): Record<string, unknown> {
  return ((parameters?.[name] as { properties?: Record<string, unknown> } | undefined)?.properties ?? {}) as Record<string, unknown>;
}

/** An argument's text as JSON, typed as its parameter's schema (if known) types it; JSON written keeps its spelling. */
function typedJson(text: string, schema: unknown): string {
  if (isStringSchema(schema)) return JSON.stringify(text);
  const trimmed = text.trim();
  if ((schema as { type?: unknown } | undefined)?.type === 'boolean' && /^(true|false)$/i.test(trimmed)) return trimmed.toLowerCase();
  return isJson(trimmed) ? trimmed : JSON.stringify(text);
}

/** The JSON object of members whose values are JSON text. */
function objectJson(members: Map<string, string>): string {
  return `{${[...members].map(([key, value]) => `${JSON.stringify(key)}:${value}`).join(',')}}`;
}

/**
 * `name[ARGS]{…}` (or `name[CALL_ID]id[ARGS]{…}`) as a call: the name, the id where it is one Mistral's templates take,
 * then the arguments' text.
 */
function namedCall(body: string, args: string, callId: string | undefined, syntax: ToolCallSyntax): ParsedToolCall {
  const at = body.indexOf(args);
  if (at === -1) return { id: toolCallId(syntax), arguments: body.trim() };
  const [name, written] = callId === undefined ? [body.slice(0, at)] : body.slice(0, at).split(callId, 2);
  const own = written?.trim();
  return { id: own !== undefined && MISTRAL_ID.test(own) ? own : toolCallId(syntax), name: name!.trim(), arguments: body.slice(at + args.length).trim() };
}

/**
 * DeepSeek's calls (each `<｜tool▁call▁begin｜>function<｜tool▁sep｜>name`, a newline, its arguments fenced as ```json,
 * `<｜tool▁call▁end｜>`): each a call, its arguments the fence's text; text that holds no such call is one raw call.
 */
function fencedCalls(body: string, each: FencedForm, syntax: ToolCallSyntax): ParsedToolCall[] {
  const calls = fencedParts(body, each).map((part) => fencedCall(part.endsWith(each.end) ? part.slice(0, -each.end.length) : part, each, syntax));
  return calls.length > 0 ? calls : [{ id: toolCallId(syntax), arguments: body.trim() }];
}

type FencedForm = NonNullable<ToolCallForm['each']>;

/** The text of each of DeepSeek's calls in a block. */
function fencedParts(body: string, each: FencedForm): string[] {
  return body
    .split(each.begin)
    .map((part) => part.trim())
    .filter((part) => part !== '');
}

/** One of DeepSeek's calls, its closing marker cut off (see {@link fencedCalls}). */
function fencedCall(text: string, each: FencedForm, syntax: ToolCallSyntax): ParsedToolCall {
  const at = text.indexOf(each.sep);
  const id = toolCallId(syntax);
  if (at === -1) return { id, arguments: text.trim() };
  const rest = text.slice(at + each.sep.length);
  const line = rest.indexOf('\n');
  const name = (line === -1 ? rest : rest.slice(0, line)).trim();
  const args = (line === -1 ? '' : rest.slice(line + 1)).trim().replace(/^```(?:json)?\s*/, '').replace(/\s*```$/, '');
  return { id, name, arguments: args };
}

/**
 * The calls of a block the token limit cut off: each written whole, then the one cut off, `partial`, with the
 * arguments written so far. A call cut off before its name was whole is dropped: a call is of a named tool (OpenAI
 * names one whole in its first delta), and which tool this one calls is not known.
 */
function cutToolCalls(body: string, syntax: ToolCallSyntax, parameters: ToolParameters | undefined): ParsedToolCall[] {
  const form: ToolCallForm = TOOL_CALL_SYNTAX[syntax];
  // The start of a marker the cut stopped in (the block's close, the next call's opening) is no part of a call.
  const markers = [form.end, form.args && form.begin, form.args, form.each?.begin, form.each?.end].filter((t): t is string => !!t);
  const text = body.slice(0, body.length - Math.max(0, ...markers.map((t) => partialTagAt(body, t))));
  if (form.xml) return cutTaggedCall(text, form.xml, syntax, parameters);
  if (form.args) return cutNamedCall(text, form.args, form.id, syntax);
  if (form.each) return cutFencedCalls(text, form.each, syntax);
  return withoutDirect(cutJsonCalls(form.fence ? unfenced(text, form.fence) : text, syntax), form);
}

/** A cut-off call object (`{"name": …, "arguments": …`), or a list of them (Mistral's, Granite's, Cohere's), as calls. */
export function cutJsonCalls(text: string, syntax: ToolCallSyntax): ParsedToolCall[] {
  const list = listPrefix(text);
  if (!list) return cutJsonCall(text, syntax);
  return list.flatMap((element) => (element.whole ? [parseToolCall(element.raw, syntax)] : cutJsonCall(element.raw, syntax)));
}

/** One cut-off call object: whole if its arguments are (only the text after them was cut), else `partial`; none without a whole name. */
function cutJsonCall(text: string, syntax: ToolCallSyntax): ParsedToolCall[] {
  if (isJson(text)) return [parseToolCall(text, syntax)];
  const members = objectPrefix(text);
  const written = members?.get('name') ?? members?.get('tool_name');
  const name: unknown = written?.whole && isJson(written.raw) ? JSON.parse(written.raw) : undefined;
  if (typeof name !== 'string') return [];
  const args = members!.get('arguments') ?? members!.get('parameters');
  const id = toolCallId(syntax);
  if (args?.whole && isJson(args.raw)) return [{ id, name, arguments: args.raw }];
  return [{ id, name, arguments: args?.raw ?? '', partial: true }];
}

/** A cut-off `name[ARGS]{…}` call: none before `[ARGS]` (the name may go on), `partial` while its arguments are no JSON. */
function cutNamedCall(body: string, args: string, callId: string | undefined, syntax: ToolCallSyntax): ParsedToolCall[] {
  if (!body.includes(args)) return [];
  const call = namedCall(body, args, callId, syntax);
  return [isJson(call.arguments) ? call : { ...call, partial: true }];
}

/** DeepSeek's cut-off calls: the last, unless closed, is `partial` while its fenced arguments are no JSON, and dropped before the newline after its name. */
function cutFencedCalls(body: string, each: FencedForm, syntax: ToolCallSyntax): ParsedToolCall[] {
  return fencedParts(body, each).flatMap((part) => {
    if (part.endsWith(each.end)) return [fencedCall(part.slice(0, -each.end.length), each, syntax)];
    const at = part.indexOf(each.sep);
    const line = at === -1 ? -1 : part.indexOf('\n', at);
    if (line === -1) return [];
    const call = fencedCall(part, each, syntax);
    // Whole arguments the start of the closing fence may follow; the start of the opening fence is no arguments yet.
    const args = call.arguments.replace(/\s*`{1,2}$/, '');
    if (isJson(args)) return [{ ...call, arguments: args }];
    return [{ ...call, arguments: '```json'.startsWith(part.slice(line + 1).trim()) ? '' : call.arguments, partial: true as const }];
  });
}

/**
 * A cut-off call in tags: none before its name is whole; whole once its closing tag is written (Qwen3-Coder's
 * `</function>`); else `partial`, its arguments the JSON of those written whole, cut where the text was: open, with
 * the one cut off after them where its key was written.
 */
function cutTaggedCall(body: string, xml: XmlCallForm, syntax: ToolCallSyntax, parameters: ToolParameters | undefined): ParsedToolCall[] {
  const named = taggedName(body, xml);
  if (!named?.whole) return [];
  const { name } = named;
  const properties = propertiesOf(parameters, name);
  const text = body.slice(named.end);
  const { args, end } = taggedArguments(text, xml, properties);
  const id = toolCallId(syntax);
  const close = xml.close.trim();
  if (close && text.includes(close)) return [{ id, name, arguments: objectJson(args) }];
  let json = objectJson(args).slice(0, -1);
  const opened = new RegExp(`^\\s*${tagPattern(xml.key[0])}([\\s\\S]*?)${tagPattern(xml.key[1])}`).exec(text.slice(end));
  if (opened) {
    const key = opened[1]!.trim();
    const rest = text.slice(end + opened[0].length);
    const value = rest.slice(0, rest.length - partialTagAt(rest, xml.value));
    json += `${json.length > 1 ? ',' : ''}${JSON.stringify(key)}:${isStringSchema(properties[key]) ? JSON.stringify(value).slice(0, -1) : value.trim()}`;
  }
  return [{ id, name, arguments: json, partial: true }];
}

/** One call's text as a call (see {@link parseToolCalls} for what is kept when it is not JSON). */
export function parseToolCall(body: string, syntax: ToolCallSyntax = 'hermes'): ParsedToolCall {
  try {
    const call = toolCallOf(JSON.parse(body), syntax, body);
    if (call) return call;
  } catch {
    // not JSON: kept raw below
  }
  return { id: toolCallId(syntax), arguments: body.trim() };
}

/**
 * A parsed JSON value as a call: an object with a string `name`; its `id` kept where the syntax's ids are valid. Its
 * arguments as `text` (the JSON the value was read from) writes them, where given.
 */
export function toolCallOf(value: unknown, syntax: ToolCallSyntax, text?: string): ParsedToolCall | undefined {
  if (!value || typeof value !== 'object') return undefined;
  const call = value as { name?: unknown; tool_name?: unknown; arguments?: unknown; parameters?: unknown; id?: unknown };
  // Cohere's calls name their tool `tool_name`.
  const name = call.name ?? call.tool_name;
  if (typeof name !== 'string') return undefined;
  const own = syntax === 'mistral' && typeof call.id === 'string' && MISTRAL_ID.test(call.id) ? call.id : undefined;
  const key = call.arguments != null ? 'arguments' : call.parameters != null ? 'parameters' : undefined;
  const written = key && text !== undefined ? objectPrefix(text)?.get(key)?.raw : undefined;
  return { id: own ?? toolCallId(syntax), name, arguments: written ?? JSON.stringify(key ? call[key] : {}) };
}
