/**
 * Latency at a fixed rate: 1 publisher → 1 subscriber at 2,000 msg/s. The publisher stamps
 * performance.now() into each payload; the subscriber (same process) takes the difference on
 * arrival. Each message is its own socket write (as a device sends it). Messages sent during the warm-up are delivered but neither sampled nor counted in the
 * CPU figure: the warm-up is long enough (5 s, 10,000 messages) for a JIT-compiled broker to reach
 * steady state, so its one-time compilation is not charged to a window that uses little CPU.
 *
 * At this rate a broker uses a few percent of a core, so a passing disturbance on a shared machine
 * moves its per-CPU-second figure a lot. The measured window is cut into 2 s segments and the
 * figure reported is the median of theirs (the whole window's is in the detail line).
 */
import type { QoS } from 'mqtt-packet';
import { PublishTemplate } from '../client.js';
import { readSentAt, readSeq, StreamTracker } from '../payload.js';
import { median } from '../rounds.js';
import { type BrokerScenario, type Mark, mark, measure, summarizeLatency } from '../scenario.js';

const RATE = 2000;
const WINDOW = 100;
const SEGMENT_MS = 2000;

export function latency(qos: QoS): BrokerScenario {
  return {
    kind: 'broker',
    id: `latency-qos${qos}`,
    title: `latency @${RATE / 1000}k msg/s QoS ${qos}`,
    strict: qos > 0,
    async run(ctx) {
      const { quick, payloadSize } = ctx.options;
      const warmupMs = quick ? 300 : 5000;
      const durationMs = quick ? 2000 : 10_000;
      const segmentSize = Math.round((RATE * SEGMENT_MS) / 1000);
      const warmCount = Math.round((RATE * warmupMs) / 1000);
      const total = warmCount + Math.round((RATE * durationMs) / 1000);
      const topic = `${ctx.topicRoot}/latency`;
      const notes: string[] = [];

      const sub = await ctx.connect('s', 0);
      await sub.subscribe(topic, qos);
      const pub = await ctx.connect('p', 0);
      const template = new PublishTemplate(topic, qos, 0, payloadSize);
      const tracker = new StreamTracker(total);
      const samples = new Float64Array(total);
      let sampled = 0;
      let measured = 0;
      let lastDeliveryAt = 0;

      sub.onMessage = (payload) => {
        const now = performance.now();
        const seq = readSeq(payload);
        tracker.record(seq);
        lastDeliveryAt = now;
        if (seq >= warmCount) {
          measured++;
          if (sampled < samples.length) samples[sampled++] = now - readSentAt(payload);
        }
      };

      let warm: Mark | null = null;
      // Marks at segment boundaries, each with the number of measured deliveries by then.
      const segments: { at: Mark; measured: number }[] = [];
      let sent = 0;
      let windowFull = 0;
      const t0 = performance.now();
      await new Promise<void>((resolve) => {
        // setInterval(1) fires about every 1.1 ms; each tick sends what is due by then.
        const tick = setInterval(() => {
          const due = Math.min(total, Math.floor(((performance.now() - t0) * RATE) / 1000));
          while (sent < due) {
            if (qos > 0 && pub.inflight >= WINDOW) {
              windowFull++;
              break;
            }
            if (sent === warmCount) warm = mark(ctx.broker);
            if (sent >= warmCount && (sent - warmCount) % segmentSize === 0) {
              segments.push({ at: mark(ctx.broker), measured });
            }
            pub.publishNow(template, sent++, performance.now());
          }
          if (sent >= total || pub.closed) {
            clearInterval(tick);
            resolve();
          }
        }, 1);
      });
      // Wait for the tail: all delivered (and acked), or 2 s with nothing arriving.
      await new Promise<void>((resolve) => {
        let last = -1;
        let lastMoveAt = performance.now();
        const check = setInterval(() => {
          const now = performance.now();
          if (tracker.unique + tracker.dup !== last) {
            last = tracker.unique + tracker.dup;
            lastMoveAt = now;
          }
          if ((tracker.unique >= sent && pub.inflight === 0) || now - lastMoveAt > 2000 || sub.closed) {
            clearInterval(check);
            resolve();
          }
        }, 10);
      });
      const end = mark(ctx.broker);
      const start = warm ?? end;
      const window = measure(start, end, measured, Math.max(start.at, Math.min(end.at, lastDeliveryAt)));
      segments.push({ at: end, measured });
      const perSegment: number[] = [];
      for (let i = 1; i < segments.length; i++) {
        const a = segments[i - 1];
        const b = segments[i];
        const v = measure(a.at, b.at, b.measured - a.measured).perCpuSecond;
        // A last segment shorter than half the others is too short to count.
        if (v !== null && b.measured - a.measured >= segmentSize / 2) perSegment.push(v);
      }
      const wholeWindow = window.perCpuSecond;
      if (perSegment.length >= 3 && window.perCpuSecond !== null) window.perCpuSecond = median(perSegment);
      const lat = summarizeLatency(samples.subarray(0, sampled));

      if (windowFull > 0)
        notes.push(`publisher ack window (${WINDOW}) full ${windowFull} times: rate fell behind`);
      if (pub.inflight > 0) notes.push(`${pub.inflight} publishes never acknowledged`);
      if (pub.protocolErrors + sub.protocolErrors > 0) notes.push('unexpected packets or packet ids');
      await ctx.closeAll();
      return {
        unit: 'msg',
        ...window,
        lost: sent - tracker.unique,
        dup: tracker.dup,
        reordered: tracker.reordered,
        latency: lat,
        notes,
        detail:
          (lat
            ? `p50 ${lat.p50.toFixed(3)} ms, p90 ${lat.p90.toFixed(3)} ms, p99 ${lat.p99.toFixed(3)} ms, max ${lat.max.toFixed(2)} ms over ${lat.samples} samples`
            : 'no samples') +
          (perSegment.length >= 3
            ? `; per CPU-s: median of ${perSegment.length} segments ${fmt(window.perCpuSecond)} (${perSegment.map(fmt).join(', ')}), whole window ${fmt(wholeWindow)}`
            : ''),
      };
    },
  };
}

function fmt(v: number | null): string {
  return v === null ? '–' : `${(v / 1000).toFixed(1)}k`;
}
