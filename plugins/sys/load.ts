/**
 * Mosquitto's `$SYS/broker/load/...` figures: per-minute rates over 1, 5 and 15 minutes, each an
 * exponentially decayed average updated at every publish interval (as a Unix load average is).
 */
export const LOAD_WINDOWS = [
  ['1min', 60],
  ['5min', 300],
  ['15min', 900],
] as const;

export class LoadAverage {
  private last: number | undefined;
  /** The current averages, per window, in events per minute. */
  readonly values = [0, 0, 0];

  /** Takes the counter's value after dt seconds; the first call only sets the baseline. */
  update(total: number, dt: number): void {
    if (this.last === undefined || dt <= 0) {
      this.last = total;
      return;
    }
    const perMinute = ((total - this.last) * 60) / dt;
    this.last = total;
    for (let i = 0; i < LOAD_WINDOWS.length; i++) {
      const decay = Math.exp(-dt / LOAD_WINDOWS[i][1]);
      this.values[i] = perMinute + decay * (this.values[i] - perMinute);
    }
  }
}
