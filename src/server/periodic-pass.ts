// A pass run every few seconds by a background evaluator (metric gates, evidence gates): never two at once (a
// slow pass must not pile up), never after stop, errors logged rather than thrown at the timer.
import type { Logger } from 'pino';

export class PeriodicPass {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private halted = false;

  constructor(
    private readonly pass: () => Promise<void>,
    private readonly log: Logger,
    private readonly what: string,
  ) {}

  /** True once stop() was called: a pass in progress checks it between its slow steps. */
  get stopped(): boolean {
    return this.halted;
  }

  /** Runs the pass every `everyMs`, skipping a beat while the previous one still runs. */
  start(everyMs: number): void {
    this.timer = setInterval(() => {
      if (this.running || this.halted) return;
      this.running = this.pass()
        .catch((err) => this.log.error({ err }, `${this.what} pass failed`))
        .finally(() => {
          this.running = null;
        });
    }, everyMs);
    this.timer.unref();
  }

  /** Stops the timer and waits for the pass in progress. */
  async stop(): Promise<void> {
    this.halted = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.running;
  }
}
