/**
 * Restarts over a LevelDB data dir, in process: a broker is closed and a new one is started on the
 * same directory (crash.test.ts kills a real broker process instead). What clients had with the
 * first broker — retained messages, sessions and their subscriptions, queued and in-flight messages,
 * inbound QoS 2 packet ids, delayed wills — they find with the second; what expired while the broker
 * was down is gone, from the broker and from the disk. Downtime is simulated by moving Date forward
 * (only Date is faked; timers and sockets are real).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { IClientOptions } from 'mqtt';
import type { IConnectPacket, IPublishPacket, Packet } from 'mqtt-packet';
import { describe, expect, it, vi } from 'vitest';
import { type Broker, type BrokerOptions, MemoryPersistence } from '../broker/index.js';
import { LevelPersistence } from '../persistence/level.js';
import { connect, disconnected, onCleanup, startBroker, type TestBroker } from './helpers.js';
import { collect } from './persistence.conformance.js';
import { connectAck, Inbox, rawConnect, rawPublishes, rawSubscribe, uid } from './spec-helpers.js';

const VERSIONS = [4, 5] as const;

interface Running extends TestBroker {
  store: LevelPersistence;
}

/** A temporary data dir and the broker currently running on it; restart() closes it and starts another. */
async function dataDir() {
  const dir = await mkdtemp(join(tmpdir(), 'heron-restart-'));
  onCleanup(() => rm(dir, { recursive: true, force: true }));
  let current: Running | undefined;
  /** Starts a broker on the dir; `prepare` sees its store before the broker opens it. */
  const start = async (
    opts: BrokerOptions = {},
    prepare?: (s: LevelPersistence) => void,
  ): Promise<Running> => {
    const store = new LevelPersistence({ dir });
    prepare?.(store);
    current = { ...(await startBroker({ persistence: store, ...opts })), store };
    return current;
  };
  return {
    dir,
    start,
    /** Closes the running broker (its store is flushed and closed) and starts a new one on the dir. */
    async restart(opts: BrokerOptions = {}): Promise<Running> {
      await current?.broker.close();
      return start(opts);
    },
    async stop(): Promise<void> {
      await current?.broker.close();
    },
  };
}

/** Ends an mqtt.js client normally and waits until the broker has seen it go. */
async function leave(broker: Broker, client: { endAsync(): Promise<void> }, clientId: string) {
  const gone = disconnected(broker, clientId);
  await client.endAsync();
  await gone;
}

/** CONNECT options for a session that outlives its connection: 3.1.1 clean=0, 5.0 Clean Start 0 + expiry. */
function persistent(
  version: 4 | 5,
  clientId: string,
  expiry = 300,
): IClientOptions & Partial<IConnectPacket> {
  return version === 5
    ? { protocolVersion: 5, clientId, clean: false, properties: { sessionExpiryInterval: expiry } }
    : { protocolVersion: 4, clientId, clean: false };
}

/** Moves Date (only Date) forward by ms, as if the broker had been down that long. */
function advanceDate(ms: number): void {
  vi.useFakeTimers({ toFake: ['Date'], shouldAdvanceTime: true });
  vi.setSystemTime(Date.now() + ms);
  onCleanup(() => vi.useRealTimers());
}

/** Resolves when the store is asked to delete this client's session. */
function sessionDeleted(store: LevelPersistence, clientId: string): Promise<void> {
  return new Promise((resolve) => {
    const original = store.deleteSession.bind(store);
    store.deleteSession = (id: string) => {
      original(id);
      if (id === clientId) resolve();
    };
  });
}

describe('retained messages survive a restart [MQTT-3.3.1-5]', () => {
  for (const version of VERSIONS) {
    it(`v${version}: a new subscriber after the restart gets each one with its QoS and properties; a cleared one stays cleared`, async () => {
      const d = await dataDir();
      let b = await d.start();
      const pub = await connect(b.url, { protocolVersion: version });
      const props =
        version === 5
          ? {
              contentType: 'text/plain',
              responseTopic: 'replies/1',
              correlationData: Buffer.from([0, 1, 0xff]),
              payloadFormatIndicator: true,
              userProperties: { a: '1', b: ['x', 'y'] },
            }
          : undefined;
      await pub.publishAsync('r/q0', 'zero', { qos: 0, retain: true });
      await pub.publishAsync('r/q1', 'one', { qos: 1, retain: true });
      await pub.publishAsync('r/q2', 'two', { qos: 2, retain: true, ...(props && { properties: props }) });
      await pub.publishAsync('r/cleared', 'soon gone', { qos: 1, retain: true });
      // An empty retained payload clears the topic [MQTT-3.3.1-6] (5.0) / [MQTT-3.3.1-10] (3.1.1).
      await pub.publishAsync('r/cleared', '', { qos: 1, retain: true });
      await pub.publishAsync('r/q1', 'one, replaced', { qos: 1, retain: true });

      b = await d.restart();
      expect(b.broker.stats.retained).toBe(3);
      const sub = await connectAck(b.url, { protocolVersion: version });
      await sub.client.subscribeAsync('r/#', { qos: 2 });
      const marker = await connect(b.url, { protocolVersion: version });
      await marker.publishAsync('r/marker', 'm', { qos: 2 });
      // Retained messages go to a new subscription [MQTT-3.3.1-6] (3.1.1) / [MQTT-3.3.1-9] (5.0).
      const got = await sub.inbox.until('r/marker');
      const byTopic = new Map(got.map((m) => [m.topic, m]));
      expect([...byTopic.keys()].sort()).toEqual(['r/marker', 'r/q0', 'r/q1', 'r/q2']);
      expect(got).toHaveLength(4);
      expect(byTopic.get('r/q0')).toMatchObject({ payload: 'zero', packet: { qos: 0, retain: true } });
      expect(byTopic.get('r/q1')).toMatchObject({
        payload: 'one, replaced',
        packet: { qos: 1, retain: true },
      });
      expect(byTopic.get('r/q2')).toMatchObject({ payload: 'two', packet: { qos: 2, retain: true } });
      if (version === 5) {
        // Properties travel unaltered [MQTT-3.3.2-4] [MQTT-3.3.2-15] [MQTT-3.3.2-16] [MQTT-3.3.2-17] [MQTT-3.3.2-20].
        const p = byTopic.get('r/q2')!.packet.properties!;
        expect(p).toMatchObject({
          contentType: 'text/plain',
          responseTopic: 'replies/1',
          payloadFormatIndicator: true,
          userProperties: { a: '1', b: ['x', 'y'] },
        });
        expect(Buffer.from(p.correlationData!)).toEqual(Buffer.from([0, 1, 0xff]));
      }
    });
  }
});

describe('sessions, subscriptions and queued messages survive restarts [MQTT-3.1.2-4] [MQTT-3.1.2-5]', () => {
  for (const version of VERSIONS) {
    it(`v${version}: an offline subscriber keeps its subscriptions across two restarts and gets every QoS 1/2 message queued before, between and after them, in order`, async () => {
      const d = await dataDir();
      let b = await d.start();
      const id = uid('q');
      const first = await connectAck(b.url, persistent(version, id));
      await first.client.subscribeAsync('q/#', { qos: 2 });
      await first.client.subscribeAsync('q1/#', { qos: 1 });
      await leave(b.broker, first.client, id);

      let pub = await connect(b.url, { protocolVersion: version });
      await pub.publishAsync('q/a', 'a', { qos: 1 });
      await pub.publishAsync('q/b', 'b', { qos: 2 });
      // QoS 0 is not queued for an offline session (3.1.1 §3.1.2.4 allows it; Heron does not).
      await pub.publishAsync('q/zero', 'z', { qos: 0 });
      // Delivered at the granted QoS 1 [MQTT-3.8.4-8] (5.0) / [MQTT-3.8.4-6] (3.1.1).
      await pub.publishAsync('q1/c', 'c', { qos: 2 });

      b = await d.restart();
      // The restored session is known but its queue stays on disk until the client returns.
      expect(b.broker.sessions.get(id)?.loaded).toBe(false);
      expect(b.broker.stats.subscriptions).toBe(2);
      // Its restored subscriptions still match: the session collects messages while offline.
      pub = await connect(b.url, { protocolVersion: version });
      await pub.publishAsync('q/d', 'd', { qos: 1 });
      await pub.publishAsync('q1/e', 'e', { qos: 1 });

      b = await d.restart();
      expect((await b.store.getOutgoing(id)).map((r) => r.message.payload.toString())).toEqual([
        'a',
        'b',
        'c',
        'd',
        'e',
      ]);
      const again = await connectAck(b.url, persistent(version, id));
      expect(again.connack.sessionPresent).toBe(true);
      pub = await connect(b.url, { protocolVersion: version });
      // Still subscribed: a message published now arrives too. QoS 2 marker: mqtt.js hands QoS 2 up at PUBREL.
      await pub.publishAsync('q/live', 'live', { qos: 1 });
      await pub.publishAsync('q/marker', 'm', { qos: 2 });
      const got = (await again.inbox.until('q/marker')).map((m) => [m.topic, m.payload, m.packet.qos]);
      const expected = [
        ['q/a', 'a', 1],
        ['q/b', 'b', 2],
        ['q1/c', 'c', 1],
        ['q/d', 'd', 1],
        ['q1/e', 'e', 1],
        ['q/live', 'live', 1],
        ['q/marker', 'm', 2],
      ];
      // Each exactly once. mqtt.js hands QoS 2 messages up at PUBREL, so only the QoS 1 ones show
      // that they come in the order they were queued.
      expect([...got].sort()).toEqual([...expected].sort());
      expect(got.filter((m) => m[2] === 1)).toEqual(expected.filter((m) => m[2] === 1));
      // Acknowledged messages are gone from the disk: after a round trip behind the acks, nothing is left.
      await again.client.subscribeAsync('q/#', { qos: 2 });
      expect(await b.store.getOutgoing(id)).toEqual([]);
      expect(b.store.bodyStats()).toEqual({ bodies: 0, references: 0 });
    });
  }

  it('v5: a client resuming after a restart with Session Expiry 0 still gets what was queued for it (its session then ends with the connection) [MQTT-3.1.2-5]', async () => {
    const d = await dataDir();
    let b = await d.start();
    const id = uid('exp0');
    const first = await connectAck(b.url, persistent(5, id));
    await first.client.subscribeAsync('e0/#', { qos: 1 });
    await leave(b.broker, first.client, id);
    const pub = await connect(b.url, { protocolVersion: 5 });
    await pub.publishAsync('e0/t', 'queued', { qos: 1 });

    b = await d.restart();
    const again = await connectAck(b.url, { protocolVersion: 5, clientId: id, clean: false });
    expect(again.connack.sessionPresent).toBe(true);
    expect(Inbox.brief(await again.inbox.take(1))).toEqual(['e0/t:queued']);
    // With expiry 0 nothing of the session is kept on disk any more [MQTT-3.1.2-23].
    expect((await collect(b.store.listSessions())).map((s) => s.clientId)).not.toContain(id);
    await leave(b.broker, again.client, id);
    expect(b.broker.sessions.has(id)).toBe(false);
    expect(await b.store.getOutgoing(id)).toEqual([]);
  });
});

describe('in-flight state survives a restart', () => {
  for (const version of VERSIONS) {
    it(`v${version}: unacknowledged PUBLISH re-sent with DUP=1 and PUBREL re-sent, with their original packet ids and in order [MQTT-4.4.0-1] [MQTT-3.3.1-1]`, async () => {
      const d = await dataDir();
      // A window of 3: three messages go in flight, two wait in the queue.
      let b = await d.start({ maxInflight: 3 });
      const id = uid('if');
      const opts = persistent(version, id);
      const s1 = await rawConnect(b.port, version, opts);
      await rawSubscribe(s1.raw, [{ topic: 'u/#', qos: 2 }]);
      const pub = await connect(b.url, { protocolVersion: version });
      const plan = [
        ['u/1', 1],
        ['u/2', 2],
        ['u/3', 2],
        ['u/4', 1],
        ['u/5', 2],
      ] as const;
      for (const [topic, qos] of plan) await pub.publishAsync(topic, topic, { qos });
      const sent = await rawPublishes(s1.raw, 3);
      expect(sent.map((p) => [p.topic, p.qos, p.dup])).toEqual([
        ['u/1', 1, false],
        ['u/2', 2, false],
        ['u/3', 2, false],
      ]);
      const [a, bId, c] = sent.map((p) => p.messageId!);
      // u/3 reaches PUBREL; u/1 and u/2 are never acknowledged.
      s1.raw.send({ cmd: 'pubrec', messageId: c });
      expect(await s1.raw.next()).toMatchObject({ cmd: 'pubrel', messageId: c });

      b = await d.restart({ maxInflight: 3 });
      expect(await s1.raw.nextOf('publish')).toBeNull(); // the old connection was closed
      const s2 = await rawConnect(b.port, version, opts);
      expect(s2.connack).toMatchObject({ cmd: 'connack', sessionPresent: true });
      const resent: Packet[] = [];
      for (let i = 0; i < 3; i++) resent.push((await s2.raw.next())!);
      expect(
        resent.map((p) => [p.cmd, p.messageId, p.cmd === 'publish' ? [p.topic, p.qos, p.dup] : null]),
      ).toEqual([
        ['publish', a, ['u/1', 1, true]],
        ['publish', bId, ['u/2', 2, true]],
        // Once PUBREL was sent, the PUBLISH is never re-sent [MQTT-4.3.3-6] (5.0) / [MQTT-4.3.3-1] (3.1.1).
        ['pubrel', c, null],
      ]);

      // Completing them frees the window for the two queued messages, sent with DUP=0.
      s2.raw.send({ cmd: 'puback', messageId: a });
      s2.raw.send({ cmd: 'pubrec', messageId: bId });
      s2.raw.send({ cmd: 'pubcomp', messageId: c });
      const next: Packet[] = [];
      for (let i = 0; i < 3; i++) next.push((await s2.raw.next())!);
      const publishes = next.filter((p): p is IPublishPacket => p.cmd === 'publish');
      expect(next.filter((p) => p.cmd === 'pubrel').map((p) => p.messageId)).toEqual([bId]);
      expect(publishes.map((p) => [p.topic, p.qos, p.dup])).toEqual([
        ['u/4', 1, false],
        ['u/5', 2, false],
      ]);
      s2.raw.send({ cmd: 'pubcomp', messageId: bId });
      s2.raw.send({ cmd: 'puback', messageId: publishes[0].messageId });
      s2.raw.send({ cmd: 'pubrec', messageId: publishes[1].messageId });
      expect(await s2.raw.next()).toMatchObject({ cmd: 'pubrel', messageId: publishes[1].messageId });
      s2.raw.send({ cmd: 'pubcomp', messageId: publishes[1].messageId });
      s2.raw.send({ cmd: 'pingreq' });
      expect(await s2.raw.next()).toMatchObject({ cmd: 'pingresp' }); // every ack above is processed

      // Everything completed: after another restart nothing is re-sent.
      b = await d.restart({ maxInflight: 3 });
      const s3 = await rawConnect(b.port, version, opts);
      expect(s3.connack).toMatchObject({ cmd: 'connack', sessionPresent: true });
      const pub2 = await connect(b.url, { protocolVersion: version });
      await pub2.publishAsync('u/marker', 'm', { qos: 1 });
      expect(await s3.raw.next()).toMatchObject({ cmd: 'publish', topic: 'u/marker', dup: false });
    });

    it(`v${version}: PUBREL goes out only once the PUBREC it answers is stored, so no restart can re-send the PUBLISH after it [MQTT-4.3.3-6] (5.0) / [MQTT-4.3.3-1] (3.1.1)`, async () => {
      /** Holds whenDurable callbacks back while `held` is set: the write "has not finished". */
      class SlowDisk extends MemoryPersistence {
        held: ((err?: Error) => void)[] | null = null;
        override whenDurable(cb: (err?: Error) => void): void {
          if (this.held) this.held.push(cb);
          else super.whenDurable(cb);
        }
        finish(): void {
          const held = this.held ?? [];
          this.held = null;
          for (const cb of held) cb();
        }
      }
      const store = new SlowDisk();
      const { port, broker } = await startBroker({ persistence: store });
      onCleanup(() => store.finish()); // before the broker's close, which waits for durability
      const s = await rawConnect(port, version, persistent(version, uid('slow')));
      await rawSubscribe(s.raw, [{ topic: 'g/#', qos: 2 }]);
      broker.publish({ topic: 'g/t', payload: 'x', qos: 2 });
      const [p] = await rawPublishes(s.raw, 1);
      store.held = [];
      s.raw.send({ cmd: 'pubrec', messageId: p.messageId });
      s.raw.send({ cmd: 'pingreq' });
      // The PUBREC is handled (PINGRESP comes after it) but its state change is not stored yet.
      expect(await s.raw.next()).toMatchObject({ cmd: 'pingresp' });
      expect(store.held.length).toBeGreaterThan(0);
      store.finish();
      expect(await s.raw.next()).toMatchObject({ cmd: 'pubrel', messageId: p.messageId });
    });

    it(`v${version}: an inbound QoS 2 message acknowledged with PUBREC before the restart is released by a PUBREL after it and delivered exactly once [MQTT-4.3.3-10] [MQTT-4.3.3-11] (5.0) / [MQTT-4.3.3-2] (3.1.1)`, async () => {
      const d = await dataDir();
      let b = await d.start();
      const onlineId = uid('on');
      const offlineId = uid('off');
      const online = await connectAck(b.url, persistent(version, onlineId));
      await online.client.subscribeAsync('in/#', { qos: 2 });
      const offline = await connectAck(b.url, persistent(version, offlineId));
      await offline.client.subscribeAsync('in/#', { qos: 2 });
      await leave(b.broker, offline.client, offlineId);

      const pubId = uid('p');
      const p1 = await rawConnect(b.port, version, persistent(version, pubId));
      const publish = (payload: string, dup: boolean): Packet => ({
        cmd: 'publish',
        topic: 'in/x',
        payload: Buffer.from(payload),
        qos: 2,
        messageId: 7,
        retain: false,
        dup,
      });
      p1.raw.send(publish('once', false));
      expect(await p1.raw.next()).toMatchObject({ cmd: 'pubrec', messageId: 7 });
      expect(Inbox.brief(await online.inbox.take(1))).toEqual(['in/x:once']);

      b = await d.restart();
      const p2 = await rawConnect(b.port, version, persistent(version, pubId));
      expect(p2.connack).toMatchObject({ cmd: 'connack', sessionPresent: true });
      // A publisher that missed the PUBREC re-sends the PUBLISH: acknowledged again, not routed again.
      p2.raw.send(publish('once', true));
      expect(await p2.raw.next()).toMatchObject({ cmd: 'pubrec', messageId: 7 });
      p2.raw.send({ cmd: 'pubrel', messageId: 7 });
      const comp = await p2.raw.next();
      expect(comp).toMatchObject({ cmd: 'pubcomp', messageId: 7 });
      // 5.0: Success, not 0x92 Packet Identifier not found: the restored session knew the id.
      expect((comp as { reasonCode?: number }).reasonCode ?? 0).toBe(0);
      // After PUBCOMP the id is free: a PUBLISH with it is a new message [MQTT-4.3.3-12] (5.0).
      p2.raw.send(publish('again', false));
      expect(await p2.raw.next()).toMatchObject({ cmd: 'pubrec', messageId: 7 });
      p2.raw.send({ cmd: 'pubrel', messageId: 7 });
      expect(await p2.raw.next()).toMatchObject({ cmd: 'pubcomp', messageId: 7 });

      // That PUBCOMP is lost: after another restart the publisher re-sends the PUBREL it still
      // owes [MQTT-4.4.0-1]. The release was stored, the id is gone: completed with Success, so
      // the publisher does not report a failure for a message delivered exactly once.
      b = await d.restart();
      const p3 = await rawConnect(b.port, version, persistent(version, pubId));
      expect(p3.connack).toMatchObject({ cmd: 'connack', sessionPresent: true });
      p3.raw.send({ cmd: 'pubrel', messageId: 7 });
      const again = await p3.raw.next();
      expect(again).toMatchObject({ cmd: 'pubcomp', messageId: 7 });
      expect((again as { reasonCode?: number }).reasonCode ?? 0).toBe(0);

      const online2 = await connectAck(b.url, persistent(version, onlineId));
      const offline2 = await connectAck(b.url, persistent(version, offlineId));
      expect([online2.connack.sessionPresent, offline2.connack.sessionPresent]).toEqual([true, true]);
      const marker = await connect(b.url, { protocolVersion: version });
      await marker.publishAsync('in/marker', 'm', { qos: 2 });
      expect(Inbox.brief(await online2.inbox.until('in/marker'))).toEqual(['in/x:again', 'in/marker:m']);
      expect(Inbox.brief(await offline2.inbox.until('in/marker'))).toEqual([
        'in/x:once',
        'in/x:again',
        'in/marker:m',
      ]);
    });
  }
});

describe('what expires while the broker is down is gone after the restart', () => {
  it('v5: expired queued and retained messages are not delivered and are removed from the disk; the rest is delivered with its remaining expiry [MQTT-3.3.2-5] [MQTT-3.3.2-6]', async () => {
    const d = await dataDir();
    let b = await d.start();
    const id = uid('mx');
    const first = await connectAck(b.url, persistent(5, id));
    await first.client.subscribeAsync('mx/#', { qos: 1 });
    await leave(b.broker, first.client, id);
    const pub = await connect(b.url, { protocolVersion: 5 });
    const expiring = (s: number) => ({ qos: 1 as const, properties: { messageExpiryInterval: s } });
    await pub.publishAsync('mx/short', 'short', expiring(10));
    await pub.publishAsync('mx/long', 'long', expiring(100));
    await pub.publishAsync('mx/none', 'none', { qos: 1 });
    await pub.publishAsync('mx/retained', 'r', { ...expiring(10), retain: true });
    await d.stop();
    expect(b.store.bodyStats()).toEqual({ bodies: 0, references: 0 }); // closed: counts dropped

    advanceDate(30_000);
    b = await d.start();
    expect(b.store.bodyStats()).toEqual({ bodies: 4, references: 4 });
    const again = await connectAck(b.url, persistent(5, id));
    expect(again.connack.sessionPresent).toBe(true);
    const marker = await connect(b.url, { protocolVersion: 5 });
    await marker.publishAsync('mx/marker', 'm', { qos: 1 });
    const got = await again.inbox.until('mx/marker');
    expect(Inbox.brief(got)).toEqual(['mx/long:long', 'mx/none:none', 'mx/marker:m']);
    // 100 s minus the 30 s it waited (and the test's own few ms).
    const left = got[0].packet.properties?.messageExpiryInterval;
    expect(left).toBeGreaterThanOrEqual(69);
    expect(left).toBeLessThanOrEqual(70);
    expect(got[1].packet.properties?.messageExpiryInterval).toBeUndefined();

    // The expired retained message is not sent to a new subscriber, and is deleted.
    const late = await connectAck(b.url, { protocolVersion: 5 });
    await late.client.subscribeAsync('mx/#', { qos: 1 });
    await marker.publishAsync('mx/marker', 'm2', { qos: 1 });
    expect(Inbox.brief(await late.inbox.until('mx/marker'))).toEqual(['mx/marker:m2']);
    expect(await collect(b.store.listRetained())).toEqual([]);
    // The expired copy was dropped without being sent, the others were acknowledged: nothing left.
    await again.client.subscribeAsync('mx/#', { qos: 1 }); // a round trip behind the PUBACKs
    expect(await b.store.getOutgoing(id)).toEqual([]);
    expect(b.store.bodyStats()).toEqual({ bodies: 0, references: 0 });
  });

  it('v5: a session whose expiry passed during the downtime is discarded at start, with everything it had on disk; one with time left keeps it and expires on time [MQTT-4.1.0-2] [MQTT-3.1.2-23]', async () => {
    const d = await dataDir();
    let b = await d.start();
    const ids = { expired: uid('gone'), ending: uid('ending'), kept: uid('kept') };
    // Down for 30 s: 10 s of expiry has passed, 32 s has about 2 s left, an hour is far off.
    const expiry = { expired: 10, ending: 32, kept: 3600 };
    for (const k of ['expired', 'ending', 'kept'] as const) {
      const c = await connectAck(b.url, persistent(5, ids[k], expiry[k]));
      await c.client.subscribeAsync('sx/#', { qos: 1 });
      await leave(b.broker, c.client, ids[k]);
    }
    const pub = await connect(b.url, { protocolVersion: 5 });
    await pub.publishAsync('sx/1', 'queued', { qos: 1 });
    await d.stop();

    advanceDate(30_000);
    let endingDeleted!: Promise<void>;
    b = await d.start({}, (s) => {
      endingDeleted = sessionDeleted(s, ids.ending);
    });
    const store = b.store;
    // Discarded at start: not in the broker, not on disk, its queued message released.
    expect(b.broker.sessions.has(ids.expired)).toBe(false);
    expect((await collect(store.listSessions())).map((s) => s.clientId).sort()).toEqual(
      [ids.ending, ids.kept].sort(),
    );
    expect(await store.getOutgoing(ids.expired)).toEqual([]);
    expect(store.bodyStats()).toEqual({ bodies: 1, references: 2 });
    expect(b.broker.stats.subscriptions).toBe(2);
    // The one with about 2 s left is restored, and ends when its time is up.
    expect(b.broker.sessions.get(ids.ending)?.loaded).toBe(false);
    await endingDeleted;
    expect(b.broker.sessions.has(ids.ending)).toBe(false);
    expect(await store.getOutgoing(ids.ending)).toEqual([]);
    expect(store.bodyStats()).toEqual({ bodies: 1, references: 1 });

    const expired = await connectAck(b.url, persistent(5, ids.expired));
    expect(expired.connack.sessionPresent).toBe(false);
    const ending = await connectAck(b.url, persistent(5, ids.ending));
    expect(ending.connack.sessionPresent).toBe(false);
    const kept = await connectAck(b.url, persistent(5, ids.kept));
    expect(kept.connack.sessionPresent).toBe(true);
    expect(Inbox.brief(await kept.inbox.take(1))).toEqual(['sx/1:queued']);
  });

  it('v4: with --max-session-expiry 0 a clean=0 session never expires: still there after a year of downtime', async () => {
    const d = await dataDir();
    let b = await d.start({ maxSessionExpiry: 0 });
    const id = uid('forever');
    const c = await connectAck(b.url, persistent(4, id));
    await c.client.subscribeAsync('yr/#', { qos: 1 });
    await leave(b.broker, c.client, id);
    const pub = await connect(b.url, { protocolVersion: 4 });
    await pub.publishAsync('yr/1', 'still here', { qos: 1 });
    await d.stop();
    advanceDate(365 * 24 * 3600 * 1000);
    b = await d.start({ maxSessionExpiry: 0 });
    const again = await connectAck(b.url, persistent(4, id));
    expect(again.connack.sessionPresent).toBe(true);
    expect(Inbox.brief(await again.inbox.take(1))).toEqual(['yr/1:still here']);
  });

  it('v4: by default a clean=0 session expires after --max-session-expiry (7 days) of downtime, like 5.0 ones', async () => {
    const d = await dataDir();
    let b = await d.start();
    const ids = { kept: uid('week-kept'), gone: uid('week-gone') };
    for (const id of Object.values(ids)) {
      const c = await connectAck(b.url, persistent(4, id));
      await c.client.subscribeAsync('wk/#', { qos: 1 });
      await leave(b.broker, c.client, id);
    }
    await d.stop();
    advanceDate(6 * 24 * 3600 * 1000);
    b = await d.start();
    // Back after 6 days: present, and its expiry counts again from its next disconnect.
    const kept = await connectAck(b.url, persistent(4, ids.kept));
    expect(kept.connack.sessionPresent).toBe(true);
    await leave(b.broker, kept.client, ids.kept);
    await d.stop();
    advanceDate(2 * 24 * 3600 * 1000);
    b = await d.start();
    expect(b.broker.sessions.has(ids.gone)).toBe(false);
    expect(b.broker.sessions.has(ids.kept)).toBe(true);
    const gone = await connectAck(b.url, persistent(4, ids.gone));
    expect(gone.connack.sessionPresent).toBe(false);
  });
});

describe('delayed wills survive a restart (5.0 Will Delay Interval)', () => {
  it('a will still waiting is published when its delay ends after the restart; one whose session ended during the downtime is published at start; one whose client returns is not [MQTT-3.1.2-8] [MQTT-3.1.3-9]', async () => {
    const d = await dataDir();
    let b = await d.start();
    const subId = uid('ws');
    const sub = await connectAck(b.url, persistent(5, subId));
    await sub.client.subscribeAsync('will/#', { qos: 1 });
    await leave(b.broker, sub.client, subId);

    // delay 30 s, session 300 s: due 30 s after the drop.
    // delay 30 s, session 10 s: the session ends first, 10 s after the drop [MQTT-3.1.2-8].
    // delay 60 s, session 300 s, and the client comes back: never published [MQTT-3.1.3-9].
    const wills = {
      delayed: { delay: 30, expiry: 300, id: uid('wd') },
      sessionEnds: { delay: 30, expiry: 10, id: uid('we') },
      returns: { delay: 60, expiry: 300, id: uid('wr') },
    };
    for (const [name, w] of Object.entries(wills)) {
      const { raw } = await rawConnect(b.port, 5, {
        clientId: w.id,
        clean: false,
        properties: { sessionExpiryInterval: w.expiry },
        will: {
          topic: `will/${name}`,
          payload: Buffer.from(name),
          qos: 1,
          retain: false,
          properties: { willDelayInterval: w.delay },
        },
      });
      const gone = disconnected(b.broker, w.id);
      raw.socket.destroy(); // no DISCONNECT: the will stands
      await gone;
    }
    expect((await collect(b.store.listWills())).length).toBe(3);
    await d.stop();

    // Down for 29.5 s: "delayed" has about half a second left, "sessionEnds" is overdue.
    advanceDate(29_500);
    b = await d.start();
    const back = await rawConnect(b.port, 5, {
      clientId: wills.returns.id,
      clean: false,
      properties: { sessionExpiryInterval: 300 },
    });
    expect(back.connack).toMatchObject({ cmd: 'connack', sessionPresent: true });
    const sub2 = await connectAck(b.url, persistent(5, subId));
    expect(sub2.connack.sessionPresent).toBe(true);
    const got = await sub2.inbox.take(2);
    expect(Inbox.brief(got)).toEqual(['will/sessionEnds:sessionEnds', 'will/delayed:delayed']);
    const marker = await connect(b.url, { protocolVersion: 5 });
    await marker.publishAsync('will/marker', 'm', { qos: 1 });
    expect(Inbox.brief(await sub2.inbox.until('will/marker'))).toEqual(['will/marker:m']);
    // Published wills are removed from the session state [MQTT-3.1.2-10]; so is the cancelled one.
    expect(await collect(b.store.listWills())).toEqual([]);
  });
});
