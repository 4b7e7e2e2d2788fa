/**
 * Loads `@mlc-ai/web-xgrammar` in Node. Its bundle is UMD: imported as ESM it has no `exports` and would put
 * itself on `globalThis`, and its Emscripten glue needs `require` and `__filename`. So the bundle is run as a
 * CommonJS function with its own `require`, `__filename` and `console`; each call gives an independent
 * instance (its own WebAssembly memory), which is how a failed compile is recovered from.
 *
 * The `console` handed in routes what the C++ side prints (`[FATAL] … EBNF parser error at line 1 …`) into
 * {@link XGrammarInstance.takeMessages}, so the error raised can say why instead of Emscripten's "Aborted()".
 */
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type * as XGrammar from '@mlc-ai/web-xgrammar';

export type XGrammarModule = typeof XGrammar;

/** One loaded copy of the library and what its C++ side printed since last asked. */
export interface XGrammarInstance {
  readonly xg: XGrammarModule;
  /** Lines printed by the library since the last call (and forgets them). */
  takeMessages(): string[];
}

const require = createRequire(import.meta.url);
let source: { path: string; text: string } | undefined;

/** A fresh instance of the library. */
export function loadXGrammar(): XGrammarInstance {
  if (!source) {
    const path = require.resolve('@mlc-ai/web-xgrammar');
    source = { path, text: readFileSync(path, 'utf8') };
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
  return {
    xg: module.exports as unknown as XGrammarModule,
    takeMessages: () => {
      const out = messages;
      messages = [];
      return out;
    },
  };
}
