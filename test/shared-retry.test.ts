/**
 * Failed jobs: a 5.0 member that answers PUBACK or PUBREC with a reason code >= 0x80 gets the job
 * retried after an exponential backoff, on another member when there is one; after the last
 * attempt the job is published to `$DLQ/<group>/<topic>`. (MQTT 5.0 [MQTT-4.8.2-6] would discard
 * it instead; `retryMaxAttempts: 0` does that.) Backoff timing is driven by vitest's fake timers.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, type VitestUtils, vi } from 'vitest';
import { LevelPersistence } from '../persistence/level.js';
import { connect, onCleanup, startBroker } from './helpers.js';
import { collect } from './persistence.conformance.js';
import { roundTrip, until, type Worker, worker } from './shared-helpers.js';

/** Only the timers the retry module uses, and Date; sockets, setImmediate and nextTick stay real. */
const FAKE: Parameters<VitestUtils['useFakeTimers']>[0] = { toFake: ['setTimeout', 'clearTimeout', 'Date'] };

afterEach(() => {
  vi.useRealTimers();
});

/** Every job the workers were handed, in arrival order across them. */
function attempts(workers: Worker[]) {
  return workers.flatMap((w) => w.jobs.map((j) => ({ ...j, worker: w.id }))).sort((a, b) => a.at - b.at || 0);
}

describe('retry with backoff, then dead-letter', () => {
  it('negative PUBACK: retried on the other member after 1 s, then 2 s; $DLQ after 3 attempts', async () => {
    const { url } = await startBroker({ retryBase: 1000, retryFactor: 2, retryMaxAttempts: 3 });
    const fail = () => 0x80;
    const a = await worker(url, '$share/workers/jobs/#', { protocolVersion: 5, clientId: 'wa', ack: fail });
    const b = await worker(url, '$share/workers/jobs/#', { protocolVersion: 5, clientId: 'wb', ack: fail });
    const dlq = await worker(url, '$DLQ/workers/#', { protocolVersion: 5, clientId: 'dlq' });
    const pub = await connect(url, { protocolVersion: 5 });
    const seen = () => a.jobs.length + b.jobs.length;

    vi.useFakeTimers(FAKE);
    const t0 = Date.now();
    await pub.publishAsync('jobs/resize', 'image-42', {
      qos: 1,
      properties: { userProperties: { 'job-id': '42' }, contentType: 'text/plain' },
    });
    await until(() => seen() === 1, 'attempt 1');
    // The worker's negative PUBACK went out before this round trip: the broker has it.
    await Promise.all([roundTrip(a.client), roundTrip(b.client)]);

    // First retry after retryBase (1000 ms), not a millisecond earlier.
    await vi.advanceTimersByTimeAsync(999);
    await Promise.all([roundTrip(a.client), roundTrip(b.client)]);
    expect(seen()).toBe(1);
    await vi.advanceTimersByTimeAsync(1);
    await until(() => seen() === 2, 'attempt 2');
    await Promise.all([roundTrip(a.client), roundTrip(b.client)]);

    // Second retry after retryBase × retryFactor (2000 ms).
    await vi.advanceTimersByTimeAsync(1999);
    await Promise.all([roundTrip(a.client), roundTrip(b.client)]);
    expect(seen()).toBe(2);
    await vi.advanceTimersByTimeAsync(1);
    await until(() => seen() === 3, 'attempt 3');
    await until(() => dlq.jobs.length === 1, 'dead letter');

    const tries = attempts([a, b]);
    expect(tries.map((t) => t.at - t0)).toEqual([0, 1000, 3000]);
    // Each retry goes to the other member, and carries DUP.
    expect(tries.map((t) => t.worker)).toEqual(
      tries[0].worker === 'wa' ? ['wa', 'wb', 'wa'] : ['wb', 'wa', 'wb'],
    );
    expect(tries.map((t) => t.dup)).toEqual([false, true, true]);
    expect(tries.map((t) => t.code)).toEqual([0x80, 0x80, 0x80]);

    const dead = dlq.jobs[0];
    expect(dead.topic).toBe('$DLQ/workers/jobs/resize');
    expect(dead.payload).toBe('image-42');
    expect(dead.userProperties).toEqual({
      'job-id': '42',
      'original-topic': 'jobs/resize',
      attempts: '3',
      'reason-code': '0x80',
    });
    // Nothing more after the dead letter.
    await vi.advanceTimersByTimeAsync(60_000);
    await Promise.all([roundTrip(a.client), roundTrip(b.client)]);
    expect(seen()).toBe(3);
  });

  it('negative PUBREC (QoS 2) is retried too, and a later success completes the job', async () => {
    const { url, broker } = await startBroker({ retryBase: 500, retryMaxAttempts: 5 });
    let failures = 1;
    const w = await worker(url, '$share/q2/jobs', {
      protocolVersion: 5,
      qos: 2,
      ack: () => (failures-- > 0 ? 0x83 : 0),
    });
    const pub = await connect(url, { protocolVersion: 5 });
    const done: string[] = [];
    w.client.on('message', (_t, p) => done.push(p.toString()));
    vi.useFakeTimers(FAKE);
    await pub.publishAsync('jobs', 'exactly-once', { qos: 2 });
    await until(() => w.jobs.length === 1, 'attempt 1');
    await roundTrip(w.client);
    await vi.advanceTimersByTimeAsync(500);
    await until(() => done.length === 1, 'completed on the retry (the only member)');
    expect(w.jobs.map((j) => [j.code, j.dup])).toEqual([
      [0x83, false],
      [0, true],
    ]);
    await roundTrip(w.client);
    expect(await collect(broker.persistence.listGroupMessages())).toEqual([]);
  });

  it('retryMaxAttempts 0 discards a failed job, as MQTT 5.0 [MQTT-4.8.2-6] says', async () => {
    const { url, broker } = await startBroker({ retryMaxAttempts: 0 });
    const a = await worker(url, '$share/g/jobs', { protocolVersion: 5, ack: () => 0x80 });
    const b = await worker(url, '$share/g/jobs', { protocolVersion: 5 });
    const dlq = await worker(url, '$DLQ/#', { protocolVersion: 5 });
    const drops: string[] = [];
    broker.on('drop', (_id, msg, reason) => drops.push(`${msg.payload}: ${reason}`));
    const pub = await connect(url);
    await pub.publishAsync('jobs', 'once', { qos: 1 });
    await until(() => drops.length === 1, 'discard');
    expect(drops).toEqual(['once: shared delivery failed with 0x80']);
    vi.useFakeTimers(FAKE);
    await vi.advanceTimersByTimeAsync(60_000);
    await Promise.all([roundTrip(b.client), roundTrip(dlq.client)]);
    expect([a.jobs.length, b.jobs.length, dlq.jobs.length]).toEqual([1, 0, 0]);
  });

  it('a job in backoff survives a restart with its due time and attempt count (LevelDB)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'heron-retry-'));
    onCleanup(() => rm(dir, { recursive: true, force: true }));
    const opts = { retryBase: 60_000, retryFactor: 2, retryMaxAttempts: 3 };
    const first = await startBroker({ ...opts, persistence: new LevelPersistence({ dir }) });
    const w1 = await worker(first.url, '$share/workers/jobs', { protocolVersion: 5, ack: () => 0x80 });
    const pub = await connect(first.url, { protocolVersion: 5 });
    const failedAt = Date.now();
    await pub.publishAsync('jobs', 'survivor', { qos: 1 });
    await until(() => w1.jobs.length === 1, 'attempt 1');
    await roundTrip(w1.client);
    await first.broker.close();
    const [stored] = await collect(
      (async function* () {
        const p = new LevelPersistence({ dir });
        await p.open();
        try {
          yield* p.listGroupMessages();
        } finally {
          await p.close();
        }
      })(),
    );
    expect(stored.rec).toMatchObject({ attempts: 1, lastReason: 0x80, dup: true });
    expect(stored.rec.dueAt! - failedAt).toBeGreaterThanOrEqual(60_000);

    vi.useFakeTimers(FAKE);
    const second = await startBroker({ ...opts, persistence: new LevelPersistence({ dir }) });
    const w2 = await worker(second.url, '$share/workers/jobs', { protocolVersion: 5, ack: () => 0x80 });
    const dlq = await worker(second.url, '$DLQ/workers/#', { protocolVersion: 5 });
    await roundTrip(w2.client);
    expect(w2.jobs).toEqual([]); // still in backoff
    await vi.advanceTimersByTimeAsync(stored.rec.dueAt! - Date.now() - 1);
    await roundTrip(w2.client);
    expect(w2.jobs).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    await until(() => w2.jobs.length === 1, 'attempt 2 after the restart');
    expect(w2.jobs[0]).toMatchObject({ payload: 'survivor', dup: true });
    await roundTrip(w2.client);
    // Attempt 3 after 2 × 60 s, then the dead letter counts all three.
    await vi.advanceTimersByTimeAsync(120_000);
    await until(() => dlq.jobs.length === 1, 'dead letter');
    expect(dlq.jobs[0].userProperties).toMatchObject({ attempts: '3', 'reason-code': '0x80' });
  });
});
