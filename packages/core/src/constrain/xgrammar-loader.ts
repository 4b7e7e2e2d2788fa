/**
 * Loads `@mlc-ai/web-xgrammar` in Node. Its bundle is UMD: imported as ESM it has no `exports` and would put
 * itself on `globalThis`, and its Emscripten glue needs `require` and `__filename`. So the bundle is run as a
 * CommonJS function with its own `require`, `__filename` and `console`; each call gives an independent
 * instance (its own WebAssembly memory), which is how a failed compile is recovered from.
 *
 * The `console` handed in routes what the C++ side prints (`[FATAL] … EBNF parser error at line 1 …`) into
 * {@link XGrammarInstance.takeMessages}, so the error raised can say why instead of Emscripten's "Aborted()".
 *
 * The bundle keeps its WebAssembly module (`binding`) to itself; one line added to the source hands it out
 * ({@link XGrammarInstance.binding}), so that a bitmask can be read straight out of its memory instead of through
 * `getNextTokenBitmask`'s awaits and copy. A bundle without that line (another version) just goes without.
 */
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type * as XGrammar from '@mlc-ai/web-xgrammar';

export type XGrammarModule = typeof XGrammar;

/** An embind `std::vector<int32_t>` (`$$.ptr`: embind's address of the C++ object). */
export interface EmbindIntVector {
  delete(): void;
  readonly $$?: { ptr?: unknown };
}

/** What the library's WebAssembly module offers beyond its classes (set once the library has initialized). */
export interface XGrammarBinding {
  /** A view of a vector's elements in the module's memory (valid until the vector is freed or memory grows). */
  vecIntToView(vector: EmbindIntVector): Int32Array;
  /** Views of the module's memory (replaced when it grows). */
  readonly HEAP32?: Int32Array;
  readonly HEAPU32?: Uint32Array;
}

/** One loaded copy of the library and what its C++ side printed since last asked. */
export interface XGrammarInstance {
  readonly xg: XGrammarModule;
  /** The module, once initialized (after the first library call), when this bundle version lets it out. */
  binding(): XGrammarBinding | undefined;
  /** Lines printed by the library since the last call (and forgets them). */
  takeMessages(): string[];
}

const require = createRequire(import.meta.url);
let source: { path: string; text: string } | undefined;

/** The bundle's private module variable, and the line that hands it out. */
const BINDING_DECLARATION = 'let binding = null;';
const BINDING_EXPORT = `${BINDING_DECLARATION} exports.__reasonplugBinding = () => binding;`;

/** A fresh instance of the library. */
export function loadXGrammar(): XGrammarInstance {
  if (!source) {
    const path = require.resolve('@mlc-ai/web-xgrammar');
    const text = readFileSync(path, 'utf8');
    source = { path, text: text.split(BINDING_DECLARATION).length === 2 ? text.replace(BINDING_DECLARATION, BINDING_EXPORT) : text };
  }
  let messages: string[] = [];
  const capture = (...args: unknown[]) => void messages.push(args.map(String).join(' '));
  const quietConsole = { ...console, log: capture, warn: capture, error: capture };
  const module = { exports: {} as Record<string, unknown> };
  // eslint-disable-next-line @typescript-eslint/no-implied-eval -- the bundle is a local file of a dependency
  new Function('exports', 'module', 'require', '__filename', '__dirname', 'console', source.text)(
    module.exports,
    module,
    require,
    source.path,
    dirname(source.path),
    quietConsole,
  );
  const exported = module.exports.__reasonplugBinding as (() => XGrammarBinding | null) | undefined;
  return {
    xg: module.exports as unknown as XGrammarModule,
    binding: () => exported?.() ?? undefined,
    takeMessages: () => {
      const out = messages;
      messages = [];
      return out;
    },
  };
}
