/**
 * Garbage from reading queues back from persistence, collected in step with the reading.
 *
 * A spilled queue catching up is read a page at a time and sent as fast as its client acknowledges:
 * tens of thousands of messages a second, each decoded (strings, records, a payload Buffer), encoded
 * and written again. Memory holds one page and the inflight window, but the records live long enough
 * to be promoted, so their garbage waits for a full collection, which V8 starts only once the old
 * generation and the ArrayBuffers outside it have grown by tens of MB (bench slow-consumer: +85 to
 * +105 MiB of RSS during a 80,000-message catch-up, none of it reachable in a heap snapshot). Asking
 * for a collection after every READ_BACK_GC_BYTES read back bounds that garbage in bytes instead.
 *
 * vm.measureMemory with `execution: 'eager'` is the one way to start a collection without
 * --expose-gc: it starts V8's incremental marking now (the measurement itself is a by-product).
 * Node prints its ExperimentalWarning once, at the first. Process-wide, like the heap: one
 * collection at a time, whichever sessions read. Measured on the bench row (pause's own growth, 2 runs
 * each): every 4 MiB +33 to +45 MiB, every 2 MiB +26 to +29 MiB; healthy subscriber's longest gap
 * under 150 ms and broker CPU per message within the run-to-run noise either way. A synchronous full
 * collection (--expose-gc) every 2 pages instead held the healthy subscriber up to 280 ms.
 */
import { measureMemory } from 'node:vm';

/** Bytes (payload and topic) read back from persistence between two collections asked for. */
export const READ_BACK_GC_BYTES = 2 * 1024 * 1024;

let readSince = 0;
let collecting = false;
/** False once measureMemory is found missing or refused: reading goes on without it. */
let available = true;

/** `bytes` of message bodies were read back from persistence. */
export function readBack(bytes: number): void {
  readSince += bytes;
  if (readSince < READ_BACK_GC_BYTES || collecting || !available) return;
  readSince = 0;
  collecting = true;
  let started: Promise<unknown>;
  try {
    started = measureMemory({ mode: 'summary', execution: 'eager' });
  } catch {
    available = false;
    collecting = false;
    return;
  }
  started.then(
    () => {
      collecting = false;
    },
    () => {
      available = false;
      collecting = false;
    },
  );
}
