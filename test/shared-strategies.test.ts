/**
 * Shared subscriptions (MQTT 5.0 section 4.8.2, and `$share/` / `$queue/` for 3.1.1 clients too):
 * each matching message goes to exactly one member of each group, chosen by the group's
 * strategy; ordinary subscribers still get their own copy; a backed-up group queue serves the
 * highest `priority` first.
 */
import { describe, expect, it } from 'vitest';
import { connect, RawClient, startBroker } from './helpers.js';
import { allPayloads, publishJobs, roundTrip, until, type Worker, worker } from './shared-helpers.js';
import { connectAck, Inbox, rawSubscribe } from './spec-helpers.js';

const sorted = (xs: string[]) => [...xs].sort();

describe('shared subscriptions: one member of each group per message', () => {
  it('round-robin: N equal workers each get total/N ± 1; a normal subscriber gets every message', async () => {
    const { url } = await startBroker();
    const workers: Worker[] = [];
    for (let i = 0; i < 4; i++) workers.push(await worker(url, '$share/rr/jobs/#'));
    const normal = await worker(url, 'jobs/#');
    const pub = await connect(url);
    const total = 1002;
    const sent: string[] = [];
    // Bursts of 100: pipelined, but never more than a worker's inflight window (100) in flight.
    for (let base = 0; base < total; base += 100) {
      const n = Math.min(100, total - base);
      const batch = Array.from({ length: n }, (_, k) => `job-${base + k}`);
      await Promise.all(batch.map((p, k) => pub.publishAsync(`jobs/${(base + k) % 7}`, p, { qos: 1 })));
      sent.push(...batch);
    }
    await until(() => allPayloads(workers).length === total && normal.jobs.length === total, 'deliveries');
    await Promise.all(workers.map((w) => roundTrip(w.client)));
    expect(allPayloads(workers)).toEqual(sorted(sent)); // each job exactly once
    for (const w of workers) {
      expect(Math.abs(w.jobs.length - total / 4)).toBeLessThanOrEqual(1);
    }
    expect(sorted(normal.jobs.map((j) => j.payload))).toEqual(sorted(sent));
  });

  it('$queue/<filter> is the shared group "$queue"; two groups on one filter each get every message', async () => {
    const { url } = await startBroker();
    const q = [await worker(url, '$queue/tasks/+'), await worker(url, '$queue/tasks/+')];
    const other = [await worker(url, '$share/audit/tasks/+'), await worker(url, '$share/audit/tasks/+')];
    const pub = await connect(url);
    const sent = await publishJobs(pub, (i) => `tasks/${i}`, 20);
    await until(() => allPayloads(q).length === 20 && allPayloads(other).length === 20, 'deliveries');
    expect(allPayloads(q)).toEqual(sorted(sent));
    expect(allPayloads(other)).toEqual(sorted(sent));
    expect(q[0].jobs.length).toBe(10);
  });

  it('mixes 3.1.1 and 5.0 members; each gets the message at its own granted QoS [MQTT-4.8.2-3]', async () => {
    const { url } = await startBroker();
    const v4 = await worker(url, '$share/mix/jobs/#', { protocolVersion: 4, qos: 0 });
    const v5 = await worker(url, '$share/mix/jobs/#', { protocolVersion: 5, qos: 1 });
    const pub = await connect(url, { protocolVersion: 5 });
    const qos: number[] = [];
    v4.client.on('message', (_t, _p, packet) => qos.push(packet.qos));
    const sent = await publishJobs(pub, (i) => `jobs/${i}`, 10, {
      qos: 1,
      properties: { userProperties: { origin: 'test' } },
    });
    await until(() => v4.jobs.length + v5.jobs.length === 10, 'deliveries');
    expect(allPayloads([v4, v5])).toEqual(sorted(sent));
    expect([v4.jobs.length, v5.jobs.length]).toEqual([5, 5]);
    expect(qos).toEqual([0, 0, 0, 0, 0]); // granted QoS 0
    expect(v5.jobs.every((j) => j.userProperties?.origin === 'test')).toBe(true);
  });

  it('does not send retained messages on a shared subscribe (5.0 section 4.8.2); a normal one does', async () => {
    const { url } = await startBroker();
    const pub = await connect(url);
    await pub.publishAsync('ret/state', 'retained', { qos: 1, retain: true });
    const shared = await connectAck(url, { protocolVersion: 5 });
    await shared.client.subscribeAsync('$share/g/ret/#', { qos: 1 });
    await pub.publishAsync('ret/marker', 'm', { qos: 1 });
    expect(Inbox.brief(await shared.inbox.until('ret/marker'))).toEqual(['ret/marker:m']);
    const normal = await connectAck(url, { protocolVersion: 5 });
    await normal.client.subscribeAsync('ret/#', { qos: 1 });
    expect(Inbox.brief(await normal.inbox.take(1))).toEqual(['ret/state:retained']);
  });
});

describe('subscribing', () => {
  it('No Local on a shared subscription is a Protocol Error (5.0) [MQTT-3.8.3-4]', async () => {
    const { port } = await startBroker();
    const raw = await RawClient.connected(port, 5);
    raw.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: '$share/g/x', qos: 1, nl: true }] });
    expect(await raw.next()).toMatchObject({ cmd: 'disconnect', reasonCode: 0x82 });
    expect(await raw.next()).toBeNull();
  });

  it('3.1.1 clients share too; a share name with a wildcard is refused [MQTT-4.8.2-2]', async () => {
    const { port } = await startBroker();
    const raw = await RawClient.connected(port, 4);
    const ack = await rawSubscribe(raw, [
      { topic: '$share/ok/x', qos: 1 },
      { topic: '$share/b+d/x', qos: 1 },
    ]);
    expect(ack.granted).toEqual([1, 0x80]);
  });
});

describe('strategies', () => {
  it('least-inflight: a worker that acknowledges late gets clearly fewer', async () => {
    const { url } = await startBroker({ shareStrategy: 'least-inflight' });
    const slow = await worker(url, '$share/li/jobs/#', {
      protocolVersion: 5,
      ack: () => new Promise<number>((r) => setTimeout(() => r(0), 40)),
    });
    const fast = [
      await worker(url, '$share/li/jobs/#', { protocolVersion: 5 }),
      await worker(url, '$share/li/jobs/#', { protocolVersion: 5 }),
    ];
    const pub = await connect(url);
    const total = 150;
    const sent = await publishJobs(pub, () => 'jobs/x', total);
    await until(() => allPayloads([slow, ...fast]).length === total, 'deliveries', 15000);
    expect(allPayloads([slow, ...fast])).toEqual(sorted(sent));
    // Round-robin would give each a third (50); the slow one gets far fewer.
    expect(slow.jobs.length).toBeLessThan(total / 3 / 2);
    for (const f of fast) expect(f.jobs.length).toBeGreaterThan(slow.jobs.length);
  });

  it('hash-topic (per-group override): each topic always to the same member, in order', async () => {
    const { url } = await startBroker({ shareGroups: { parts: { strategy: 'hash-topic' } } });
    const workers: Worker[] = [];
    for (let i = 0; i < 3; i++) workers.push(await worker(url, '$share/parts/orders/+'));
    // The other groups keep the broker-wide strategy (round-robin).
    const rr = [await worker(url, '$share/rr/orders/+'), await worker(url, '$share/rr/orders/+')];
    const pub = await connect(url);
    const topics = Array.from({ length: 12 }, (_, i) => `orders/${i}`);
    for (let round = 0; round < 5; round++) {
      for (const t of topics) await pub.publishAsync(t, `${t}#${round}`, { qos: 1 });
    }
    await until(() => allPayloads(workers).length === 60 && allPayloads(rr).length === 60, 'deliveries');
    const owner = new Map<string, string>();
    for (const w of workers) {
      for (const j of w.jobs) {
        expect(owner.get(j.topic) ?? w.id).toBe(w.id);
        owner.set(j.topic, w.id);
      }
      // Per-topic order holds.
      for (const t of topics) {
        const mine = w.jobs.filter((j) => j.topic === t).map((j) => j.payload);
        if (mine.length) expect(mine).toEqual([0, 1, 2, 3, 4].map((r) => `${t}#${r}`));
      }
    }
    expect(new Set(owner.values()).size).toBeGreaterThan(1); // spread over members
    expect([rr[0].jobs.length, rr[1].jobs.length]).toEqual([30, 30]);
  });

  it('hash-key: the same partition-key always to the same member, in order', async () => {
    const { url } = await startBroker({ shareStrategy: 'hash-key' });
    const workers: Worker[] = [];
    for (let i = 0; i < 3; i++) workers.push(await worker(url, '$share/k/payments', { protocolVersion: 5 }));
    const pub = await connect(url, { protocolVersion: 5 });
    const keys = Array.from({ length: 10 }, (_, i) => `customer-${i}`);
    for (let n = 0; n < 6; n++) {
      for (const key of keys) {
        await pub.publishAsync('payments', `${key}#${n}`, {
          qos: 1,
          properties: { userProperties: { 'partition-key': key } },
        });
      }
    }
    await until(() => allPayloads(workers).length === 60, 'deliveries');
    const owner = new Map<string, string>();
    for (const w of workers) {
      for (const j of w.jobs) {
        const key = j.payload.split('#')[0];
        expect(owner.get(key) ?? w.id).toBe(w.id);
        owner.set(key, w.id);
      }
      for (const key of keys) {
        const mine = w.jobs.filter((j) => j.payload.startsWith(`${key}#`)).map((j) => j.payload);
        if (mine.length) expect(mine).toEqual([0, 1, 2, 3, 4, 5].map((n) => `${key}#${n}`));
      }
    }
    expect(new Set(owner.values()).size).toBeGreaterThan(1);
  });

  it('random: every message to exactly one member', async () => {
    const { url } = await startBroker({ shareStrategy: 'random' });
    const workers = [await worker(url, '$share/r/jobs/#'), await worker(url, '$share/r/jobs/#')];
    const pub = await connect(url);
    const sent = await publishJobs(pub, (i) => `jobs/${i}`, 40);
    await until(() => allPayloads(workers).length === 40, 'deliveries');
    expect(allPayloads(workers)).toEqual(sorted(sent));
  });
});

describe('group queue', () => {
  it('serves a backed-up queue highest priority first, FIFO within a priority', async () => {
    // An inflight window of 1: while the only member holds one job, the rest wait in the group.
    const { url, broker } = await startBroker({ maxInflight: 1 });
    let release!: (code: number) => void;
    const held = new Promise<number>((r) => {
      release = r;
    });
    let first = true;
    const w = await worker(url, '$share/prio/jobs', {
      protocolVersion: 5,
      ack: () => {
        if (!first) return 0;
        first = false;
        return held;
      },
    });
    const pub = await connect(url, { protocolVersion: 5 });
    await pub.publishAsync('jobs', 'first', { qos: 1 });
    await until(() => w.jobs.length === 1, 'first job');
    const jobs: [string, string | undefined][] = [
      ['low-1', '1'],
      ['high-a', '9'],
      ['mid-a', '4'],
      ['high-b', '9'],
      ['default', undefined],
      ['zero', '0'],
      ['bad', 'x'],
      ['mid-b', '6'],
    ];
    for (const [payload, priority] of jobs) {
      await pub.publishAsync('jobs', payload, {
        qos: 1,
        ...(priority !== undefined && { properties: { userProperties: { priority } } }),
      });
    }
    const group = [...broker.shares.all()].find((g) => g.id === 'prio/jobs')!;
    expect(group.waiting.size).toBe(jobs.length);
    release(0);
    await until(() => w.jobs.length === jobs.length + 1, 'all jobs');
    expect(w.jobs.map((j) => j.payload)).toEqual([
      'first',
      'high-a',
      'high-b',
      'mid-b',
      'mid-a',
      'default',
      'bad',
      'low-1',
      'zero',
    ]);
  });

  it('is bounded by shareQueueMax: under drop-new, new messages beyond it are dropped and reported', async () => {
    const { url, broker } = await startBroker({ shareQueueMax: 3, queueOverflow: 'drop-new' });
    // A persistent member that is offline: the group holds messages for it.
    const w = await worker(url, '$share/b/jobs', {
      protocolVersion: 5,
      properties: { sessionExpiryInterval: 60 },
    });
    await w.client.endAsync();
    const drops: string[] = [];
    broker.on('drop', (_id, msg, reason) => drops.push(`${msg.payload}:${reason}`));
    const pub = await connect(url);
    await publishJobs(pub, () => 'jobs', 5);
    expect(drops).toEqual(['job-3:share queue full', 'job-4:share queue full']);
  });
});
