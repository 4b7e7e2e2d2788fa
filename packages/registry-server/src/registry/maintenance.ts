/**
 * Housekeeping a running registry does by itself, at start and then periodically: removing what writers
 * that died mid-write left behind (the driver's temp files), and purging upload sessions nobody finished
 * (CNCF distribution's upload purging: one week by default).
 */
import type { Logger } from 'pino';
import type { StorageDriver } from '../storage/driver.js';
import type { UploadSessions } from './uploads.js';

/** What one maintenance pass (`RegistryServer.maintain`) removed. */
export interface MaintenanceReport {
  /** Temp files of dead writers removed. */
  tempFiles: number;
  /** Upload sessions purged. */
  uploadSessions: number;
}

const DAY_MS = 24 * 3600 * 1000;
export const DEFAULT_UPLOAD_MAX_AGE_MS = 7 * DAY_MS;

export class Maintenance {
  private running?: Promise<MaintenanceReport>;
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly storage: StorageDriver,
    private readonly uploads: UploadSessions,
    /** Sessions started longer ago than this are purged; Infinity keeps them. */
    private readonly uploadMaxAgeMs: number,
    private readonly logger: Logger,
  ) {}

  /** One pass; a caller arriving while one runs shares it. */
  run(): Promise<MaintenanceReport> {
    this.running ??= this.pass().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  /** Runs a pass now, then every day, or every `uploadMaxAgeMs` when that is shorter. */
  start(): void {
    const tick = () =>
      void this.run().then(
        (report) => this.logger.info(report, 'maintenance'),
        (err: unknown) => this.logger.error({ err }, 'maintenance failed'),
      );
    clearInterval(this.timer);
    tick();
    if (Number.isFinite(this.uploadMaxAgeMs)) this.timer = setInterval(tick, Math.min(this.uploadMaxAgeMs, DAY_MS)).unref();
  }

  /** Stops the schedule and waits for a pass in progress, so that no storage work outlives the server. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.running?.catch(() => {});
  }

  private async pass(): Promise<MaintenanceReport> {
    const tempFiles = (await this.storage.sweep?.()) ?? 0;
    const uploadSessions = Number.isFinite(this.uploadMaxAgeMs) ? await this.uploads.purge(new Date(Date.now() - this.uploadMaxAgeMs)) : 0;
    return { tempFiles, uploadSessions };
  }
}
