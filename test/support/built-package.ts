/**
 * A workspace package built as `tsc -b` lays it out (dist/ with one module per source file, beside its package.json
 * and bin/), from the working tree's sources, in a directory of the caller's: its bins run as npm users run them,
 * with plain `node`, where tests otherwise run the sources through tsx (whose own loader behaves differently).
 * The package's own dist/ is left alone. The transpiling is esbuild's (no type checks: the typecheck does those).
 */
import { build } from 'esbuild';
import { cp, readdir, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { repoRoot } from './paths.js';

/** Source files under `dir`, recursively. */
async function sources(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile() && e.name.endsWith('.ts')).map((e) => join(e.parentPath, e.name));
}

/**
 * Builds `packages/<name>` into `dir` (an empty directory) and returns `dir`. Its dependencies resolve through
 * `node_modules`, which is the repository's unless given (a directory to link there instead).
 */
export async function builtPackage(name: string, dir: string, nodeModules = join(repoRoot, 'node_modules')): Promise<string> {
  const pkg = join(repoRoot, 'packages', name);
  await build({ entryPoints: await sources(join(pkg, 'src')), outdir: join(dir, 'dist'), outbase: join(pkg, 'src'), platform: 'node', format: 'esm', logLevel: 'warning' });
  await cp(join(pkg, 'bin'), join(dir, 'bin'), { recursive: true });
  await cp(join(pkg, 'package.json'), join(dir, 'package.json'));
  await symlink(nodeModules, join(dir, 'node_modules'), 'dir');
  return dir;
}
