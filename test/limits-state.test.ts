import { generate } from 'mqtt-packet';
import { describe, expect, it, vi } from 'vitest';
import { NEVER_EXPIRES } from '../broker/handlers/connect.js';
import { MemoryPersistence } from '../persistence/memory.js';
import { connect, nextMessages, RawClient, startBroker } from './helpers.js';
import { connectAck, Inbox, publishPacket, rawSubscribe } from './spec-helpers.js';

const publish = publishPacket;

describe('--max-publish-rate / --max-publish-bytes-rate', () => {
  it('over the message rate the socket is not read until the debt is paid; nothing is lost, no disconnect, others are served', async () => {
    const { port, url, broker } = await startBroker({ maxPublishRate: 50 });
    const { client: sub, inbox } = await connectAck(url);
    await sub.subscribeAsync('rate/#', { qos: 1 });
    const other = await connect(url);
    // keep-alive 1 s: paused for about 2 s, it is not disconnected for not being read.
    const fast = await RawClient.connected(port, 5, { keepalive: 1 });
    // 150 publishes in one write: the burst is 50, so the debt is 100 messages, 2 s at 50/s.
    const t0 = Date.now();
    fast.write(
      Buffer.concat(
        Array.from({ length: 150 }, (_, i) => generate(publish('rate/fast', `${i}`), { protocolVersion: 5 })),
      ),
    );
    const flood = await inbox.take(150);
    expect(flood.map((m) => m.payload)).toEqual(Array.from({ length: 150 }, (_, i) => `${i}`));
    expect(broker.stats.publishRateLimited).toBe(1);
    // Sent now, read only after the pause.
    fast.send(publish('rate/fast', 'after', { qos: 1, messageId: 7 }));
    // Another client is served meanwhile, at once.
    await other.publishAsync('rate/other', 'meanwhile', { qos: 1 });
    expect((await inbox.until('rate/other')).map((m) => m.payload)).toEqual(['meanwhile']);
    expect(Date.now() - t0).toBeLessThan(1000);
    const ack = await fast.nextOf('puback');
    expect(ack).toMatchObject({ cmd: 'puback', messageId: 7 });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1800);
    expect((await inbox.take(1))[0].payload).toBe('after');
  });

  it('over the byte rate likewise (3.1.1)', async () => {
    const { port, url, broker } = await startBroker({ maxPublishBytesRate: 20_000 });
    const sub = await connect(url);
    await sub.subscribeAsync('bytes/#');
    const fast = await RawClient.connected(port, 4);
    const big = Buffer.alloc(20_000, 0x61);
    const got = nextMessages(sub, 2);
    const t0 = Date.now();
    fast.write(Buffer.concat([generate(publish('bytes/a', big)), generate(publish('bytes/a', big))]));
    expect((await got).map((m) => m.payload.length)).toEqual([20_000, 20_000]);
    // Sent once those were read: read only after the pause.
    fast.send(publish('bytes/a', 'after', { qos: 1, messageId: 1 }));
    expect(await fast.nextOf('puback')).toMatchObject({ messageId: 1 });
    // About 20,000 bytes over the one second's worth the bucket holds, at 20,000 bytes/s.
    expect(Date.now() - t0).toBeGreaterThanOrEqual(900);
    expect(broker.stats.publishRateLimited).toBeGreaterThanOrEqual(1);
  });

  it('off by default: a flood is read as fast as it comes', async () => {
    const { port, broker } = await startBroker();
    const fast = await RawClient.connected(port, 4);
    fast.write(Buffer.concat(Array.from({ length: 500 }, () => generate(publish('t', 'x')))));
    fast.send(publish('t', 'x', { qos: 1, messageId: 1 }));
    await fast.nextOf('puback');
    expect(broker.stats.publishRateLimited).toBe(0);
  });
});

describe('--max-session-expiry', () => {
  it('5.0: a longer Session Expiry Interval is lowered and the client told in CONNACK (5.0 section 3.2.2.3.2)', async () => {
    const { url, broker } = await startBroker({ maxSessionExpiry: 10 });
    const long = await connectAck(url, {
      protocolVersion: 5,
      clientId: 'long',
      properties: { sessionExpiryInterval: 3600 },
    });
    expect(long.connack.properties?.sessionExpiryInterval).toBe(10);
    expect(broker.sessions.get('long')?.expiryInterval).toBe(10);
    const short = await connectAck(url, {
      protocolVersion: 5,
      clientId: 'short',
      properties: { sessionExpiryInterval: 5 },
    });
    expect(short.connack.properties?.sessionExpiryInterval).toBeUndefined();
    expect(broker.stats.sessionExpiryCapped).toBe(1);
    // Nor can DISCONNECT raise it past the bound.
    await long.client.endAsync(false, { properties: { sessionExpiryInterval: 7200 } });
    await vi.waitFor(() => expect(broker.sessions.get('long')?.conn).toBeNull());
    expect(broker.sessions.get('long')?.expiryInterval).toBe(10);
  });

  it('3.1.1: a persistent session expires after it too (default 7 days)', async () => {
    const { url, broker } = await startBroker({ maxSessionExpiry: 1 });
    const c = await connect(url, { clientId: 'p311', clean: false });
    await c.subscribeAsync('keep/me', { qos: 1 });
    expect(broker.sessions.get('p311')?.expiryInterval).toBe(1);
    await c.endAsync();
    await vi.waitFor(() => expect(broker.sessions.has('p311')).toBe(false), { timeout: 3000 });
    const again = await connectAck(url, { clientId: 'p311', clean: false });
    expect(again.connack.sessionPresent).toBe(false);

    const d = await startBroker();
    await connect(d.url, { clientId: 'p311', clean: false });
    expect(d.broker.sessions.get('p311')?.expiryInterval).toBe(7 * 24 * 3600);
  });

  it('a bound lowered since a session was stored applies to it at restore', async () => {
    const p = new MemoryPersistence();
    const now = Date.now();
    p.putSession({
      clientId: 'gone',
      protocolVersion: 4,
      expiryInterval: NEVER_EXPIRES,
      disconnectedAt: now - 5000,
    });
    p.putSession({
      clientId: 'kept',
      protocolVersion: 4,
      expiryInterval: NEVER_EXPIRES,
      disconnectedAt: now,
    });
    const { broker } = await startBroker({ persistence: p, maxSessionExpiry: 60 });
    expect(broker.sessions.has('kept')).toBe(true);
    expect(broker.sessions.get('kept')?.expiryInterval).toBe(60);
    const p3 = new MemoryPersistence();
    p3.putSession({
      clientId: 'gone',
      protocolVersion: 4,
      expiryInterval: NEVER_EXPIRES,
      disconnectedAt: now - 5000,
    });
    const b3 = await startBroker({ persistence: p3, maxSessionExpiry: 2 });
    expect(b3.broker.sessions.has('gone')).toBe(false);
  });
});

describe('--max-retained / --max-retained-bytes', () => {
  it('a new retained message beyond the count: 5.0 QoS 1/2 gets 0x97 and it goes nowhere; QoS 0 and 3.1.1 are routed, not retained', async () => {
    const { port, url, broker } = await startBroker({ maxRetained: 2 });
    const { client: sub, inbox } = await connectAck(url, { protocolVersion: 5 });
    await sub.subscribeAsync('r/#', { qos: 1 });
    const v5 = await RawClient.connected(port, 5);
    const v4 = await RawClient.connected(port, 4);
    v5.send(publish('r/1', 'one', { qos: 1, messageId: 1, retain: true }));
    v5.send(publish('r/2', 'two', { qos: 1, messageId: 2, retain: true }));
    expect(await v5.nextOf('puback')).toMatchObject({ messageId: 1, reasonCode: 0 });
    expect(await v5.nextOf('puback')).toMatchObject({ messageId: 2, reasonCode: 0 });
    expect(Inbox.brief(await inbox.take(2))).toEqual(['r/1:one', 'r/2:two']);

    v5.send(publish('r/3', 'q1', { qos: 1, messageId: 3, retain: true }));
    expect(await v5.nextOf('puback')).toMatchObject({ messageId: 3, reasonCode: 0x97 });
    v5.send(publish('r/3', 'q2', { qos: 2, messageId: 4, retain: true }));
    expect(await v5.nextOf('pubrec')).toMatchObject({ messageId: 4, reasonCode: 0x97 });
    v5.send(publish('r/3', 'q0', { retain: true }));
    v4.send(publish('r/3', 'v4', { qos: 1, messageId: 5, retain: true }));
    expect(await v4.nextOf('puback')).toMatchObject({ messageId: 5 });
    await sub.publishAsync('r/marker', 'm');
    // The refused 5.0 QoS 1/2 ones were not routed; the others were.
    expect(Inbox.brief(await inbox.until('r/marker'))).toEqual(['r/3:q0', 'r/3:v4', 'r/marker:m']);
    expect(broker.stats.retained).toBe(2);
    expect(broker.stats.retainedRefused).toBe(4);
    expect(broker.stats.sharedGroupsRefused).toBe(0);

    // Replacing a retained message is within the count; so is a new one after a clear.
    v5.send(publish('r/1', 'one again', { qos: 1, messageId: 6, retain: true }));
    expect(await v5.nextOf('puback')).toMatchObject({ messageId: 6, reasonCode: 0 });
    v5.send(publish('r/2', '', { qos: 1, messageId: 7, retain: true }));
    await v5.nextOf('puback');
    v5.send(publish('r/3', 'three', { qos: 1, messageId: 8, retain: true }));
    expect(await v5.nextOf('puback')).toMatchObject({ messageId: 8, reasonCode: 0 });
    const late = await connectAck(url);
    const retained = late.inbox.take(2);
    await late.client.subscribeAsync('r/#');
    expect(Inbox.brief(await retained).sort()).toEqual(['r/1:one again', 'r/3:three']);
    // The embedding API: routed, not retained, counted.
    broker.publish({ topic: 'r/4', payload: 'api', retain: true });
    expect(broker.stats.retained).toBe(2);
    expect(broker.stats.retainedRefused).toBe(5);
  });

  it('bytes: topic + payload; a replacement counts without the one it replaces; a refused one leaves the old', async () => {
    const { port, url, broker } = await startBroker({ maxRetainedBytes: 20 });
    const v5 = await RawClient.connected(port, 5);
    const send = async (topic: string, payload: string, messageId: number) => {
      v5.send(publish(topic, payload, { qos: 1, messageId, retain: true }));
      return ((await v5.nextOf('puback')) as { reasonCode?: number }).reasonCode;
    };
    expect(await send('b/1', 'x'.repeat(10), 1)).toBe(0x10); // no subscribers, stored
    expect(broker.stats.retainedBytes).toBe(13);
    expect(await send('b/2', 'x'.repeat(10), 2)).toBe(0x97);
    expect(await send('b/1', 'y'.repeat(17), 3)).toBe(0x10);
    expect(broker.stats.retainedBytes).toBe(20);
    expect(await send('b/1', 'z'.repeat(18), 4)).toBe(0x97);
    const late = await connectAck(url);
    const got = late.inbox.take(1);
    await late.client.subscribeAsync('b/#');
    expect((await got)[0].payload).toBe('y'.repeat(17));
    expect(broker.stats.retainedRefused).toBe(2);
  });

  it('at start, stored messages beyond the bound are not loaded but kept on disk; a clear removes one not loaded', async () => {
    const p = new MemoryPersistence();
    for (const t of ['s/1', 's/2', 's/3'])
      p.setRetained(t, { id: t, topic: t, payload: Buffer.from(t), qos: 0, retain: true });
    const first = await startBroker({ persistence: p, maxRetained: 2 });
    expect(first.broker.stats.retained).toBe(2);
    const c = await connect(first.url);
    for (const t of ['s/1', 's/2', 's/3']) await c.publishAsync(t, '', { retain: true, qos: 1 });
    expect(first.broker.stats.retained).toBe(0);
    const left: string[] = [];
    for await (const m of p.listRetained()) left.push(m.topic);
    expect(left).toEqual([]);

    const q = new MemoryPersistence();
    for (const t of ['s/1', 's/2', 's/3'])
      q.setRetained(t, { id: t, topic: t, payload: Buffer.from(t), qos: 0, retain: true });
    await startBroker({ persistence: q, maxRetained: 1 });
    const kept: string[] = [];
    for await (const m of q.listRetained()) kept.push(m.topic);
    expect(kept.length).toBe(3);
    const raised = await startBroker({ persistence: q, maxRetained: 10 });
    expect(raised.broker.stats.retained).toBe(3);
  });
});

describe('--max-shared-groups / --max-shared-groups-per-client', () => {
  it('a SUBSCRIBE creating a group beyond either bound gets 0x97 (5.0) / 0x80 (3.1.1); joining an existing group is fine', async () => {
    const { port, url, broker } = await startBroker({ maxSharedGroups: 2, maxSharedGroupsPerClient: 1 });
    const a = await RawClient.connected(port, 5, { clientId: 'a' });
    const ackA = await rawSubscribe(a, [
      { topic: '$share/g1/jobs', qos: 1 },
      { topic: '$share/g2/jobs', qos: 1 },
    ]);
    expect(ackA.granted).toEqual([1, 0x97]); // a's one group
    const b = await RawClient.connected(port, 4, { clientId: 'b' });
    expect((await rawSubscribe(b, [{ topic: '$share/g2/jobs', qos: 1 }])).granted).toEqual([1]);
    const c = await RawClient.connected(port, 4, { clientId: 'c' });
    const ackC = await rawSubscribe(c, [
      { topic: '$share/g3/jobs', qos: 1 }, // the total
      { topic: '$share/g1/jobs', qos: 1 }, // existing
      { topic: 'plain/jobs', qos: 1 },
    ]);
    expect(ackC.granted).toEqual([0x80, 1, 1]);
    expect(broker.stats.sharedGroupsRefused).toBe(2);
    // The groups work: a job to g1 reaches a or c, one to g2 reaches b.
    const pub = await connect(url);
    await pub.publishAsync('jobs', 'j', { qos: 1 });
    const got = await Promise.race([a.nextOf('publish'), c.nextOf('publish')]);
    expect(got).toMatchObject({ cmd: 'publish', topic: 'jobs' });
    expect(await b.nextOf('publish')).toMatchObject({ topic: 'jobs' });
    // A group that goes frees its creator's slot, and one of the total.
    expect((await rawSubscribe(b, [{ topic: '$share/g4/jobs', qos: 0 }], 2)).granted).toEqual([0x80]);
    b.send({ cmd: 'unsubscribe', messageId: 9, unsubscriptions: ['$share/g2/jobs'] });
    await b.nextOf('unsuback');
    expect(broker.shares.find('g2', 'jobs')).toBeUndefined();
    expect((await rawSubscribe(b, [{ topic: '$share/g4/jobs', qos: 0 }], 3)).granted).toEqual([0]);
  });
});

describe('--dedup-max-keys', () => {
  it('beyond the bound the oldest key is forgotten (its repeat is delivered again) and counted', async () => {
    const { url, broker } = await startBroker({ dedupMaxKeys: 2 });
    const { client: sub, inbox } = await connectAck(url, { protocolVersion: 5 });
    await sub.subscribeAsync('d/t', { qos: 1 });
    const send = (key: string) =>
      broker.publish({
        topic: 'd/t',
        payload: key,
        qos: 1,
        properties: { userProperties: { 'idempotency-key': key } },
      });
    for (const k of ['k1', 'k2', 'k2', 'k3', 'k1', 'k3']) send(k);
    broker.publish({ topic: 'd/t', payload: 'marker' });
    // k1 was forgotten when k3 came, so its repeat is delivered; it pushed k2 out; k3 is still known.
    expect((await inbox.take(5)).map((m) => m.payload)).toEqual(['k1', 'k2', 'k3', 'k1', 'marker']);
    expect(broker.stats.dedupKeysForgotten).toBe(2);
    expect(broker.dedup.size).toBe(2);
  });
});
