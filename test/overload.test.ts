/**
 * Flow control and overload (README "Flow control and overload"): a full queue never drops what
 * was acknowledged under `backpressure` and `reject`; the drop policies count what they drop; a
 * stuck consumer cannot hold the others hostage; persistent queues continue in persistence.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { IClientOptions, MqttClient } from 'mqtt';
import mqtt from 'mqtt';
import { describe, expect, it, vi } from 'vitest';
import { STORE_BACKLOG } from '../broker/flow.js';
import { type BrokerOptions, createBroker } from '../broker/index.js';
import { LevelPersistence } from '../persistence/level.js';
import { connect, onCleanup, startBroker } from './helpers.js';
import { rawConnect, rawSubscribe } from './spec-helpers.js';

let seq = 0;
const uid = (p: string) => `${p}-${process.pid}-${++seq}`;

/**
 * A subscriber whose PUBACKs wait on `gate`: mqtt.js acknowledges a QoS 1 message once
 * handleMessage calls back, so `slow` sets the pace (one ack per `every` ms), `fast` lets it catch up.
 */
async function slowSubscriber(url: string, filter: string, opts: IClientOptions = {}) {
  const client = await connect(url, { clientId: uid('sub'), ...opts });
  const got: string[] = [];
  const waiting: (() => void)[] = [];
  let mode: 'hold' | 'fast' = 'hold';
  let timer: NodeJS.Timeout | undefined;
  client.handleMessage = (packet, callback) => {
    got.push(String(packet.payload));
    if (mode === 'fast') callback();
    else waiting.push(() => callback());
  };
  const release = () => {
    while (waiting.length > 0) waiting.shift()!();
  };
  onCleanup(() => clearInterval(timer));
  await client.subscribeAsync(filter, { qos: 1 });
  return {
    client,
    got,
    /** Acknowledge one held message every `every` ms. */
    slow(every: number) {
      clearInterval(timer);
      timer = setInterval(() => waiting.shift()?.(), every);
    },
    fast() {
      clearInterval(timer);
      mode = 'fast';
      release();
    },
  };
}

/** Publishes n QoS 1 messages `<name>:<i>` without waiting between them; resolves with each outcome. */
function flood(client: MqttClient, topic: string, name: string, n: number): Promise<(number | null)[]> {
  return Promise.all(
    Array.from(
      { length: n },
      (_, i) =>
        new Promise<number | null>((resolve) =>
          client.publish(topic, `${name}:${i}`, { qos: 1 }, (err) =>
            resolve(err ? ((err as { code?: number }).code ?? -1) : null),
          ),
        ),
    ),
  );
}

/** Each publisher's messages, in the order received: payloads `<name>:<i>`. */
function perPublisher(got: string[]): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const p of got) {
    const [name, i] = p.split(':');
    const list = out.get(name) ?? [];
    out.set(name, list);
    list.push(Number(i));
  }
  return out;
}

const PUBLISHERS = 10;
const EACH = 150;
const tight: BrokerOptions = { maxInflight: 10, maxQueued: 20 };

describe('backpressure (the default policy)', () => {
  it('fan-in of 10 QoS 1 publishers into a subscriber at a tenth of their rate: every acknowledged message arrives, in order per publisher', async () => {
    const { url, broker } = await startBroker(tight);
    expect(broker.options.queueOverflow).toBe('backpressure');
    const sub = await slowSubscriber(url, 'in/+');
    sub.slow(2);
    const pubs = await Promise.all(Array.from({ length: PUBLISHERS }, () => connect(url)));
    const floods = pubs.map((p, k) => flood(p, `in/${k}`, `p${k}`, EACH));
    // The queue fills: publishers stop being read and wait for their PUBACKs.
    await vi.waitFor(() => expect(broker.stats.publishersWaiting).toBeGreaterThan(0), { timeout: 10000 });
    expect(broker.sessions.get(sub.client.options.clientId!)!.queued).toBeLessThan(tight.maxQueued! + 2000);
    sub.fast();
    const outcomes = (await Promise.all(floods)).flat();
    expect(outcomes.every((o) => o === null)).toBe(true);
    await vi.waitFor(() => expect(sub.got.length).toBe(PUBLISHERS * EACH), { timeout: 10000 });
    for (const [, ids] of perPublisher(sub.got))
      expect(ids).toEqual(Array.from({ length: EACH }, (_, i) => i));
    expect(broker.stats.messagesDropped).toBe(0);
    expect(broker.stats.queueOverflows).toBeGreaterThan(0);
    await vi.waitFor(() => expect(broker.stats.publishersWaiting).toBe(0));
  });

  it('a publisher held back by one subscriber does not stop other publishers and subscribers', async () => {
    const { url, broker } = await startBroker(tight);
    const sub = await slowSubscriber(url, 'slow/t');
    const stuckPub = await connect(url);
    const outcome = flood(stuckPub, 'slow/t', 'a', 100);
    await vi.waitFor(() => expect(broker.stats.publishersWaiting).toBe(1));
    const other = await connect(url);
    const watcher = await connect(url);
    await watcher.subscribeAsync('fine/t', { qos: 1 });
    const seen: string[] = [];
    watcher.on('message', (_t, p) => seen.push(String(p)));
    for (let i = 0; i < 20; i++) await other.publishAsync('fine/t', `${i}`, { qos: 1 });
    await vi.waitFor(() => expect(seen.length).toBe(20));
    expect(broker.stats.publishersWaiting).toBe(1);
    sub.fast();
    expect((await outcome).every((o) => o === null)).toBe(true);
    await vi.waitFor(() => expect(sub.got.length).toBe(100));
  });

  it('a client publishing to its own full queue is not held back (its PUBACKs arrive on that socket)', async () => {
    const { url, broker } = await startBroker({ maxInflight: 2, maxQueued: 2 });
    const self = await connect(url, { clientId: uid('self') });
    await self.subscribeAsync('self/t', { qos: 1 });
    const got: string[] = [];
    self.on('message', (_t, p) => got.push(String(p)));
    const outcome = await flood(self, 'self/t', 's', 50);
    expect(outcome.every((o) => o === null)).toBe(true);
    await vi.waitFor(() => expect(got.length).toBe(50));
    expect(broker.stats.publishersWaiting).toBe(0);
  });
});

describe('reject', () => {
  it('5.0 publishers get PUBACK 0x97 for a message a full queue cannot take; every accepted one arrives, in order [MQTT-3.4.2.1]', async () => {
    const { url, broker } = await startBroker({ ...tight, queueOverflow: 'reject' });
    const sub = await slowSubscriber(url, 'rj/+');
    sub.slow(2);
    const pubs = await Promise.all(
      Array.from({ length: PUBLISHERS }, () => connect(url, { protocolVersion: 5 })),
    );
    const results = await Promise.all(pubs.map((p, k) => flood(p, `rj/${k}`, `p${k}`, EACH)));
    sub.fast();
    const accepted = new Map<string, number[]>();
    let rejected = 0;
    results.forEach((outcomes, k) => {
      accepted.set(
        `p${k}`,
        outcomes.flatMap((o, i) => (o === null ? [i] : [])),
      );
      for (const o of outcomes) if (o !== null) rejected++;
      for (const o of outcomes) if (o !== null) expect(o).toBe(0x97);
    });
    expect(rejected).toBeGreaterThan(0);
    expect(broker.stats.publishesRejected).toBe(rejected);
    const total = [...accepted.values()].reduce((n, l) => n + l.length, 0);
    await vi.waitFor(() => expect(sub.got.length).toBe(total), { timeout: 10000 });
    expect(perPublisher(sub.got)).toEqual(new Map([...accepted].filter(([, l]) => l.length > 0)));
    expect(broker.stats.messagesDropped).toBe(0);
  });

  it('a 3.1.1 publisher cannot be told: it is held back as under backpressure', async () => {
    const { url, broker } = await startBroker({ ...tight, queueOverflow: 'reject' });
    const sub = await slowSubscriber(url, 'rj4/t');
    const pub = await connect(url, { protocolVersion: 4 });
    const outcome = flood(pub, 'rj4/t', 'a', 100);
    await vi.waitFor(() => expect(broker.stats.publishersWaiting).toBe(1));
    sub.fast();
    expect((await outcome).every((o) => o === null)).toBe(true);
    await vi.waitFor(() => expect(sub.got.length).toBe(100));
  });
});

describe('drop-new and drop-oldest', () => {
  for (const policy of ['drop-new', 'drop-oldest'] as const) {
    it(`${policy}: publishers are never held back; what is dropped is counted and reported`, async () => {
      const { url, broker } = await startBroker({ ...tight, queueOverflow: policy });
      const drops: string[] = [];
      broker.on('drop', (_id, msg) => drops.push(String(msg.payload)));
      const sub = await slowSubscriber(url, 'dr/t');
      const pub = await connect(url);
      expect((await flood(pub, 'dr/t', 'a', 200)).every((o) => o === null)).toBe(true);
      expect(broker.stats.publishersWaiting).toBe(0);
      sub.fast();
      await vi.waitFor(() => expect(sub.got.length + drops.length).toBe(200));
      expect(broker.stats.messagesDropped).toBe(drops.length);
      expect(drops.length).toBeGreaterThan(0);
      // drop-new keeps the first ones; drop-oldest the freshest.
      const last = sub.got.at(-1);
      if (policy === 'drop-oldest') expect(last).toBe('a:199');
      else expect(drops.at(-1)).toBe('a:199');
    });
  }
});

describe('a stuck consumer', () => {
  it('a clean session that makes no progress for stuckTimeout is disconnected (5.0 0x97); its publishers resume', async () => {
    const { url, port, broker } = await startBroker({ ...tight, stuckTimeout: 1 });
    // A raw 5.0 subscriber that reads everything and acknowledges nothing.
    const { raw } = await rawConnect(port, 5);
    await rawSubscribe(raw, [{ topic: 'st/t', qos: 1 }]);
    const pub = await connect(url);
    const outcome = flood(pub, 'st/t', 'a', 200);
    await vi.waitFor(() => expect(broker.stats.publishersWaiting).toBe(1));
    const started = Date.now();
    let p = await raw.next();
    while (p !== null && p.cmd === 'publish') p = await raw.next();
    expect(p).toMatchObject({ cmd: 'disconnect', reasonCode: 0x97 });
    expect(Date.now() - started).toBeGreaterThan(500);
    expect(await raw.next()).toBeNull();
    // Its session ended: the held publisher resumes, every PUBLISH acknowledged.
    expect((await outcome).every((o) => o === null)).toBe(true);
    expect(broker.stats.stuckConsumers).toBe(1);
    expect(broker.stats.publishersWaiting).toBe(0);
  });

  it('the broker-wide memory budget holds publishers back; with nothing released for stuckTimeout they resume and the excess is dropped and counted', async () => {
    // 20 bodies of 'mb/t' + 'a:NN' fit in 200 bytes; the window holds 5, the queue the rest.
    const { url, broker } = await startBroker({
      maxInflight: 5,
      maxQueued: 1000,
      maxMemory: 200,
      stuckTimeout: 1,
    });
    const sub = await slowSubscriber(url, 'mb/t');
    const pub = await connect(url);
    const outcome = flood(pub, 'mb/t', 'a', 100);
    await vi.waitFor(() => expect(broker.stats.publishersWaiting).toBe(1));
    // Beyond the budget by at most what the publisher's one write held (100 messages of ≤ 10 bytes).
    expect(broker.stats.queuedBytes).toBeLessThanOrEqual(1000);
    // Nothing is acknowledged: after stuckTimeout the publisher resumes, what no queue can take is dropped.
    expect((await outcome).every((o) => o === null)).toBe(true);
    expect(broker.stats.stuckConsumers).toBe(1);
    // Memory is still full and nothing was released: the next messages are dropped, counted.
    expect((await flood(pub, 'mb/t', 'b', 20)).every((o) => o === null)).toBe(true);
    expect(broker.stats.messagesDropped).toBe(20);
    sub.fast();
    await vi.waitFor(() => expect(sub.got.length).toBe(100));
    expect(sub.got.every((p) => p.startsWith('a:'))).toBe(true);
  });

  it('a persistent session spills its queue to persistence instead of holding publishers back, and gets it all in order', async () => {
    const { url, broker } = await startBroker(tight);
    const clientId = uid('spill');
    const sub = await slowSubscriber(url, 'sp/t', { clientId, clean: false });
    const pub = await connect(url);
    // Publishers are never held back: every PUBLISH is acknowledged while the subscriber reads nothing.
    expect((await flood(pub, 'sp/t', 'a', 1000)).every((o) => o === null)).toBe(true);
    const session = broker.sessions.get(clientId)!;
    expect(session.queued).toBeLessThanOrEqual(tight.maxQueued!);
    expect(session.storedBytes).toBeGreaterThan(0);
    expect(broker.stats.publishersWaiting).toBe(0);
    sub.fast();
    await vi.waitFor(() => expect(sub.got.length).toBe(1000), { timeout: 10000 });
    expect(perPublisher(sub.got).get('a')).toEqual(Array.from({ length: 1000 }, (_, i) => i));
    expect(broker.stats.messagesDropped).toBe(0);
  });
});

describe('a spilled session that goes offline', () => {
  it('gets everything after it reconnects, in order: what memory held is read from persistence again', async () => {
    const { url, broker } = await startBroker(tight);
    const clientId = uid('spoff');
    const sub = await slowSubscriber(url, 'so/t', { clientId, clean: false });
    const pub = await connect(url);
    expect((await flood(pub, 'so/t', 'a', 500)).every((o) => o === null)).toBe(true);
    const session = broker.sessions.get(clientId)!;
    expect(session.loaded).toBe(false);
    await sub.client.endAsync(true);
    await vi.waitFor(() => expect(session.conn).toBeNull());
    expect(session.queued).toBe(0);
    expect(session.heldBytes).toBe(0);
    // The listener is there before CONNACK: the re-sent PUBLISH packets follow it at once.
    const again = mqtt.connect(url, { clientId, clean: false, reconnectPeriod: 0 });
    onCleanup(() => again.endAsync(true));
    const got: string[] = [];
    again.on('message', (_t, p) => got.push(String(p)));
    await vi.waitFor(() => expect(new Set(got).size).toBe(500), { timeout: 10000 });
    // The unacknowledged ones may come twice (DUP), the first time each in order.
    const firsts = got.filter((p, i) => got.indexOf(p) === i);
    expect(firsts).toEqual(Array.from({ length: 500 }, (_, i) => `a:${i}`));
    expect(broker.stats.messagesDropped).toBe(0);
  });
});

describe('offline persistent sessions on LevelDB', () => {
  async function levelBroker(dir: string, opts: BrokerOptions = {}) {
    const broker = createBroker({
      port: 0,
      host: '127.0.0.1',
      logLevel: 'silent',
      persistence: new LevelPersistence({ dir }),
      ...opts,
    });
    await broker.listen();
    return { broker, url: `mqtt://127.0.0.1:${broker.port()}` };
  }

  it('50,000 messages for an offline session are queued in persistence, not memory, and all arrive after a restart', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'heron-offline-'));
    onCleanup(() => rm(dir, { recursive: true, force: true }));
    const N = 50000;
    const clientId = uid('off');
    const a = await levelBroker(dir);
    onCleanup(() => a.broker.close());
    const first = await mqtt.connectAsync(a.url, { clientId, clean: false, reconnectPeriod: 0 });
    await first.subscribeAsync('off/t', { qos: 1 });
    await first.endAsync();
    await vi.waitFor(() => expect(a.broker.sessions.get(clientId)?.conn).toBeNull());
    const pub = await mqtt.connectAsync(a.url, { reconnectPeriod: 0 });
    for (let k = 0; k < N; k += 5000)
      expect((await flood(pub, 'off/t', 'a', 5000)).every((o) => o === null)).toBe(true);
    await pub.endAsync();
    const s = a.broker.sessions.get(clientId)!;
    expect(s.queued).toBe(0);
    expect(s.heldBytes).toBe(0);
    let bytes = 0;
    for (let i = 0; i < N; i++) bytes += 'off/t'.length + `a:${i % 5000}`.length;
    expect(s.storedBytes).toBe(bytes);
    await a.broker.close();

    const b = await levelBroker(dir);
    onCleanup(() => b.broker.close());
    // The byte count of what waits for it survives the restart.
    expect(b.broker.sessions.get(clientId)!.storedBytes).toBe(s.storedBytes);
    const again = await mqtt.connectAsync(b.url, { clientId, clean: false, reconnectPeriod: 0 });
    onCleanup(() => again.endAsync(true));
    let n = 0;
    let inOrder = true;

    const all = new Promise<void>((resolve) =>
      again.on('message', (_t, p) => {
        if (String(p) !== `a:${n % 5000}`) inOrder = false;
        if (++n === N) resolve();
      }),
    );
    await all;
    expect(inOrder).toBe(true);
    expect(b.broker.stats.messagesDropped).toBe(0);
  }, 60000);

  it('a spilled queue read back a page at a time while messages keep arriving loses none and keeps order', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'heron-spill-'));
    onCleanup(() => rm(dir, { recursive: true, force: true }));
    const a = await levelBroker(dir, { maxInflight: 5, maxQueued: 20 });
    onCleanup(() => a.broker.close());
    const clientId = uid('pages');
    const sub = await slowSubscriber(a.url, 'pg/t', { clientId, clean: false });
    // Acknowledged at a steady pace while the publisher keeps going: pages are read from LevelDB
    // while new messages for the session arrive, some during each read.
    sub.slow(1);
    const pub = await connect(a.url);
    const N = 3000;
    const sending = (async () => {
      for (let k = 0; k < N; k += 100) await flood(pub, 'pg/t', 'a', 100).then(() => undefined);
    })();
    await sending;
    sub.fast();
    await vi.waitFor(() => expect(sub.got.length).toBeGreaterThanOrEqual(N), { timeout: 20000 });
    const ids = sub.got.map((p) => Number(p.split(':')[1]));
    expect(ids).toEqual(Array.from({ length: N }, (_, i) => i % 100));
    expect(a.broker.stats.messagesDropped).toBe(0);
  }, 30000);

  it('a queue that fills while a page is being read spills too: publishers are not held back, nothing is lost or reordered', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'heron-slowread-'));
    onCleanup(() => rm(dir, { recursive: true, force: true }));
    /** Reads of the session's queue finish only when the test lets them (a slow disk). */
    class SlowReads extends LevelPersistence {
      hold: Promise<void> | null = null;
      reading: (() => void) | null = null;
      override async getOutgoing(clientId: string, limit?: number, after?: number) {
        const recs = await super.getOutgoing(clientId, limit, after);
        if (this.hold) {
          this.reading?.();
          await this.hold;
        }
        return recs;
      }
    }
    const store = new SlowReads({ dir });
    const broker = createBroker({
      port: 0,
      host: '127.0.0.1',
      logLevel: 'silent',
      persistence: store,
      maxInflight: 5,
      maxQueued: 20,
    });
    await broker.listen();
    onCleanup(() => broker.close());
    const url = `mqtt://127.0.0.1:${broker.port()}`;
    const clientId = uid('slowread');
    const sub = await slowSubscriber(url, 'sr/t', { clientId, clean: false });
    const pub = await connect(url);
    expect((await flood(pub, 'sr/t', 'a', 100)).every((o) => o === null)).toBe(true);
    const session = broker.sessions.get(clientId)!;
    expect(session.loaded).toBe(false);
    // The subscriber catches up with memory's queue; the page after it is read, and held.
    let release!: () => void;
    store.hold = new Promise<void>((r) => {
      release = r;
    });
    const reading = new Promise<void>((r) => {
      store.reading = r;
    });
    sub.fast();
    await reading;
    expect(session.resuming).toBe(true);
    // Four times what memory's queue holds arrives meanwhile: every one is acknowledged at once.
    expect((await flood(pub, 'sr/t', 'b', 80)).every((o) => o === null)).toBe(true);
    expect(broker.stats.publishersWaiting).toBe(0);
    expect(session.queued).toBeLessThanOrEqual(20);
    store.hold = null;
    release();
    await vi.waitFor(() => expect(new Set(sub.got).size).toBe(180), { timeout: 10000 });
    const firsts = sub.got.filter((p, i) => sub.got.indexOf(p) === i);
    expect(firsts).toEqual([
      ...Array.from({ length: 100 }, (_, i) => `a:${i}`),
      ...Array.from({ length: 80 }, (_, i) => `b:${i}`),
    ]);
    expect(sub.got.length).toBe(180);
    expect(broker.stats.messagesDropped).toBe(0);
  }, 30000);

  it('a spilled queue behind a slow disk: over the write backlog bound its publishers wait, and resume once it is written', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'heron-backlog-'));
    onCleanup(() => rm(dir, { recursive: true, force: true }));
    /** Reports a write backlog at its bound while `slow` is set (a disk that does not keep up). */
    class SlowDisk extends LevelPersistence {
      slow = false;
      override backlogBytes(): number {
        return this.slow ? STORE_BACKLOG : super.backlogBytes();
      }
    }
    const store = new SlowDisk({ dir });
    const broker = createBroker({
      port: 0,
      host: '127.0.0.1',
      logLevel: 'silent',
      persistence: store,
      ...tight,
    });
    await broker.listen();
    onCleanup(() => broker.close());
    const url = `mqtt://127.0.0.1:${broker.port()}`;
    const clientId = uid('backlog');
    const sub = await slowSubscriber(url, 'bl/t', { clientId, clean: false });
    const pub = await connect(url);
    const other = await connect(url);
    expect((await flood(pub, 'bl/t', 'a', 100)).every((o) => o === null)).toBe(true);
    expect(broker.sessions.get(clientId)!.loaded).toBe(false);
    store.slow = true;
    let acked = 0;
    const held = flood(pub, 'bl/t', 'b', 10).then((outcomes) => {
      acked = outcomes.length;
      return outcomes;
    });
    await vi.waitFor(() => expect(broker.stats.publishersWaiting).toBe(1));
    // A publisher whose messages do not go to the spilled queue is not held back.
    expect((await flood(other, 'elsewhere', 'c', 5)).every((o) => o === null)).toBe(true);
    expect(acked).toBe(0);
    store.slow = false;
    expect((await held).every((o) => o === null)).toBe(true);
    expect(broker.stats.publishersWaiting).toBe(0);
    sub.fast();
    await vi.waitFor(() => expect(new Set(sub.got).size).toBe(110), { timeout: 10000 });
    const firsts = sub.got.filter((p, i) => sub.got.indexOf(p) === i);
    expect(firsts).toEqual([
      ...Array.from({ length: 100 }, (_, i) => `a:${i}`),
      ...Array.from({ length: 10 }, (_, i) => `b:${i}`),
    ]);
  }, 30000);

  it('its byte bound holds across a restart: beyond it messages are dropped and counted (drop-new)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'heron-offbound-'));
    onCleanup(() => rm(dir, { recursive: true, force: true }));
    const clientId = uid('offb');
    // 'ob/t' + 'a:0' = 7 bytes a message: ten fit in 70.
    const opts: BrokerOptions = { maxQueuedBytes: 70, queueOverflow: 'drop-new' };
    const a = await levelBroker(dir, opts);
    onCleanup(() => a.broker.close());
    const first = await mqtt.connectAsync(a.url, { clientId, clean: false, reconnectPeriod: 0 });
    await first.subscribeAsync('ob/t', { qos: 1 });
    await first.endAsync();
    await vi.waitFor(() => expect(a.broker.sessions.get(clientId)?.conn).toBeNull());
    const pub = await mqtt.connectAsync(a.url, { reconnectPeriod: 0 });
    await flood(pub, 'ob/t', 'a', 6);
    await pub.endAsync();
    await a.broker.close();
    const b = await levelBroker(dir, opts);
    onCleanup(() => b.broker.close());
    const pub2 = await mqtt.connectAsync(b.url, { reconnectPeriod: 0 });
    onCleanup(() => pub2.endAsync(true));
    await flood(pub2, 'ob/t', 'b', 6);
    expect(b.broker.stats.messagesDropped).toBe(2);
  });
});
