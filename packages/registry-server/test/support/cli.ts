/** Runs the `reasonplug-registry` CLI from source, as `npm run registry` does. */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const cli = fileURLToPath(new URL('../../src/cli.ts', import.meta.url));
const run = promisify(execFile);

export async function registryCli(...args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
  try {
    // A command that should have ended but serves on (a flag it failed to refuse) is killed, not left behind.
    const { stdout, stderr } = await run(process.execPath, ['--import', 'tsx', cli, ...args], { timeout: 20_000 });
    return { stdout, stderr, code: 0 };
  } catch (err) {
    const e = err as { stdout: string; stderr: string; code: number };
    return { stdout: e.stdout, stderr: e.stderr, code: e.code };
  }
}

/**
 * `serve` in a child process; resolves once it logs the URL it listens on. `log` collects its log lines; `stop()`
 * sends SIGTERM and resolves with the exit code once the process has ended and its last line is read.
 */
export async function serveCli(
  ...args: string[]
): Promise<{ url: string; child: ChildProcess; log: Record<string, unknown>[]; stop(): Promise<number | null> }> {
  const child = spawn(process.execPath, ['--import', 'tsx', cli, 'serve', '--port', '0', ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout! });
  const log: Record<string, unknown>[] = [];
  const url = await new Promise<string>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`reasonplug-registry serve exited with ${code}`)));
    lines.on('line', (line) => {
      const entry = JSON.parse(line) as { msg?: string; url?: string };
      log.push(entry);
      if (entry.msg === 'listening') resolve(entry.url!);
    });
  });
  return {
    url,
    child,
    log,
    stop: () =>
      new Promise((resolve) => {
        child.once('close', (code) => resolve(code));
        child.kill('SIGTERM');
      }),
  };
}
