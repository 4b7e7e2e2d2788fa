/** The `reasonplug` CLI run as a child process, the way a user runs it. */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

/** The CLI's entry point (run with `--import tsx`). */
export const cliPath = fileURLToPath(new URL('../../src/cli/reasonplug.ts', import.meta.url));
const run = promisify(execFile);

/** What a CLI run printed and its exit code. */
export interface CliResult {
  stdout: string;
  stderr: string;
  code: number;
}

/**
 * Runs `reasonplug ...args` (through tsx) with `env` over this process's environment, `input` written to its
 * stdin (then closed); a failing run resolves with its code.
 */
export async function runReasonplug(args: string[], env: Record<string, string> = {}, input?: string): Promise<CliResult> {
  try {
    const running = run(process.execPath, ['--import', 'tsx', cliPath, ...args], { env: { ...process.env, ...env } });
    if (input !== undefined) running.child.stdin!.end(input);
    const { stdout, stderr } = await running;
    return { stdout, stderr, code: 0 };
  } catch (err) {
    const e = err as CliResult;
    return { stdout: e.stdout, stderr: e.stderr, code: e.code };
  }
}
