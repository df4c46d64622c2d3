/** Every scenario, in run order. Add new ones (persistence, shared subscriptions, …) here. */
import type { Scenario } from '../scenario.js';
import { aclCost } from './acl.js';
import { passwordConnects } from './auth.js';
import { fanIn, fanInTuned } from './fan-in.js';
import { fanOut } from './fan-out.js';
import { idleConnections } from './idle-connections.js';
import { latency } from './latency.js';
import { opsCost } from './ops.js';
import { persistFanInLevel, persistFanInMemory, startup } from './persistence.js';
import { shared } from './shared.js';
import { slowConsumer } from './slow-consumer.js';
import { topicTree } from './topic-tree.js';

export const scenarios: Scenario[] = [
  fanIn(0),
  fanIn(1),
  fanIn(2),
  fanInTuned(1),
  fanInTuned(2),
  fanOut,
  latency(0),
  latency(1),
  shared,
  idleConnections,
  passwordConnects,
  aclCost('fan-in'),
  aclCost('fan-out'),
  opsCost,
  slowConsumer(0),
  slowConsumer(1),
  persistFanInMemory,
  persistFanInLevel,
  startup,
  topicTree,
];
