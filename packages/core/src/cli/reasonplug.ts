/** Entry point of the `reasonplug` executable. */
import { processLimit } from '../runtime/process-limits.js';
import { stdout } from './output-closed.js';

/**
 * Files Node's loader holds open at once as it loads the CLI (it reads a whole level of imports together, zod's
 * locales among them): the built CLI starts from a limit of 106 (Node 20). Under it any failure to load is the limit's.
 */
const FILES_TO_LOAD = 110;

/**
 * Ends a start whose loading of the CLI failed for want of file descriptors, saying so: past the limit the loader
 * reports EMFILE on a file, or, where a package's package.json was the file it could not open, that the installed
 * package is missing. Any other failure is thrown as it came.
 */
function notStarted(err: unknown, openFiles: number | undefined): never {
  const code = (err as NodeJS.ErrnoException).code;
  const short = code === 'EMFILE' || (code === 'ERR_MODULE_NOT_FOUND' && openFiles !== undefined && openFiles < FILES_TO_LOAD);
  if (!short) throw err;
  const limit = openFiles === undefined ? 'the open-files limit (ulimit -n)' : `an open-files limit of ${openFiles} (ulimit -n)`;
  process.stderr.write(`reasonplug: cannot start with ${limit}: loading it takes about ${FILES_TO_LOAD} open files at once; raise the limit (\`ulimit -n 1024\`) and run it again\n`);
  process.exit(1);
}

// Output cut short by its reader (`reasonplug … | head`) stops the command as Ctrl-C does (generation between two
// steps, so the model worker is never torn down mid-run), and it then ends normally; later writes are dropped.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code !== 'EPIPE') throw err;
  if (!stdout.closed) {
    stdout.closed = true;
    process.emit('SIGINT', 'SIGINT');
  }
});

// The CLI is loaded rather than imported so that a failure to load it can be explained. The limit is read first:
// once the loader has used up the descriptors, /proc/self/limits could not be opened either.
const openFiles = processLimit('Max open files');
const { main } = await import('./main.js').catch((err: unknown) => notStarted(err, openFiles));
await main();
