/**
 * Which build of @reasonplug/core a benchmark's child runs: `dist`, the compiled package (what an npm install
 * runs, as node-llama-cpp's users run its compiled JavaScript), or `src`, the TypeScript sources under tsx, whose
 * model workers register tsx and compile their modules as they start (slower to load, more memory).
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { repoRoot } from '../../test/support/paths.js';

export const CORE_BUILDS = ['dist', 'src'] as const;
export type CoreBuild = (typeof CORE_BUILDS)[number];

/** Checks a `--from` value. */
export function parseCoreBuild(value: string): CoreBuild {
  if (!(CORE_BUILDS as readonly string[]).includes(value)) throw new Error(`--from must be one of ${CORE_BUILDS.join(', ')}; got ${value}`);
  return value as CoreBuild;
}

/**
 * Compiles packages/core into dist/ (incremental, seconds when little changed), so that a `dist` run measures the
 * sources as they are now. TypeScript still writes the files when a type error is reported (another change in
 * progress); that is said on stderr and the run goes on.
 */
export function buildCore(): void {
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  try {
    execFileSync(process.execPath, [tsc, '-b', join(repoRoot, 'packages/core')], { stdio: ['ignore', 'ignore', 'inherit'] });
  } catch {
    console.error('warning: tsc -b packages/core reported type errors; dist/ was written anyway');
  }
  if (!existsSync(join(repoRoot, 'packages/core/dist/engine.js'))) throw new Error('packages/core/dist/engine.js is missing after tsc -b');
}

/** The URL to import core's module `path` (relative to src/, without extension, e.g. `runtime/open-decoder`) from. */
export function coreModule(build: CoreBuild, path: string): string {
  return pathToFileURL(join(repoRoot, 'packages/core', build, `${path}.${build === 'dist' ? 'js' : 'ts'}`)).href;
}
