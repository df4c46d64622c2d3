/** setTimeout caps delays at 2^31-1 ms (~24.8 days); longer waits re-arm in steps. */
const MAX_DELAY = 2 ** 31 - 1;

export interface LongTimer {
  cancel(): void;
}

/** Calls fn after ms; an exception from fn goes to onError, never out of the timer. */
export function longTimeout(fn: () => void, ms: number, onError: (err: unknown) => void): LongTimer {
  const due = Date.now() + ms;
  let timer: NodeJS.Timeout;
  const arm = () => {
    const left = due - Date.now();
    if (left <= 0) {
      try {
        fn();
      } catch (err) {
        onError(err);
      }
      return;
    }
    timer = setTimeout(arm, Math.min(left, MAX_DELAY));
    timer.unref();
  };
  timer = setTimeout(arm, Math.min(Math.max(ms, 0), MAX_DELAY));
  timer.unref();
  return { cancel: () => clearTimeout(timer) };
}
