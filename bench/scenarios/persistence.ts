/**
 * Persistence: what LevelDB costs heron, measured against heron itself.
 *
 * - `persist-fan-in-qos1-memory` / `-level`: fan-in 20 publishers → 20 persistent subscribers
 *   (clean session 0) on `<root>/+/data` at QoS 1, on heron started twice by this scenario with the
 *   same flags but `--persistence memory` and `--persistence level --data-dir <tmp>`. Every delivery
 *   is a stored reference (the body is stored once per message) that the PUBACK deletes again, and
 *   every publish is acknowledged only once its batch is written. The LevelDB row also reports the
 *   ratio of the two per-CPU-second figures (target: LevelDB ≥ 50 % of memory) when the memory row
 *   ran before it.
 * - `startup-100k`: a data dir with 100,000 retained messages and 10,000 offline persistent sessions
 *   (a subscription and 3 queued 1 KiB messages each), written straight through LevelPersistence;
 *   then the time from spawning heron to its `listening` log line, and its RSS then. The queued
 *   payloads stay on disk until their client returns, so RSS grows with the retained messages and
 *   the session index, not with the queues. An empty data dir is started first for comparison.
 *
 * Both spawn their own heron (the one run.ts started for the row stays idle); mosquitto and aedes
 * show `–`.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { LevelPersistence } from '../../persistence/level.js';
import type { StoredMessage } from '../../persistence/types.js';
import { type BrokerHandle, cpuSeconds, projectRoot, rssKiB, startNodeFlags } from '../brokers.js';
import { BenchClient } from '../client.js';
import { runFlow } from '../flow.js';
import {
  type BrokerScenario,
  createContext,
  pool,
  type ScenarioContext,
  type ScenarioResult,
} from '../scenario.js';

const HOST = '127.0.0.1';
const NOT_HERON = {
  mosquitto: 'heron LevelDB vs heron in memory',
  aedes: 'heron LevelDB vs heron in memory',
};

interface Spawned {
  handle: BrokerHandle;
  /** From spawn to the TCP `listening` log line, ms. */
  startupMs: number;
  /** The `state restored` log line's counts, if it was logged. */
  restored: { sessions?: number; retained?: number } | null;
}

/** Starts `node dist/broker/cli.js` on 127.0.0.1 and port 0, and reads its port from the `listening` line. */
export async function spawnHeron(args: string[]): Promise<Spawned> {
  const root = projectRoot();
  const cli = join(root, 'dist', 'broker', 'cli.js');
  // The HTTP listener stays on (npm start's default) on a free port: herons never share 18083.
  const all = [
    cli,
    '--port',
    '0',
    '--ws-port',
    '0',
    '--http-port',
    '0',
    '--host',
    HOST,
    '--log-level',
    'info',
    ...args,
  ];
  const t0 = performance.now();
  // HERON_BENCH_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" profiles the brokers these scenarios start.
  const nodeArgs = [
    ...startNodeFlags(root),
    ...(process.env.HERON_BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean),
  ];
  const child: ChildProcess = spawn(process.execPath, [...nodeArgs, ...all], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let tail = '';
  const keep = (s: string) => {
    tail = (tail + s).slice(-4000);
  };
  child.stderr!.on('data', (d: Buffer) => keep(d.toString()));
  let exited = false;
  const exit = new Promise<void>((resolve) =>
    child.once('exit', () => {
      exited = true;
      resolve();
    }),
  );
  let restored: Spawned['restored'] = null;
  const port = await new Promise<number>((resolve, reject) => {
    // Read stdout to the end: a full pipe would stall the broker.
    createInterface({ input: child.stdout! }).on('line', (text) => {
      keep(`${text}\n`);
      let line: { msg?: string; transport?: string; port?: number; sessions?: number; retained?: number };
      try {
        line = JSON.parse(text);
      } catch {
        return;
      }
      if (line.msg === 'state restored') restored = { sessions: line.sessions, retained: line.retained };
      if (line.msg === 'listening' && line.transport === 'tcp') resolve(line.port!);
    });
    void exit.then(() => reject(new Error(`heron exited while starting:\n${tail}`)));
  });
  const startupMs = performance.now() - t0;
  const handle: BrokerHandle = {
    name: 'heron',
    host: HOST,
    port,
    url: `mqtt://${HOST}:${port}`,
    pid: child.pid ?? null,
    command: [process.execPath, ...all].join(' '),
    alive: () => !exited,
    outputTail: () => tail.trim(),
    async stop() {
      if (exited) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exit;
      clearTimeout(timer);
    },
  };
  return { handle, startupMs, restored };
}

/** A context on `handle` whose subscribers connect with clean session 0 (persistent sessions). */
function persistentSubscribers(ctx: ScenarioContext, handle: BrokerHandle, index: number): ScenarioContext {
  const inner = createContext(handle, ctx.options, index, ctx.log);
  const tag = randomBytes(3).toString('hex');
  const mine: BenchClient[] = [];
  return {
    ...inner,
    async connect(role, i, keepalive = 0) {
      if (role !== 's') return inner.connect(role, i, keepalive);
      const client = await BenchClient.connect({
        host: handle.host,
        port: handle.port,
        clientId: `hp${tag}s${i}`,
        keepalive,
        clean: false,
      });
      mine.push(client);
      return client;
    },
    async closeAll() {
      await inner.closeAll();
      const all = mine.splice(0);
      await pool(all.length, 500, (i) => all[i].disconnect());
    },
  };
}

const PUBLISHERS = 20;
const SUBSCRIBERS = 20;
const WINDOW = 50;
/** The memory row's figure, for the LevelDB row's ratio. */
let memoryPerCpu: number | null = null;

function persistentFanIn(kind: 'memory' | 'level'): BrokerScenario {
  return {
    kind: 'broker',
    id: `persist-fan-in-qos1-${kind}`,
    title: `fan-in ${PUBLISHERS}→${SUBSCRIBERS} persistent QoS 1, ${kind === 'level' ? 'LevelDB' : 'memory'}`,
    strict: true,
    unsupported: NOT_HERON,
    async run(ctx): Promise<ScenarioResult> {
      const dir = kind === 'level' ? mkdtempSync(join(tmpdir(), 'heron-bench-level-')) : null;
      // npm start's defaults but for where state is kept.
      const args = dir ? ['--persistence', 'level', '--data-dir', dir] : ['--persistence', 'memory'];
      const { handle } = await spawnHeron(args);
      try {
        ctx.log(`${kind}: ${handle.command}`);
        const own = persistentSubscribers(ctx, handle, kind === 'level' ? 101 : 100);
        const r = await runFlow(own, {
          publishers: PUBLISHERS,
          subscribers: SUBSCRIBERS,
          qos: 1,
          topic: (i) => `${own.topicRoot}/${i}/data`,
          filter: `${own.topicRoot}/+/data`,
          messagesPerPublisher: ctx.options.quick ? 20_000 : 250_000,
          ackWindow: WINDOW,
          e2eWindow: 4 * WINDOW,
          drainIdleMs: 3000,
        });
        if (!handle.alive()) r.notes.push(`heron exited during the run: ${handle.outputTail().slice(-300)}`);
        if (kind === 'memory') memoryPerCpu = r.perCpuSecond;
        else if (memoryPerCpu !== null && r.perCpuSecond !== null) {
          const ratio = r.perCpuSecond / memoryPerCpu;
          const verdict = ratio >= 0.5 ? 'meets' : 'misses';
          r.notes.push(
            `LevelDB/memory per CPU-s = ${(ratio * 100).toFixed(0)} % (${verdict} the 50 % target)`,
          );
          r.detail += `; LevelDB/memory per CPU-s ${(ratio * 100).toFixed(0)} %`;
        } else {
          r.notes.push('run persist-fan-in-qos1-memory first for the LevelDB/memory ratio');
        }
        return r;
      } finally {
        await handle.stop();
        if (dir) rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}

export const persistFanInMemory = persistentFanIn('memory');
export const persistFanInLevel = persistentFanIn('level');

// ---- startup -----------------------------------------------------------------------------------

/** Writes retained messages and offline sessions with queued messages straight through LevelPersistence. */
async function fill(dir: string, retained: number, sessions: number, queued: number, bytes: number) {
  const store = new LevelPersistence({ dir });
  await store.open();
  const durable = () =>
    new Promise<void>((resolve, reject) => store.whenDurable((err) => (err ? reject(err) : resolve())));
  let n = 0;
  const msg = (topic: string, payload: Buffer, retain: boolean): StoredMessage => ({
    id: `fill-${n++}`,
    topic,
    payload,
    qos: 1,
    retain,
  });
  const small = Buffer.alloc(64, 0x61);
  for (let i = 0; i < retained; i++) {
    const topic = `site/${i % 100}/dev/${i}`;
    store.setRetained(topic, msg(topic, small, true));
    if (i % 10_000 === 9_999) await durable();
  }
  const disconnectedAt = Date.now();
  for (let s = 0; s < sessions; s++) {
    const clientId = `dev-${s}`;
    store.putSession({ clientId, protocolVersion: 5, expiryInterval: 86_400, disconnectedAt });
    store.putSubscription(clientId, { filter: `cmd/${s}/#`, qos: 1 });
    for (let k = 0; k < queued; k++) {
      const message = msg(`cmd/${s}/${k}`, randomBytes(bytes), false);
      store.putOutgoing(clientId, { seq: k + 1, state: 'queued', qos: 1, retain: false, message });
    }
    if (s % 1000 === 999) await durable();
  }
  await store.close();
}

const RETAINED = 100_000;
const SESSIONS = 10_000;
const QUEUED = 3;
const QUEUED_BYTES = 1024;

export const startup: BrokerScenario = {
  kind: 'broker',
  id: 'startup-100k',
  title: 'startup, 100k retained + 10k sessions (LevelDB)',
  strict: false,
  unsupported: NOT_HERON,
  async run(ctx): Promise<ScenarioResult> {
    const quick = ctx.options.quick;
    const retained = quick ? RETAINED / 10 : RETAINED;
    const sessions = quick ? SESSIONS / 10 : SESSIONS;
    const empty = mkdtempSync(join(tmpdir(), 'heron-bench-empty-'));
    const full = mkdtempSync(join(tmpdir(), 'heron-bench-full-'));
    const notes: string[] = [];
    try {
      const t0 = performance.now();
      await fill(full, retained, sessions, QUEUED, QUEUED_BYTES);
      ctx.log(`filled the data dir in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

      const measureStart = async (dir: string) => {
        const s = await spawnHeron(['--persistence', 'level', '--data-dir', dir]);
        const rss = rssKiB(s.handle.pid);
        const cpu = cpuSeconds(s.handle.pid);
        await s.handle.stop();
        return { ms: s.startupMs, rssKiB: rss, cpu, restored: s.restored };
      };
      const base = await measureStart(empty);
      // Twice: the first start also pays for the page cache of a just-written dir; keep the faster.
      const runs = [await measureStart(full), await measureStart(full)];
      const best = runs[0].ms <= runs[1].ms ? runs[0] : runs[1];
      const restored = best.restored;
      if (restored?.retained !== retained || restored?.sessions !== sessions) {
        notes.push(
          `restored ${restored?.retained ?? 0} retained and ${restored?.sessions ?? 0} sessions, expected ${retained} and ${sessions}`,
        );
      }
      const mib = (kib: number | null) => (kib === null ? '?' : `${(kib / 1024).toFixed(0)} MiB`);
      const cell = `${(best.ms / 1000).toFixed(2)} s to listening, RSS ${mib(best.rssKiB)}`;
      const detail =
        `${retained} retained + ${sessions} sessions × ${QUEUED} queued × ${QUEUED_BYTES} B: ` +
        `${runs.map((r) => `${r.ms.toFixed(0)} ms`).join(' / ')} to listening, CPU ${best.cpu?.toFixed(2) ?? '?'} s, ` +
        `RSS ${mib(best.rssKiB)}; empty data dir: ${base.ms.toFixed(0)} ms, RSS ${mib(base.rssKiB)}`;
      notes.push(`empty data dir: ${(base.ms / 1000).toFixed(2)} s to listening, RSS ${mib(base.rssKiB)}`);
      return {
        unit: 'msg',
        count: retained,
        seconds: best.ms / 1000,
        rate: retained / (best.ms / 1000),
        brokerCpu: best.cpu,
        perCpuSecond: null,
        generatorLoad: 0,
        lost: null,
        dup: null,
        cell,
        notes,
        detail,
      };
    } finally {
      rmSync(empty, { recursive: true, force: true });
      rmSync(full, { recursive: true, force: true });
    }
  },
};
