/**
 * Fan-in: 20 publishers → 1 subscriber on a wildcard filter (`<root>/+/data`), at QoS 0, 1 and 2.
 * Publishers pipeline with at most 50 unacknowledged publishes each (QoS 1/2: nothing else paces
 * them, so a broker's queue overflow shows as lost); the subscriber acknowledges
 * QoS 1 (PUBACK) and QoS 2 (PUBREC, PUBREL → PUBCOMP).
 */
import type { QoS } from 'mqtt-packet';
import { runFlow } from '../flow.js';
import type { BrokerScenario } from '../scenario.js';

const PUBLISHERS = 20;
const WINDOW = 50;

export function fanIn(qos: QoS): BrokerScenario {
  return {
    kind: 'broker',
    id: `fan-in-qos${qos}`,
    title: `fan-in 20→1 QoS ${qos}`,
    strict: qos > 0,
    run(ctx) {
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
        e2eWindow: qos === 0 ? 4 * WINDOW : Number.POSITIVE_INFINITY,
        drainIdleMs: qos === 0 ? 1000 : 3000,
      });
    },
  };
}
