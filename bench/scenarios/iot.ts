/**
 * IoT shapes (issue #11): many connections at a low rate each, every message its own socket write.
 * See bench/iot.ts for the engine (device threads, pacing, what is counted).
 *
 * - `iot-ingest-2k`: 2,000 devices, QoS 1, 10,000 msg/s in all (5 msg/s each) into
 *   `<root>/devices/<id>/telemetry`; one ingest subscriber on `<root>/devices/+/telemetry`.
 * - `iot-ingest-2k-shared`: the same into two subscribers of `$share/ingest/<root>/devices/+/telemetry`.
 * - `iot-ingest-10k`: 10,000 devices, 1 msg/s each; skipped when this process may not open enough files.
 * - `iot-command-2k`: a backend publishes QoS 1 commands to `<root>/devices/<id>/cmd`, 5,000 msg/s
 *   in all (2.5 msg/s per device), each device subscribed to its own topic.
 * - `paced-fan-out`: 1 publisher at 500 msg/s, QoS 0, one message per write → 100 subscribers.
 *
 * Topics carry the run's `<root>` prefix so runs against one external broker do not mix.
 */
import type { QoS } from 'mqtt-packet';
import { openFileLimit, runIot } from '../iot.js';
import type { BrokerScenario, ScenarioContext } from '../scenario.js';

function timing(ctx: ScenarioContext) {
  return ctx.options.quick
    ? { warmupMs: 1000, durationMs: 2000 }
    : { warmupMs: 3000, durationMs: Math.max(5000, ctx.options.durationMs) };
}

function ingest(id: string, devices: number, rate: number, shared: boolean): BrokerScenario {
  return {
    kind: 'broker',
    id,
    title: `iot ingest: ${devices / 1000}k devices → ${shared ? '2 shared subscribers' : '1 subscriber'}, QoS 1, ${rate / 1000}k msg/s`,
    strict: true,
    ...(shared && { unsupported: { aedes: 'no $share' } }),
    timeoutMs: 180_000,
    async run(ctx) {
      const need = devices + 1000;
      const limit = openFileLimit();
      if (limit !== null && limit < need) {
        throw new Error(
          `skipped: needs ${need} open files, ulimit -n is ${limit} (raise it: ulimit -n ${need})`,
        );
      }
      const root = ctx.topicRoot;
      const filter = `${root}/devices/+/telemetry`;
      return runIot(ctx, {
        direction: 'ingest',
        devices: ctx.options.quick ? Math.min(devices, 1000) : devices,
        rate: ctx.options.quick ? rate / 2 : rate,
        qos: 1 as QoS,
        topic: `${root}/devices/{i}/telemetry`,
        filter: '',
        ingestFilter: shared ? `$share/ingest/${filter}` : filter,
        ingestSubscribers: shared ? 2 : 1,
        threads: devices > 5000 ? 4 : 2,
        ...timing(ctx),
      });
    },
  };
}

export const iotIngest2k = ingest('iot-ingest-2k', 2000, 10_000, false);
export const iotIngest2kShared = ingest('iot-ingest-2k-shared', 2000, 10_000, true);
export const iotIngest10k = ingest('iot-ingest-10k', 10_000, 10_000, false);

export const iotCommand2k: BrokerScenario = {
  kind: 'broker',
  id: 'iot-command-2k',
  title: 'iot command: backend → 2k devices (own topics), QoS 1, 5k msg/s',
  strict: true,
  timeoutMs: 180_000,
  async run(ctx) {
    const root = ctx.topicRoot;
    return runIot(ctx, {
      direction: 'command',
      devices: ctx.options.quick ? 1000 : 2000,
      rate: ctx.options.quick ? 2500 : 5000,
      qos: 1,
      topic: `${root}/devices/{i}/cmd`,
      filter: `${root}/devices/{i}/cmd`,
      threads: 2,
      ...timing(ctx),
    });
  },
};

export const pacedFanOut: BrokerScenario = {
  kind: 'broker',
  id: 'paced-fan-out',
  title: 'paced fan-out: 1 → 100 at 500 msg/s, QoS 0, one message per write',
  strict: false,
  async run(ctx) {
    const topic = `${ctx.topicRoot}/broadcast`;
    return runIot(ctx, {
      direction: 'command',
      devices: 100,
      rate: 500,
      qos: 0,
      // Every message goes to the one topic every subscriber holds.
      topic,
      filter: topic,
      threads: 2,
      ...timing(ctx),
    });
  },
};
