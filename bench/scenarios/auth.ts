/**
 * Authentication through a password file: heron started with `--password-file` (100 users, each a
 * `$7$` PBKDF2-SHA512 entry as `mosquitto_passwd` writes them), then 2,000 clients connect with a
 * user name and password and stay connected (closed after). The same connects without
 * authentication run on a heron of their own, for the cost of it. Reported: connects per second
 * (target ≥ 2,000/s: PBKDF2 runs on the libuv thread pool, not the event loop) and per broker
 * CPU-second. mosquitto/aedes: `–`.
 *
 * The connects come from several connector threads (worker_threads, 25 handshakes in flight each,
 * 100 in all), each writing a CONNECT built beforehand and reading the 4-byte CONNACK, so that one
 * generator thread is not what limits the rate. Runs alternate without / with the password file
 * over a few rounds (a drift of the machine's load weighs on both alike); the row reports the
 * median of each side and of the rounds' ratios.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { generate } from 'mqtt-packet';
import { formatPasswordFile, hashPassword, type Line } from '../../plugins/password-file/passwords.js';
import { median } from '../rounds.js';
import { type BrokerScenario, mark, measure } from '../scenario.js';
import { spawnHeron } from './persistence.js';

const USERS = 100;
const CONNECTORS = 4;
const IN_FLIGHT_EACH = 25;
const ROUNDS = 3;

interface ConnectorJob {
  heronConnector: true;
  host: string;
  port: number;
  from: number;
  to: number;
  auth: boolean;
  tag: string;
}

type ConnectorReport =
  | { done: true; failed: number; firstError: string }
  | { ready: true }
  | { closed: true };

/** A connector thread: connects clients from..to-1 when told `go`, holds them until `close`. */
function connector(job: ConnectorJob): void {
  const port = parentPort!;
  const packets: Buffer[] = [];
  for (let i = job.from; i < job.to; i++) {
    packets.push(
      generate({
        cmd: 'connect',
        protocolId: 'MQTT',
        protocolVersion: 4,
        clientId: `ha${job.tag}${i}`,
        clean: true,
        keepalive: 0,
        ...(job.auth && { username: `user${i % USERS}`, password: Buffer.from(`secret${i % USERS}`) }),
      }),
    );
  }
  const open: Socket[] = [];
  let failed = 0;
  let firstError = '';
  const one = (packet: Buffer) =>
    new Promise<void>((resolve) => {
      const s = netConnect({ host: job.host, port: job.port });
      let got = Buffer.alloc(0);
      const fail = (why: string) => {
        failed++;
        firstError ||= why;
        s.destroy();
        resolve();
      };
      s.on('connect', () => s.write(packet));
      s.on('error', (err) => fail(String(err)));
      s.on('data', function onData(d: Buffer) {
        got = Buffer.concat([got, d]);
        if (got.length < 4) return;
        s.off('data', onData);
        // CONNACK: 0x20, remaining length 2, flags, return code.
        if (got[0] !== 0x20 || got[3] !== 0) return fail(`CONNACK ${got.subarray(0, 4).toString('hex')}`);
        open.push(s);
        resolve();
      });
    });
  port.on('message', async (m: string) => {
    if (m === 'go') {
      let next = 0;
      const lane = async () => {
        while (next < packets.length) await one(packets[next++]);
      };
      await Promise.all(Array.from({ length: IN_FLIGHT_EACH }, lane));
      port.postMessage({ done: true, failed, firstError } satisfies ConnectorReport);
    } else if (m === 'close') {
      for (const s of open) s.destroy();
      port.postMessage({ closed: true } satisfies ConnectorReport);
      port.close();
    }
  });
  port.postMessage({ ready: true } satisfies ConnectorReport);
}

if (!isMainThread && (workerData as ConnectorJob | undefined)?.heronConnector)
  connector(workerData as ConnectorJob);

function next(w: Worker, key: 'ready' | 'done' | 'closed'): Promise<ConnectorReport> {
  return new Promise((resolve, reject) => {
    const on = (m: ConnectorReport) => {
      if (!(key in m)) return;
      w.off('message', on);
      resolve(m);
    };
    w.on('message', on);
    w.once('error', reject);
  });
}

/** n clients connect (with credentials when `auth`) from the connector threads, on a heron of its own. */
async function connects(args: string[], n: number, auth: boolean, tag: string) {
  const { handle } = await spawnHeron(args);
  const workers: Worker[] = [];
  try {
    const per = Math.ceil(n / CONNECTORS);
    for (let k = 0; k < CONNECTORS; k++) {
      const job: ConnectorJob = {
        heronConnector: true,
        host: handle.host,
        port: handle.port,
        from: k * per,
        to: Math.min(n, (k + 1) * per),
        auth,
        tag,
      };
      workers.push(new Worker(new URL(import.meta.url), { workerData: job }));
    }
    await Promise.all(workers.map((w) => next(w, 'ready')));
    const start = mark(handle);
    const done = workers.map((w) => next(w, 'done'));
    for (const w of workers) w.postMessage('go');
    const reports = (await Promise.all(done)) as Extract<ConnectorReport, { done: true }>[];
    const end = mark(handle);
    const failed = reports.reduce((a, r) => a + r.failed, 0);
    const firstError = reports.find((r) => r.firstError)?.firstError ?? '';
    await Promise.all(
      workers.map((w) => {
        const closed = next(w, 'closed');
        w.postMessage('close');
        return closed;
      }),
    );
    return { window: measure(start, end, n - failed), failed, firstError, command: handle.command };
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
    await handle.stop();
  }
}

const fmt = (v: number | null) => (v === null ? '–' : v.toFixed(0));

export const passwordConnects: BrokerScenario = {
  kind: 'broker',
  id: 'connect-password-file',
  title: 'connects with a password file (PBKDF2, 100 users)',
  strict: true,
  unsupported: { mosquitto: 'a heron configuration', aedes: 'a heron configuration' },
  async run(ctx) {
    const n = ctx.options.quick ? 500 : 2000;
    const rounds = ctx.options.quick ? 1 : ROUNDS;
    const dir = mkdtempSync(join(tmpdir(), 'heron-bench-auth-'));
    const file = join(dir, 'passwords');
    const lines: Line[] = [];
    for (let u = 0; u < USERS; u++) lines.push({ user: `user${u}`, hash: await hashPassword(`secret${u}`) });
    writeFileSync(file, formatPasswordFile(lines), { mode: 0o600 });
    try {
      type Run = Awaited<ReturnType<typeof connects>>;
      const plains: Run[] = [];
      const auths: Run[] = [];
      for (let k = 0; k < rounds; k++) {
        const plain = () => connects(['--persistence', 'memory'], n, false, `p${k}`);
        const auth = () => connects(['--persistence', 'memory', '--password-file', file], n, true, `a${k}`);
        if (k % 2 === 0) {
          plains.push(await plain());
          auths.push(await auth());
        } else {
          auths.push(await auth());
          plains.push(await plain());
        }
      }
      ctx.log(`auth: ${auths[0].command}`);
      const rate = median(auths.map((r) => r.window.rate));
      const plainRate = median(plains.map((r) => r.window.rate));
      const ratios = auths.map((r, k) => r.window.rate / plains[k].window.rate);
      // The row: the authenticated run nearest the median rate.
      const shown = auths.reduce((best, r) =>
        Math.abs(r.window.rate - rate) < Math.abs(best.window.rate - rate) ? r : best,
      );
      const perCpu = (rs: Run[]) =>
        median(rs.flatMap((r) => (r.window.perCpuSecond === null ? [] : [r.window.perCpuSecond])));
      const failed = [...auths, ...plains].reduce((a, r) => a + r.failed, 0);
      const notes = [
        `median of ${rounds} alternating rounds: ${rate.toFixed(0)} connects/s with the password file ` +
          `(${rate >= 2000 ? 'meets' : 'misses'} the 2,000/s target), ${plainRate.toFixed(0)}/s without; ` +
          `with / without ${ratios.map((x) => x.toFixed(2)).join(', ')}; per CPU-s ${fmt(perCpu(auths))} vs ${fmt(perCpu(plains))}`,
      ];
      if (failed > 0)
        notes.push(
          `${failed} connects failed: ${[...auths, ...plains].find((r) => r.firstError)?.firstError ?? ''}`,
        );
      return {
        unit: 'conn',
        ...shown.window,
        lost: auths.reduce((a, r) => a + r.failed, 0),
        dup: null,
        notes,
        detail:
          `${n - shown.failed} of ${n} authenticated, from ${CONNECTORS} connector threads ` +
          `(${CONNECTORS * IN_FLIGHT_EACH} handshakes in flight); without authentication ${plainRate.toFixed(0)} connects/s (median)`,
      };
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
};
