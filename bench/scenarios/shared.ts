/**
 * Shared subscription (job distribution): 10 publishers → one group of 10 workers on
 * `$share/workers/jobs/#` at QoS 1. Each message must reach exactly one worker: lost and duplicated
 * count across the group, and the result shows the smallest and largest share one worker got
 * (round-robin: 10 % each). Aedes has no `$share`, so its column is `–`.
 */
import { runFlow } from '../flow.js';
import type { BrokerScenario } from '../scenario.js';

const PUBLISHERS = 10;
const WORKERS = 10;
const WINDOW = 50;

export const shared: BrokerScenario = {
  kind: 'broker',
  id: 'shared',
  title: `shared ${PUBLISHERS}→${WORKERS} workers QoS 1`,
  strict: true,
  unsupported: { aedes: 'no $share shared subscriptions' },
  run(ctx) {
    return runFlow(ctx, {
      publishers: PUBLISHERS,
      subscribers: WORKERS,
      qos: 1,
      topic: (i) => `jobs/${i}`,
      filter: '$share/workers/jobs/#',
      shared: true,
      messagesPerPublisher: ctx.options.quick ? 50_000 : 250_000,
      ackWindow: WINDOW,
      e2eWindow: 4 * WINDOW,
      drainIdleMs: 3000,
    });
  },
};
