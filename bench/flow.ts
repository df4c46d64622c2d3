/**
 * A throughput run between P publishers and S subscribers, each subscriber receiving every
 * publisher's stream (fan-in: P=20, S=1; fan-out: P=1, S=100). Shared by the scenarios that
 * measure messages per second.
 *
 * Flow control, so the broker's queues stay bounded and the numbers measure steady state:
 * - per publisher, at most `ackWindow` QoS 1/2 publishes awaiting PUBACK/PUBCOMP;
 * - per publisher, at most `e2eWindow` messages beyond what the slowest subscriber has seen of it
 *   (by highest sequence number, so a dropped QoS 0 message does not stall the window).
 *
 * A publisher is topped up only when at least a quarter of its window is free, so writes come
 * in batches rather than one syscall per freed slot.
 *
 * Each run stops by itself: after `messagesPerPublisher` or `warmupMs + durationMs` (whichever
 * comes first), then waits for outstanding deliveries until nothing has moved for `drainIdleMs`.
 * The measured window runs from the end of the warm-up to the last delivery.
 *
 * With `shared`, the subscribers form one shared subscription group: each message goes to one of
 * them, so lost / duplicated count across the group (one set of trackers), and the result carries
 * each subscriber's share of the deliveries.
 */
import type { QoS } from 'mqtt-packet';
import { type BenchClient, PublishTemplate } from './client.js';
import { readPubId, readSeq, StreamTracker } from './payload.js';
import { type Mark, mark, measure, pool, type ScenarioContext, type ScenarioResult } from './scenario.js';

export interface FlowOptions {
  publishers: number;
  subscribers: number;
  qos: QoS;
  /** Topic published by publisher i. */
  topic: (pub: number) => string;
  /** The filter every subscriber subscribes to. */
  filter: string;
  messagesPerPublisher: number;
  ackWindow: number;
  e2eWindow: number;
  drainIdleMs: number;
  /** The subscribers share the messages (e.g. `$share/<group>/<filter>`) instead of each getting all. */
  shared?: boolean;
}

interface Pub {
  client: BenchClient;
  template: PublishTemplate;
  sent: number;
  /** Sequence numbers below this count as seen for the e2e window (set when the window is reset). */
  floor: number;
}

interface Sub {
  client: BenchClient;
  trackers: StreamTracker[];
  received: number;
}

const WINDOW_RESET_MS = 500;
/** HERON_BENCH_DEBUG=1 logs the flow's counters every 250 ms. */
const DEBUG = Boolean(process.env.HERON_BENCH_DEBUG);

export async function runFlow(ctx: ScenarioContext, o: FlowOptions): Promise<ScenarioResult> {
  const { warmupMs, durationMs, payloadSize } = ctx.options;
  const notes: string[] = [];

  const newTrackers = () =>
    Array.from({ length: o.publishers }, () => new StreamTracker(o.messagesPerPublisher));
  const groupTrackers = o.shared ? newTrackers() : null;
  const subs: Sub[] = await pool(o.subscribers, 50, async (j) => {
    const client = await ctx.connect('s', j);
    const granted = await client.subscribe(o.filter, o.qos);
    if (granted !== o.qos) notes.push(`subscriber ${j}: granted QoS ${granted} for ${o.qos}`);
    return { client, trackers: groupTrackers ?? newTrackers(), received: 0 };
  });
  /** Distinct tracker sets: one per subscriber, or the group's one. */
  const trackerSets = groupTrackers ? [groupTrackers] : subs.map((s) => s.trackers);
  const pubs: Pub[] = await pool(o.publishers, 50, async (i) => ({
    client: await ctx.connect('p', i),
    template: new PublishTemplate(o.topic(i), o.qos, i, payloadSize),
    sent: 0,
    floor: 0,
  }));

  let delivered = 0; // all deliveries, duplicates included
  let completed = 0; // outgoing QoS 1/2 handshakes finished
  let windowResets = 0;
  let stopSending = false;
  let draining = false;
  let lastDeliveryAt = 0;
  let pumpQueued = false;
  let foreign = 0;
  const minBatch = Math.max(1, Math.floor(Math.min(o.ackWindow, o.e2eWindow) / 4));

  const pump = (): void => {
    pumpQueued = false;
    if (stopSending) return;
    const now = performance.now();
    let active = false;
    for (let i = 0; i < pubs.length; i++) {
      const p = pubs[i];
      if (p.sent >= o.messagesPerPublisher) continue;
      active = true;
      if (p.client.blocked || p.client.closed) continue;
      let seen = Number.POSITIVE_INFINITY;
      for (let j = 0; j < trackerSets.length; j++) {
        const next = trackerSets[j][i].next;
        if (next < seen) seen = next;
      }
      if (seen < p.floor) seen = p.floor;
      let allowance = Math.min(o.e2eWindow - (p.sent - seen), o.messagesPerPublisher - p.sent);
      if (o.qos > 0) allowance = Math.min(allowance, o.ackWindow - p.client.inflight);
      // Top up in batches (a quarter window at least): fewer, larger writes for both sides.
      if (allowance < minBatch && allowance < o.messagesPerPublisher - p.sent) continue;
      for (let k = 0; k < allowance; k++) p.client.publish(p.template, p.sent++, now);
    }
    if (!active) startDrain();
  };
  const schedule = (): void => {
    if (!pumpQueued && !stopSending) {
      pumpQueued = true;
      setImmediate(pump);
    }
  };

  for (const s of subs) {
    s.client.onMessage = (payload) => {
      const pubId = readPubId(payload);
      const tracker = s.trackers[pubId];
      if (tracker === undefined) {
        foreign++;
        return;
      }
      tracker.record(readSeq(payload));
      s.received++;
      delivered++;
      if (draining) lastDeliveryAt = performance.now();
      else schedule();
    };
  }
  for (const p of pubs) {
    p.client.onComplete = () => {
      completed++;
      schedule();
    };
    p.client.onDrain = schedule;
  }

  const start = mark(ctx.broker);
  let warm: Mark = start;
  let deliveredAtWarm = 0;
  const warmTimer = setTimeout(() => {
    warm = mark(ctx.broker);
    deliveredAtWarm = delivered;
  }, warmupMs);
  const stopTimer = setTimeout(() => startDrain(), warmupMs + durationMs);
  function startDrain(): void {
    if (draining) return;
    stopSending = true;
    draining = true;
    lastDeliveryAt = performance.now();
  }

  pump();

  // Watch for the end: everything delivered and acked, or nothing moving for drainIdleMs.
  const expected = () => pubs.reduce((n, p) => n + p.sent, 0) * trackerSets.length;
  let stalled = false;
  await new Promise<void>((resolve) => {
    let lastSeen = -1;
    let lastMoveAt = performance.now();
    let lastResetAt = 0;
    let lastDebugAt = 0;
    const check = setInterval(() => {
      const now = performance.now();
      if (DEBUG && now - lastDebugAt >= 250) {
        lastDebugAt = now;
        const sent = pubs.reduce((n, p) => n + p.sent, 0);
        const inflight = pubs.reduce((n, p) => n + p.client.inflight, 0);
        ctx.log(
          `  t=${((now - start.at) / 1000).toFixed(2)} sent ${sent} delivered ${delivered} acked ${completed} inflight ${inflight}${draining ? ' (draining)' : ''}`,
        );
      }
      const progress = delivered + completed;
      if (progress !== lastSeen) {
        lastSeen = progress;
        lastMoveAt = now;
      }
      // A broker that drops the newest messages (a full queue) leaves the e2e window waiting for
      // sequence numbers that will never come: after WINDOW_RESET_MS without progress, count
      // everything sent so far as seen and carry on. The trackers still count the loss.
      if (!draining && now - lastMoveAt > WINDOW_RESET_MS && now - lastResetAt > WINDOW_RESET_MS) {
        lastResetAt = now;
        windowResets++;
        for (const p of pubs) p.floor = p.sent;
        schedule();
      }
      const uniqueTotal = trackerSets.reduce((n, ts) => n + ts.reduce((m, t) => m + t.unique, 0), 0);
      const acked = pubs.every((p) => p.client.inflight === 0);
      const lostConn = pubs.some((p) => p.client.closed) || subs.some((s) => s.client.closed);
      if (draining && uniqueTotal >= expected() && acked) return finish();
      if (now - lastMoveAt > o.drainIdleMs || lostConn) {
        // While sending, a halt is a stall; while draining, whatever is missing is reported as lost.
        stalled = !draining && !lostConn;
        if (lostConn) notes.push('a connection closed during the run');
        return finish();
      }
      function finish() {
        clearInterval(check);
        resolve();
      }
    }, 10);
  });
  if (!draining) startDrain();
  clearTimeout(warmTimer);
  clearTimeout(stopTimer);
  const end = mark(ctx.broker);

  // If the run ended before the warm-up did, measure the whole run.
  const window = measure(warm, end, delivered - deliveredAtWarm, Math.min(end.at, lastDeliveryAt || end.at));

  let lost = 0;
  let dup = 0;
  let reordered = 0;
  for (const ts of trackerSets) {
    for (let i = 0; i < pubs.length; i++) {
      const t = ts[i];
      lost += pubs[i].sent - t.unique;
      dup += t.dup;
      reordered += t.reordered;
    }
  }
  const published = pubs.reduce((n, p) => n + p.sent, 0);
  const unacked = pubs.reduce((n, p) => n + p.client.inflight, 0);
  const protocolErrors = [...pubs, ...subs].reduce((n, x) => n + x.client.protocolErrors, 0);
  if (windowResets > 0) notes.push(`end-to-end window reset ${windowResets}× after deliveries stopped`);
  if (stalled) notes.push(`stalled: nothing moved for ${o.drainIdleMs} ms`);
  if (unacked > 0) notes.push(`${unacked} publishes never acknowledged`);
  if (protocolErrors > 0) notes.push(`${protocolErrors} unexpected packets or packet ids`);
  if (foreign > 0) notes.push(`${foreign} messages from unknown publishers`);
  if (window.generatorLoad > 0.9)
    notes.push(`generator at ${(window.generatorLoad * 100).toFixed(0)}% of a core`);

  let shares: { min: number; max: number } | undefined;
  if (o.shared && delivered > 0) {
    const fractions = subs.map((s) => s.received / delivered);
    shares = { min: Math.min(...fractions), max: Math.max(...fractions) };
  }

  await ctx.closeAll();
  return {
    unit: 'msg',
    ...window,
    lost,
    dup,
    // Across the members of a shared group there is no order to keep.
    reordered: o.shared ? undefined : reordered,
    ...(shares && { shares }),
    notes,
    detail: `published ${published}, delivered ${delivered}, generator ${(window.generatorLoad * 100).toFixed(0)}% CPU`,
  };
}
