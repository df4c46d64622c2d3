/**
 * Paced many-connection runs, the shape of an IoT deployment: thousands of devices, each sending or
 * receiving a small message every so often, every message in a socket write of its own.
 *
 * One side of the run (the devices) lives in generator worker threads (`worker_threads`, the
 * devices split evenly), the other (ingest subscribers, or a command backend) in the main thread:
 * - `direction: 'ingest'`: each device publishes to `topic(i)` at `rate / devices` msg/s; the main
 *   thread's subscribers (one, or a shared group) receive everything.
 * - `direction: 'command'`: the main thread publishes to `topic(i)` for device i in turn at `rate`
 *   msg/s in all; device i subscribes to `filter(i)` (its own topic, or one topic for a paced
 *   fan-out) and counts what it receives.
 *
 * The senders run on their clock (a 1 ms interval sending what is due); they never look at what the
 * receivers got, so a broker that cannot keep up shows as lost or as latency, not as a slower rate.
 * QoS 1 senders stop sending to a device with `DEVICE_WINDOW` publishes unacknowledged (counted in a
 * note: the rate then fell behind). Each PUBLISH is encoded by mqtt-packet once per topic
 * (PublishTemplate) and copied per message.
 *
 * Send times are absolute (performance.timeOrigin + performance.now(), ms) so latency can be taken
 * across threads. The measured window runs from the end of the warm-up to the last delivery;
 * deliveries count when they arrive after the warm-up.
 */
import { readFileSync } from 'node:fs';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import type { QoS } from 'mqtt-packet';
import { rssKiB } from './brokers.js';
import { BenchClient, PublishTemplate } from './client.js';
import { readPubId, readSentAt, readSeq, StreamTracker } from './payload.js';
import {
  type Mark,
  mark,
  measure,
  pool,
  type ScenarioContext,
  type ScenarioResult,
  summarizeLatency,
} from './scenario.js';

/** Unacknowledged QoS 1 publishes per device (or, for the backend, per command topic) before it waits. */
const DEVICE_WINDOW = 10;
const BACKEND_WINDOW = 2000;
const CONNECT_CONCURRENCY = 50;
const PROGRESS_MS = 100;

const now = (): number => performance.timeOrigin + performance.now();

export interface IotOptions {
  direction: 'ingest' | 'command';
  devices: number;
  /** Messages per second in all. */
  rate: number;
  qos: QoS;
  /** The topic published for device i (ingest: by it; command: to it). */
  topic: string;
  /** Command: the filter device i subscribes to. `{i}` stands for the device index in both. */
  filter: string;
  /** Ingest: the subscribers' filter, and how many of them (a shared group when > 1). */
  ingestFilter?: string;
  ingestSubscribers?: number;
  warmupMs: number;
  durationMs: number;
  /** Generator worker threads for the devices. */
  threads: number;
}

interface WorkerJob {
  heronIot: true;
  host: string;
  port: number;
  role: 'pub' | 'sub';
  from: number;
  to: number;
  clientPrefix: string;
  topic: string;
  filter: string;
  qos: QoS;
  payloadSize: number;
  /** pub: this thread's share of the rate. */
  rate: number;
}

interface Progress {
  type: 'progress';
  sent: number;
  inflight: number;
  unique: number;
  delivered: number;
  lastDeliveryAt: number;
}

interface Final {
  type: 'final';
  sent: number[];
  unique: number[];
  dup: number;
  reordered: number;
  windowFull: number;
  unacked: number;
  protocolErrors: number;
  closedEarly: number;
  /** Deliveries that arrived after the warm-up, and their latencies (ms). */
  measured: number;
  lastDeliveryAt: number;
  samples: Float64Array;
}

const fill = (pattern: string, i: number) => pattern.replaceAll('{i}', String(i));

/** Soft limit on open files of this process, from /proc (null when unknown). */
export function openFileLimit(): number | null {
  try {
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    if (!m) return null;
    return m[1] === 'unlimited' ? Number.POSITIVE_INFINITY : Number(m[1]);
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------------
// the worker side: a slice of the devices

async function deviceThread(job: WorkerJob): Promise<void> {
  const port = parentPort!;
  const n = job.to - job.from;
  const clients: BenchClient[] = await pool(n, CONNECT_CONCURRENCY, async (k) => {
    const c = await BenchClient.connect({
      host: job.host,
      port: job.port,
      clientId: `${job.clientPrefix}${job.from + k}`,
    });
    if (job.role === 'sub') await c.subscribe(fill(job.filter, job.from + k), job.qos);
    return c;
  });
  const sent = new Array<number>(n).fill(0);
  const trackers = clients.map(() => new StreamTracker(16));
  let delivered = 0;
  let measured = 0;
  let lastDeliveryAt = 0;
  let warmAt = Number.POSITIVE_INFINITY;
  let windowFull = 0;
  const samples: number[] = [];
  let timer: NodeJS.Timeout | undefined;

  if (job.role === 'sub') {
    clients.forEach((c, k) => {
      c.onMessage = (payload) => {
        const t = now();
        trackers[k].record(readSeq(payload));
        delivered++;
        lastDeliveryAt = t;
        if (t >= warmAt) {
          measured++;
          samples.push(t - readSentAt(payload));
        }
      };
    });
  }
  const templates =
    job.role === 'pub'
      ? clients.map(
          (_, k) =>
            new PublishTemplate(fill(job.topic, job.from + k), job.qos, job.from + k, job.payloadSize),
        )
      : [];

  const progress = setInterval(() => {
    const p: Progress = {
      type: 'progress',
      sent: sent.reduce((a, b) => a + b, 0),
      inflight: clients.reduce((a, c) => a + c.inflight, 0),
      unique: trackers.reduce((a, t) => a + t.unique, 0),
      delivered,
      lastDeliveryAt,
    };
    port.postMessage(p);
  }, PROGRESS_MS);

  port.on(
    'message',
    async (msg: { type: 'go'; startAt: number; warmAt: number; stopAt: number } | { type: 'finish' }) => {
      if (msg.type === 'go') {
        warmAt = msg.warmAt;
        if (job.role !== 'pub') return;
        let k = 0; // messages this thread has sent (or skipped)
        let cursor = 0;
        timer = setInterval(() => {
          const t = now();
          const until = Math.min(t, msg.stopAt);
          const due = Math.floor(((until - msg.startAt) * job.rate) / 1000);
          while (k < due) {
            k++;
            const d = cursor;
            cursor = cursor + 1 === n ? 0 : cursor + 1;
            const c = clients[d];
            if (c.closed) continue;
            if (job.qos > 0 && c.inflight >= DEVICE_WINDOW) {
              windowFull++;
              continue;
            }
            c.publishNow(templates[d], sent[d]++, now());
          }
          if (t >= msg.stopAt) clearInterval(timer);
        }, 1);
        return;
      }
      clearInterval(timer);
      clearInterval(progress);
      const final: Final = {
        type: 'final',
        sent,
        unique: trackers.map((t) => t.unique),
        dup: trackers.reduce((a, t) => a + t.dup, 0),
        reordered: trackers.reduce((a, t) => a + t.reordered, 0),
        windowFull,
        unacked: clients.reduce((a, c) => a + c.inflight, 0),
        protocolErrors: clients.reduce((a, c) => a + c.protocolErrors, 0),
        closedEarly: clients.filter((c) => c.closed).length,
        measured,
        lastDeliveryAt,
        samples: Float64Array.from(samples),
      };
      port.postMessage(final, [final.samples.buffer as ArrayBuffer]);
      await pool(clients.length, 500, (i) => clients[i].disconnect());
      port.postMessage({ type: 'closed' });
    },
  );
  port.postMessage({ type: 'ready' });
}

if (!isMainThread && (workerData as WorkerJob | undefined)?.heronIot) {
  deviceThread(workerData as WorkerJob).catch((err) => {
    parentPort!.postMessage({ type: 'error', error: String(err) });
  });
}

// ---------------------------------------------------------------------------------------------
// the main side

interface Thread {
  worker: Worker;
  from: number;
  to: number;
  progress: Progress;
  final?: Final;
  closed?: Promise<unknown>;
}

function waitFor<T>(w: Worker, type: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const onMessage = (m: { type: string; error?: string }) => {
      if (m.type === type) {
        w.off('message', onMessage);
        resolve(m as T);
      } else if (m.type === 'error') {
        w.off('message', onMessage);
        reject(new Error(m.error));
      }
    };
    w.on('message', onMessage);
    w.once('error', reject);
  });
}

export async function runIot(ctx: ScenarioContext, o: IotOptions): Promise<ScenarioResult> {
  const { payloadSize } = ctx.options;
  const notes: string[] = [];
  const tag = ctx.topicRoot.slice(3);
  const rssStart = rssKiB(ctx.broker.pid);
  const ingest = o.direction === 'ingest';

  // Ingest subscribers first, so nothing the devices send is missed.
  const trackers = ingest ? Array.from({ length: o.devices }, () => new StreamTracker(16)) : [];
  let delivered = 0;
  let measured = 0;
  let lastDeliveryAt = 0;
  let warmAt = Number.POSITIVE_INFINITY;
  let foreign = 0;
  const samples: number[] = [];
  const subs: BenchClient[] = [];
  const received: number[] = [];
  if (ingest) {
    const count = o.ingestSubscribers ?? 1;
    for (let j = 0; j < count; j++) {
      const c = await ctx.connect('s', j);
      const granted = await c.subscribe(o.ingestFilter!, o.qos);
      if (granted !== o.qos) notes.push(`subscriber ${j}: granted QoS ${granted} for ${o.qos}`);
      received.push(0);
      c.onMessage = (payload) => {
        const t = now();
        const tracker = trackers[readPubId(payload)];
        if (tracker === undefined) {
          foreign++;
          return;
        }
        tracker.record(readSeq(payload));
        delivered++;
        received[j]++;
        lastDeliveryAt = t;
        if (t >= warmAt) {
          measured++;
          samples.push(t - readSentAt(payload));
        }
      };
      subs.push(c);
    }
  }

  // Device threads.
  const per = Math.ceil(o.devices / o.threads);
  const threads: Thread[] = [];
  for (let from = 0; from < o.devices; from += per) {
    const to = Math.min(o.devices, from + per);
    const job: WorkerJob = {
      heronIot: true,
      host: ctx.broker.host,
      port: ctx.broker.port,
      role: ingest ? 'pub' : 'sub',
      from,
      to,
      clientPrefix: `hb${tag}d`,
      topic: o.topic,
      filter: o.filter,
      qos: o.qos,
      payloadSize,
      rate: (o.rate * (to - from)) / o.devices,
    };
    const worker = new Worker(new URL(import.meta.url), { workerData: job });
    const t: Thread = {
      worker,
      from,
      to,
      progress: { type: 'progress', sent: 0, inflight: 0, unique: 0, delivered: 0, lastDeliveryAt: 0 },
    };
    worker.on('message', (m: { type: string }) => {
      if (m.type === 'progress') t.progress = m as Progress;
    });
    threads.push(t);
  }
  try {
    await Promise.all(threads.map((t) => waitFor(t.worker, 'ready')));
    const rssConnected = rssKiB(ctx.broker.pid);

    // The command backend (main thread).
    // A filter without `{i}` is one topic for all (paced fan-out): one stream, one template.
    const broadcast = !o.filter.includes('{i}');
    const streams = ingest ? 0 : broadcast ? 1 : o.devices;
    const backend = ingest ? null : await ctx.connect('b', 0);
    const templates = Array.from(
      { length: streams },
      (_, i) => new PublishTemplate(fill(o.topic, i), o.qos, i, payloadSize),
    );
    const backendSent = new Array<number>(streams).fill(0);
    let backendWindowFull = 0;

    const startAt = now() + 50;
    warmAt = startAt + o.warmupMs;
    const stopAt = warmAt + o.durationMs;
    for (const t of threads) t.worker.postMessage({ type: 'go', startAt, warmAt, stopAt });
    let warm = null as Mark | null;
    const warmTimer = setTimeout(() => {
      warm = mark(ctx.broker);
    }, warmAt - now());

    if (backend) {
      let k = 0;
      let cursor = 0;
      await new Promise<void>((resolve) => {
        const tick = setInterval(() => {
          const t = now();
          const until = Math.min(t, stopAt);
          const due = Math.floor(((until - startAt) * o.rate) / 1000);
          while (k < due) {
            k++;
            const d = cursor;
            cursor = cursor + 1 === streams ? 0 : cursor + 1;
            if (backend.closed) break;
            if (o.qos > 0 && backend.inflight >= BACKEND_WINDOW) {
              backendWindowFull++;
              continue;
            }
            backend.publishNow(templates[d], backendSent[d]++, now());
          }
          if (t >= stopAt) {
            clearInterval(tick);
            resolve();
          }
        }, 1);
      });
    } else {
      await new Promise<void>((r) => setTimeout(r, Math.max(0, stopAt - now() + 20)));
    }

    // Drain: everything sent delivered and acknowledged, or 3 s without progress.
    const sentTotal = () =>
      ingest ? threads.reduce((a, t) => a + t.progress.sent, 0) : backendSent.reduce((a, b) => a + b, 0);
    const uniqueTotal = () =>
      ingest
        ? trackers.reduce((a, t) => a + t.unique, 0)
        : threads.reduce((a, t) => a + t.progress.unique, 0);
    const inflight = () =>
      ingest ? threads.reduce((a, t) => a + t.progress.inflight, 0) : (backend?.inflight ?? 0);
    await new Promise<void>((resolve) => {
      let last = -1;
      let lastMoveAt = now();
      const check = setInterval(() => {
        const t = now();
        const seen = uniqueTotal() + inflight() * 1e9 + sentTotal();
        if (seen !== last) {
          last = seen;
          lastMoveAt = t;
        }
        // Progress reports lag by up to PROGRESS_MS: wait for one past the stop.
        const fresh = t - stopAt > 2 * PROGRESS_MS;
        if ((fresh && uniqueTotal() >= sentTotal() && inflight() === 0) || t - lastMoveAt > 3000) {
          clearInterval(check);
          resolve();
        }
      }, 20);
    });
    clearTimeout(warmTimer);
    const end = mark(ctx.broker);
    const rssEnd = rssKiB(ctx.broker.pid);
    const finals = await Promise.all(
      threads.map(async (t) => {
        const f = waitFor<Final>(t.worker, 'final');
        t.closed = waitFor(t.worker, 'closed');
        t.worker.postMessage({ type: 'finish' });
        t.final = await f;
        return t.final;
      }),
    );
    for (const f of finals) {
      if (!ingest) {
        measured += f.measured;
        for (const s of f.samples) samples.push(s);
      }
      if (f.lastDeliveryAt > lastDeliveryAt) lastDeliveryAt = f.lastDeliveryAt;
    }
    const start = warm ?? end;
    const window = measure(
      start,
      end,
      measured,
      Math.max(start.at, Math.min(end.at, lastDeliveryAt - performance.timeOrigin)),
    );

    let lost = 0;
    let dup = 0;
    let reordered = 0;
    let sent = 0;
    if (ingest) {
      for (const t of threads) {
        t.final!.sent.forEach((s, k) => {
          const tr = trackers[t.from + k];
          sent += s;
          lost += s - tr.unique;
          dup += tr.dup;
          reordered += tr.reordered;
        });
      }
    } else {
      for (const t of threads) {
        const f = t.final!;
        f.unique.forEach((u, k) => {
          // Command: device i gets what was sent to it; paced fan-out: every device gets everything.
          const expected = broadcast ? sentTotal() : backendSent[t.from + k];
          lost += expected - u;
        });
        dup += f.dup;
        reordered += f.reordered;
      }
      sent = sentTotal();
    }
    const windowFull = finals.reduce((a, f) => a + f.windowFull, 0) + backendWindowFull;
    const unacked = finals.reduce((a, f) => a + f.unacked, 0) + (backend?.inflight ?? 0);
    const protocolErrors =
      finals.reduce((a, f) => a + f.protocolErrors, 0) + subs.reduce((a, c) => a + c.protocolErrors, 0);
    const closedEarly = finals.reduce((a, f) => a + f.closedEarly, 0);
    if (windowFull > 0)
      notes.push(`${windowFull} sends skipped: ${DEVICE_WINDOW} (backend ${BACKEND_WINDOW}) unacknowledged`);
    if (unacked > 0) notes.push(`${unacked} publishes never acknowledged`);
    if (protocolErrors > 0) notes.push(`${protocolErrors} unexpected packets or packet ids`);
    if (closedEarly > 0 || subs.some((c) => c.closed) || backend?.closed)
      notes.push('connections closed during the run');
    if (foreign > 0) notes.push(`${foreign} messages from unknown publishers`);
    const lat = summarizeLatency(samples);
    const mibOf = (k: number | null) => (k === null ? '?' : (k / 1024).toFixed(0));
    let shares = '';
    if (subs.length > 1 && delivered > 0)
      shares = `, shares ${received.map((r) => `${((r / delivered) * 100).toFixed(1)}%`).join('/')}`;
    const ms = (x: number) => (x < 10 ? x.toFixed(2) : x.toFixed(1));
    return {
      unit: 'msg',
      ...window,
      lost,
      dup,
      reordered,
      latency: lat,
      ...(rssEnd === null ? {} : { rssMiB: rssEnd / 1024 }),
      cell: `${(window.rate / 1000).toFixed(1)}k msg/s, p50 ${lat ? ms(lat.p50) : '—'} / p99 ${lat ? ms(lat.p99) : '—'} ms, RSS ${mibOf(rssEnd)} MiB`,
      notes,
      detail:
        `sent ${sent}, ${o.devices} devices over ${threads.length} threads; RSS ${mibOf(rssStart)} → ${mibOf(rssConnected)} (connected) → ${mibOf(rssEnd)} MiB (end)` +
        (lat ? `; p90 ${ms(lat.p90)} ms, max ${ms(lat.max)} ms` : '') +
        shares +
        `; generator ${(window.generatorLoad * 100).toFixed(0)}% CPU (main thread only)`,
    };
  } finally {
    await Promise.all(
      threads.map(async (t) => {
        if (t.closed)
          await Promise.race([t.closed.catch(() => undefined), new Promise((r) => setTimeout(r, 5000))]);
        await t.worker.terminate();
      }),
    );
  }
}
