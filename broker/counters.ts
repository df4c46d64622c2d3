import { type IntervalHistogram, monitorEventLoopDelay } from 'node:perf_hooks';

/** MQTT protocol levels by name, as stats report them. */
export const PROTOCOL_NAMES = { 3: '3.1', 4: '3.1.1', 5: '5.0' } as const;

/** Upper bounds (seconds) of the persistence batch latency histogram. */
export const BATCH_BOUNDS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

/** Event-loop delay is summarised per window of this length. */
const LAG_WINDOW_MS = 10_000;

/**
 * The broker's traffic counters. The hot path only increments plain numbers (fixed fields and
 * fixed-size arrays indexed by QoS): no allocation, no lookups per message. Everything else is
 * read at snapshot time (broker/stats-view.ts).
 */
export class Counters {
  readonly createdAt = Date.now();
  /** MQTT packets of every kind. */
  packetsReceived = 0;
  packetsSent = 0;
  bytesReceived = 0;
  bytesSent = 0;
  /** PUBLISH packets by QoS. */
  readonly publishReceived: [number, number, number] = [0, 0, 0];
  readonly publishSent: [number, number, number] = [0, 0, 0];
  /** Bytes of those PUBLISH packets by QoS (received: without the fixed header). */
  readonly publishBytesReceived: [number, number, number] = [0, 0, 0];
  readonly publishBytesSent: [number, number, number] = [0, 0, 0];
  /** CONNECTs accepted by `<transport> <protocol>` (counted per connect, not per message). */
  readonly connects: Record<string, number> = Object.create(null);
  connectsTotal = 0;
  authFailures = 0;
  maxConnected = 0;
  /** Currently connected (CONNECT accepted, not yet ended). */
  connected = 0;
  retries = 0;
  deadLetters = 0;
  /** Drops by reason; drops already log and emit, so a property bump here is not the cost. */
  readonly dropped: Record<string, number> = Object.create(null);
  readonly batchCounts: number[] = new Array(BATCH_BOUNDS.length + 1).fill(0);
  batchSum = 0;
  batchCount = 0;
  private lag: IntervalHistogram | undefined;
  private lagWindowStart = 0;
  private lastLag = { mean: 0, p99: 0, max: 0 };
  private windowDone = false;

  drop(reason: string): void {
    // "shared delivery failed with 0x80" and the like: one label per kind, not per code.
    const key = reason.startsWith('shared delivery failed') ? 'shared delivery failed' : reason;
    this.dropped[key] = (this.dropped[key] ?? 0) + 1;
  }

  /** A persistence batch took ms (Persistence.onBatch). */
  batch(ms: number): void {
    const s = ms / 1000;
    let i = 0;
    while (i < BATCH_BOUNDS.length && s > BATCH_BOUNDS[i]) i++;
    this.batchCounts[i]++;
    this.batchSum += s;
    this.batchCount++;
  }

  /** Event-loop delay in seconds; measuring starts at the first call (a 20 ms sampling timer). */
  eventLoopLag(): { mean: number; p99: number; max: number } {
    const now = Date.now();
    if (this.lag === undefined) {
      this.lag = monitorEventLoopDelay({ resolution: 20 });
      this.lag.enable();
      this.lagWindowStart = now;
    }
    const h = this.lag;
    const current = () =>
      h.count === 0
        ? { mean: 0, p99: 0, max: 0 }
        : { mean: h.mean / 1e9, p99: h.percentile(99) / 1e9, max: h.max / 1e9 };
    if (now - this.lagWindowStart >= LAG_WINDOW_MS) {
      this.lastLag = current();
      this.windowDone = true;
      h.reset();
      this.lagWindowStart = now;
      return this.lastLag;
    }
    return this.windowDone ? this.lastLag : current();
  }

  stop(): void {
    this.lag?.disable();
  }
}
