/**
 * Declared queues (README "Job queues"): 10 producers (QoS 1, 50 in flight each) → one queue,
 * consumed once by 10 MQTT workers (push, `$share/push/push/#`) and once by 10 HTTP pullers
 * (POST …/pull with max 10 and a long poll, each acknowledging the previous batch in its `ack`).
 * Jobs per broker CPU-second, end-to-end latency (publish to the worker having it), lost and
 * duplicated; the pull row's ratio to the push row per CPU-second (target ≥ 0.3), medians of
 * alternating rounds, each counted after a warm-up of a fifth as many jobs. Each round starts its own heron (`dist/broker/cli.js` on npm start's
 * defaults but in memory, with `--queue` and the HTTP listener, `--http-port 0`); the generator shares the
 * machine with it.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { Agent, request } from 'node:http';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { cpuSeconds, projectRoot, startNodeFlags } from '../brokers.js';
import { BenchClient, PublishTemplate } from '../client.js';
import { readPubId, readSentAt, readSeq, StreamTracker } from '../payload.js';
import { type BenchOptions, type LocalBench, type LocalResult, summarizeLatency } from '../scenario.js';

const HOST = '127.0.0.1';
const PRODUCERS = 10;
const CONSUMERS = 10;
const WINDOW = 50;
const BATCH = 10;
const TOKEN = 'bench-token';

interface Row {
  jobs: number;
  seconds: number;
  perCpuSecond: number | null;
  lost: number;
  dup: number;
  p50: number;
  p99: number;
}

async function startBroker(): Promise<{ child: ChildProcess; mqtt: number; http: number }> {
  const cli = join(projectRoot(), 'dist', 'broker', 'cli.js');
  const args = [
    ...['--port', '0', '--host', HOST, '--ws-port', '0', '--persistence', 'memory', '--log-level', 'info'],
    ...['--queue', 'push=push/#', '--queue', 'pull=pull/#'],
    ...['--http-port', '0', '--admin-token', 'bench-admin', '--queue-consumer', `${TOKEN}=*`],
  ];
  // HERON_BENCH_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" profiles it.
  const nodeArgs = [
    ...startNodeFlags(projectRoot()),
    ...(process.env.HERON_BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean),
  ];
  const child = spawn(process.execPath, [...nodeArgs, cli, ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const ports = await new Promise<{ mqtt: number; http: number }>((resolve, reject) => {
    let mqtt = 0;
    let http = 0;
    // Read stdout to the end: a full pipe would stall the broker.
    createInterface({ input: child.stdout! }).on('line', (text) => {
      let l: { msg?: string; transport?: string; port?: number };
      try {
        l = JSON.parse(text);
      } catch {
        return;
      }
      if (l.msg === 'listening' && l.transport === 'tcp') mqtt = l.port!;
      if (l.msg?.startsWith('admin API and dashboard on')) http = l.port!;
      if (mqtt > 0 && http > 0) resolve({ mqtt, http });
    });
    child.once('exit', () => reject(new Error('heron exited while starting')));
  });
  return { child, ...ports };
}

/** Publishes `perProducer` jobs from each producer to `<queue>/<i>`, WINDOW in flight each. */
async function produce(
  port: number,
  queue: string,
  perProducer: number,
  payloadSize: number,
): Promise<BenchClient[]> {
  const producers = await Promise.all(
    Array.from({ length: PRODUCERS }, (_, i) =>
      BenchClient.connect({ host: HOST, port, clientId: `bq-${queue}-p${i}` }),
    ),
  );
  await Promise.all(
    producers.map(
      (c, i) =>
        new Promise<void>((resolve) => {
          const t = new PublishTemplate(`${queue}/${i}`, 1, i, payloadSize);
          let sent = 0;
          const pump = () => {
            while (sent < perProducer && c.inflight < WINDOW && !c.blocked)
              c.publish(t, sent++, performance.now());
            if (sent >= perProducer && c.inflight === 0) resolve();
          };
          c.onComplete = pump;
          c.onDrain = pump;
          pump();
        }),
    ),
  );
  return producers;
}

async function measureRow(
  options: BenchOptions,
  queue: 'push' | 'pull',
  consume: (
    mqtt: number,
    http: number,
    record: (payload: Buffer) => void,
    stop: () => boolean,
  ) => Promise<() => Promise<void>>,
): Promise<Row> {
  const { child, mqtt, http } = await startBroker();
  try {
    const perProducer = options.quick ? 1000 : 5000;
    // A warm-up before the CPU is counted, as the throughput rows have: the first thousands of
    // requests run while V8 is still compiling (its compiler threads count as the broker's CPU).
    const warmPerProducer = perProducer / 5;
    const expected = perProducer * PRODUCERS;
    const trackers = Array.from({ length: PRODUCERS }, () => new StreamTracker(perProducer));
    const latencies: number[] = [];
    let warming = true;
    let received = 0;
    let lastAt = 0;
    let done!: () => void;
    let all = new Promise<void>((r) => {
      done = r;
    });
    const record = (payload: Buffer) => {
      const now = performance.now();
      if (warming) {
        if (++received >= warmPerProducer * PRODUCERS) done();
        return;
      }
      trackers[readPubId(payload)].record(readSeq(payload));
      latencies.push(now - readSentAt(payload));
      lastAt = now;
      if (++received >= expected) done();
    };
    let stopping = false;
    const end = await consume(mqtt, http, record, () => stopping);
    const warmers = await produce(mqtt, queue, warmPerProducer, options.payloadSize);
    await Promise.race([all, new Promise((r) => setTimeout(r, 60_000))]);
    await Promise.all(warmers.map((p) => p.disconnect()));
    warming = false;
    received = 0;
    all = new Promise<void>((r) => {
      done = r;
    });
    const cpu0 = cpuSeconds(child.pid ?? null);
    const t0 = performance.now();
    const producers = await produce(mqtt, queue, perProducer, options.payloadSize);
    await Promise.race([all, new Promise((r) => setTimeout(r, 60_000))]);
    const cpu1 = cpuSeconds(child.pid ?? null);
    stopping = true;
    await end();
    await Promise.all(producers.map((p) => p.disconnect()));
    const unique = trackers.reduce((n, t) => n + t.unique, 0);
    const lat = summarizeLatency(latencies);
    const cpu = cpu0 !== null && cpu1 !== null ? cpu1 - cpu0 : null;
    return {
      jobs: unique,
      seconds: (lastAt - t0) / 1000,
      perCpuSecond: cpu !== null && cpu > 0.02 ? unique / cpu : null,
      lost: expected - unique,
      dup: trackers.reduce((n, t) => n + t.dup, 0),
      p50: lat?.p50 ?? 0,
      p99: lat?.p99 ?? 0,
    };
  } finally {
    child.kill('SIGTERM');
  }
}

/** 10 MQTT workers on the push queue (the bench client acknowledges each job at once). */
const pushWorkers = async (mqtt: number, _http: number, record: (p: Buffer) => void) => {
  const workers = await Promise.all(
    Array.from({ length: CONSUMERS }, (_, i) =>
      BenchClient.connect({ host: HOST, port: mqtt, clientId: `bq-w${i}` }),
    ),
  );
  for (const w of workers) {
    w.onMessage = (payload) => record(payload);
    await w.subscribe('$share/push/push/#', 1);
  }
  return async () => {
    await Promise.all(workers.map((w) => w.disconnect()));
  };
};

/** Pull requests made and messages they returned (the mean batch, for the summary). */
const pulls = { requests: 0, messages: 0 };

/**
 * POSTs JSON over a keep-alive agent and parses the JSON answer. node:http rather than fetch: the
 * generator shares a thread with the producers, and fetch's per-request cost made it the limit
 * (a slower generator spreads the broker's work over more wake-ups, as the MQTT side does not).
 */
function postJson(agent: Agent, port: number, path: string, body: unknown): Promise<unknown> {
  const data = Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: HOST,
        port,
        path,
        method: 'POST',
        agent,
        headers: {
          'content-type': 'application/json',
          'content-length': data.length,
          authorization: `Bearer ${TOKEN}`,
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          if (res.statusCode !== 200) reject(new Error(`${path}: HTTP ${res.statusCode}`));
          else resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(data);
  });
}

/** 10 HTTP pullers on the pull queue: pull a batch (long poll) acknowledging the previous one, record it. */
const httpPullers = async (_mqtt: number, http: number, record: (p: Buffer) => void, stop: () => boolean) => {
  const base = '/api/v1/queues/pull';
  const agent = new Agent({ keepAlive: true, maxSockets: CONSUMERS });
  const loops = Array.from({ length: CONSUMERS }, async () => {
    // Each batch is acknowledged with the next pull (its `ack`), the last one by an ack of its own.
    let ack: string[] = [];
    while (!stop()) {
      const { messages } = (await postJson(agent, http, `${base}/pull`, {
        max: BATCH,
        waitMs: 200,
        ack,
      })) as {
        messages: { payload: string; receipt: string }[];
      };
      for (const m of messages) record(Buffer.from(m.payload, 'base64'));
      ack = messages.map((m) => m.receipt);
      pulls.requests++;
      pulls.messages += messages.length;
    }
    if (ack.length > 0) await postJson(agent, http, `${base}/ack`, { receipts: ack });
  });
  return async () => {
    await Promise.all(loops);
    agent.destroy();
  };
};

const fmt = (r: Row) =>
  `${Math.round(r.jobs / Math.max(r.seconds, 1e-6))} jobs/s, ${r.perCpuSecond === null ? '?' : Math.round(r.perCpuSecond)} jobs/broker-CPU-s, p50 ${r.p50.toFixed(1)} ms, p99 ${r.p99.toFixed(1)} ms, lost ${r.lost}, dup ${r.dup}`;

export const queues: LocalBench = {
  kind: 'local',
  id: 'queues',
  title: `queue ${PRODUCERS} producers → ${CONSUMERS} MQTT workers vs ${CONSUMERS} HTTP pullers (batches of ${BATCH})`,
  async run(options: BenchOptions): Promise<LocalResult> {
    // Alternating rounds, each on a fresh broker; the row with the median per-CPU-s figure is shown.
    const rounds = options.quick ? 1 : 3;
    const pushes: Row[] = [];
    const pullRows: Row[] = [];
    for (let i = 0; i < rounds; i++) {
      pushes.push(await measureRow(options, 'push', pushWorkers));
      pullRows.push(await measureRow(options, 'pull', httpPullers));
    }
    const median = (rows: Row[]) =>
      [...rows].sort((a, b) => (a.perCpuSecond ?? 0) - (b.perCpuSecond ?? 0))[Math.floor(rows.length / 2)];
    const push = median(pushes);
    const pull = median(pullRows);
    const clean = [...pushes, ...pullRows].every((r) => r.lost === 0 && r.dup === 0);
    const ratio =
      push.perCpuSecond !== null && pull.perCpuSecond !== null ? pull.perCpuSecond / push.perCpuSecond : null;
    const batch = (pulls.messages / Math.max(1, pulls.requests)).toFixed(1);
    return {
      ok: clean && (ratio === null || ratio >= 0.3),
      summary: `push: ${fmt(push)}; pull: ${fmt(pull)}, ${batch} jobs a pull; pull/push per CPU-s ${ratio === null ? '?' : ratio.toFixed(2)} (target ≥ 0.3; medians of ${rounds} alternating rounds after a warm-up${clean ? '' : '; LOST OR DUPLICATED JOBS'})`,
    };
  },
};
