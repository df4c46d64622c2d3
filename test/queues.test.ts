/**
 * Declared queues (README "Job queues"): a durable shared group that exists without members holds
 * matching QoS 1/2 jobs from start on, for MQTT members (push) and pull consumers (the queue
 * engine, `broker.queues` / `api.queues`), each job with one consumer at a time.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { type BrokerOptions, createBroker, definePlugin, type PluginApi } from '../broker/index.js';
import aclFilePlugin from '../plugins/acl-file/index.js';
import { connect, onCleanup, RawClient, startBroker } from './helpers.js';
import { allPayloads, publishJobs, until, worker } from './shared-helpers.js';
import { publishPacket } from './spec-helpers.js';

/** A raw 5.0 publisher that returns each QoS 1 PUBACK's reason code. */
async function rawPublisher(port: number) {
  const c = await RawClient.connected(port, 5);
  let id = 1;
  return async (topic: string, payload: string) => {
    c.send(publishPacket(topic, payload, { qos: 1, messageId: id++ }));
    return ((await c.nextOf('puback')) as { reasonCode?: number }).reasonCode ?? 0;
  };
}

const JOBS = { name: 'jobs', filter: 'jobs/#' };

describe('declared queues: jobs wait for workers', () => {
  it('holds jobs published before any worker and hands them to the first MQTT worker', async () => {
    const { url, port, broker } = await startBroker({ queues: [JOBS] });
    const pub = await connect(url, { protocolVersion: 5 });
    // A queue that exists without members: the publish matches it (no 0x10 No matching subscribers).
    expect(await (await rawPublisher(port))('jobs/a', 'job-0')).toBe(0);
    await publishJobs(pub, (i) => `jobs/${i}`, 4, { qos: 1 }, 'job-');
    expect(broker.queues.stats('jobs')).toMatchObject({ waiting: 5, pulled: 0, members: 0 });
    const w = await worker(url, '$share/jobs/jobs/#', { protocolVersion: 5 });
    await until(() => w.jobs.length === 5, 'all 5 jobs');
    expect(w.done().sort()).toEqual(['job-0', 'job-0', 'job-1', 'job-2', 'job-3'].sort());
    await until(() => broker.queues.stats('jobs')!.waiting === 0, 'queue empty');
    // QoS 0 is never stored: with no member it goes nowhere.
    await w.client.endAsync();
    await pub.publishAsync('jobs/x', 'qos0', { qos: 0 });
    await pub.publishAsync('jobs/y', 'qos1', { qos: 1 });
    expect(broker.queues.peek('jobs').map((m) => m.payload.toString())).toEqual(['qos1']);
  });

  it("an undeclared group keeps today's behaviour: no member, no match", async () => {
    const { port, broker } = await startBroker({ queues: [JOBS] });
    expect(await (await rawPublisher(port))('other/a', 'x')).toBe(0x10);
    expect(broker.queues.list().map((q) => q.name)).toEqual(['jobs']);
  });

  it('pull: leases jobs with receipts; ack ends them, each job to one consumer', async () => {
    const { url, broker } = await startBroker({ queues: [JOBS] });
    const pub = await connect(url, { protocolVersion: 5 });
    await pub.publishAsync('jobs/1', 'one', {
      qos: 1,
      properties: { userProperties: { priority: '7', 'job-id': '1' }, contentType: 'text/plain' },
    });
    await pub.publishAsync('jobs/2', 'two', { qos: 1 });
    const before = Date.now();
    const got = await broker.queues.pull('jobs', { max: 10, visibilityMs: 60_000 });
    expect(got.map((m) => m.payload.toString())).toEqual(['one', 'two']);
    expect(got[0]).toMatchObject({ topic: 'jobs/1', attempts: 1, priority: 7, qos: 1 });
    expect(got[0].properties?.userProperties).toEqual({ priority: '7', 'job-id': '1' });
    expect(got[0].publishedAt).toBeLessThanOrEqual(before + 5);
    expect(got[0].publishedAt).toBeGreaterThan(before - 5000);
    // Leased: not pulled again, not pushed to a member that joins now.
    expect(await broker.queues.pull('jobs', { max: 10 })).toEqual([]);
    const w = await worker(url, '$share/jobs/jobs/#', { protocolVersion: 5 });
    expect(broker.queues.stats('jobs')).toMatchObject({ waiting: 0, pulled: 2, members: 1 });
    expect(broker.queues.ack('jobs', [got[0].receipt, 'bogus'])).toEqual({ unknown: ['bogus'] });
    // A receipt acknowledges once.
    expect(broker.queues.ack('jobs', [got[0].receipt]).unknown).toEqual([got[0].receipt]);
    expect(broker.queues.ack('jobs', [got[1].receipt]).unknown).toEqual([]);
    expect(broker.queues.stats('jobs')).toMatchObject({ waiting: 0, pulled: 0, bytes: 0, oldestAgeMs: null });
    expect(w.jobs).toEqual([]);
    await expect(broker.queues.pull('nope')).rejects.toThrow(RangeError);
    await expect(broker.queues.pull('jobs', { max: 101 })).rejects.toThrow(RangeError);
  });

  it('two MQTT workers and one puller: every job done exactly once', async () => {
    const { url, broker } = await startBroker({ queues: [JOBS] });
    const a = await worker(url, '$share/jobs/jobs/#', { protocolVersion: 5, clientId: 'wa' });
    const b = await worker(url, '$share/jobs/jobs/#', { protocolVersion: 4, clientId: 'wb' });
    const pulled: string[] = [];
    let stop = false;
    const puller = (async () => {
      while (!stop) {
        const got = await broker.queues.pull('jobs', { max: 10, waitMs: 200 });
        for (const m of got) pulled.push(m.payload.toString());
        broker.queues.ack(
          'jobs',
          got.map((m) => m.receipt),
        );
      }
    })();
    const pubs = await Promise.all([1, 2, 3].map(() => connect(url, { protocolVersion: 5 })));
    const sent = (
      await Promise.all(
        pubs.map((p, k) => publishJobs(p, (i) => `jobs/${k}/${i}`, 200, { qos: 1 }, `p${k}-`)),
      )
    ).flat();
    await until(() => allPayloads([a, b]).length + pulled.length === sent.length, 'every job', 10_000);
    stop = true;
    await puller;
    const done = [...allPayloads([a, b]), ...pulled].sort();
    expect(done).toEqual([...sent].sort());
    expect(new Set(done).size).toBe(sent.length);
    expect(broker.queues.stats('jobs')).toMatchObject({ waiting: 0, pulled: 0, delayed: 0 });
  });

  it('a plugin pulls through api.queues (the public plugin API)', async () => {
    let api!: PluginApi;
    const plugin = definePlugin({
      name: 'puller',
      setup(a) {
        api = a;
      },
    });
    const { url } = await startBroker({ queues: [JOBS], plugins: [plugin] });
    expect(api.queues.list().map((q) => q.name)).toEqual(['jobs']);
    const waiting = api.queues.wait('jobs', 5000);
    const pub = await connect(url, { protocolVersion: 5 });
    await pub.publishAsync('jobs/p', 'from mqtt', { qos: 1 });
    expect(await waiting).toBe(true);
    const [m] = await api.queues.pull('jobs');
    expect(m.payload.toString()).toBe('from mqtt');
    expect(api.queues.ack('jobs', [m.receipt]).unknown).toEqual([]);
    expect(await api.queues.wait('jobs', 10)).toBe(false);
  });

  it('a 5.0 worker with Receive Maximum 1 gets the next job only after acknowledging the last', async () => {
    const { url } = await startBroker({ queues: [JOBS] });
    const pub = await connect(url, { protocolVersion: 5 });
    await publishJobs(pub, (i) => `jobs/${i}`, 3);
    const pending: ((code: number) => void)[] = [];
    const w = await worker(url, '$share/jobs/jobs/#', {
      protocolVersion: 5,
      properties: { receiveMaximum: 1 },
      ack: () => new Promise<number>((resolve) => pending.push(resolve)),
    });
    await until(() => w.jobs.length === 1, 'first job');
    // Nothing more is pushed while it holds one [MQTT-3.3.4-9]: a round trip on another client proves the broker idles.
    await pub.publishAsync('sync/noop', '', { qos: 1 });
    await pub.publishAsync('sync/noop', '', { qos: 1 });
    expect(w.jobs.length).toBe(1);
    pending.shift()!(0);
    await until(() => w.jobs.length === 2, 'second job after the ack');
    pending.shift()!(0);
    await until(() => w.jobs.length === 3, 'third job');
    pending.shift()!(0);
    expect(w.jobs.map((j) => j.payload)).toEqual(['job-0', 'job-1', 'job-2']);
  });
});

describe('declared queues: redelivery, retries and dead letters', () => {
  it('a job not acknowledged within its visibility timeout is redelivered with attempts + 1', async () => {
    const { url, broker } = await startBroker({ queues: [JOBS] });
    const pub = await connect(url, { protocolVersion: 5 });
    await pub.publishAsync('jobs/1', 'lost', { qos: 1 });
    const [first] = await broker.queues.pull('jobs', { visibilityMs: 100 });
    expect(first.attempts).toBe(1);
    // The puller "died": after 100 ms the job is visible again, to a long poll.
    const t0 = Date.now();
    const [again] = await broker.queues.pull('jobs', { waitMs: 5000, visibilityMs: 60_000 });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(50);
    expect(again).toMatchObject({ topic: 'jobs/1', attempts: 2 });
    expect(again.receipt).not.toBe(first.receipt);
    // The old receipt no longer acknowledges anything.
    expect(broker.queues.ack('jobs', [first.receipt]).unknown).toEqual([first.receipt]);
    // Extended, it is not redelivered when its first deadline passes; redelivered to a member it goes by MQTT.
    expect(broker.queues.extend('jobs', [again.receipt], 100).unknown).toEqual([]);
    const w = await worker(url, '$share/jobs/jobs/#', { protocolVersion: 5 });
    await until(() => w.jobs.length === 1, 'redelivered to the MQTT member');
    expect(w.jobs[0]).toMatchObject({ payload: 'lost', dup: true });
    expect(broker.queues.stats('jobs')).toMatchObject({ pulled: 0, waiting: 0 });
  });

  it('nack with a delay: redelivered after the delay, counted as an attempt', async () => {
    const { url, broker } = await startBroker({ queues: [JOBS] });
    const pub = await connect(url, { protocolVersion: 5 });
    await pub.publishAsync('jobs/1', 'retry-me', { qos: 1 });
    const [m] = await broker.queues.pull('jobs');
    broker.queues.nack('jobs', [m.receipt], 300);
    expect(broker.queues.stats('jobs')).toMatchObject({ delayed: 1, pulled: 0, waiting: 0 });
    expect(await broker.queues.pull('jobs')).toEqual([]);
    const t0 = Date.now();
    const [again] = await broker.queues.pull('jobs', { waitMs: 5000 });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250);
    expect(again).toMatchObject({ payload: Buffer.from('retry-me'), attempts: 2 });
    // nack without a delay: back at once.
    broker.queues.nack('jobs', [again.receipt]);
    expect((await broker.queues.pull('jobs'))[0].attempts).toBe(3);
  });

  it('past maxAttempts a pulled job goes to $DLQ with the same user properties as the MQTT path', async () => {
    const dead = { name: 'dead', filter: '$DLQ/jobs/#' };
    const { url, broker } = await startBroker({ queues: [{ ...JOBS, maxAttempts: 2 }, dead] });
    const dlq = await worker(url, '$DLQ/jobs/#', { protocolVersion: 5 });
    const pub = await connect(url, { protocolVersion: 5 });
    await pub.publishAsync('jobs/resize', 'image-42', {
      qos: 1,
      properties: { userProperties: { 'job-id': '42' } },
    });
    const [m1] = await broker.queues.pull('jobs');
    broker.queues.nack('jobs', [m1.receipt]);
    const [m2] = await broker.queues.pull('jobs', { visibilityMs: 50 });
    expect(m2.attempts).toBe(2);
    // The second attempt times out: the job's attempts are used up.
    await until(() => dlq.jobs.length === 1, 'dead letter', 5000);
    expect(dlq.jobs[0].topic).toBe('$DLQ/jobs/jobs/resize');
    expect(dlq.jobs[0].userProperties).toEqual({
      'job-id': '42',
      'original-topic': 'jobs/resize',
      attempts: '2',
      'reason-code': '0x80',
    });
    expect(broker.queues.stats('jobs')).toMatchObject({ waiting: 0, pulled: 0, deadLettered: 1 });
    // A queue declared on $DLQ/jobs/# kept it; dlq-replay puts it back, attempts reset.
    expect(broker.queues.stats('dead')!.waiting).toBe(1);
    expect(broker.queues.replayDeadLetters('jobs')).toBe(1);
    const [back] = await broker.queues.pull('jobs');
    expect(back).toMatchObject({ topic: 'jobs/resize', attempts: 1 });
    expect(back.properties?.userProperties).toEqual({ 'job-id': '42' });
    expect(broker.queues.stats('dead')!.waiting).toBe(0);
  });

  it("an MQTT member failing a job uses the queue's maxAttempts", async () => {
    const { url } = await startBroker({ queues: [{ ...JOBS, maxAttempts: 1 }] });
    const dlq = await worker(url, '$DLQ/jobs/#', { protocolVersion: 5 });
    const w = await worker(url, '$share/jobs/jobs/#', { protocolVersion: 5, ack: () => 0x80 });
    const pub = await connect(url, { protocolVersion: 5 });
    await pub.publishAsync('jobs/x', 'bad', { qos: 1 });
    await until(() => dlq.jobs.length === 1, 'dead letter');
    expect(w.jobs.length).toBe(1);
    expect(dlq.jobs[0].userProperties).toMatchObject({ attempts: '1', 'reason-code': '0x80' });
  });

  it('long poll returns as soon as a job arrives', async () => {
    const { url, broker } = await startBroker({ queues: [JOBS] });
    const pub = await connect(url, { protocolVersion: 5 });
    const t0 = Date.now();
    const polling = broker.queues.pull('jobs', { waitMs: 20_000, max: 5 });
    await new Promise((r) => setTimeout(r, 50));
    await pub.publishAsync('jobs/now', 'hello', { qos: 1 });
    const got = await polling;
    expect(got.map((m) => m.payload.toString())).toEqual(['hello']);
    expect(Date.now() - t0).toBeLessThan(5000);
    // An empty poll ends after waitMs with nothing; an aborted one at once.
    const t1 = Date.now();
    expect(await broker.queues.pull('jobs', { waitMs: 100 })).toEqual([]);
    expect(Date.now() - t1).toBeGreaterThanOrEqual(90);
    const ac = new AbortController();
    const aborted = broker.queues.pull('jobs', { waitMs: 20_000, signal: ac.signal });
    ac.abort();
    expect(await aborted).toEqual([]);
    // Closing the broker ends a long poll at once.
    const t2 = Date.now();
    const pending = broker.queues.pull('jobs', { waitMs: 20_000 });
    await broker.close();
    expect(await pending).toEqual([]);
    expect(Date.now() - t2).toBeLessThan(5000);
  });
});

describe('declared queues: MQTT permissions', () => {
  it('an ACL file lets a worker join one queue only: the other is refused at SUBSCRIBE and gets it nothing', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'heron-queues-acl-'));
    onCleanup(() => rm(dir, { recursive: true, force: true }));
    const file = join(dir, 'acl');
    // Shared subscriptions are judged on their filter: reading jobs/# is joining the jobs queue.
    await writeFile(
      file,
      'user alice\ntopic read jobs/#\ntopic write sync/#\n\nuser producer\ntopic write #\n',
    );
    const { url, broker } = await startBroker({
      plugins: [[aclFilePlugin, { file }]],
      queues: [JOBS, { name: 'mail', filter: 'mail/#' }],
    });
    const pub = await connect(url, { protocolVersion: 5, username: 'producer' });
    await pub.publishAsync('jobs/1', 'a job', { qos: 1 });
    await pub.publishAsync('mail/1', 'a mail', { qos: 1 });
    const alice = await connect(url, { protocolVersion: 5, username: 'alice' });
    const jobs = await alice.subscribeAsync('$share/jobs/jobs/#', { qos: 1 });
    expect(jobs[0].qos).toBe(1);
    // SUBACK 0x87 Not authorized.
    await expect(alice.subscribeAsync('$share/mail/mail/#', { qos: 1 })).rejects.toThrow(/Not authorized/);
    await until(() => broker.queues.stats('jobs')!.waiting === 0, 'jobs taken by alice');
    expect(broker.queues.stats('mail')).toMatchObject({ waiting: 1, members: 0 });
  });
});

describe('declared queues: bounds and overflow', () => {
  it('a full queue with overflow reject answers a 5.0 producer 0x97; a 3.1.1 one waits for room', async () => {
    const { url, port, broker } = await startBroker({
      queues: [{ ...JOBS, maxMessages: 3, overflow: 'reject' }],
    });
    const send = await rawPublisher(port);
    for (let i = 0; i < 3; i++) expect(await send(`jobs/${i}`, `j${i}`)).toBe(0);
    // Quota exceeded: not stored, routed to no one [MQTT-3.3.4-7 allows 0x97].
    expect(await send('jobs/3', 'j3')).toBe(0x97);
    expect(broker.stats.publishesRejected).toBe(1);
    expect(broker.queues.stats('jobs')!.waiting).toBe(3);
    // Taking one makes room again.
    const [m] = await broker.queues.pull('jobs');
    broker.queues.ack('jobs', [m.receipt]);
    expect(await send('jobs/4', 'j4')).toBe(0);
    // 3.1.1 cannot be told: it is held back until the queue is below 3/4 of its bound.
    const old = await connect(url, { protocolVersion: 4 });
    let acked = false;
    const p = old.publishAsync('jobs/5', 'j5', { qos: 1 }).then(() => {
      acked = true;
    });
    expect(await send('sync/noop', '')).toBe(0x10);
    expect(acked).toBe(false);
    const got = await broker.queues.pull('jobs', { max: 2 });
    broker.queues.ack(
      'jobs',
      got.map((x) => x.receipt),
    );
    await p;
    expect(acked).toBe(true);
  });

  it('bounded in bytes; drop-oldest drops the oldest waiting job for the new one', async () => {
    const { url, broker } = await startBroker({
      queues: [{ ...JOBS, maxMessages: 100, maxBytes: 3 * 16, overflow: 'drop-oldest' }],
    });
    const drops: string[] = [];
    broker.on('drop', (_c, m) => drops.push(m.payload.toString()));
    const pub = await connect(url, { protocolVersion: 5 });
    // topic jobs/N (6 bytes) + payload 10 bytes = 16 bytes each.
    for (let i = 0; i < 5; i++) await pub.publishAsync(`jobs/${i}`, `payload-0${i}`, { qos: 1 });
    expect(drops).toEqual(['payload-00', 'payload-01']);
    expect(broker.queues.peek('jobs').map((m) => m.payload.toString())).toEqual([
      'payload-02',
      'payload-03',
      'payload-04',
    ]);
    expect(broker.queues.stats('jobs')!.bytes).toBe(48);
    expect(broker.queues.purge('jobs')).toBe(3);
    expect(broker.queues.stats('jobs')).toMatchObject({ waiting: 0, bytes: 0 });
  });

  it('bad declarations fail createBroker', () => {
    const bad: BrokerOptions['queues'][] = [
      [{ name: 'a/b', filter: 'x' }],
      [{ name: 'a', filter: 'x/#/y' }],
      [JOBS, JOBS],
      [{ ...JOBS, overflow: 'lose' as never }],
      [{ ...JOBS, maxMessages: 0 }],
    ];
    for (const queues of bad) expect(() => createBroker({ queues })).toThrow(TypeError);
  });
});
