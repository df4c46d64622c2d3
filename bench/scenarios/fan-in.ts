/**
 * Fan-in: 20 publishers → 1 subscriber on a wildcard filter (`<root>/+/data`), at QoS 0, 1 and 2.
 * Publishers pipeline with at most 50 unacknowledged publishes each (QoS 1/2: nothing else paces
 * them, so a broker's queue overflow shows as lost); the subscriber acknowledges QoS 1 (PUBACK) and
 * QoS 2 (PUBREC, PUBREL → PUBCOMP).
 *
 * The `-tuned` rows run heron as the benchmark did before the default bounds and the overflow
 * policy existed (no queue or inflight cap: `--max-queued 1000000 --max-inflight 65535`, publishers
 * kept at most 200 messages ahead of the subscriber), so the default rows' cost of flow control is
 * a ratio measured in the same run. mosquitto/aedes: `–`.
 */
import type { QoS } from 'mqtt-packet';
import { runFlow } from '../flow.js';
import { type BrokerScenario, createContext, type ScenarioContext } from '../scenario.js';
import { spawnHeron } from './persistence.js';

const PUBLISHERS = 20;
const WINDOW = 50;
/** The default rows' figures, for the tuned rows' ratio. */
const defaultPerCpu = new Map<QoS, number | null>();

function flow(ctx: ScenarioContext, qos: QoS, paced: boolean) {
  return runFlow(ctx, {
    publishers: PUBLISHERS,
    subscribers: 1,
    qos,
    topic: (i) => `${ctx.topicRoot}/${i}/data`,
    filter: `${ctx.topicRoot}/+/data`,
    messagesPerPublisher: ctx.options.quick ? 50_000 : 250_000,
    ackWindow: WINDOW,
    // QoS 1/2: publishers are limited only by their own ack window, never by what the subscriber
    // has received: a broker that acknowledges what its queues cannot hold shows it as lost.
    // QoS 0 has no acks, so the deliveries pace it (else it measures only what is dropped).
    e2eWindow: qos === 0 || paced ? 4 * WINDOW : Number.POSITIVE_INFINITY,
    drainIdleMs: qos === 0 ? 1000 : 3000,
  });
}

export function fanIn(qos: QoS): BrokerScenario {
  return {
    kind: 'broker',
    id: `fan-in-qos${qos}`,
    title: `fan-in 20→1 QoS ${qos}`,
    strict: qos > 0,
    async run(ctx) {
      const r = await flow(ctx, qos, false);
      if (ctx.broker.name === 'heron') defaultPerCpu.set(qos, r.perCpuSecond);
      return r;
    },
  };
}

export function fanInTuned(qos: 1 | 2): BrokerScenario {
  return {
    kind: 'broker',
    id: `fan-in-tuned-qos${qos}`,
    title: `fan-in 20→1 QoS ${qos}, heron tuned (no queue cap, paced)`,
    strict: true,
    unsupported: { mosquitto: 'a heron configuration', aedes: 'a heron configuration' },
    async run(ctx) {
      const args = ['--persistence', 'memory', '--max-queued', '1000000', '--max-inflight', '65535'];
      const { handle } = await spawnHeron(args);
      try {
        ctx.log(`tuned: ${handle.command}`);
        const r = await flow(createContext(handle, ctx.options, 200 + qos, ctx.log), qos, true);
        const d = defaultPerCpu.get(qos);
        if (d != null && r.perCpuSecond !== null) {
          const ratio = d / r.perCpuSecond;
          r.notes.push(
            `defaults / tuned per CPU-s = ${ratio.toFixed(2)} (${ratio >= 0.8 ? 'meets' : 'misses'} the 0.8 target)`,
          );
          r.detail += `; defaults/tuned per CPU-s ${ratio.toFixed(2)}`;
        }
        return r;
      } finally {
        await handle.stop();
      }
    },
  };
}
