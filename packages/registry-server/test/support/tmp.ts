/** Per-process scratch directories for the tests, removed at exit. */
import { mkdtempSync, rmSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const root = mkdtempSync(join(tmpdir(), 'reasonplug-registry-test-'));
process.once('exit', () => rmSync(root, { recursive: true, force: true }));

export const scratch = (label: string): Promise<string> => mkdtemp(join(root, `${label}-`));
