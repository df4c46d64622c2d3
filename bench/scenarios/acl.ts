/**
 * What an ACL costs: fan-in 20→1 and fan-out 1→100 at QoS 0, each run twice on a heron of its
 * own with the same flags, without and with `--acl-file` holding 1,000 rules (100 users × 10
 * `%u` patterns and topics, plus an anonymous rule granting the benchmark's topics, which every
 * PUBLISH and every delivery is checked against). Target: the ACL costs at most 10% per broker
 * CPU-second. mosquitto/aedes: `–`.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runFlow } from '../flow.js';
import {
  type BrokerScenario,
  createContext,
  type ScenarioContext,
  type ScenarioResult,
} from '../scenario.js';
import { spawnHeron } from './persistence.js';

type Shape = 'fan-in' | 'fan-out';

function aclFile(): string {
  const lines = ['# anonymous clients (the benchmark): its topics only', 'topic readwrite hb/#', ''];
  for (let u = 0; u < 100; u++) {
    lines.push(`user user${u}`);
    for (let k = 0; k < 5; k++) lines.push(`topic readwrite devices/user${u}/${k}/#`);
    for (let k = 0; k < 5; k++) lines.push(`pattern read tenants/%u/feed${k}/+`);
    lines.push('');
  }
  return lines.join('\n');
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
      e2eWindow: 200,
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
    e2eWindow: 200,
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
  try {
    return await flow(createContext(handle, ctx.options, index, ctx.log), shape);
  } finally {
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
        // topicRoot of a context is `hb/<tag>`: the anonymous rule grants it.
        const without = await run(ctx, shape, [], 300);
        const r = await run(ctx, shape, ['--acl-file', file], 301);
        if (without.perCpuSecond !== null && r.perCpuSecond !== null) {
          const cost = 1 - r.perCpuSecond / without.perCpuSecond;
          r.notes.push(
            `with / without the ACL per CPU-s = ${(r.perCpuSecond / without.perCpuSecond).toFixed(2)} ` +
              `(${(without.perCpuSecond / 1000).toFixed(1)}k without; ${cost <= 0.1 ? 'meets' : 'misses'} the ≤ 10% cost target)`,
          );
          r.detail += `; without the ACL ${(without.perCpuSecond / 1000).toFixed(1)}k/CPU-s`;
        }
        if ((r.lost ?? 0) > 0 && (without.lost ?? 0) === 0)
          r.notes.push('lost only with the ACL: check its rules');
        return r;
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}
