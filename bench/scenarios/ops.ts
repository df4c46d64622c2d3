/**
 * What operations cost: fan-in 20→1 at QoS 0 on herons of their own, "ops off" (`--sys-interval
 * 0`, `--http-port off`) against "ops on" (`--sys-interval 1`, the HTTP plugin with /metrics
 * scraped every second by this process and a dashboard's SSE stream open, so its top-topics
 * counter runs; a subscriber of `$SYS/#` receives every update). Target:
 * ops cost < 3% per broker CPU-second. As the ACL rows, the two alternate over rounds
 * (off/on, on/off, …) and the row reports the median of the rounds' on / off ratios.
 * mosquitto/aedes: `–`.
 */
import { createServer } from 'node:net';
import { runFlow } from '../flow.js';
import { alternatingRounds } from '../rounds.js';
import {
  type BrokerScenario,
  createContext,
  type ScenarioContext,
  type ScenarioResult,
} from '../scenario.js';
import { spawnHeron } from './persistence.js';

const ROUNDS = 6;
const TOKEN = 'bench-admin-token';
const ROUND_MS = 2000;
const TIME_BUDGET_MS = 90_000;
/** Publishers top up at most this many messages ahead of the subscriber (see acl.ts: unpaced). */
const UNPACED = 5000;

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

function flow(ctx: ScenarioContext) {
  return runFlow(ctx, {
    publishers: 20,
    subscribers: 1,
    qos: 0,
    topic: (i) => `${ctx.topicRoot}/${i}/data`,
    filter: `${ctx.topicRoot}/+/data`,
    messagesPerPublisher: ctx.options.quick ? 50_000 : 250_000,
    ackWindow: 50,
    e2eWindow: UNPACED,
    drainIdleMs: 1000,
  });
}

async function run(
  ctx: ScenarioContext,
  on: boolean,
  index: number,
): Promise<{ r: ScenarioResult; scrapes: number }> {
  const port = on ? await freePort() : 0;
  const args = on
    ? ['--sys-interval', '1', '--http-port', String(port), '--admin-token', TOKEN]
    : ['--sys-interval', '0', '--http-port', 'off'];
  const { handle } = await spawnHeron(['--persistence', 'memory', ...args]);
  const options = { ...ctx.options, durationMs: Math.min(ctx.options.durationMs, ROUND_MS) };
  const own = createContext(handle, options, index, ctx.log);
  let scrapes = 0;
  let timer: NodeJS.Timeout | undefined;
  const sse = new AbortController();
  try {
    if (on) {
      const sys = await own.connect('sys', 0);
      await sys.subscribe('$SYS/#', 0);
      const auth = { authorization: `Bearer ${TOKEN}` };
      // A dashboard watching: samples every second and counts topics per publish.
      const stream = await fetch(`http://127.0.0.1:${port}/api/v1/events`, {
        headers: auth,
        signal: sse.signal,
      });
      void stream.body?.pipeTo(new WritableStream(), { signal: sse.signal }).catch(() => {});
      timer = setInterval(() => {
        fetch(`http://127.0.0.1:${port}/metrics`, { headers: auth })
          .then((res) => res.text())
          .then(
            () => {
              scrapes++;
            },
            () => {},
          );
      }, 1000);
    }
    return { r: await flow(own), scrapes };
  } finally {
    clearInterval(timer);
    sse.abort();
    await own.closeAll();
    await handle.stop();
  }
}

export const opsCost: BrokerScenario = {
  kind: 'broker',
  id: 'ops-fan-in-qos0',
  title:
    'fan-in 20→1 QoS 0, ops on ($SYS every 1 s, metrics scraped every 1 s, dashboard stream open) vs off',
  strict: false,
  unsupported: { mosquitto: 'a heron configuration', aedes: 'a heron configuration' },
  async run(ctx) {
    const rounds = ctx.options.quick ? 2 : ROUNDS;
    let scrapes = 0;
    const { ratios, mid, shown, baseMedian } = await alternatingRounds(
      rounds,
      TIME_BUDGET_MS,
      (k) => run(ctx, false, 400 + 2 * k).then((x) => x.r),
      (k) =>
        run(ctx, true, 401 + 2 * k).then((x) => {
          scrapes += x.scrapes;
          return x.r;
        }),
    );
    const r = shown.variant;
    if (mid !== null) {
      r.notes.push(
        `ops on / off per CPU-s, median of ${ratios.length} alternating rounds = ${mid.toFixed(3)} ` +
          `(${mid >= 0.97 ? 'meets' : 'misses'} the < 3% cost target; rounds ${ratios.map((x) => x.toFixed(3)).join(', ')})`,
      );
      r.detail += `; ops off, median ${(baseMedian / 1000).toFixed(1)}k/CPU-s; ${scrapes} scrapes`;
    }
    if (scrapes === 0) r.notes.push('no metrics scrape succeeded');
    return r;
  },
};
