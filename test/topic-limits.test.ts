/**
 * Topic limits (maxTopicLevels, default 128; maxTopicLength, default 65535 UTF-8 bytes) on every
 * source of a topic or filter: PUBLISH, a will, SUBSCRIBE (shared too), UNSUBSCRIBE, the embedding
 * API, and state restored from LevelDB. The deep case (30,000 levels, 60 KB) once overflowed the
 * call stack while matching and killed the process (compare Mosquitto's CVE-2019-11779); now it
 * is refused with its reason code, and another client is served normally after every case.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { IPublishPacket, IUnsubackPacket, Packet } from 'mqtt-packet';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { NEVER_EXPIRES } from '../broker/handlers/connect.js';
import { type BrokerOptions, MemoryPersistence } from '../broker/index.js';
import { RetainedStore } from '../broker/retained.js';
import { TopicTree, topicWithinLimits } from '../broker/topic-tree.js';
import { LevelPersistence } from '../persistence/level.js';
import type { StoredMessage } from '../persistence/types.js';
import { connect, onCleanup, RawClient, startBroker, type TestBroker } from './helpers.js';
import { collect, durable } from './persistence.conformance.js';
import { connectAck, Inbox, rawConnect, rawPublishes, rawSubscribe, uid } from './spec-helpers.js';

const VERSIONS = [4, 5] as const;

/** A topic of n levels: `a/a/…/a` (2n - 1 bytes). */
const levels = (n: number, word = 'a') => Array(n).fill(word).join('/');
const DEEP = levels(30_000); // 59,999 bytes: the reported case
const AT_LEVELS = levels(128); // the default maximum
const OVER_LEVELS = levels(129);

/** 5.0 reason code, or 3.1.1 SUBACK failure code, for a refused filter. */
const filterRefused = (v: 4 | 5) => (v === 5 ? 0x8f : 0x80);

/**
 * A broker with a watcher (5.0, subscribed to `#`) and a publisher: served() proves both are still
 * served (a message published now is received), and returns every message the watcher got before.
 */
async function setup(opts: BrokerOptions = {}) {
  const tb = await startBroker(opts);
  const watcher = await connectAck(tb.url, { protocolVersion: 5, clientId: uid('watch') });
  await watcher.client.subscribeAsync('#', { qos: 1 });
  const pub = await connect(tb.url, { clientId: uid('pub') });
  let n = 0;
  const served = async (): Promise<string[]> => {
    const marker = `ok/${n++}`;
    await pub.publishAsync(marker, 'alive', { qos: 1 });
    const got = Inbox.brief(await watcher.inbox.until(marker));
    expect(got.at(-1)).toBe(`${marker}:alive`);
    return got.slice(0, -1);
  };
  return { ...tb, served, inbox: watcher.inbox };
}

/** A topic, shortened for test names and compact assertions. */
const short = (t: string) => (t.length > 20 ? `${t.slice(0, 8)}…(${Buffer.byteLength(t)} bytes)` : t);

const publish = (topic: string, extra: Partial<IPublishPacket> = {}): Packet =>
  ({
    cmd: 'publish',
    topic,
    payload: Buffer.from('p'),
    qos: 0,
    retain: false,
    dup: false,
    ...extra,
  }) as Packet;

let packetId = 0;
/**
 * A QoS 1 PUBLISH that must be accepted: resolves on its PUBACK, so it has been routed before
 * anything published after (the watcher sees it before the next marker).
 */
async function accepted(raw: RawClient, topic: string, extra: Partial<IPublishPacket> = {}): Promise<void> {
  packetId = (packetId % 65535) + 1;
  const messageId = packetId;
  raw.send(publish(topic, { qos: 1, messageId, ...extra }));
  expect(await raw.nextOf('puback')).toMatchObject({ cmd: 'puback', messageId });
}

/** The connection ends as a refused PUBLISH must: 5.0 DISCONNECT with this code first, then close. */
async function refusedWith(raw: RawClient, code: number): Promise<void> {
  if (raw.version === 5) expect(await raw.next()).toMatchObject({ cmd: 'disconnect', reasonCode: code });
  expect(await raw.next()).toBeNull();
}

describe('topicWithinLimits', () => {
  it('counts levels (one more than the `/`s) and UTF-8 bytes, not UTF-16 units', () => {
    expect(topicWithinLimits(AT_LEVELS, 128, 65535)).toBe(true);
    expect(topicWithinLimits(OVER_LEVELS, 128, 65535)).toBe(false);
    expect(topicWithinLimits('/', 2, 65535)).toBe(true); // two empty levels
    expect(topicWithinLimits('//', 2, 65535)).toBe(false);
    expect(topicWithinLimits('x'.repeat(1000), 128, 1000)).toBe(true);
    expect(topicWithinLimits('x'.repeat(1001), 128, 1000)).toBe(false);
    // 'é' is 1 unit and 2 bytes, '😀' 2 units and 4 bytes.
    expect(topicWithinLimits('é'.repeat(500), 128, 1000)).toBe(true);
    expect(topicWithinLimits('é'.repeat(501), 128, 1000)).toBe(false);
    expect(topicWithinLimits('😀'.repeat(250), 128, 1000)).toBe(true);
    expect(topicWithinLimits(`${'😀'.repeat(250)}x`, 128, 1000)).toBe(false);
    expect(topicWithinLimits(DEEP, 128, 65535)).toBe(false);
    expect(topicWithinLimits(DEEP, 30_000, 65535)).toBe(true);
  });
});

describe('matching is iterative: no stack frame per level', () => {
  it('TopicTree.match on a 30,000-level topic inserted directly (bypassing the limit) does not throw', () => {
    const tree = new TopicTree<string>();
    tree.add(DEEP, 'exact');
    tree.add(levels(30_000, '+'), 'plus');
    tree.add(`${levels(29_999)}/#`, 'hash');
    tree.add(`${levels(15_000, '+')}/#`, 'half');
    const got: string[] = [];
    expect(() => tree.match(DEEP, (v) => got.push(v))).not.toThrow();
    expect(got.sort()).toEqual(['exact', 'half', 'hash', 'plus']);
    // A re-entrant match from inside visit gets its own stack and does not disturb the outer one.
    const outer: string[] = [];
    tree.match(DEEP, (v) => {
      outer.push(v);
      tree.match(DEEP, () => undefined);
    });
    expect(outer.sort()).toEqual(['exact', 'half', 'hash', 'plus']);
  });

  it('RetainedStore.match on a 30,000-level retained topic loaded directly does not throw', () => {
    const store = new RetainedStore(new MemoryPersistence());
    const msg: StoredMessage = { id: 'd', topic: DEEP, payload: Buffer.from('deep'), qos: 0, retain: true };
    store.load(msg);
    store.load({ ...msg, id: 'o', topic: 'other' });
    for (const filter of [
      DEEP,
      '#',
      levels(30_000, '+'),
      `${levels(15_000)}/#`,
      `${levels(20_000, '+')}/#`,
    ]) {
      let found: StoredMessage[] = [];
      expect(() => {
        found = store.match(filter);
      }).not.toThrow();
      expect(found.map((m) => m.id)).toContain('d');
    }
    expect(
      store
        .match('#')
        .map((m) => m.id)
        .sort(),
    ).toEqual(['d', 'o']);
  });
});

describe('PUBLISH topic beyond the limits: 5.0 DISCONNECT 0x90, 3.1.1 close', () => {
  for (const version of VERSIONS) {
    for (const topic of [DEEP, OVER_LEVELS]) {
      it(`v${version}: ${short(topic)} (${topic.split('/').length} levels) is refused, nothing routed`, async () => {
        const { port, served } = await setup();
        const raw = await RawClient.connected(port, version);
        raw.send(publish(topic, { qos: 1, messageId: 1 }));
        await refusedWith(raw, 0x90);
        expect(await served()).toEqual([]);
      });
    }

    it(`v${version}: 128 levels (the default maximum) are delivered`, async () => {
      const { port, served } = await setup();
      const raw = await RawClient.connected(port, version);
      await accepted(raw, AT_LEVELS);
      expect(await served()).toEqual([`${AT_LEVELS}:p`]);
      raw.send({ cmd: 'pingreq' });
      expect(await raw.next()).toMatchObject({ cmd: 'pingresp' });
    });

    it(`v${version}: a 65,535-byte topic (the default maximum and the MQTT string limit) is delivered`, async () => {
      const topic = 'x'.repeat(65535);
      const { port, served } = await setup();
      const raw = await RawClient.connected(port, version);
      await accepted(raw, topic);
      expect(await served()).toEqual([`${topic}:p`]);
    });

    it(`v${version}: maxTopicLength counts UTF-8 bytes: 1,000 accepted, 1,001 refused`, async () => {
      const { port, served } = await setup({ maxTopicLength: 1000 });
      const ok = await RawClient.connected(port, version);
      await accepted(ok, 'x'.repeat(1000));
      await accepted(ok, 'é'.repeat(500));
      expect(await served()).toEqual([`${'x'.repeat(1000)}:p`, `${'é'.repeat(500)}:p`]);
      // 501 characters, 1,002 bytes.
      const multi = await RawClient.connected(port, version);
      multi.send(publish('é'.repeat(501)));
      await refusedWith(multi, 0x90);
      const over = await RawClient.connected(port, version);
      over.send(publish('x'.repeat(1001)));
      await refusedWith(over, 0x90);
      expect(await served()).toEqual([]);
    });
  }

  it('v5: topic aliases still resolve; a deep topic that sets an alias is refused (0x90)', async () => {
    const { port, served } = await setup();
    const raw = await RawClient.connected(port, 5);
    await accepted(raw, 't/aliased', { properties: { topicAlias: 1 } });
    await accepted(raw, '', { properties: { topicAlias: 1 } });
    expect(await served()).toEqual(['t/aliased:p', 't/aliased:p']);
    raw.send(publish(DEEP, { properties: { topicAlias: 2 } }));
    await refusedWith(raw, 0x90);
    expect(await served()).toEqual([]);
  });

  it('v5: --max-topic-levels 3 refuses a 4-level topic and delivers a 3-level one', async () => {
    const { port, served } = await setup({ maxTopicLevels: 3 });
    const raw = await RawClient.connected(port, 5);
    await accepted(raw, 'a/b/c');
    expect(await served()).toEqual(['a/b/c:p']);
    raw.send(publish('a/b/c/d'));
    await refusedWith(raw, 0x90);
    expect(await served()).toEqual([]);
  });
});

describe('will topic beyond the limits: 5.0 CONNACK 0x90, 3.1.1 close', () => {
  const will = (topic: string) => ({ topic, payload: Buffer.from('gone'), qos: 0 as const, retain: false });

  for (const version of VERSIONS) {
    it(`v${version}: the reported case: a 30,000-level subscriber, then a 30,000-level will and a destroyed socket`, async () => {
      const { port, served } = await setup();
      // The anonymous subscriber of the report is refused its filter.
      const sub = await RawClient.connected(port, version);
      const suback = await rawSubscribe(sub, [{ topic: DEEP, qos: 0 }]);
      expect(suback.granted).toEqual([filterRefused(version)]);
      // [MQTT-3.2.2-5] a refused CONNECT is closed; 3.1.1 has no return code for a bad will topic.
      const { raw, connack } = await rawConnect(port, version, { will: will(DEEP) });
      if (version === 5) {
        expect(connack).toMatchObject({ cmd: 'connack', reasonCode: 0x90 });
        expect(await raw.next()).toBeNull();
      } else expect(connack).toBeNull();
      raw.socket.destroy();
      expect(await served()).toEqual([]);
      // The subscriber is still served too.
      sub.send({ cmd: 'pingreq' });
      expect(await sub.nextOf('pingresp')).toMatchObject({ cmd: 'pingresp' });
    });

    it(`v${version}: with maxTopicLevels raised to 30,000 the reported case is served (matching is iterative)`, async () => {
      const { port, served, inbox } = await setup({ maxTopicLevels: 30_000 });
      const sub = await RawClient.connected(port, version);
      expect((await rawSubscribe(sub, [{ topic: DEEP, qos: 0 }])).granted).toEqual([0]);
      const { raw, connack } = await rawConnect(port, version, { will: will(DEEP) });
      expect(connack).toMatchObject({ cmd: 'connack' });
      raw.socket.destroy();
      const [w] = await rawPublishes(sub, 1);
      expect([w.topic === DEEP, w.payload.toString()]).toEqual([true, 'gone']);
      expect(Inbox.brief(await inbox.until(DEEP))).toEqual([`${DEEP}:gone`]);
      expect(await served()).toEqual([]);
    });

    it(`v${version}: a will of 129 levels is refused; one of 128 is accepted and published when the socket is destroyed`, async () => {
      const { port, served, inbox } = await setup();
      const { raw, connack } = await rawConnect(port, version, { will: will(OVER_LEVELS) });
      if (version === 5) expect(connack).toMatchObject({ cmd: 'connack', reasonCode: 0x90 });
      else expect(connack).toBeNull();
      await raw.closed;
      const ok = await rawConnect(port, version, { will: will(AT_LEVELS) });
      expect(ok.connack).toMatchObject({ cmd: 'connack' });
      expect((ok.connack as { reasonCode?: number; returnCode?: number }).reasonCode ?? 0).toBe(0);
      ok.raw.socket.destroy();
      expect(Inbox.brief(await inbox.until(AT_LEVELS))).toEqual([`${AT_LEVELS}:gone`]);
      expect(await served()).toEqual([]);
    });
  }
});

describe('SUBSCRIBE filters beyond the limits: 5.0 SUBACK 0x8F, 3.1.1 0x80; the others granted', () => {
  for (const version of VERSIONS) {
    it(`v${version}: plain and $share filters, each answered on its own`, async () => {
      const { port, served } = await setup();
      const raw = await RawClient.connected(port, version);
      const suback = await rawSubscribe(raw, [
        { topic: DEEP, qos: 1 },
        { topic: 'ok/#', qos: 1 },
        { topic: OVER_LEVELS, qos: 1 },
        { topic: `${levels(127)}/#`, qos: 0 },
        { topic: `$share/g/${DEEP}`, qos: 1 },
        { topic: `$share/g/${OVER_LEVELS}`, qos: 1 },
        { topic: `$share/g/${AT_LEVELS}`, qos: 0 },
        { topic: `$queue/${OVER_LEVELS}`, qos: 1 },
      ]);
      const no = filterRefused(version);
      expect(suback.granted).toEqual([no, 1, no, 0, no, no, 0, no]);
      expect(await served()).toEqual([]);
      // The granted ones work: `ok/#` gets the marker, the shared 128-level filter its topic.
      const [m] = await rawPublishes(raw, 1);
      expect(m.topic).toMatch(/^ok\//);
      const pub = await RawClient.connected(port, version);
      pub.send(publish(AT_LEVELS));
      const got = await rawPublishes(raw, 2);
      expect(got.map((p) => p.topic)).toEqual([AT_LEVELS, AT_LEVELS]); // `…/#` and the group
      expect(await served()).toEqual([`${AT_LEVELS}:p`]);
    });

    it(`v${version}: a $share filter is checked by levels after the group and by its whole length`, async () => {
      const { port, served } = await setup({ maxTopicLength: 1000, maxTopicLevels: 3 });
      const raw = await RawClient.connected(port, version);
      // `$share/g/` is 9 bytes: a 991-byte filter makes exactly 1,000, a 992-byte one 1,001.
      const suback = await rawSubscribe(raw, [
        { topic: `$share/g/${'f'.repeat(991)}`, qos: 0 },
        { topic: `$share/g/${'f'.repeat(992)}`, qos: 0 },
        { topic: '$share/g/a/b/c', qos: 0 },
        { topic: '$share/g/a/b/c/d', qos: 0 },
        { topic: 'a/b/c/d', qos: 0 },
      ]);
      const no = filterRefused(version);
      expect(suback.granted).toEqual([0, no, 0, no, no]);
      expect(await served()).toEqual([]);
    });
  }
});

describe('UNSUBSCRIBE filters beyond the limits', () => {
  it('v5: UNSUBACK 0x8F for it, the others unsubscribed', async () => {
    const { port, served } = await setup();
    const raw = await RawClient.connected(port, 5);
    await rawSubscribe(raw, [{ topic: 'ok/#', qos: 0 }]);
    raw.send({ cmd: 'unsubscribe', messageId: 2, unsubscriptions: [DEEP, 'ok/#', OVER_LEVELS] } as Packet);
    const ack = (await raw.nextOf('unsuback')) as IUnsubackPacket;
    expect(ack.granted).toEqual([0x8f, 0x00, 0x8f]);
    expect(await served()).toEqual([]);
    raw.send({ cmd: 'pingreq' });
    // ok/# is gone: nothing but PINGRESP arrives.
    expect(await raw.next()).toMatchObject({ cmd: 'pingresp' });
  });

  it('v4: UNSUBACK (it carries no codes) and the connection stays', async () => {
    const { port, served } = await setup();
    const raw = await RawClient.connected(port, 4);
    raw.send({ cmd: 'unsubscribe', messageId: 2, unsubscriptions: [DEEP] } as Packet);
    expect(await raw.next()).toMatchObject({ cmd: 'unsuback', messageId: 2 });
    raw.send({ cmd: 'pingreq' });
    expect(await raw.next()).toMatchObject({ cmd: 'pingresp' });
    expect(await served()).toEqual([]);
  });
});

describe('retained messages beyond the limits', () => {
  for (const version of VERSIONS) {
    it(`v${version}: a retained PUBLISH on a deep topic is refused and not stored; at the limit it is`, async () => {
      const { broker, port, url, served } = await setup();
      const deep = await RawClient.connected(port, version);
      deep.send(publish(DEEP, { retain: true, qos: 1, messageId: 1 }));
      await refusedWith(deep, 0x90);
      const ok = await RawClient.connected(port, version);
      await accepted(ok, AT_LEVELS, { retain: true });
      expect(await served()).toEqual([`${AT_LEVELS}:p`]);
      expect(broker.stats.retained).toBe(1);
      // A new subscriber to `#` gets the one at the limit only.
      const late = await connectAck(url, { protocolVersion: version });
      await late.client.subscribeAsync('#');
      expect(Inbox.brief(await late.inbox.take(1))).toEqual([`${AT_LEVELS}:p`]);
      expect(await served()).toEqual([]);
    });
  }
});

describe('broker.publish(): a TypeError for an invalid topic or one beyond the limits', () => {
  it('throws for 30,000 levels, 129 levels, 64 KiB, wildcards and empty; delivers 128 levels', async () => {
    const { broker, served } = await setup();
    for (const topic of [DEEP, OVER_LEVELS, 'x'.repeat(65536), 'a/+', 'a/#', '']) {
      expect(() => broker.publish({ topic, payload: 'p' }), short(topic)).toThrow(TypeError);
    }
    expect(() => broker.publish({ topic: undefined as unknown as string, payload: 'p' })).toThrow(TypeError);
    expect(() => broker.publish({ topic: DEEP, payload: 'p' })).toThrow(/128 levels/);
    broker.publish({ topic: AT_LEVELS, payload: 'p' });
    expect(await served()).toEqual([`${AT_LEVELS}:p`]);
  });
});

describe('state restored from LevelDB: records beyond the limits are skipped, logged and deleted', () => {
  it('the broker starts, loads the rest and serves persistent 3.1.1 and 5.0 sessions', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'heron-limits-'));
    onCleanup(() => rm(dir, { recursive: true, force: true }));
    const message = (id: string, topic: string): StoredMessage => ({
      id,
      topic,
      payload: Buffer.from(id),
      qos: 1,
      retain: true,
    });
    const huge = 'x'.repeat(65536); // 64 KiB: beyond any limit, and beyond an MQTT string

    // Written as by an earlier version without limits.
    const writer = new LevelPersistence({ dir });
    await writer.open();
    writer.setRetained(DEEP, message('deep', DEEP));
    writer.setRetained(huge, message('huge', huge));
    writer.setRetained('ok/kept', message('kept', 'ok/kept'));
    const disconnectedAt = Date.now();
    for (const v of VERSIONS) {
      const clientId = `restored-${v}`;
      writer.putSession({
        clientId,
        protocolVersion: v,
        expiryInterval: v === 5 ? 3600 : NEVER_EXPIRES,
        disconnectedAt,
      });
      writer.putSubscription(clientId, { filter: DEEP, qos: 1 });
      writer.putSubscription(clientId, { filter: `$share/g/${OVER_LEVELS}`, qos: 1 });
      writer.putSubscription(clientId, { filter: `r${v}/#`, qos: 1 });
      writer.putWill({ clientId, message: message(`will-${v}`, DEEP), fireAt: Date.now() + 3_600_000 });
    }
    writer.putGroupMessage(`g/${OVER_LEVELS}`, {
      seq: 1,
      message: message('group-filter', 'a'),
      priority: 4,
      attempts: 0,
    });
    writer.putGroupMessage('g/a/#', {
      seq: 2,
      message: message('group-topic', DEEP),
      priority: 4,
      attempts: 0,
    });
    await durable(writer);
    await writer.close();

    const warnings: { record?: string; msg?: string }[] = [];
    const logger = pino({ level: 'warn' }, { write: (line: string) => warnings.push(JSON.parse(line)) });
    const store = new LevelPersistence({ dir });
    const tb: TestBroker = await startBroker({ persistence: store, logger });
    const { broker, url } = tb;
    expect(broker.stats.retained).toBe(1);
    expect(broker.wills.size).toBe(0);
    expect(broker.shares.size).toBe(0);
    for (const v of VERSIONS) {
      expect([...broker.sessions.get(`restored-${v}`)!.subscriptions.keys()]).toEqual([`r${v}/#`]);
    }
    const skipped = warnings.filter((w) => w.msg?.includes('topic limits')).map((w) => w.record);
    expect(skipped.sort()).toEqual([
      'group message',
      'group message',
      'retained',
      'retained',
      'subscription',
      'subscription',
      'subscription',
      'subscription',
      'will',
      'will',
    ]);

    // Each persistent session resumes and is served; a new subscriber gets the retained one left.
    const pub = await connect(url);
    for (const v of VERSIONS) {
      const c = await connectAck(url, {
        protocolVersion: v,
        clientId: `restored-${v}`,
        clean: false,
        ...(v === 5 && { properties: { sessionExpiryInterval: 3600 } }),
      });
      expect(c.connack.sessionPresent).toBe(true);
      await pub.publishAsync(`r${v}/x`, 'hello', { qos: 1 });
      expect(Inbox.brief(await c.inbox.take(1))).toEqual([`r${v}/x:hello`]);
    }
    const fresh = await connectAck(url, { protocolVersion: 5 });
    await fresh.client.subscribeAsync('#');
    expect(Inbox.brief(await fresh.inbox.take(1))).toEqual(['ok/kept:kept']);

    // Deleted from the store, so the next start does not meet them again.
    await broker.close();
    const after = new LevelPersistence({ dir });
    await after.open();
    onCleanup(() => after.close());
    expect((await collect(after.listRetained())).map((m) => m.topic)).toEqual(['ok/kept']);
    expect(await collect(after.listWills())).toEqual([]);
    expect(await collect(after.listGroupMessages())).toEqual([]);
    expect((await collect(after.listSubscriptions())).map((s) => s.sub.filter).sort()).toEqual([
      'r4/#',
      'r5/#',
    ]);
  });
});
