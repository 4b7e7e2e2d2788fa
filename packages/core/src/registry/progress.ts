/**
 * A one-line progress bar for pushes and pulls: bytes done of the bytes seen so far, rate, and the file
 * moving. Drawn only on a terminal, outside CI, and once a large file is involved: small modules and
 * logs stay quiet. A terminal without cursor control (TERM=dumb) gets a line per tenth of the way instead.
 */
import { HASHING_DIGEST, type TransferProgress } from './download.js';

/** Where the bar is drawn (process.stderr, or a test's stand-in). */
export interface ProgressStream {
  isTTY?: boolean;
  columns?: number;
  write(text: string): unknown;
}

/** Files from this size on make a transfer "large". */
const LARGE = 8 * 1024 * 1024;
const REDRAW_MS = 100;
const WIDTH = 24;

const mib = (n: number) => (n / (1024 * 1024)).toFixed(1);

/**
 * One progress line for a transfer, labelled `label`, redrawn in place on `stream` as `update` reports files (or,
 * `inPlace` false, written anew as each tenth of the way is passed); it stays blank until a file of 8 MiB or more is
 * seen. {@link progressBar} makes one only for a terminal outside CI.
 */
export class ProgressBar {
  private readonly files = new Map<string, { size: number; bytes: number; resumedFrom: number }>();
  private readonly started = Date.now();
  private drawn = 0;
  private large = false;
  /** Out of place, the file and the tenth of the way last written. */
  private written = { file: '', tenth: -1 };

  constructor(
    private readonly label: string,
    private readonly stream: ProgressStream,
    private readonly inPlace = true,
  ) {}

  /** Records a progress event; redraws at most every 100 ms. */
  update(p: TransferProgress): void {
    if (p.digest !== HASHING_DIGEST) this.files.delete(HASHING_DIGEST);
    this.files.set(p.digest, { size: p.size, bytes: p.bytes, resumedFrom: p.resumedFrom });
    this.large ||= p.size >= LARGE;
    const now = Date.now();
    if (this.large && now - this.drawn >= REDRAW_MS) {
      this.drawn = now;
      this.draw(p.digest === HASHING_DIGEST ? `hashing ${p.file}` : p.file);
    }
  }

  /** Draws the final state and ends the line, if anything was drawn. */
  finish(): void {
    if (this.drawn === 0) return;
    this.draw('done');
    if (this.inPlace) this.stream.write('\n');
  }

  private draw(file: string): void {
    let size = 0;
    let bytes = 0;
    let moved = 0;
    for (const f of this.files.values()) {
      size += f.size;
      bytes += f.bytes;
      moved += f.bytes - f.resumedFrom;
    }
    const fraction = size === 0 ? 1 : bytes / size;
    const filled = Math.round(fraction * WIDTH);
    const rate = moved / Math.max((Date.now() - this.started) / 1000, 1e-3);
    const line = `${this.label} [${'#'.repeat(filled)}${'-'.repeat(WIDTH - filled)}] ${(fraction * 100).toFixed(0).padStart(3)}% ${mib(bytes)}/${mib(size)} MiB ${mib(rate)} MiB/s ${file}`;
    const shown = line.slice(0, (this.stream.columns ?? 120) - 1);
    if (this.inPlace) {
      this.stream.write(`\r${shown}\x1b[K`);
      return;
    }
    const tenth = Math.floor(fraction * 10);
    if (file === this.written.file && tenth <= this.written.tenth) return;
    this.written = { file, tenth };
    this.stream.write(`${shown}\n`);
  }
}

/**
 * A bar for `label` when `stream` is a terminal and `env` is not CI, redrawn in place unless TERM=dumb (a terminal
 * that would print the escape codes); otherwise undefined (no output).
 */
export function progressBar(label: string, stream: ProgressStream = process.stderr, env: NodeJS.ProcessEnv = process.env): ProgressBar | undefined {
  return stream.isTTY && !env['CI'] ? new ProgressBar(label, stream, env['TERM'] !== 'dumb') : undefined;
}
