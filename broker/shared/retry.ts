/**
 * Retry timing for failed shared deliveries: exponential backoff and the clock it runs on. The
 * clock reads the global `Date.now`/`setTimeout` at call time, so tests can drive it with vitest's
 * fake timers; a broker embedding may pass its own.
 */

export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(timer: unknown): void;
}

/** setTimeout caps delays at 2^31-1 ms; a longer wait fires early and re-arms. */
const MAX_DELAY = 2 ** 31 - 1;

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout(fn, ms) {
    const t = setTimeout(fn, Math.min(Math.max(ms, 0), MAX_DELAY));
    t.unref?.();
    return t;
  },
  clearTimeout: (t) => clearTimeout(t as NodeJS.Timeout),
};

/**
 * Delay before the next attempt after `attempts` failed ones (1, 2, …): base, base × factor,
 * base × factor², …
 */
export function backoff(attempts: number, base: number, factor: number): number {
  return Math.min(base * factor ** Math.max(0, attempts - 1), Number.MAX_SAFE_INTEGER);
}
