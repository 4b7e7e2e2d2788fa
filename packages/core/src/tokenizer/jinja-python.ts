/**
 * Chat templates rendered as transformers renders them with Python's jinja2, where @huggingface/jinja (which parses
 * and runs them here) differs. Its interpreter is subclassed, and the nodes where the two differ are evaluated here,
 * the rest by the library (a parsed template's printed expressions and loops are marked for it first):
 * - what a template prints (`{{ x }}`, `|string`, `~`) is Python's `str()`: `None`, `True`, `False`, floats, lists
 *   and dicts as Python writes them (Qwen3-Coder's and Qwen3.5's `value|string` of a boolean argument);
 * - Python's `str` methods `strip`, `lstrip` and `rstrip` with the characters to strip (Qwen3's `.strip('\n')`),
 *   `format`, `count` and `capitalize`;
 * - numbers of JSON text ({@link JsonNumber}: a tool call's arguments) as Python's `json.loads` reads them: `1.0` a
 *   float, an integer past 2^53 with its digits;
 * - filters: `tojson` as transformers' (Python's `json.dumps`: `1.0`, `1e-07`), `trim` of any value, `capitalize`,
 *   `int` and `abs` of numbers, `min`, `max`, `first`/`last` of an empty list, `map` by a filter's name
 *   (`map('tojson')`), `select`/`reject` by a test, `join` of non-strings, `dictsort`;
 * - dict literals with number keys (Seed-OSS's budget table), `'-' * 3`, tuples unpacked in `for`;
 * - jinja2's lenient undefined: `for` over an undefined value, and filters that iterate one (`length`, `join`,
 *   `selectattr`…), take it as empty, `select`/`reject` a None too;
 * - `raise_exception` raises {@link TemplateRaisedError}, told apart from what the renderer cannot do.
 */
import * as jinja from '@huggingface/jinja';
import { pyCapitalize, pyCount, pyFloatRepr, pyFormat, pyJsonString, pyStrftime, pyStringRepr, pyStrip } from './python-text.js';

/**
 * A template's own `raise_exception(message)`: what it refuses (Gemma's system role, roles out of turn); also what
 * jinja2's sandbox raises as it renders (a `range()` too big).
 */
export class TemplateRaisedError extends Error {
  override name = 'TemplateRaisedError';
}

/**
 * A number in a template's context as JSON text spells it, which the template reads as Python's `json.loads` does: a
 * float where the text has a fraction or an exponent (`1.0`, which a JavaScript number cannot tell from `1`), an
 * integer exactly (`12345678901234567890`, which a JavaScript number rounds).
 */
export class JsonNumber {
  constructor(readonly text: string) {}
}

/*
 * The library's declaration files import one another without extensions, which NodeNext resolution does not follow
 * (its classes read as `any`): what is used of them is declared here.
 */
/** A value while a template runs (one of the library's runtime values, whose classes it does not export). */
interface Value {
  type: string;
  value: unknown;
  __bool__(): { value: boolean };
  toString(): string;
}
/** A node of a parsed template (the library exports no node classes either: nodes are told apart by `type`). */
interface Node {
  type: string;
}
/** A template's variables, in a scope. */
interface Environment {
  /** Declares a variable of a JavaScript value. */
  set(name: string, value: unknown): Value;
  /** Declares a variable of a runtime value. */
  declareVariable(name: string, value: Value): Value;
  variables: Map<string, Value>;
  tests: ReadonlyMap<string, (...values: Value[]) => boolean>;
}
const Environment = jinja.Environment as new () => Environment;
const Interpreter = jinja.Interpreter as new (global: Environment) => {
  run(program: Node): Value;
  evaluate(node: Node | undefined, env: Environment): Value;
};

interface Identifier extends Node { value: string }
interface Call extends Node { callee: Node; args: Node[] }
interface Member extends Node { object: Node; property: Node; computed: boolean }
interface Filter extends Node { operand: Node; filter: Node }
interface Binary extends Node { operator: { value: string }; left: Node; right: Node }
interface For extends Node { loopvar: Node; iterable: Node }
interface Select extends Node { lhs: Node }
/** What a `for` iterates, put in its place when the template is parsed: see {@link loopItems}. */
interface LoopItems extends Node { iterable: Node; unpacks: boolean }
const LOOP_ITEMS = 'PythonLoopItems';
interface DictLiteral extends Node { value: Map<Node, Node> }
interface KeywordArgument extends Node { key: Identifier; value: Node }
interface Spread extends Node { argument: Node }
/** A value already evaluated, put in a node's place so that the library's evaluation of the node does not repeat it. */
interface Evaluated extends Node { value: Value }
const EVALUATED = 'PythonEvaluated';

/** The class of the runtime value the library makes of `js`. */
const classOf = (js: unknown) => new Environment().set('v', js).constructor as new (value: unknown) => Value;
const StringValue = classOf('');
const IntegerValue = classOf(0);
const FloatValue = classOf(0.5);
const BooleanValue = classOf(false);
const NullValue = classOf(null);
const UndefinedValue = classOf(undefined);
const ArrayValue = classOf([]);
const ObjectValue = classOf({});

/**
 * An integer past 2^53 (read from JSON text): written with its own digits, as Python writes its int; its value is the
 * nearest double, so that arithmetic and comparisons come out near Python's, with its sign and magnitude.
 */
class BigIntegerValue extends IntegerValue {
  constructor(readonly digits: string) {
    super(Number(digits));
  }

  override toString(): string {
    return this.digits;
  }
}

/** Python's int of a whole number `n`: exact digits past 2^53 too (a double is an integer there). */
function integer(n: number): Value {
  if (!Number.isFinite(n)) throw new Error(`cannot convert float ${pyFloatRepr(n)} to integer`);
  return Number.isSafeInteger(n) ? new IntegerValue(n) : new BigIntegerValue(BigInt(n).toString());
}

/** The number JSON text `raw` spells, as Python's `json.loads` reads it. */
function jsonNumber(raw: string): Value {
  if (/[.eE]/.test(raw)) return new FloatValue(Number(raw));
  const value = Number(raw);
  return Number.isSafeInteger(value) ? new IntegerValue(value) : new BigIntegerValue(BigInt(raw).toString());
}

/**
 * The runtime value of a context value: {@link JsonNumber}s as Python reads them, a Map as a dict in its own order,
 * the rest as the library converts it (arrays and objects walked here, since they may hold either).
 */
function contextValue(js: unknown): Value {
  if (js instanceof JsonNumber) return jsonNumber(js.text);
  if (Array.isArray(js)) return list(js.map(contextValue));
  if (js instanceof Map) return new ObjectValue(new Map([...js].map(([k, v]) => [k, contextValue(v)])));
  if (js !== null && typeof js === 'object') return new ObjectValue(new Map(Object.entries(js).map(([k, v]) => [k, contextValue(v)])));
  return new Environment().set('v', js);
}

const text = (s: string) => new StringValue(s);
const list = (items: Value[]) => new ArrayValue(items);
const isList = (v: Value) => v.type === 'ArrayValue' || v.type === 'TupleValue';
const isDict = (v: Value) => v.type === 'ObjectValue' || v.type === 'KeywordArgumentsValue';
const itemsOf = (v: Value) => v.value as Value[];
const entriesOf = (v: Value) => v.value as Map<unknown, Value>;

/** The value of a dict key (a string, or a number, boolean or None key of a template's dict literal). */
function keyValue(key: unknown): Value {
  if (typeof key === 'number') return Number.isInteger(key) ? new IntegerValue(key) : new FloatValue(key);
  if (typeof key === 'boolean') return new BooleanValue(key);
  // (the library's None holds undefined)
  return key === null || key === undefined ? new NullValue(null) : text(String(key));
}

/** Python's `repr()` of a value. */
function repr(v: Value): string {
  switch (v.type) {
    case 'StringValue':
      return pyStringRepr(v.value as string);
    case 'IntegerValue':
      // Python writes an int's digits; JavaScript writes a double (the library's arithmetic past 2^53) from 1e21 with an exponent.
      return v instanceof BigIntegerValue || !Number.isInteger(v.value) ? v.toString() : BigInt(v.value as number).toString();
    case 'FloatValue':
      return pyFloatRepr(v.value as number);
    case 'BooleanValue':
      return v.value ? 'True' : 'False';
    case 'NullValue':
    case 'UndefinedValue':
      return 'None';
    case 'ArrayValue':
      return `[${itemsOf(v).map(repr).join(', ')}]`;
    case 'TupleValue': {
      const items = itemsOf(v).map(repr);
      return items.length === 1 ? `(${items[0]},)` : `(${items.join(', ')})`;
    }
    case 'ObjectValue':
    case 'KeywordArgumentsValue':
      return dictRepr(entriesOf(v));
    case 'NamespaceValue':
      return `<Namespace ${dictRepr(entriesOf(v))}>`;
    default:
      return v.toString();
  }
}

/**
 * A dict's entries as Python has them: an undefined one is a JavaScript object's `undefined` field, which its JSON
 * (and so transformers' dict) lacks.
 */
const dictEntries = (entries: Map<unknown, Value>) => [...entries].filter(([, value]) => value.type !== 'UndefinedValue');

function dictRepr(entries: Map<unknown, Value>): string {
  return `{${dictEntries(entries).map(([key, value]) => `${repr(keyValue(key))}: ${repr(value)}`).join(', ')}}`;
}

/** Python's `str()` of a value, as jinja2 prints it: an undefined value prints nothing. */
function str(v: Value): string {
  if (v.type === 'StringValue') return v.value as string;
  return v.type === 'UndefinedValue' ? '' : repr(v);
}

/** Filters that iterate their operand, which jinja2 takes as empty when it is undefined. */
const ITERATING = new Set(['length', 'list', 'join', 'first', 'last', 'sort', 'unique', 'reverse', 'map', 'select', 'reject', 'selectattr', 'rejectattr', 'min', 'max', 'items']);
/** Filters that take None as empty too (jinja2's `select` family test `if seq:` before iterating). */
const SELECTING = new Set(['select', 'reject', 'selectattr', 'rejectattr']);
/** Nodes that are not printed where they stand in a template's body. */
const STATEMENTS = new Set(['Program', 'If', 'For', 'Break', 'Continue', 'Set', 'Macro', 'Comment', 'CallStatement', 'FilterStatement']);

/**
 * Readies a parsed template's `body`, nested blocks too: adds the expressions it prints (not a `set`'s or a test's,
 * which are values) to `printed`, and puts {@link LoopItems} in the place of what each `for` iterates. (The library
 * evaluates both through `evaluate`, which is overridden; not always its statements, which its blocks may run
 * themselves.)
 */
function prepare(body: readonly Node[], printed: WeakSet<Node>): void {
  for (const node of body) {
    if (!STATEMENTS.has(node.type)) {
      printed.add(node);
      continue;
    }
    if (node.type === 'For') {
      const loop = node as For;
      const items = (iterable: Node) => ({ type: LOOP_ITEMS, iterable, unpacks: loop.loopvar.type === 'TupleLiteral' }) as LoopItems;
      if (loop.iterable.type === 'SelectExpression') (loop.iterable as Select).lhs = items((loop.iterable as Select).lhs);
      else loop.iterable = items(loop.iterable);
    }
    const blocks = node as Node & { body?: unknown; alternate?: unknown; defaultBlock?: unknown };
    for (const block of [blocks.body, blocks.alternate, blocks.defaultBlock]) {
      if (Array.isArray(block)) prepare(block as Node[], printed);
    }
  }
}

/**
 * What a `for` iterates: nothing for an undefined value (jinja2's undefined iterates as empty), a string's
 * characters, a dict's keys (numbers too); tuples unpacked into the loop's names (`unpacks`) as lists are.
 */
function loopItems(items: Value, unpacks: boolean): Value {
  if (items.type === 'UndefinedValue') return list([]);
  if (items.type === 'StringValue') return list(Array.from(items.value as string, text));
  if (isDict(items)) return list([...entriesOf(items).keys()].map(keyValue));
  if (isList(items) && unpacks) return list(itemsOf(items).map((item) => (item.type === 'TupleValue' ? list(itemsOf(item)) : item)));
  return items;
}

const evaluated = (value: Value): Node => ({ type: EVALUATED, value }) as Evaluated;
const identifier = (name: string): Node => ({ type: 'Identifier', value: name }) as Identifier;

/** The library's interpreter, evaluating here the nodes where jinja2 differs (see the module's comment). */
class PythonInterpreter extends Interpreter {
  constructor(
    global: Environment,
    /** The expressions whose value is printed. */
    private readonly printed: WeakSet<Node>,
  ) {
    super(global);
  }

  override evaluate(node: Node | undefined, env: Environment): Value {
    const value = this.evaluateNode(node, env);
    return node && this.printed.has(node) && value.type !== 'StringValue' && value.type !== 'UndefinedValue' ? text(str(value)) : value;
  }

  private evaluateNode(node: Node | undefined, env: Environment): Value {
    switch (node?.type) {
      case EVALUATED:
        return (node as Evaluated).value;
      case 'CallExpression':
        return this.call(node as Call, env);
      case 'FilterExpression':
        return this.filter(node as Filter, env);
      case 'BinaryExpression':
        return this.binary(node as Binary, env);
      case 'MemberExpression':
        return this.member(node as Member, env);
      case 'ObjectLiteral':
        return this.dict(node as DictLiteral, env);
      case LOOP_ITEMS:
        return loopItems(this.evaluate((node as LoopItems).iterable, env), (node as LoopItems).unpacks);
      default:
        return super.evaluate(node, env);
    }
  }

  /** Positional and keyword arguments of a call. */
  private arguments(args: readonly Node[], env: Environment): [Value[], Map<string, Value>] {
    const positional: Value[] = [];
    const keywords = new Map<string, Value>();
    for (const arg of args) {
      if (arg.type === 'KeywordArgumentExpression') keywords.set((arg as KeywordArgument).key.value, this.evaluate((arg as KeywordArgument).value, env));
      else if (arg.type === 'SpreadExpression') positional.push(...itemsOf(this.evaluate((arg as Spread).argument, env)));
      else if (arg.type === 'KeywordSpreadExpression') for (const [k, v] of entriesOf(this.evaluate((arg as Spread).argument, env))) keywords.set(String(k), v);
      else positional.push(this.evaluate(arg, env));
    }
    return [positional, keywords];
  }

  /** `x.method(…)`: Python's string methods, and `get`/`items` of dicts whose keys need not be strings. */
  private call(node: Call, env: Environment): Value {
    const callee = node.callee as Member;
    if (callee.type !== 'MemberExpression' || callee.computed || callee.property.type !== 'Identifier') return super.evaluate(node, env);
    const object = this.evaluate(callee.object, env);
    const method = (callee.property as Identifier).value;
    if (object.type === 'StringValue' && STRING_METHODS.has(method)) {
      const [args, kwargs] = this.arguments(node.args, env);
      return stringMethod(object.value as string, method, args, kwargs);
    }
    if (isDict(object) && (method === 'get' || method === 'items')) {
      const [args] = this.arguments(node.args, env);
      const entries = entriesOf(object);
      if (method === 'items') return list([...entries].map(([k, v]) => list([keyValue(k), v])));
      return entries.get(args[0]?.value) ?? args[1] ?? new NullValue(null);
    }
    return super.evaluate({ ...node, callee: { ...callee, object: evaluated(object) } } as Call, env);
  }

  private filter(node: Filter, env: Environment): Value {
    const call = node.filter.type === 'CallExpression' ? (node.filter as Call) : undefined;
    const nameNode = call ? call.callee : node.filter;
    if (nameNode.type !== 'Identifier') return super.evaluate(node, env);
    const name = (nameNode as Identifier).value;
    let operand = this.evaluate(node.operand, env);
    const args = () => this.arguments(call?.args ?? [], env);
    if ((operand.type === 'UndefinedValue' && ITERATING.has(name)) || (operand.type === 'NullValue' && SELECTING.has(name))) operand = list([]);
    switch (name) {
      case 'string':
        return text(str(operand));
      case 'tojson':
        return text(pyJson(operand, jsonOptions(...args())));
      case 'int':
        // Python's `int()`: an integer as it is (a big one keeps its digits), a float cut toward zero.
        if (operand.type === 'IntegerValue') return operand;
        if (operand.type === 'FloatValue') return integer(Math.trunc(operand.value as number));
        break;
      case 'abs':
        if (operand instanceof BigIntegerValue) return new BigIntegerValue(operand.digits.replace(/^-/, ''));
        break;
      case 'trim': {
        const chars = args()[0][0];
        return text(pyStrip(str(operand), chars && chars.type !== 'NullValue' ? str(chars) : undefined, true, true));
      }
      case 'capitalize':
        return text(pyCapitalize(str(operand)));
      case 'first':
      case 'last':
        if (isList(operand)) return itemsOf(operand).at(name === 'first' ? 0 : -1) ?? new UndefinedValue(undefined);
        break;
      case 'min':
      case 'max':
        if (isList(operand)) {
          // (jinja2's `min(case_sensitive=False, attribute=None)`: by position or by name)
          const [positional, kwargs] = args();
          const attribute = (positional[1] ?? kwargs.get('attribute'))?.value;
          const caseSensitive = (positional[0] ?? kwargs.get('case_sensitive'))?.value === true;
          return extreme(itemsOf(operand), name, caseSensitive, attribute === undefined || attribute === null ? undefined : String(attribute));
        }
        break;
      case 'select':
      case 'reject':
        if (isList(operand)) return list(this.selected(itemsOf(operand), args()[0], name === 'select', env));
        break;
      case 'map':
        if (isList(operand) && call?.args[0] && call.args[0].type !== 'KeywordArgumentExpression') {
          // `map('tojson')`: the named filter (with the arguments after its name) applied to each item.
          const [filterName, ...rest] = call.args;
          const named = identifier(str(this.evaluate(filterName, env)));
          const filter = rest.length ? ({ type: 'CallExpression', callee: named, args: rest } as Call) : named;
          return list(itemsOf(operand).map((item) => this.evaluate({ type: 'FilterExpression', operand: evaluated(item), filter } as Filter, env)));
        }
        break;
      case 'join':
        // The library joins its items' JavaScript values: `True`, not `true`, and dicts as Python writes them.
        if (isList(operand)) operand = list(itemsOf(operand).map((item) => text(str(item))));
        break;
      case 'items':
        if (isList(operand) && itemsOf(operand).length === 0) return operand; // an undefined value's items: none
        if (isDict(operand)) return list([...entriesOf(operand)].map(([k, v]) => list([keyValue(k), v])));
        break;
      case 'dictsort':
        if (isDict(operand)) return dictsort(entriesOf(operand), args());
        break;
    }
    return super.evaluate({ ...node, operand: evaluated(operand) } as Filter, env);
  }

  /** `select(test, *args)` (`selecting`) or `reject(…)`: the items the named test (default: truth) passes or fails. */
  private selected(items: Value[], [test, ...testArgs]: Value[], selecting: boolean, env: Environment): Value[] {
    const name = test ? str(test) : undefined;
    const fn = name === undefined ? undefined : env.tests.get(name);
    if (name !== undefined && !fn) throw new Error(`Unknown test: ${name}`);
    return items.filter((item) => (fn ? fn(item, ...testArgs) : item.__bool__().value) === selecting);
  }

  /** `~` writes both sides as `str()` does; `*` repeats a string or a list. */
  private binary(node: Binary, env: Environment): Value {
    const op = node.operator.value;
    if (op !== '~' && op !== '*') return super.evaluate(node, env);
    const left = this.evaluate(node.left, env);
    const right = this.evaluate(node.right, env);
    if (op === '~') return text(str(left) + str(right));
    const [seq, count] = right.type === 'IntegerValue' ? [left, right.value as number] : left.type === 'IntegerValue' ? [right, left.value as number] : [undefined, 0];
    if (seq?.type === 'StringValue') return text((seq.value as string).repeat(Math.max(0, count)));
    if (seq && isList(seq)) return list(Array.from({ length: Math.max(0, count) }, () => itemsOf(seq)).flat());
    return super.evaluate({ ...node, left: evaluated(left), right: evaluated(right) } as Binary, env);
  }

  /** `d[k]` with a key that is not a string (a number key of a dict literal). */
  private member(node: Member, env: Environment): Value {
    if (!node.computed || node.property.type === 'SliceExpression') return super.evaluate(node, env);
    const object = this.evaluate(node.object, env);
    const property = this.evaluate(node.property, env);
    if (isDict(object) && property.type !== 'StringValue') return entriesOf(object).get(property.value) ?? new UndefinedValue(undefined);
    return super.evaluate({ ...node, object: evaluated(object), property: evaluated(property) } as Member, env);
  }

  /** A dict literal, whose keys may be numbers, booleans or None as well as strings. */
  private dict(node: DictLiteral, env: Environment): Value {
    const entries = new Map<unknown, Value>();
    for (const [keyNode, valueNode] of node.value) {
      const key = this.evaluate(keyNode, env);
      if (!['StringValue', 'IntegerValue', 'FloatValue', 'BooleanValue', 'NullValue'].includes(key.type)) throw new Error(`unhashable dict key: ${key.type}`);
      entries.set(key.value, this.evaluate(valueNode, env));
    }
    return new ObjectValue(entries);
  }
}

/** How Python's `json.dumps` writes: `indent` the text of one level (undefined: all on one line). */
interface JsonOptions {
  ensureAscii: boolean;
  indent: string | undefined;
  separators: readonly [item: string, key: string];
  sortKeys: boolean;
}

/** The options of transformers' `tojson(ensure_ascii=False, indent=None, separators=None, sort_keys=False)`. */
function jsonOptions(args: Value[], kwargs: Map<string, Value>): JsonOptions {
  const given = (at: number, name: string) => {
    const v = args[at] ?? kwargs.get(name);
    return v?.type === 'NullValue' ? undefined : v;
  };
  const indentArg = given(1, 'indent');
  if (indentArg && indentArg.type !== 'IntegerValue' && indentArg.type !== 'StringValue') {
    throw new Error(`tojson: indent must be an integer or a string, not ${indentArg.type}`);
  }
  const indent = indentArg?.type === 'IntegerValue' ? ' '.repeat(Math.max(0, indentArg.value as number)) : (indentArg?.value as string | undefined);
  const separatorsArg = given(2, 'separators');
  let separators: [string, string] = [indent === undefined ? ', ' : ',', ': '];
  if (separatorsArg) {
    const items = isList(separatorsArg) ? itemsOf(separatorsArg) : [];
    if (items.length !== 2 || items.some((item) => item.type !== 'StringValue')) throw new Error('tojson: separators must be two strings');
    separators = [items[0]!.value as string, items[1]!.value as string];
  }
  const flag = (at: number, name: string) => given(at, name)?.__bool__().value ?? false;
  return { ensureAscii: flag(0, 'ensure_ascii'), indent, separators, sortKeys: flag(3, 'sort_keys') };
}

/**
 * Python's `json.dumps(v, …)` (transformers' `tojson`): floats as their `repr` (`1.0`, `1e-07`), `NaN` and
 * `Infinity` as Python writes them, dict keys that are not strings as JSON writes them (`1`, `true`, `null`), a
 * nested value on its own line, `depth` levels in, where there is an indent.
 */
function pyJson(v: Value, options: JsonOptions, depth = 0): string {
  const { indent, separators } = options;
  const laidOut = (open: string, items: string[], close: string) => {
    if (indent === undefined || items.length === 0) return open + items.join(separators[0]) + close;
    const line = `\n${indent.repeat(depth + 1)}`;
    return `${open}${line}${items.join(separators[0] + line)}\n${indent.repeat(depth)}${close}`;
  };
  switch (v.type) {
    case 'StringValue':
      return pyJsonString(v.value as string, options.ensureAscii);
    case 'IntegerValue':
      return repr(v);
    case 'FloatValue': {
      const x = v.value as number;
      return Number.isFinite(x) ? pyFloatRepr(x) : Number.isNaN(x) ? 'NaN' : x > 0 ? 'Infinity' : '-Infinity';
    }
    case 'BooleanValue':
      return v.value ? 'true' : 'false';
    case 'NullValue':
    case 'UndefinedValue':
      return 'null';
    case 'ArrayValue':
    case 'TupleValue':
      return laidOut('[', itemsOf(v).map((item) => pyJson(item, options, depth + 1)), ']');
    case 'ObjectValue':
    case 'KeywordArgumentsValue':
    case 'NamespaceValue': {
      const entries = dictEntries(entriesOf(v));
      const keyOf = ([k]: [unknown, Value]) => k as string | number;
      if (options.sortKeys) entries.sort((a, b) => (keyOf(a) < keyOf(b) ? -1 : keyOf(a) > keyOf(b) ? 1 : 0));
      const key = (k: unknown) => pyJsonString(typeof k === 'string' ? k : pyJson(keyValue(k), options), options.ensureAscii);
      return laidOut('{', entries.map(([k, value]) => key(k) + separators[1] + pyJson(value, options, depth + 1)), '}');
    }
    default:
      throw new Error(`Object of type ${v.type} is not JSON serializable`);
  }
}

const STRING_METHODS = new Set(['strip', 'lstrip', 'rstrip', 'format', 'count', 'capitalize']);

function stringMethod(s: string, method: string, args: Value[], kwargs: Map<string, Value>): Value {
  switch (method) {
    case 'format': {
      const written = (v: Value) => ({ str: str(v), repr: repr(v) });
      return text(pyFormat(s, args.map(written), new Map([...kwargs].map(([k, v]) => [k, written(v)]))));
    }
    case 'count':
      return new IntegerValue(pyCount(s, str(args[0] ?? text(''))));
    case 'capitalize':
      return text(pyCapitalize(s));
    default: {
      const chars = args[0] && args[0].type !== 'NullValue' ? str(args[0]) : undefined;
      return text(pyStrip(s, chars, method !== 'rstrip', method !== 'lstrip'));
    }
  }
}

/** `min`/`max` of a list, strings compared ignoring case unless `caseSensitive`; undefined for an empty list. */
function extreme(items: Value[], which: 'min' | 'max', caseSensitive: boolean, attribute?: string): Value {
  const key = (item: Value) => {
    const v = attribute === undefined ? item : attributeOf(item, attribute);
    return v.type === 'StringValue' && !caseSensitive ? (v.value as string).toLowerCase() : (v.value as number | string);
  };
  let best: Value | undefined;
  for (const item of items) {
    if (!best || (which === 'min' ? key(item) < key(best) : key(item) > key(best))) best = item;
  }
  return best ?? new UndefinedValue(undefined);
}

/** jinja2's `attribute=` path of an item: keys (or list indices) joined by dots; undefined where one is missing. */
function attributeOf(item: Value, path: string): Value {
  let v = item;
  for (const part of path.split('.')) {
    const next = isDict(v) ? entriesOf(v).get(part) ?? entriesOf(v).get(Number(part)) : isList(v) && /^\d+$/.test(part) ? itemsOf(v)[Number(part)] : undefined;
    if (next === undefined) return new UndefinedValue(undefined);
    v = next;
  }
  return v;
}

/** `dictsort(case_sensitive=False, by='key', reverse=False)`: the dict's (key, value) pairs, sorted. */
function dictsort(entries: Map<unknown, Value>, [args, kwargs]: [Value[], Map<string, Value>]): Value {
  const caseSensitive = (args[0] ?? kwargs.get('case_sensitive'))?.value === true;
  const at = (args[1] ?? kwargs.get('by'))?.value === 'value' ? 1 : 0;
  const reverse = (args[2] ?? kwargs.get('reverse'))?.value === true;
  const key = (v: Value) => (v.type === 'StringValue' && !caseSensitive ? (v.value as string).toLowerCase() : (v.value as number | string));
  const pairs = [...entries].map(([k, v]) => [keyValue(k), v] as const);
  pairs.sort((a, b) => {
    const [x, y] = [key(a[at]), key(b[at])];
    return (x < y ? -1 : x > y ? 1 : 0) * (reverse ? -1 : 1);
  });
  return list(pairs.map((pair) => list([...pair])));
}

/**
 * The most numbers a template's `range()` gives: jinja2's sandbox (`MAX_RANGE`, transformers renders chat templates in
 * it) refuses more, and a template asking for 10^8 ran the model worker out of memory.
 */
const MAX_RANGE = 100_000;

/** Python's `range(stop)` and `range(start, stop[, step])`, as long as jinja2's sandbox allows. */
function range(start: number, stop?: number, step = 1): number[] {
  if (stop === undefined) [start, stop] = [0, start];
  if (step === 0) throw new Error('range() arg 3 must not be zero');
  const count = Math.ceil((stop - start) / step);
  if (count > MAX_RANGE) {
    throw new TemplateRaisedError(`range too big: the template asks for ${count} numbers, and jinja2's sandbox (transformers') gives at most ${MAX_RANGE}`);
  }
  const out: number[] = [];
  for (let i = start; step > 0 ? i < stop : i > stop; i += step) out.push(i);
  return out;
}

/** jinja2's literals, which the library looks up as variables: no variable of the caller's can stand for them. */
const CONSTANTS: Record<string, unknown> = { true: true, false: false, none: null, True: true, False: false, None: null };

/** The globals transformers gives a chat template. */
const GLOBALS: Record<string, unknown> = {
  range,
  raise_exception: (message: unknown) => {
    throw new TemplateRaisedError(String(message));
  },
  strftime_now: (format: string) => pyStrftime(new Date(), format),
};

/** A chat template parsed once, rendered as transformers' jinja2 renders it. */
export class PythonTemplate {
  private readonly program: Node & { body: Node[] };
  private readonly printed = new WeakSet<Node>();

  /** Parses `source` (trim_blocks and lstrip_blocks on, as transformers sets them); throws the parser's error. */
  constructor(source: string) {
    this.program = new jinja.Template(source).parsed;
    prepare(this.program.body, this.printed);
  }

  /**
   * The text of the template given `context` (plain JavaScript values, {@link JsonNumber}s, and Maps as dicts in their
   * order); throws {@link TemplateRaisedError} where the template raises, and the library's error where it cannot
   * evaluate something.
   */
  render(context: Record<string, unknown>): string {
    const env = new Environment();
    for (const [name, value] of Object.entries(CONSTANTS)) env.set(name, value);
    for (const [name, value] of Object.entries(context)) if (!Object.hasOwn(CONSTANTS, name)) env.declareVariable(name, contextValue(value));
    // The caller's variables win, as a render's keyword arguments win over jinja2's globals.
    for (const [name, value] of Object.entries(GLOBALS)) if (!env.variables.has(name)) env.set(name, value);
    return new PythonInterpreter(env, this.printed).run(this.program).value as string;
  }
}
