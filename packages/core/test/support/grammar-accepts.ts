import type { ResponseFormat, XGrammarFactory } from '../../src/constrain/index.js';

/**
 * Whether the constraint `factory` makes of `format` takes `text` whole and may then end: the text fed as stories260K's
 * byte tokens (id 3 + byte) and the end as its EOS (2), as the grammar-level tests build their factories.
 */
export async function takesWhole(factory: XGrammarFactory, format: ResponseFormat, text: string): Promise<boolean> {
  const c = await factory.create(format, [2]);
  try {
    for (const b of Buffer.from(text)) if (!c.tryAccept(3 + b)) return false;
    return c.tryAccept(2);
  } finally {
    c.dispose();
  }
}
