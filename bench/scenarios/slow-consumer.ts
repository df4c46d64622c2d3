/**
 * A slow consumer must not cost the others: 4 publishers send 1 KiB messages at a steady 4,000
 * msg/s in all to two subscribers of `<root>/#`; one of them (a persistent session, clean session 0)
 * stops reading its socket for 20 s, then reads again. Heron runs on `npm start`'s defaults, LevelDB
 * in a temporary directory included, so the paused session's queue continues on disk.
 *
 * Reported: the healthy subscriber's longest gap between two deliveries while messages flow
 * (target < 0.2 s), the broker's anonymous RSS growth from the pause until both subscribers have
 * everything (the paused one's catch-up from disk included), the same growth in a control run of the
 * same flood without the pause on a fresh broker, and their difference: what the paused consumer
 * itself cost (target < 50 MiB); and lost /
 * duplicated: QoS 1 counts both subscribers (the paused one must get everything once it reads
 * again); QoS 0 counts the healthy one (what the paused one missed is in a note: QoS 0 is shed).
 * The generator sends on its clock and never waits for the subscribers.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { QoS } from 'mqtt-packet';
import { BenchClient, PublishTemplate } from '../client.js';
import { readPubId, readSeq, StreamTracker } from '../payload.js';
import { type BrokerScenario, mark, measure, type ScenarioResult } from '../scenario.js';
import { spawnHeron } from './persistence.js';

/**
 * The broker's resident memory, KiB, split as the kernel counts it: anonymous (heap, buffers,
 * LevelDB's own allocations) and file-backed (LevelDB reads its tables through mmap, so their pages
 * in the page cache count as RSS too, though the kernel can drop them at will).
 */
function rss(pid: number | null): { anon: number; file: number } | null {
  if (pid === null) return null;
  try {
    const st = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(st)?.[1] ?? Number.NaN);
    return { anon: kb('RssAnon'), file: kb('RssFile') };
  } catch {
    return null;
  }
}

const PUBLISHERS = 4;
const PAYLOAD = 1024;
const RATE = 4000;
/** Outgoing QoS 1 publishes a publisher may have unacknowledged: the broker's answer, not the subscribers', paces it. */
const ACK_WINDOW = 1000;
const NOT_HERON = {
  mosquitto: "heron's npm start defaults (LevelDB spill)",
  aedes: "heron's npm start defaults (LevelDB spill)",
};

export function slowConsumer(qos: QoS): BrokerScenario {
  return {
    kind: 'broker',
    id: `slow-consumer-qos${qos}`,
    title: `slow consumer: 1 of 2 subscribers paused 20 s, 1 KiB QoS ${qos} at ${RATE / 1000}k msg/s`,
    strict: qos > 0,
    unsupported: NOT_HERON,
    timeoutMs: 300_000,
    async run(ctx): Promise<ScenarioResult> {
      // The same flood on a fresh broker without the pause first: the broker's own growth under
      // this load (V8 heap expansion, allocator and LevelDB caches warming) is not the paused
      // consumer's cost, so the row reports both and the difference.
      const control = await flood(ctx, qos, false);
      const paused = await flood(ctx, qos, true);
      return withControl(paused, control);
    },
  };
}

interface Flood {
  result: ScenarioResult;
  /** Anonymous RSS growth from the pause (or the same moment) until everything is delivered, MiB. */
  growthMiB: number | null;
}

function withControl(run: Flood, control: Flood): ScenarioResult {
  const g = run.growthMiB;
  const c = control.growthMiB;
  const own = g === null || c === null ? null : Math.max(0, g - c);
  const ok = own !== null && own < 50;
  const r = run.result;
  return {
    ...r,
    cell: `${r.cell}; pause's own +${mib(own)} MiB`,
    notes: [
      ...(r.notes ?? []),
      `the same flood without the pause grew anonymous RSS by ${mib(c)} MiB over the same window: the pause itself cost ${mib(own)} MiB (${ok ? 'meets' : 'misses'} < 50 MiB)`,
    ],
    detail: `${r.detail}; control without pause: ${control.result.detail}`,
  };
}

async function flood(ctx: Parameters<BrokerScenario['run']>[0], qos: QoS, pause: boolean): Promise<Flood> {
  {
    const quick = ctx.options.quick;
    const beforeMs = quick ? 1000 : 3000;
    const pauseMs = quick ? 3000 : 20_000;
    const afterMs = quick ? 1000 : 3000;
    const total = Math.round((RATE * (beforeMs + pauseMs + afterMs)) / 1000);
    const each = Math.ceil(total / PUBLISHERS);
    const dir = mkdtempSync(join(tmpdir(), 'heron-bench-slow-'));
    const { handle } = await spawnHeron(['--persistence', 'level', '--data-dir', dir]);
    const clients: BenchClient[] = [];
    try {
      ctx.log(`slow consumer: ${handle.command}`);
      const tag = randomBytes(3).toString('hex');
      const root = `bench/${tag}`;
      const open = async (id: string, clean: boolean) => {
        const c = await BenchClient.connect({ host: handle.host, port: handle.port, clientId: id, clean });
        clients.push(c);
        return c;
      };
      const paused = await open(`hslow${tag}`, false);
      const healthy = await open(`hfine${tag}`, true);
      await paused.subscribe(`${root}/#`, qos);
      await healthy.subscribe(`${root}/#`, qos);
      const pubs = await Promise.all(
        Array.from({ length: PUBLISHERS }, (_, i) => open(`hpub${tag}${i}`, true)),
      );
      const templates = pubs.map((_, i) => new PublishTemplate(`${root}/p${i}`, qos, i, PAYLOAD));
      const trackers = (n: number) => Array.from({ length: n }, () => new StreamTracker(each));
      const seenBy = { paused: trackers(PUBLISHERS), healthy: trackers(PUBLISHERS) };

      let flowing = false;
      let lastHealthy = 0;
      let longestGap = 0;
      let healthyCount = 0;
      healthy.onMessage = (payload) => {
        const now = performance.now();
        seenBy.healthy[readPubId(payload)].record(readSeq(payload));
        if (flowing && lastHealthy > 0) longestGap = Math.max(longestGap, now - lastHealthy);
        lastHealthy = now;
        healthyCount++;
      };
      paused.onMessage = (payload) => {
        seenBy.paused[readPubId(payload)].record(readSeq(payload));
      };

      let rssAtPause = null as { anon: number; file: number } | null;
      const rssMax = { anon: 0, file: 0, total: 0 };
      const rssTimer = setInterval(() => {
        const r = rss(handle.pid);
        if (r === null || rssAtPause === null) return;
        rssMax.anon = Math.max(rssMax.anon, r.anon);
        rssMax.file = Math.max(rssMax.file, r.file);
        rssMax.total = Math.max(rssMax.total, r.anon + r.file);
      }, 100);

      const start = mark(handle);
      const sent = new Array<number>(PUBLISHERS).fill(0);
      let behind = 0;
      const t0 = performance.now();
      flowing = true;
      await new Promise<void>((resolve) => {
        let pausedYet = false;
        let resumed = false;
        // setInterval(1) fires about every 1.1 ms; each tick sends what is due by then, one
        // message per write per publisher as the clock allows.
        const tick = setInterval(() => {
          const elapsed = performance.now() - t0;
          if (!pausedYet && elapsed >= beforeMs) {
            pausedYet = true;
            rssAtPause = rss(handle.pid);
            if (pause) paused.socket.pause();
          }
          if (!resumed && elapsed >= beforeMs + pauseMs) {
            resumed = true;
            if (pause) paused.socket.resume();
          }
          const due = Math.min(total, Math.floor((elapsed * RATE) / 1000));
          let done = 0;
          for (let i = 0; i < PUBLISHERS; i++) {
            const target = Math.min(each, Math.floor(due / PUBLISHERS));
            while (sent[i] < target) {
              if (qos > 0 && pubs[i].inflight >= ACK_WINDOW) {
                behind++;
                break;
              }
              pubs[i].publish(templates[i], sent[i]++, performance.now());
            }
            if (sent[i] >= each) done++;
          }
          if (done === PUBLISHERS) {
            clearInterval(tick);
            resolve();
          }
        }, 1);
      });
      flowing = false;
      const end = mark(handle);
      const window = measure(start, end, healthyCount);
      // The paused subscriber catches up from disk; wait until both have everything, or 5 s idle.
      await new Promise<void>((resolve) => {
        let last = -1;
        let movedAt = performance.now();
        const check = setInterval(() => {
          const got = (t: StreamTracker[]) => t.reduce((n, x) => n + x.unique + x.dup, 0);
          const n = got(seenBy.paused) + got(seenBy.healthy);
          if (n !== last) {
            last = n;
            movedAt = performance.now();
          }
          const all = sent.reduce((a, b) => a + b, 0);
          const complete = qos === 0 ? got(seenBy.healthy) >= all : n >= 2 * all;
          if ((complete && pubs.every((p) => p.inflight === 0)) || performance.now() - movedAt > 5000) {
            clearInterval(check);
            resolve();
          }
        }, 20);
      });
      // RSS is sampled until the paused subscriber has caught up, not just while the generator
      // sends: reading its spilled queue back is part of what the pause costs.
      clearInterval(rssTimer);
      const sum = (t: StreamTracker[], f: (x: StreamTracker) => number) => t.reduce((n, x) => n + f(x), 0);
      const all = sent.reduce((a, b) => a + b, 0);
      const lostHealthy = all - sum(seenBy.healthy, (x) => x.unique);
      const lostPaused = all - sum(seenBy.paused, (x) => x.unique);
      const growth = (max: number, at: number) => Math.max(0, max - at) / 1024;
      const growthMiB = rssAtPause === null ? null : growth(rssMax.anon, rssAtPause.anon);
      const fileMiB = rssAtPause === null ? null : growth(rssMax.file, rssAtPause.file);
      const totalMiB = rssAtPause === null ? null : growth(rssMax.total, rssAtPause.anon + rssAtPause.file);
      const notes: string[] = [];
      const gapOk = longestGap < 200;
      notes.push(
        `healthy subscriber's longest gap ${longestGap.toFixed(0)} ms (${gapOk ? 'meets' : 'misses'} < 200 ms); ` +
          `broker RSS growth from the pause to the end of the catch-up ${mib(growthMiB)} MiB anonymous, ` +
          `${mib(fileMiB)} MiB file-backed (LevelDB's mmapped tables in the page cache), ${mib(totalMiB)} MiB in all`,
      );
      if (qos === 0) notes.push(`the paused subscriber missed ${lostPaused} of ${all} QoS 0 messages (shed)`);
      if (behind > 0) notes.push(`publishers' ack window (${ACK_WINDOW}) was full ${behind} times`);
      if (!handle.alive()) notes.push(`heron exited during the run: ${handle.outputTail().slice(-300)}`);
      const result: ScenarioResult = {
        unit: 'msg',
        ...window,
        lost: qos === 0 ? lostHealthy : lostHealthy + lostPaused,
        dup: sum(seenBy.healthy, (x) => x.dup) + sum(seenBy.paused, (x) => x.dup),
        cell: `gap ${longestGap.toFixed(0)} ms, RSS +${mib(growthMiB)} MiB (+${mib(fileMiB)} file)`,
        notes,
        detail: `healthy got ${healthyCount} of ${all} in the window; longest gap ${longestGap.toFixed(1)} ms; RSS anon/file at pause ${rssAtPause?.anon}/${rssAtPause?.file} KiB, max ${rssMax.anon}/${rssMax.file} KiB; paused subscriber lost ${lostPaused}`,
      };
      return { result, growthMiB };
    } finally {
      await Promise.all(clients.map((c) => c.disconnect()));
      await handle.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  }
}

function mib(v: number | null): string {
  return v === null ? '?' : v.toFixed(1);
}
