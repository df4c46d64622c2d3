import assert from 'node:assert/strict';
/**
 * Helpers for the shared subscription (job distribution) suites: workers that record what they
 * get and choose how to acknowledge it, and a publisher of numbered jobs.
 */
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { onCleanup } from './helpers.js';

export interface Job {
  topic: string;
  payload: string;
  dup: boolean;
  /** Fake-timer-aware time of arrival (Date.now()). */
  at: number;
  userProperties: Record<string, string | string[]> | undefined;
  /** The reason code the worker answered with (0 = success). */
  code: number;
}

export interface Worker {
  client: MqttClient;
  id: string;
  /** Every job received, in order, with how it was answered. */
  jobs: Job[];
  /** Payloads of the jobs answered with success. */
  done: () => string[];
}

export type AckPolicy = (job: Job, worker: Worker) => number | Promise<number>;

/**
 * A worker: an mqtt.js client subscribed to `filter`, answering each QoS 1/2 PUBLISH with the
 * reason code `ack` returns (5.0 only; mqtt.js's customHandleAcks), 0 by default.
 */
export async function worker(
  url: string,
  filter: string,
  opts: IClientOptions & { qos?: 0 | 1 | 2; ack?: AckPolicy } = {},
): Promise<Worker> {
  const { qos = 1, ack, ...clientOpts } = opts;
  const id = clientOpts.clientId ?? `w-${Math.random().toString(16).slice(2, 10)}`;
  const jobs: Job[] = [];
  let self!: Worker;
  const v5 = clientOpts.protocolVersion === 5;
  const record = (topic: string, payload: Buffer, packet: mqtt.IPublishPacket): Job => {
    const job: Job = {
      topic,
      payload: payload.toString(),
      dup: packet.dup,
      at: Date.now(),
      userProperties: packet.properties?.userProperties,
      code: 0,
    };
    jobs.push(job);
    return job;
  };
  const client = mqtt.connect(url, {
    reconnectPeriod: 0,
    connectTimeout: 5000,
    clientId: id,
    ...clientOpts,
    ...(v5 && {
      customHandleAcks: (topic: string, payload: Buffer, packet: mqtt.IPublishPacket, done) => {
        const job = record(topic, payload, packet);
        if (!ack) return done(0);
        void Promise.resolve(ack(job, self)).then((code) => {
          job.code = code;
          done(code);
        });
      },
    }),
  } as IClientOptions);
  onCleanup(() => client.endAsync(true));
  // 3.1.1 has no reason codes: record on 'message'; 5.0 records in customHandleAcks (QoS 1/2).
  client.on('message', (topic, payload, packet) => {
    if (!v5 || packet.qos === 0) record(topic, payload, packet);
  });
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve());
    client.once('error', reject);
  });
  await client.subscribeAsync(filter, { qos });
  self = { client, id, jobs, done: () => jobs.filter((j) => j.code === 0).map((j) => j.payload) };
  return self;
}

/** Polls (on setImmediate, so fake timers do not stall it) until cond() holds; fails after ms of real time. */
export async function until(cond: () => boolean, what = 'condition', ms = 5000): Promise<void> {
  const deadline = performance.now() + ms;
  while (!cond()) {
    assert.ok(performance.now() <= deadline, `timed out waiting for ${what}`);
    await new Promise((r) => setImmediate(r));
  }
}

/** A QoS 1 round trip through the broker: whatever it sent this client before is in by then. */
export async function roundTrip(client: MqttClient): Promise<void> {
  await client.publishAsync('sync/noop', '', { qos: 1 });
}

/** Publishes n jobs `<prefix><i>` one after another (each awaits its PUBACK). */
export async function publishJobs(
  client: MqttClient,
  topic: (i: number) => string,
  n: number,
  opts: mqtt.IClientPublishOptions = { qos: 1 },
  prefix = 'job-',
): Promise<string[]> {
  const sent: string[] = [];
  for (let i = 0; i < n; i++) {
    await client.publishAsync(topic(i), `${prefix}${i}`, opts);
    sent.push(`${prefix}${i}`);
  }
  return sent;
}

/** Every payload across workers, sorted: for "each job exactly once" checks. */
export function allPayloads(workers: Worker[]): string[] {
  return workers.flatMap((w) => w.jobs.map((j) => j.payload)).sort();
}
