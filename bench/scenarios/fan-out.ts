/**
 * Fan-out: 1 publisher → 100 subscribers of the same topic, QoS 0. Counts deliveries (each
 * subscriber's copy is one message), so msgs/s = 100 × publishes/s at no loss.
 */
import { runFlow } from '../flow.js';
import type { BrokerScenario } from '../scenario.js';

const SUBSCRIBERS = 100;

export const fanOut: BrokerScenario = {
  kind: 'broker',
  id: 'fan-out-qos0',
  title: 'fan-out 1→100 QoS 0',
  strict: false,
  run(ctx) {
    const topic = `${ctx.topicRoot}/broadcast`;
    return runFlow(ctx, {
      publishers: 1,
      subscribers: SUBSCRIBERS,
      qos: 0,
      topic: () => topic,
      filter: topic,
      messagesPerPublisher: ctx.options.quick ? 20_000 : 100_000,
      ackWindow: 200,
      e2eWindow: 200,
      drainIdleMs: 1000,
    });
  },
};
