/**
 * What an ACL costs: fan-in 20→1 and fan-out 1→100 at QoS 0 on herons of their own with the same
 * flags, without and with `--acl-file` holding 1,000 rules (100 users × 10: 4 `topic` lines of
 * their own, 5 `%u` `pattern` lines and the grant of the benchmark's topics, last). Every client
 * connects as one of the 100 users, so every PUBLISH and every delivery is checked against that
 * user's rules and substituted patterns. Target: the ACL costs at most 10% per broker CPU-second.
 *
 * One run of each is at the mercy of the machine (other processes, where the scheduler puts the
 * broker), so the two alternate over several rounds, in the order without/with, with/without, …
 * (a drift during the rounds weighs on both sides alike), and the row reports the median of the
 * rounds' with / without ratios. mosquitto/aedes: `–`.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BrokerHandle } from '../brokers.js';
import { BenchClient } from '../client.js';
import { runFlow } from '../flow.js';
import { alternatingRounds } from '../rounds.js';
import {
  type BenchOptions,
  type BrokerScenario,
  pool,
  type ScenarioContext,
  type ScenarioResult,
} from '../scenario.js';
import { spawnHeron } from './persistence.js';

type Shape = 'fan-in' | 'fan-out';

const USERS = 100;
/** Rounds of (without, with); each run measures this long at most (after the warm-up). */
const ROUNDS = 6;
/**
 * Fan-out is limited by this process reading 100 subscribers, so its broker works a fraction of
 * the time: its runs are longer, for enough broker CPU per run to compare.
 */
const ROUND_MS: Record<Shape, number> = { 'fan-in': 2000, 'fan-out': 4000 };
const TIME_BUDGET_MS = 90_000;
/**
 * Publishers are not paced by what subscribers have seen (only by their sockets' backpressure):
 * paced, a broker idles between small batches, and its CPU per message then depends on how the
 * batches fall more than on the ACL. A publisher tops up at most this many messages at a time.
 */
const UNPACED = 5000;

export function aclFile(): string {
  const lines = ['# 100 users x 10 rules; anonymous clients get nothing', ''];
  for (let u = 0; u < USERS; u++) {
    lines.push(`user user${u}`);
    for (let k = 0; k < 4; k++) lines.push(`topic readwrite devices/user${u}/${k}/#`);
    for (let k = 0; k < 5; k++) lines.push(`pattern read tenants/%u/feed${k}/+`);
    // The benchmark's topics (`hb/<tag>/…`), after the rules that do not match them.
    lines.push('topic readwrite hb/#', '');
  }
  return lines.join('\n');
}

/** A scenario context whose clients connect as user<index % 100> (no password: no authentication). */
function usersContext(broker: BrokerHandle, options: BenchOptions, index: number, log: (l: string) => void) {
  const tag = randomBytes(3).toString('hex');
  const clients = new Set<BenchClient>();
  const ctx: ScenarioContext = {
    broker,
    options,
    topicRoot: `hb/${tag}`,
    log,
    async connect(role, i, keepalive = 0) {
      const client = await BenchClient.connect({
        host: broker.host,
        port: broker.port,
        clientId: `hb${tag}${index.toString(36)}${role.slice(0, 1)}${i}`,
        keepalive,
        username: `user${i % USERS}`,
      });
      clients.add(client);
      return client;
    },
    async closeAll() {
      const all = [...clients];
      clients.clear();
      await pool(all.length, 500, (k) => all[k].disconnect());
    },
  };
  return ctx;
}

function flow(ctx: ScenarioContext, shape: Shape) {
  const quick = ctx.options.quick;
  if (shape === 'fan-in')
    return runFlow(ctx, {
      publishers: 20,
      subscribers: 1,
      qos: 0,
      topic: (i) => `${ctx.topicRoot}/${i}/data`,
      filter: `${ctx.topicRoot}/+/data`,
      messagesPerPublisher: quick ? 50_000 : 250_000,
      ackWindow: 50,
      e2eWindow: UNPACED,
      drainIdleMs: 1000,
    });
  const topic = `${ctx.topicRoot}/broadcast`;
  return runFlow(ctx, {
    publishers: 1,
    subscribers: 100,
    qos: 0,
    topic: () => topic,
    filter: topic,
    messagesPerPublisher: quick ? 20_000 : 100_000,
    ackWindow: 200,
    // One publisher feeding 100 subscribers in this process: a looser bound, or a top-up of
    // 5,000 would put 500,000 deliveries in flight at once.
    e2eWindow: UNPACED / 5,
    drainIdleMs: 1000,
  });
}

async function run(
  ctx: ScenarioContext,
  shape: Shape,
  args: string[],
  index: number,
): Promise<ScenarioResult> {
  const { handle } = await spawnHeron(['--persistence', 'memory', ...args]);
  const options = { ...ctx.options, durationMs: Math.min(ctx.options.durationMs, ROUND_MS[shape]) };
  const own = usersContext(handle, options, index, ctx.log);
  try {
    return await flow(own, shape);
  } finally {
    await own.closeAll();
    await handle.stop();
  }
}

export function aclCost(shape: Shape): BrokerScenario {
  return {
    kind: 'broker',
    id: `acl-${shape}-qos0`,
    title: `${shape} QoS 0 with a 1,000-rule ACL file`,
    strict: false,
    unsupported: { mosquitto: 'a heron configuration', aedes: 'a heron configuration' },
    async run(ctx) {
      const dir = mkdtempSync(join(tmpdir(), 'heron-bench-acl-'));
      const file = join(dir, 'acl');
      writeFileSync(file, aclFile());
      try {
        const rounds = ctx.options.quick ? 2 : ROUNDS;
        const {
          rounds: pairs,
          ratios,
          mid,
          shown,
          baseMedian,
        } = await alternatingRounds(
          rounds,
          TIME_BUDGET_MS,
          (k) => run(ctx, shape, [], 300 + 2 * k),
          (k) => run(ctx, shape, ['--acl-file', file], 301 + 2 * k),
        );
        // The row shows the with-ACL run of the round nearest the median ratio.
        const r = shown.variant;
        if (mid !== null) {
          r.notes.push(
            `with / without the ACL per CPU-s, median of ${ratios.length} alternating rounds = ${mid.toFixed(2)} ` +
              `(${mid >= 0.9 ? 'meets' : 'misses'} the ≤ 10% cost target; rounds ${ratios.map((x) => x.toFixed(2)).join(', ')})`,
          );
          r.detail += `; without the ACL, median ${(baseMedian / 1000).toFixed(1)}k/CPU-s`;
        }
        const lostWith = pairs.some((p) => (p.variant.lost ?? 0) > 0);
        const lostWithout = pairs.some((p) => (p.base.lost ?? 0) > 0);
        if (lostWith && !lostWithout) r.notes.push('lost only with the ACL: check its rules');
        return r;
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}
