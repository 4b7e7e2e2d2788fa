/**
 * Marks dist/cjs/ as CommonJS: this package is `"type": "module"`, so Node would read the `.js` files that
 * tsconfig.cjs.json writes there as ES modules without a package.json of their own saying otherwise (tsc writes
 * none, and names no output `.cjs` when its sources are `.ts`). Runs after each build (`npm run build`, here and at
 * the repository's root, and `prepack`).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

writeFileSync(join(import.meta.dirname, '..', 'dist', 'cjs', 'package.json'), `${JSON.stringify({ type: 'commonjs' })}\n`);
