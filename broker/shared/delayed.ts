import type { Waiting } from './queue.js';
import type { Clock } from './retry.js';

/**
 * A group's messages in backoff after a failed attempt, by due time, with one timer for the
 * earliest: when it fires, every message due is handed to `due` (back to the waiting queue).
 */
export class Delayed {
  /** In due-time order. */
  readonly items: Waiting[] = [];
  private timer: unknown;
  private timerDue = Number.POSITIVE_INFINITY;

  constructor(
    private readonly clock: Clock,
    private readonly due: (moved: Waiting[]) => void,
    private readonly onError: (err: unknown) => void,
  ) {}

  get length(): number {
    return this.items.length;
  }

  /** Waits until e.dueAt. */
  add(e: Waiting): void {
    const at = e.dueAt ?? 0;
    let i = this.items.length;
    while (i > 0 && (this.items[i - 1].dueAt ?? 0) > at) i--;
    this.items.splice(i, 0, e);
    if (at < this.timerDue) this.arm();
  }

  /** Removes and returns everything (a purged queue). */
  clear(): Waiting[] {
    const all = this.items.splice(0);
    this.arm();
    return all;
  }

  /** Cancels the timer (broker closing). */
  stop(): void {
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer);
    this.timer = undefined;
    this.timerDue = Number.POSITIVE_INFINITY;
  }

  private arm(): void {
    this.stop();
    if (this.items.length === 0) return;
    const at = this.items[0].dueAt ?? 0;
    this.timerDue = at;
    this.timer = this.clock.setTimeout(this.onTimer, at - this.clock.now());
  }

  private readonly onTimer = (): void => {
    this.timer = undefined;
    this.timerDue = Number.POSITIVE_INFINITY;
    try {
      const now = this.clock.now();
      let n = 0;
      while (n < this.items.length && (this.items[n].dueAt ?? 0) <= now) n++;
      const moved = this.items.splice(0, n);
      this.arm();
      if (moved.length > 0) this.due(moved);
    } catch (err) {
      // A timer callback: reported, never thrown on into the event loop.
      this.onError(err);
    }
  };
}
