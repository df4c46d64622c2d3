/**
 * Idempotent publishing (5.0: user properties exist only there): a PUBLISH whose `idempotency-key`
 * user property its publisher (client id) already used on the same topic within the dedup window is
 * acknowledged as usual but not delivered again. Keys are per publisher, survive a restart on
 * LevelDB and are purged once expired.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { MqttClient } from 'mqtt';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { LevelPersistence } from '../persistence/level.js';
import { connect, onCleanup, startBroker } from './helpers.js';
import { collect } from './persistence.conformance.js';
import { roundTrip, worker } from './shared-helpers.js';

afterEach(() => {
  vi.useRealTimers();
});

const withKey = (key: string) =>
  ({ qos: 1, properties: { userProperties: { 'idempotency-key': key } } }) as const;

/** Publishes, and returns the PUBACK's reason code (0 when absent). */
async function publish(client: MqttClient, topic: string, payload: string, key?: string): Promise<number> {
  const ack = await client.publishAsync(topic, payload, key === undefined ? { qos: 1 } : withKey(key));
  return (ack as { reasonCode?: number } | undefined)?.reasonCode ?? 0;
}

describe('idempotency keys', () => {
  it('a key seen on the same topic within the window is acknowledged but not delivered again', async () => {
    const { url } = await startBroker();
    const sub = await worker(url, 'orders/#', { protocolVersion: 5 });
    const group = [
      await worker(url, '$share/g/orders/#', { protocolVersion: 5 }),
      await worker(url, '$share/g/orders/#', { protocolVersion: 5 }),
    ];
    const pub = await connect(url, { protocolVersion: 5 });
    expect(await publish(pub, 'orders/1', 'a', 'k1')).toBe(0);
    expect(await publish(pub, 'orders/1', 'a-again', 'k1')).toBe(0); // acknowledged normally
    expect(await publish(pub, 'orders/2', 'b', 'k1')).toBe(0); // same key, other topic: delivered
    expect(await publish(pub, 'orders/1', 'c', 'k2')).toBe(0);
    expect(await publish(pub, 'orders/1', 'no key')).toBe(0);
    expect(await publish(pub, 'orders/1', 'no key')).toBe(0); // no key: no dedup
    await publish(pub, 'orders/end', 'end');
    await Promise.all([roundTrip(sub.client), ...group.map((w) => roundTrip(w.client))]);
    const expected = ['a', 'b', 'c', 'no key', 'no key', 'end'];
    expect(sub.jobs.map((j) => j.payload)).toEqual(expected);
    expect(group.flatMap((w) => w.jobs.map((j) => j.payload)).sort()).toEqual([...expected].sort());
  });

  it('a key is delivered again once the window has passed; expired keys are purged', async () => {
    const { url, broker } = await startBroker({ dedupWindow: 60 });
    const sub = await worker(url, 'orders/#', { protocolVersion: 5 });
    const pub = await connect(url, { protocolVersion: 5 });
    vi.useFakeTimers({ toFake: ['Date'] });
    await publish(pub, 'orders/1', 'first', 'k');
    vi.setSystemTime(Date.now() + 59_999);
    await publish(pub, 'orders/1', 'inside the window', 'k');
    await publish(pub, 'orders/1', 'other', 'k-other');
    vi.setSystemTime(Date.now() + 2);
    await publish(pub, 'orders/1', 'after the window', 'k');
    await roundTrip(sub.client);
    expect(sub.jobs.map((j) => j.payload)).toEqual(['first', 'other', 'after the window']);

    expect(broker.dedup.size).toBe(2);
    vi.setSystemTime(Date.now() + 60_000);
    expect(broker.dedup.purge()).toBe(2);
    expect(broker.dedup.size).toBe(0);
    await new Promise<void>((r) => broker.persistence.whenDurable(() => r()));
    expect(await collect(broker.persistence.listDedup())).toEqual([]);
  });

  it('keys survive a broker restart on LevelDB', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'heron-dedup-'));
    onCleanup(() => rm(dir, { recursive: true, force: true }));
    const first = await startBroker({ persistence: new LevelPersistence({ dir }) });
    const pub1 = await connect(first.url, { protocolVersion: 5, clientId: 'orders-pub' });
    await publish(pub1, 'orders/1', 'before', 'once');
    await pub1.endAsync();
    await first.broker.close();

    const second = await startBroker({ persistence: new LevelPersistence({ dir }) });
    const sub = await worker(second.url, 'orders/#', { protocolVersion: 5 });
    const pub2 = await connect(second.url, { protocolVersion: 5, clientId: 'orders-pub' });
    expect(await publish(pub2, 'orders/1', 'replayed after restart', 'once')).toBe(0);
    await publish(pub2, 'orders/1', 'new key', 'twice');
    // The key is the publisher's: another client using it is delivered.
    const other = await connect(second.url, { protocolVersion: 5, clientId: 'other-pub' });
    await publish(other, 'orders/1', 'same key, other publisher', 'once');
    await roundTrip(sub.client);
    expect(sub.jobs.map((j) => j.payload)).toEqual(['new key', 'same key, other publisher']);
  });

  it('keys are per publisher (client id): a client cannot suppress another’s message by reusing its key', async () => {
    const { url } = await startBroker();
    const sub = await worker(url, 'orders/#', { protocolVersion: 5 });
    const alice = await connect(url, { protocolVersion: 5, clientId: 'alice' });
    const mallory = await connect(url, { protocolVersion: 5, clientId: 'mallory' });
    expect(await publish(mallory, 'orders/1', 'mallory first', 'k')).toBe(0);
    expect(await publish(alice, 'orders/1', 'alice', 'k')).toBe(0); // same key and topic, other publisher
    expect(await publish(alice, 'orders/1', 'alice again', 'k')).toBe(0); // same publisher: not again
    expect(await publish(mallory, 'orders/1', 'mallory again', 'k')).toBe(0);
    await publish(alice, 'orders/end', 'end');
    await roundTrip(sub.client);
    expect(sub.jobs.map((j) => j.payload)).toEqual(['mallory first', 'alice', 'end']);

    // The scope is the client id, not the connection: alice reconnecting keeps her keys.
    await alice.endAsync();
    const aliceBack = await connect(url, { protocolVersion: 5, clientId: 'alice' });
    expect(await publish(aliceBack, 'orders/1', 'alice after reconnect', 'k')).toBe(0);
    await publish(aliceBack, 'orders/end', 'end 2');
    await roundTrip(sub.client);
    expect(sub.jobs.map((j) => j.payload).slice(3)).toEqual(['end 2']);
  });

  it('a key stored before keys were scoped (no publisher) still holds for every publisher until it expires (LevelDB)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'heron-dedup-'));
    onCleanup(() => rm(dir, { recursive: true, force: true }));
    // A record as an older Heron wrote it: d␀<topic>␀<key>, no publisher.
    const old = new LevelPersistence({ dir });
    await old.open();
    old.putDedup({ topic: 'orders/1', key: 'legacy', expiresAt: Date.now() + 60_000 });
    await old.close();

    const { url, broker } = await startBroker({ persistence: new LevelPersistence({ dir }) });
    const sub = await worker(url, 'orders/#', { protocolVersion: 5 });
    const pub = await connect(url, { protocolVersion: 5 });
    expect(await publish(pub, 'orders/1', 'suppressed', 'legacy')).toBe(0);
    await publish(pub, 'orders/1', 'other key', 'fresh');
    await roundTrip(sub.client);
    expect(sub.jobs.map((j) => j.payload)).toEqual(['other key']);
    expect(broker.dedup.purge(Date.now() + 61_000)).toBe(1); // the legacy one (the fresh one lives 600 s)
    await new Promise<void>((r) => broker.persistence.whenDurable(() => r()));
    const left = await collect(broker.persistence.listDedup());
    expect(left.map((r) => [r.publisher, r.key])).toEqual([[pub.options.clientId, 'fresh']]);
  });

  it('the embedding API honours keys too; dedupWindow 0 turns it off', async () => {
    const on = await startBroker();
    const subOn = await worker(on.url, 't', { protocolVersion: 5 });
    const props = { userProperties: { 'idempotency-key': 'x' } };
    on.broker.publish({ topic: 't', payload: '1', qos: 1, properties: props });
    on.broker.publish({ topic: 't', payload: '2', qos: 1, properties: props });
    // The broker is a publisher of its own: a client's use of the key is not suppressed by it.
    const client = await connect(on.url, { protocolVersion: 5 });
    await publish(client, 't', '3', 'x');
    await roundTrip(subOn.client);
    expect(subOn.jobs.map((j) => j.payload)).toEqual(['1', '3']);

    const off = await startBroker({ dedupWindow: 0 });
    const subOff = await worker(off.url, 't', { protocolVersion: 5 });
    const pub = await connect(off.url, { protocolVersion: 5 });
    await publish(pub, 't', '1', 'x');
    await publish(pub, 't', '2', 'x');
    await roundTrip(subOff.client);
    expect(subOff.jobs.map((j) => j.payload)).toEqual(['1', '2']);
  });
});
