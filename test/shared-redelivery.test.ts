/**
 * Redelivery in shared groups (MQTT 5.0 section 4.8.2): when a member's connection ends, the QoS 1
 * messages it had not acknowledged (and those queued for it) go to another member at once, with
 * DUP set; QoS 2 messages already sent stay with that member [MQTT-4.8.2-4] and go to no one else
 * [MQTT-4.8.2-5]. With no member online, messages wait in the group queue (persisted).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { LevelPersistence } from '../persistence/level.js';
import type { Persistence } from '../persistence/types.js';
import { connect, onCleanup, RawClient, startBroker } from './helpers.js';
import { collect } from './persistence.conformance.js';
import { allPayloads, publishJobs, roundTrip, until, worker } from './shared-helpers.js';
import { rawPublishes, rawSubscribe } from './spec-helpers.js';

const sorted = (xs: string[]) => [...xs].sort();
const held = async (p: Persistence) => (await collect(p.listGroupMessages())).length;

describe('redelivery when a member goes away', () => {
  it('QoS 1: a crashed clean member’s unacknowledged jobs go to the others with DUP — 0 lost', async () => {
    const { url, port, broker } = await startBroker({ maxInflight: 5 });
    const a = await worker(url, '$share/w/jobs/#');
    const b = await worker(url, '$share/w/jobs/#');
    // A member that never acknowledges: it holds its whole window (5).
    const victim = await RawClient.connected(port, 5);
    await rawSubscribe(victim, [{ topic: '$share/w/jobs/#', qos: 1 }]);
    const pub = await connect(url);
    const sent = await publishJobs(pub, (i) => `jobs/${i}`, 30);
    const stuck = (await rawPublishes(victim, 5)).map((p) => p.payload.toString());
    await until(() => a.jobs.length + b.jobs.length === 25, 'first deliveries');

    victim.socket.destroy(); // a crash: no DISCONNECT
    await until(() => a.jobs.length + b.jobs.length === 30, 'redelivery');
    expect(allPayloads([a, b])).toEqual(sorted(sent)); // nothing lost, nothing twice
    const redelivered = [...a.jobs, ...b.jobs].filter((j) => stuck.includes(j.payload));
    expect(redelivered.map((j) => j.dup)).toEqual([true, true, true, true, true]);
    await until(() => broker.sessions.size === 3, 'victim session ended');
    await Promise.all([roundTrip(a.client), roundTrip(b.client)]); // their PUBACKs are in
    expect(await held(broker.persistence)).toBe(0);
  });

  it('QoS 1: a persistent member’s jobs move when its connection drops, not when it returns', async () => {
    const { url, port } = await startBroker({ maxInflight: 3 });
    const a = await worker(url, '$share/w/jobs', { protocolVersion: 5 });
    const connectVictim = () =>
      RawClient.connected(port, 5, {
        clientId: 'victim',
        clean: false,
        properties: { sessionExpiryInterval: 300 },
      });
    const victim = await connectVictim();
    await rawSubscribe(victim, [{ topic: '$share/w/jobs', qos: 1 }]);
    const pub = await connect(url);
    await publishJobs(pub, () => 'jobs', 6);
    await rawPublishes(victim, 3); // never acknowledged
    await until(() => a.jobs.length === 3, 'deliveries');
    victim.socket.destroy();
    await until(() => a.jobs.length === 6, 'redelivery');
    expect(a.jobs.slice(3).every((j) => j.dup)).toBe(true);

    // Back with its session: nothing of the moved jobs is resent; it takes new ones again.
    const back = await connectVictim();
    await publishJobs(pub, () => 'jobs', 4, { qos: 1 }, 'new-');
    const got = (await rawPublishes(back, 2)).map((p) => p.payload.toString());
    expect(got.every((p) => p.startsWith('new-'))).toBe(true);
  });

  it('QoS 2: jobs sent to a member whose session ends go to no one else [MQTT-4.8.2-5] — 0 duplicates', async () => {
    const { url, port, broker } = await startBroker({ maxInflight: 3 });
    const a = await worker(url, '$share/q2/jobs', { qos: 2 });
    const b = await worker(url, '$share/q2/jobs', { qos: 2 });
    const victim = await RawClient.connected(port, 5);
    await rawSubscribe(victim, [{ topic: '$share/q2/jobs', qos: 2 }]);
    const drops: string[] = [];
    broker.on('drop', (_id, msg, reason) => drops.push(`${msg.payload}: ${reason}`));
    const pub = await connect(url);
    const sent = await publishJobs(pub, () => 'jobs', 20, { qos: 2 });
    const stuck = (await rawPublishes(victim, 3)).map((p) => p.payload.toString()); // never PUBREC'd
    victim.socket.destroy();
    await until(() => drops.length === 3, 'discards');
    await publishJobs(pub, () => 'jobs', 4, { qos: 2 }, 'late-');
    await until(() => a.jobs.length + b.jobs.length === 21, 'deliveries');
    const others = allPayloads([a, b]);
    expect(new Set(others).size).toBe(others.length);
    expect(others.filter((p) => stuck.includes(p))).toEqual([]);
    expect(sorted([...others, ...stuck])).toEqual(sorted([...sent, 'late-0', 'late-1', 'late-2', 'late-3']));
    expect(drops.map((d) => d.split(': ')[1])).toEqual(
      Array(3).fill('session ended during a shared QoS 2 delivery'),
    );
    expect(await held(broker.persistence)).toBe(0);
  });

  it('QoS 2: delivery to a member that reconnects is completed with it [MQTT-4.8.2-4]', async () => {
    const { url, port, broker } = await startBroker({ maxInflight: 2 });
    const a = await worker(url, '$share/q2/jobs', { qos: 2 });
    const connectV = () =>
      RawClient.connected(port, 5, {
        clientId: 'v2',
        clean: false,
        properties: { sessionExpiryInterval: 300 },
      });
    const victim = await connectV();
    await rawSubscribe(victim, [{ topic: '$share/q2/jobs', qos: 2 }]);
    const pub = await connect(url);
    await publishJobs(pub, () => 'jobs', 4, { qos: 2 });
    const first = await rawPublishes(victim, 2);
    victim.socket.destroy();
    await publishJobs(pub, () => 'jobs', 3, { qos: 2 }, 'more-');
    await until(() => a.jobs.length === 5, 'deliveries to the other member');
    await roundTrip(a.client);
    expect(a.jobs.map((j) => j.payload)).not.toContain(first[0].payload.toString());

    const back = await connectV();
    const again = await rawPublishes(back, 2);
    expect(again.map((p) => [p.messageId, p.payload.toString(), p.dup])).toEqual(
      first.map((p) => [p.messageId, p.payload.toString(), true]),
    );
    for (const p of again) {
      back.send({ cmd: 'pubrec', messageId: p.messageId });
      expect(await back.nextOf('pubrel')).toMatchObject({ messageId: p.messageId });
      back.send({ cmd: 'pubcomp', messageId: p.messageId });
    }
    await until(() => a.jobs.length === 5, 'nothing more');
    await until(() => broker.sessions.get('v2')?.inflight.size === 0, 'completed');
    expect(await held(broker.persistence)).toBe(0);
  });
});

describe('no member online', () => {
  it('messages wait in the group queue until a member connects, in order', async () => {
    const { url, broker } = await startBroker();
    const opts = {
      protocolVersion: 5 as const,
      clientId: 'p1',
      clean: false,
      properties: { sessionExpiryInterval: 300 },
    };
    const p = await worker(url, '$share/wait/jobs', opts);
    await p.client.endAsync();
    const pub = await connect(url);
    const sent = await publishJobs(pub, () => 'jobs', 5);
    expect(await held(broker.persistence)).toBe(5);
    const again = await worker(url, '$share/wait/jobs', opts);
    await until(() => again.jobs.length === 5, 'waiting jobs');
    expect(again.jobs.map((j) => j.payload)).toEqual(sent);
    expect(again.jobs.every((j) => !j.dup)).toBe(true);
  });

  it('jobs held by the last member stay with the group until the next subscriber', async () => {
    const { url, port, broker } = await startBroker();
    const only = await RawClient.connected(port, 5);
    await rawSubscribe(only, [{ topic: '$share/last/jobs', qos: 1 }]);
    const pub = await connect(url);
    const sent = await publishJobs(pub, () => 'jobs', 3);
    await rawPublishes(only, 3); // never acknowledged
    only.socket.destroy();
    await until(() => broker.sessions.size === 1, 'session ended');
    expect(broker.router.size).toBe(0); // the group left the topic tree with its last member
    const next = await worker(url, '$share/last/jobs');
    await until(() => next.jobs.length === 3, 'held jobs');
    expect(next.jobs.map((j) => [j.payload, j.dup])).toEqual(sent.map((p) => [p, true]));
  });

  it('the group queue survives a restart (LevelDB)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'heron-shared-'));
    onCleanup(() => rm(dir, { recursive: true, force: true }));
    const opts = {
      protocolVersion: 5 as const,
      clientId: 'p2',
      clean: false,
      properties: { sessionExpiryInterval: 300 },
    };
    const first = await startBroker({ persistence: new LevelPersistence({ dir }) });
    const p = await worker(first.url, '$share/keep/jobs', opts);
    await p.client.endAsync();
    const pub = await connect(first.url);
    const sent = await publishJobs(pub, () => 'jobs', 3);
    await pub.endAsync();
    await first.broker.close();

    const second = await startBroker({ persistence: new LevelPersistence({ dir }) });
    const again = await worker(second.url, '$share/keep/jobs', opts);
    await until(() => again.jobs.length === 3, 'restored jobs');
    expect(again.jobs.map((j) => j.payload)).toEqual(sent);
    await roundTrip(again.client);
    await new Promise<void>((r) => second.broker.persistence.whenDurable(() => r()));
    expect(await held(second.broker.persistence)).toBe(0);
  });
});

describe('across a restart (LevelDB)', () => {
  it('QoS 2 jobs in flight to a member go back in flight to that member only, same packet id, DUP=1 [MQTT-4.8.2-4]; a member whose session expired meanwhile has its jobs discarded [MQTT-4.8.2-5]; QoS 1 ones go to any member with DUP=1', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'heron-shared-'));
    onCleanup(() => rm(dir, { recursive: true, force: true }));
    const first = await startBroker({ persistence: new LevelPersistence({ dir }), maxInflight: 2 });
    const member = async (port: number, clientId: string, expiry = 300) => {
      const raw = await RawClient.connected(port, 5, {
        clientId,
        clean: false,
        properties: { sessionExpiryInterval: expiry },
      });
      await rawSubscribe(raw, [{ topic: '$share/r/jobs/+', qos: 2 }]);
      return raw;
    };
    // Three members that never acknowledge: round-robin gives each 2 QoS 2 jobs, then 'a' a QoS 1 one.
    const a = await member(first.port, 'ra');
    const b = await member(first.port, 'rb');
    const d = await member(first.port, 'rd', 1); // its session expires during the downtime
    const pub = await connect(first.url, { protocolVersion: 5 });
    await publishJobs(pub, () => 'jobs/2', 6, { qos: 2 });
    const before = new Map<string, [number, string][]>();
    for (const [name, raw] of [
      ['ra', a],
      ['rb', b],
      ['rd', d],
    ] as const) {
      before.set(
        name,
        (await rawPublishes(raw, 2)).map((p) => [p.messageId!, p.payload.toString()]),
      );
    }
    // 'a' completes one QoS 2 job, and takes a QoS 1 one into the free slot of its window.
    const [doneId] = before.get('ra')![0];
    a.send({ cmd: 'pubrec', messageId: doneId });
    expect(await a.nextOf('pubrel')).toMatchObject({ messageId: doneId });
    a.send({ cmd: 'pubcomp', messageId: doneId });
    await publishJobs(pub, () => 'jobs/1', 1, { qos: 1 }, 'q1-');
    const [q1] = await rawPublishes(a, 1);
    expect([q1.qos, q1.payload.toString(), q1.dup]).toEqual([1, 'q1-0', false]);
    await pub.endAsync();
    await first.broker.close();

    vi.useFakeTimers({ toFake: ['Date'], shouldAdvanceTime: true });
    vi.setSystemTime(Date.now() + 5000);
    onCleanup(() => vi.useRealTimers());
    const second = await startBroker({ persistence: new LevelPersistence({ dir }), maxInflight: 2 });
    expect(second.broker.sessions.has('rd')).toBe(false);
    // A new member first. The QoS 1 job went back to the group at the restart: it gets it, with
    // DUP, and nothing else, though its window has room for one more (PINGRESP comes next).
    const c = await member(second.port, 'rc');
    const [q1again] = await rawPublishes(c, 1);
    expect([q1again.qos, q1again.payload.toString(), q1again.dup]).toEqual([1, 'q1-0', true]);
    c.send({ cmd: 'pingreq' });
    expect(await c.next()).toMatchObject({ cmd: 'pingresp' });
    c.send({ cmd: 'puback', messageId: q1again.messageId });

    const b2 = await RawClient.connected(second.port, 5, {
      clientId: 'rb',
      clean: false,
      properties: { sessionExpiryInterval: 300 },
    });
    const again = await rawPublishes(b2, 2);
    expect(again.map((p) => [p.messageId, p.payload.toString(), p.dup, p.qos])).toEqual(
      before.get('rb')!.map(([id, payload]) => [id, payload, true, 2]),
    );
    const a2 = await RawClient.connected(second.port, 5, {
      clientId: 'ra',
      clean: false,
      properties: { sessionExpiryInterval: 300 },
    });
    const [stillA] = await rawPublishes(a2, 1);
    expect([stillA.messageId, stillA.payload.toString(), stillA.dup]).toEqual([
      ...before.get('ra')![1],
      true,
    ]);

    for (const [raw, p] of [
      [b2, again[0]],
      [b2, again[1]],
      [a2, stillA],
    ] as const) {
      raw.send({ cmd: 'pubrec', messageId: p.messageId });
      expect(await raw.nextOf('pubrel')).toMatchObject({ messageId: p.messageId });
      raw.send({ cmd: 'pubcomp', messageId: p.messageId });
    }
    // 'rd''s two jobs went to no one, also not once 'c' had room again.
    c.send({ cmd: 'pingreq' });
    expect(await c.next()).toMatchObject({ cmd: 'pingresp' });
    await until(() => second.broker.sessions.get('rb')?.inflight.size === 0, 'completed');
    await until(() => second.broker.sessions.get('ra')?.inflight.size === 0, 'completed');
    await new Promise<void>((r) => second.broker.persistence.whenDurable(() => r()));
    expect(await held(second.broker.persistence)).toBe(0);
  });
});
