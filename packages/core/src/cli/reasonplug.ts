/** Entry point of the `reasonplug` executable. */
import { main } from './main.js';
import { stdout } from './output-closed.js';

// Output cut short by its reader (`reasonplug … | head`) stops the command as Ctrl-C does (generation between two
// steps, so the model worker is never torn down mid-run), and it then ends normally; later writes are dropped.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code !== 'EPIPE') throw err;
  if (!stdout.closed) {
    stdout.closed = true;
    process.emit('SIGINT', 'SIGINT');
  }
});

await main();
