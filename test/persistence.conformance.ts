/**
 * The behavioural contract of `Persistence`, run against every backend (see persistence.test.ts).
 *
 * The factory returns a store that is not yet opened (the suite opens it), and for durable backends
 * `reopen`, which returns a new, unopened store over the same data. The suite closes what it opened
 * before it calls `cleanup`.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type {
  DedupRecord,
  GroupMessageRecord,
  OutgoingRecord,
  Persistence,
  SessionRecord,
  StoredMessage,
  SubscriptionRecord,
  WillRecord,
} from '../persistence/types.js';

export interface PersistenceFixture {
  store: Persistence;
  reopen?: () => Promise<Persistence>;
  cleanup: () => Promise<void>;
}

export async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

export function durable(store: Persistence): Promise<void> {
  return new Promise((resolve, reject) => store.whenDurable((err) => (err ? reject(err) : resolve())));
}

let nextId = 0;
export function message(over: Partial<StoredMessage> = {}): StoredMessage {
  nextId++;
  return {
    id: `msg-${nextId}-${Math.random().toString(36).slice(2)}`,
    topic: `t/${nextId}`,
    payload: Buffer.from(`payload ${nextId}`),
    qos: 1,
    retain: false,
    ...over,
  };
}

export function outgoing(
  seq: number,
  msg: StoredMessage,
  over: Partial<OutgoingRecord> = {},
): OutgoingRecord {
  return { seq, state: 'queued', qos: msg.qos, retain: false, message: msg, ...over };
}

/** Every byte value, so an encoding that is not binary-safe shows. */
const ALL_BYTES = Buffer.from(Array.from({ length: 256 }, (_, i) => i));

/** A message using every field StoredMessage has. */
export function richMessage(): StoredMessage {
  return message({
    topic: 'sensors/ünïcödé/🌡',
    payload: Buffer.concat([ALL_BYTES, Buffer.from(ALL_BYTES).reverse()]),
    qos: 2,
    retain: true,
    expiresAt: 1_900_000_000_123,
    properties: {
      payloadFormatIndicator: true,
      contentType: 'application/octet-stream',
      responseTopic: 'replies/1',
      correlationData: Buffer.from([0, 1, 2, 0xff, 0xfe, 0]),
      userProperties: { single: 'value', many: ['a', 'b', 'ç'], empty: '' },
    },
  });
}

const bySeq = (recs: OutgoingRecord[]) => recs.map((r) => r.seq);
const sortNum = (xs: number[]) => [...xs].sort((a, b) => a - b);
const byClientFilter = (xs: { clientId: string; sub: SubscriptionRecord }[]) =>
  [...xs].sort((a, b) => (a.clientId + a.sub.filter < b.clientId + b.sub.filter ? -1 : 1));
const byKey =
  <T>(key: (x: T) => string) =>
  (xs: T[]) =>
    [...xs].sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
const sessionsSorted = byKey<SessionRecord>((s) => s.clientId);
const retainedSorted = byKey<StoredMessage>((m) => m.topic);
const willsSorted = byKey<WillRecord>((w) => w.clientId);
const dedupSorted = byKey<DedupRecord>((d) => `${d.publisher ?? '-'}\u0000${d.topic}\u0000${d.key}`);

export function groupMessage(
  seq: number,
  msg: StoredMessage,
  over: Partial<GroupMessageRecord> = {},
): GroupMessageRecord {
  return { seq, message: msg, priority: 4, attempts: 0, ...over };
}

/** Group records listed by a store, as [group, seq] pairs in listing order. */
async function groupSeqs(store: Persistence): Promise<[string, number][]> {
  return (await collect(store.listGroupMessages())).map(({ group, rec }) => [group, rec.seq]);
}

function expectMessage(actual: StoredMessage, expected: StoredMessage): void {
  // Payloads apart: a deep equal walks a large Buffer byte by byte.
  expect({ ...actual, payload: null }).toEqual({ ...expected, payload: null });
  expect(Buffer.isBuffer(actual.payload)).toBe(true);
  expect(actual.payload.equals(expected.payload)).toBe(true);
  if (expected.properties?.correlationData) {
    expect(Buffer.isBuffer(actual.properties?.correlationData)).toBe(true);
    expect(actual.properties?.correlationData?.equals(expected.properties.correlationData)).toBe(true);
  }
}

export function persistenceConformance(name: string, factory: () => Promise<PersistenceFixture>): void {
  describe(`Persistence conformance: ${name}`, () => {
    let fixture: PersistenceFixture;
    /** The store the suite has open now (reopen replaces it). */
    let store: Persistence;

    beforeEach(async () => {
      fixture = await factory();
      store = fixture.store;
      await store.open();
    });

    afterEach(async () => {
      await store.close();
      await fixture.cleanup();
    });

    /** Closes the current store and opens a new one over the same data (durable backends only). */
    async function reopen(): Promise<Persistence> {
      if (!fixture.reopen) throw new Error('not a durable backend');
      await durable(store);
      await store.close();
      store = await fixture.reopen();
      await store.open();
      return store;
    }

    describe('sessions', () => {
      it('puts, lists and replaces by clientId', async () => {
        store.putSession({ clientId: 'a', protocolVersion: 4, expiryInterval: 0 });
        store.putSession({ clientId: 'b', protocolVersion: 5, expiryInterval: 60, disconnectedAt: 1000 });
        expect(sessionsSorted(await collect(store.listSessions()))).toEqual([
          { clientId: 'a', protocolVersion: 4, expiryInterval: 0 },
          { clientId: 'b', protocolVersion: 5, expiryInterval: 60, disconnectedAt: 1000 },
        ]);
        store.putSession({ clientId: 'b', protocolVersion: 5, expiryInterval: 0xffffffff });
        store.putSession({ clientId: 'a', protocolVersion: 3, expiryInterval: 10, disconnectedAt: 5 });
        const list = sessionsSorted(await collect(store.listSessions()));
        expect(list).toEqual([
          { clientId: 'a', protocolVersion: 3, expiryInterval: 10, disconnectedAt: 5 },
          { clientId: 'b', protocolVersion: 5, expiryInterval: 0xffffffff },
        ]);
        expect('disconnectedAt' in list[1]).toBe(false);
      });

      it('deletes a session; deleting an unknown one is harmless', async () => {
        store.putSession({ clientId: 'a', protocolVersion: 4, expiryInterval: 0 });
        store.putSession({ clientId: 'ab', protocolVersion: 4, expiryInterval: 0 });
        store.deleteSession('a');
        store.deleteSession('nobody');
        expect(await collect(store.listSessions())).toEqual([
          { clientId: 'ab', protocolVersion: 4, expiryInterval: 0 },
        ]);
      });

      it('lists an empty store', async () => {
        expect(await collect(store.listSessions())).toEqual([]);
        expect(await collect(store.listSubscriptions())).toEqual([]);
        expect(await collect(store.listRetained())).toEqual([]);
        expect(await collect(store.listWills())).toEqual([]);
        expect(await store.getOutgoing('x')).toEqual([]);
        expect(await store.getIncoming('x')).toEqual([]);
      });

      it('delete cascades to subscriptions, outgoing, incoming ids and will, sparing other clients', async () => {
        // 'a' is a prefix of 'ab' and 'a/b': a prefix scan must not reach them.
        for (const clientId of ['a', 'ab', 'a/b']) {
          store.putSession({ clientId, protocolVersion: 5, expiryInterval: 100 });
          store.putSubscription(clientId, { filter: 'x/#', qos: 1 });
          store.putSubscription(clientId, { filter: `${clientId}/+`, qos: 2 });
          store.putOutgoing(clientId, outgoing(1, message()));
          store.putOutgoing(clientId, outgoing(2, message(), { state: 'inflight', packetId: 7 }));
          store.addIncoming(clientId, 3);
          store.putWill({ clientId, fireAt: 10, message: message() });
        }
        await durable(store);
        store.deleteSession('a');

        expect(sessionsSorted(await collect(store.listSessions())).map((s) => s.clientId)).toEqual([
          'a/b',
          'ab',
        ]);
        const subs = await collect(store.listSubscriptions());
        expect(subs.map((s) => s.clientId).sort()).toEqual(['a/b', 'a/b', 'ab', 'ab']);
        expect(await store.getOutgoing('a')).toEqual([]);
        expect(await store.getIncoming('a')).toEqual([]);
        expect((await collect(store.listWills())).map((w) => w.clientId).sort()).toEqual(['a/b', 'ab']);
        for (const clientId of ['ab', 'a/b']) {
          expect(bySeq(await store.getOutgoing(clientId))).toEqual([1, 2]);
          expect(await store.getIncoming(clientId)).toEqual([3]);
        }
      });

      it('delete cascades to what was put in the same tick, and keeps what is put after it', async () => {
        store.putSession({ clientId: 'c', protocolVersion: 4, expiryInterval: 100 });
        store.putSubscription('c', { filter: 'old', qos: 0 });
        store.putOutgoing('c', outgoing(1, message()));
        store.addIncoming('c', 1);
        store.putWill({ clientId: 'c', fireAt: 1, message: message() });
        store.deleteSession('c');
        store.putSession({ clientId: 'c', protocolVersion: 5, expiryInterval: 7 });
        store.putSubscription('c', { filter: 'new', qos: 1 });
        store.putOutgoing('c', outgoing(2, message()));
        store.addIncoming('c', 2);

        expect(await collect(store.listSessions())).toEqual([
          { clientId: 'c', protocolVersion: 5, expiryInterval: 7 },
        ]);
        expect(await collect(store.listSubscriptions())).toEqual([
          { clientId: 'c', sub: { filter: 'new', qos: 1 } },
        ]);
        expect(bySeq(await store.getOutgoing('c'))).toEqual([2]);
        expect(await store.getIncoming('c')).toEqual([2]);
        expect(await collect(store.listWills())).toEqual([]);
      });

      it('breaking out of a listing early leaves the store usable', async () => {
        for (let i = 0; i < 50; i++)
          store.putSession({ clientId: `c${i}`, protocolVersion: 4, expiryInterval: 1 });
        for await (const _ of store.listSessions()) break;
        store.putSession({ clientId: 'late', protocolVersion: 4, expiryInterval: 1 });
        expect((await collect(store.listSessions())).length).toBe(51);
      });
    });

    describe('subscriptions', () => {
      it('puts, replaces by filter, deletes and lists per client', async () => {
        const subs: SubscriptionRecord[] = [
          { filter: 'a/+/c', qos: 0 },
          { filter: '#', qos: 1, noLocal: true },
          {
            filter: '$share/group/x/y',
            qos: 2,
            retainAsPublished: true,
            retainHandling: 2,
            subscriptionId: 268435455,
          },
          { filter: 'ünï/cödé/🌡', qos: 1 },
          { filter: '/', qos: 0 },
        ];
        for (const sub of subs) store.putSubscription('c1', sub);
        store.putSubscription('c10', { filter: '#', qos: 0 });
        expect(byClientFilter(await collect(store.listSubscriptions()))).toEqual(
          byClientFilter([
            ...subs.map((sub) => ({ clientId: 'c1', sub })),
            { clientId: 'c10', sub: { filter: '#', qos: 0 } },
          ]),
        );

        store.putSubscription('c1', { filter: '#', qos: 2, subscriptionId: 5 });
        store.deleteSubscription('c1', 'a/+/c');
        store.deleteSubscription('c1', 'not/subscribed');
        store.deleteSubscription('nobody', '#');
        const after = await collect(store.listSubscriptions());
        expect(
          after
            .filter((s) => s.clientId === 'c1')
            .map((s) => s.sub.filter)
            .sort(),
        ).toEqual(['#', '$share/group/x/y', 'ünï/cödé/🌡', '/'].sort());
        expect(after.find((s) => s.clientId === 'c1' && s.sub.filter === '#')?.sub).toEqual({
          filter: '#',
          qos: 2,
          subscriptionId: 5,
        });
        expect(after.filter((s) => s.clientId === 'c10')).toEqual([
          { clientId: 'c10', sub: { filter: '#', qos: 0 } },
        ]);
      });
    });

    describe('outgoing', () => {
      it('returns records in seq order whatever the insert order, numerically up to 2e15', async () => {
        const seqs = [2_000_000_000_000_001, 5, 1_000_000_000_000_000, 10, 9, 99_999_999_999, 1, 100, 0];
        for (const seq of seqs) store.putOutgoing('c', outgoing(seq, message()));
        expect(bySeq(await store.getOutgoing('c'))).toEqual(sortNum(seqs));
      });

      it('replaces the record with the same seq (state, packet id, even the message)', async () => {
        const m1 = message();
        store.putOutgoing('c', outgoing(1, m1));
        store.putOutgoing('c', outgoing(2, m1));
        store.putOutgoing(
          'c',
          outgoing(1, m1, { state: 'inflight', packetId: 10, qos: 1, subscriptionIds: [3, 4] }),
        );
        let recs = await store.getOutgoing('c');
        expect(recs).toEqual([
          outgoing(1, m1, { state: 'inflight', packetId: 10, qos: 1, subscriptionIds: [3, 4] }),
          outgoing(2, m1),
        ]);
        store.putOutgoing('c', outgoing(1, m1, { state: 'pubrel', packetId: 10, qos: 2 }));
        recs = await store.getOutgoing('c');
        expect(recs[0]).toEqual(outgoing(1, m1, { state: 'pubrel', packetId: 10, qos: 2 }));
        expect('subscriptionIds' in recs[0]).toBe(false);

        const m2 = message({ payload: Buffer.from('other') });
        store.putOutgoing('c', outgoing(2, m2, { retain: true }));
        recs = await store.getOutgoing('c');
        expect(recs.map((r) => r.message.id)).toEqual([m1.id, m2.id]);
        expectMessage(recs[1].message, m2);
        expect(recs[1].retain).toBe(true);
      });

      it('deletes by seq; unknown seqs and clients are harmless', async () => {
        const m = message();
        for (const seq of [1, 2, 3]) store.putOutgoing('c', outgoing(seq, m));
        store.deleteOutgoing('c', 2);
        store.deleteOutgoing('c', 42);
        store.deleteOutgoing('nobody', 1);
        expect(bySeq(await store.getOutgoing('c'))).toEqual([1, 3]);
        store.deleteOutgoing('c', 1);
        store.deleteOutgoing('c', 3);
        expect(await store.getOutgoing('c')).toEqual([]);
        // The message can come back after its last reference went.
        store.putOutgoing('c', outgoing(4, m));
        expectMessage((await store.getOutgoing('c'))[0].message, m);
      });

      it('shares one message among many recipients, each with its own record', async () => {
        const m = richMessage();
        const clients = Array.from({ length: 20 }, (_, i) => `client-${i}`);
        clients.forEach((c, i) => {
          store.putOutgoing(c, outgoing(100 + i, m, { qos: (i % 3) as 0 | 1 | 2, subscriptionIds: [i] }));
        });
        for (const [i, c] of clients.entries()) {
          const recs = await store.getOutgoing(c);
          expect(recs).toHaveLength(1);
          expect(recs[0].seq).toBe(100 + i);
          expect(recs[0].qos).toBe(i % 3);
          expect(recs[0].subscriptionIds).toEqual([i]);
          expectMessage(recs[0].message, m);
        }
        for (const c of clients.slice(0, 19)) store.deleteOutgoing(c, 100 + clients.indexOf(c));
        expectMessage((await store.getOutgoing('client-19'))[0].message, m);
        store.deleteSession('client-19');
        expect(await store.getOutgoing('client-19')).toEqual([]);
      });

      it('backlogBytes (where a backend has it) counts bodies not yet taken for writing, each once, and is 0 once durable', async () => {
        if (store.backlogBytes === undefined) return;
        const m = message({ topic: 'b/l', payload: Buffer.alloc(1000) });
        store.putOutgoing('c1', outgoing(1, m));
        store.putOutgoing('c2', outgoing(2, m));
        const backlog = store.backlogBytes();
        // Written behind (counted) or at once (0); never more than the one body.
        expect([0, 1003]).toContain(backlog);
        await durable(store);
        expect(store.backlogBytes()).toBe(0);
        // A body whose last reference goes before it is written leaves the backlog with it.
        const n = message({ topic: 'b/n', payload: Buffer.alloc(500) });
        store.putOutgoing('c1', outgoing(3, n));
        store.deleteOutgoing('c1', 3);
        expect(store.backlogBytes()).toBe(0);
        await durable(store);
        expect(bySeq(await store.getOutgoing('c1'))).toEqual([1]);
        expect(store.backlogBytes()).toBe(0);
      });

      it('outgoingBytes and the records match what was put, replaced and deleted, in any order, across clients (and a reopen)', async () => {
        // A seeded walk over many seqs: appends, inserts before others, replacements with another
        // body, deletes from the front, the middle and the back.
        let x = 7;
        const rand = (n: number) => {
          x = (x * 1103515245 + 12345) % 2147483648;
          return x % n;
        };
        const model = new Map<string, Map<number, StoredMessage>>();
        const bodies = Array.from({ length: 40 }, (_, i) =>
          message({ topic: `w/${i}`, payload: Buffer.alloc(rand(50)) }),
        );
        for (let step = 0; step < 3000; step++) {
          const c = `w${rand(3)}`;
          let recs = model.get(c);
          if (!recs) {
            recs = new Map();
            model.set(c, recs);
          }
          const r = rand(10);
          if (r < 6) {
            const seq = r < 4 ? 10_000 + step : rand(12_000);
            const m = bodies[rand(bodies.length)];
            store.putOutgoing(c, outgoing(seq, m));
            recs.set(seq, m);
          } else if (recs.size > 0) {
            const seqs = [...recs.keys()].sort((a, b) => a - b);
            const seq = r < 8 ? seqs[0] : seqs[rand(seqs.length)];
            store.deleteOutgoing(c, seq);
            recs.delete(seq);
          }
          if (step % 500 === 499) await durable(store);
        }
        const check = async (s: Persistence) => {
          for (const [c, recs] of model) {
            const seqs = [...recs.keys()].sort((a, b) => a - b);
            const got = await s.getOutgoing(c);
            expect(bySeq(got)).toEqual(seqs);
            expect(got.map((g) => g.message.id)).toEqual(seqs.map((q) => recs.get(q)!.id));
            let bytes = 0;
            for (const m of recs.values()) bytes += m.payload.length + m.topic.length;
            expect(s.outgoingBytes(c)).toBe(bytes);
          }
        };
        await check(store);
        if (fixture.reopen) await check(await reopen());
      });

      it('keeps clients apart when one id extends another', async () => {
        store.putOutgoing('a', outgoing(1, message()));
        store.putOutgoing('ab', outgoing(2, message()));
        store.putOutgoing('a b', outgoing(3, message()));
        expect(bySeq(await store.getOutgoing('a'))).toEqual([1]);
        expect(bySeq(await store.getOutgoing('ab'))).toEqual([2]);
        expect(bySeq(await store.getOutgoing('a b'))).toEqual([3]);
      });

      it('keeps the shared group fields: group, attempts, dup', async () => {
        const m = message();
        const rec = outgoing(7, m, {
          state: 'inflight',
          packetId: 3,
          group: 'workers/jobs/#',
          attempts: 2,
          dup: true,
        });
        store.putOutgoing('c', rec);
        store.putOutgoing('c', outgoing(8, m));
        const recs = await store.getOutgoing('c');
        expect(recs).toEqual([rec, outgoing(8, m)]);
        expect('group' in recs[1] || 'attempts' in recs[1] || 'dup' in recs[1]).toBe(false);
      });
    });

    describe('incoming QoS 2 ids', () => {
      it('adds, deletes and gets per client', async () => {
        for (const id of [65535, 1, 300, 2]) store.addIncoming('c', id);
        store.addIncoming('c', 300);
        store.addIncoming('cc', 9);
        expect(sortNum(await store.getIncoming('c'))).toEqual([1, 2, 300, 65535]);
        store.deleteIncoming('c', 300);
        store.deleteIncoming('c', 4);
        store.deleteIncoming('nobody', 1);
        expect(sortNum(await store.getIncoming('c'))).toEqual([1, 2, 65535]);
        expect(await store.getIncoming('cc')).toEqual([9]);
      });
    });

    describe('retained', () => {
      it('sets, replaces, clears and lists', async () => {
        const a = message({ topic: 'a', retain: true });
        const ab = message({ topic: 'a/b', retain: true });
        const rich = richMessage();
        store.setRetained('a', a);
        store.setRetained('a/b', ab);
        store.setRetained(rich.topic, rich);
        const list = retainedSorted(await collect(store.listRetained()));
        expect(list).toEqual(retainedSorted([a, ab, rich]));
        expectMessage(list.find((m) => m.topic === rich.topic)!, rich);

        const a2 = message({ topic: 'a', payload: Buffer.from('second'), retain: true });
        store.setRetained('a', a2);
        store.setRetained('a/b', null);
        store.setRetained('never/set', null);
        expect(retainedSorted(await collect(store.listRetained()))).toEqual(retainedSorted([a2, rich]));
      });
    });

    describe('wills', () => {
      it('puts, replaces, deletes and lists', async () => {
        const w1: WillRecord = { clientId: 'c1', fireAt: 1000, message: richMessage() };
        const w2: WillRecord = { clientId: 'c2', fireAt: 2000, message: message() };
        store.putWill(w1);
        store.putWill(w2);
        const list = willsSorted(await collect(store.listWills()));
        expect(list).toEqual([w1, w2]);
        expectMessage(list[0].message, w1.message);

        const w1b: WillRecord = { clientId: 'c1', fireAt: 3000, message: message({ qos: 0 }) };
        store.putWill(w1b);
        store.deleteWill('c2');
        store.deleteWill('nobody');
        expect(await collect(store.listWills())).toEqual([w1b]);
      });

      it('keeps the will of a connected client (no fireAt; delay, expiryInterval), replaced by its delayed form', async () => {
        const connected: WillRecord = {
          clientId: 'c1',
          message: richMessage(),
          delay: 30,
          expiryInterval: 60,
        };
        const plain: WillRecord = { clientId: 'c2', message: message() };
        store.putWill(connected);
        store.putWill(plain);
        const list = willsSorted(await collect(store.listWills()));
        expect(list).toEqual([connected, plain]);
        expect('fireAt' in list[0] || 'fireAt' in list[1] || 'delay' in list[1]).toBe(false);
        expectMessage(list[0].message, connected.message);
        const delayed: WillRecord = { clientId: 'c1', message: connected.message, fireAt: 5000 };
        store.putWill(delayed);
        expect(willsSorted(await collect(store.listWills()))).toEqual([delayed, plain]);
        store.deleteSession('c2'); // a session's will goes with it
        expect(await collect(store.listWills())).toEqual([delayed]);
      });
    });

    describe('shared group messages', () => {
      it('puts, replaces, deletes and lists in seq order within each group', async () => {
        const m = message();
        const seqs = [2_000_000_000_000_001, 5, 1_000_000_000_000_000, 10, 0];
        for (const seq of seqs) store.putGroupMessage('workers/jobs/#', groupMessage(seq, m));
        store.putGroupMessage('$queue/q', groupMessage(3, message()));
        const listed = await groupSeqs(store);
        expect(listed.filter(([g]) => g === 'workers/jobs/#').map(([, seq]) => seq)).toEqual(sortNum(seqs));
        expect(listed.filter(([g]) => g === '$queue/q')).toEqual([['$queue/q', 3]]);

        const retry = groupMessage(5, m, {
          priority: 9,
          attempts: 2,
          dueAt: 1_900_000_000_000,
          lastReason: 0x80,
          lastMember: 'worker-1',
          dup: true,
        });
        store.putGroupMessage('workers/jobs/#', retry);
        store.deleteGroupMessage('workers/jobs/#', 10);
        store.deleteGroupMessage('workers/jobs/#', 42);
        store.deleteGroupMessage('nobody/x', 1);
        const recs = (await collect(store.listGroupMessages())).filter((r) => r.group === 'workers/jobs/#');
        expect(recs.map((r) => r.rec.seq)).toEqual([0, 5, 1_000_000_000_000_000, 2_000_000_000_000_001]);
        expect(recs[1].rec).toEqual(retry);
        expect(recs[0].rec).toEqual(groupMessage(0, m));
        for (const k of ['dueAt', 'lastReason', 'lastMember', 'dup', 'member', 'packetId'])
          expect(k in recs[0].rec).toBe(false);

        // In flight at QoS 2 to a member: the member's client id and the packet id.
        const inFlight = groupMessage(5, m, { attempts: 2, dup: true, member: 'worker-2', packetId: 65535 });
        store.putGroupMessage('workers/jobs/#', inFlight);
        const again = (await collect(store.listGroupMessages())).find(
          (r) => r.group === 'workers/jobs/#' && r.rec.seq === 5,
        );
        expect(again?.rec).toEqual(inFlight);
        expectMessage(recs[1].rec.message, m);
      });

      it('keeps groups apart when one id extends another, and apart from sessions', async () => {
        store.putGroupMessage('g/a', groupMessage(1, message()));
        store.putGroupMessage('g/a/b', groupMessage(2, message()));
        store.putGroupMessage('g/ab', groupMessage(3, message()));
        store.putSession({ clientId: 'g/a', protocolVersion: 5, expiryInterval: 1 });
        store.deleteSession('g/a');
        expect((await groupSeqs(store)).sort()).toEqual([
          ['g/a', 1],
          ['g/a/b', 2],
          ['g/ab', 3],
        ]);
        store.deleteGroupMessage('g/a', 1);
        expect((await groupSeqs(store)).sort()).toEqual([
          ['g/a/b', 2],
          ['g/ab', 3],
        ]);
      });

      it("keeps a pulled message's receipt and visibility deadline", async () => {
        const pulled = groupMessage(7, message(), {
          attempts: 1,
          dup: true,
          receipt: 'r-7.x',
          visibleUntil: 1_900_000_000_000,
        });
        store.putGroupMessage('q/jobs/#', pulled);
        expect((await collect(store.listGroupMessages()))[0].rec).toEqual(pulled);
        // Acknowledged or timed out: the record is put again without them.
        const back = groupMessage(7, message(), { attempts: 2, dup: true });
        store.putGroupMessage('q/jobs/#', back);
        const [{ rec }] = await collect(store.listGroupMessages());
        expect('receipt' in rec || 'visibleUntil' in rec).toBe(false);
      });

      it('round-trips every StoredMessage field', async () => {
        const rich = richMessage();
        store.putGroupMessage('g/#', groupMessage(1, rich));
        const [{ rec }] = await collect(store.listGroupMessages());
        expectMessage(rec.message, rich);
      });
    });

    describe('idempotency keys', () => {
      it('puts, replaces, deletes and lists', async () => {
        const a: DedupRecord = { topic: 'jobs/1', key: 'k1', expiresAt: 1000 };
        const b: DedupRecord = { topic: 'jobs/1', key: 'k2', expiresAt: 2000 };
        const c: DedupRecord = { topic: 'jobs/12', key: 'k1', expiresAt: 3000 };
        const d: DedupRecord = { topic: 'ünï/🌡', key: 'ключ 🔑', expiresAt: 4000 };
        for (const r of [a, b, c, d]) store.putDedup(r);
        expect(dedupSorted(await collect(store.listDedup()))).toEqual(dedupSorted([a, b, c, d]));
        const a2 = { ...a, expiresAt: 5000 };
        store.putDedup(a2);
        store.deleteDedup('jobs/12', 'k1');
        store.deleteDedup('jobs/1', 'nope');
        expect(dedupSorted(await collect(store.listDedup()))).toEqual(dedupSorted([a2, b, d]));
      });

      it('keeps publishers apart: (publisher, topic, key), with the broker as "" and unscoped records apart', async () => {
        const base = { topic: 'jobs/1', key: 'k', expiresAt: 1000 };
        const recs: DedupRecord[] = [
          { ...base, publisher: 'alice' },
          { ...base, publisher: 'bob', expiresAt: 2000 },
          { ...base, publisher: '', expiresAt: 3000 },
          { ...base, expiresAt: 4000 }, // unscoped (stored before keys were per publisher)
          { ...base, publisher: 'alice', topic: 'jobs/1/x' },
          { ...base, publisher: 'ünï 🌡', key: 'ключ' },
        ];
        for (const r of recs) store.putDedup(r);
        expect(dedupSorted(await collect(store.listDedup()))).toEqual(dedupSorted(recs));
        store.deleteDedup('jobs/1', 'k', 'bob');
        store.deleteDedup('jobs/1', 'k'); // the unscoped one only
        store.deleteDedup('jobs/1', 'k', 'carol');
        expect(dedupSorted(await collect(store.listDedup()))).toEqual(
          dedupSorted([recs[0], recs[2], recs[4], recs[5]]),
        );
        store.deleteDedup('jobs/1', 'k', '');
        expect(dedupSorted(await collect(store.listDedup()))).toEqual(
          dedupSorted([recs[0], recs[4], recs[5]]),
        );
      });
    });

    describe('StoredMessage fidelity', () => {
      const cases: [string, () => StoredMessage][] = [
        ['every field, binary payload', richMessage],
        ['empty payload, no properties', () => message({ payload: Buffer.alloc(0), qos: 0 })],
        [
          'empty correlation data and user properties',
          () => message({ properties: { correlationData: Buffer.alloc(0), userProperties: {} } }),
        ],
        ['large payload', () => message({ payload: Buffer.alloc(256 * 1024, 0xa5) })],
      ];
      for (const [label, make] of cases) {
        it(`round-trips through outgoing, retained and wills: ${label}`, async () => {
          const m = make();
          store.putOutgoing('c', outgoing(1, m));
          store.setRetained(m.topic, m);
          store.putWill({ clientId: 'c', fireAt: 1, message: m });
          expectMessage((await store.getOutgoing('c'))[0].message, m);
          expectMessage((await collect(store.listRetained()))[0], m);
          expectMessage((await collect(store.listWills()))[0].message, m);
          if (!m.properties) expect((await store.getOutgoing('c'))[0].message.properties).toBeUndefined();
          if (m.expiresAt === undefined)
            expect((await store.getOutgoing('c'))[0].message.expiresAt).toBeUndefined();
        });
      }
    });

    describe('consistency', () => {
      it('reads observe every mutation issued before them, without awaiting anything', async () => {
        const m = message();
        store.putSession({ clientId: 'c', protocolVersion: 5, expiryInterval: 1 });
        store.putSubscription('c', { filter: 'f', qos: 1 });
        store.putOutgoing('c', outgoing(1, m));
        store.addIncoming('c', 5);
        store.setRetained('t', m);
        store.putWill({ clientId: 'c', fireAt: 1, message: m });
        const reads = Promise.all([
          collect(store.listSessions()),
          collect(store.listSubscriptions()),
          store.getOutgoing('c'),
          store.getIncoming('c'),
          collect(store.listRetained()),
          collect(store.listWills()),
        ]);
        const [sessions, subs, out, inc, ret, wills] = await reads;
        expect(sessions).toHaveLength(1);
        expect(subs).toHaveLength(1);
        expect(out).toHaveLength(1);
        expect(inc).toEqual([5]);
        expect(ret).toHaveLength(1);
        expect(wills).toHaveLength(1);

        store.deleteOutgoing('c', 1);
        store.deleteIncoming('c', 5);
        store.setRetained('t', null);
        store.deleteWill('c');
        store.deleteSubscription('c', 'f');
        const outP = store.getOutgoing('c');
        store.putOutgoing('c', outgoing(2, m)); // issued after the read: may or may not show, must not break it
        expect(bySeq(await outP).filter((s) => s === 1)).toEqual([]);
        expect(await store.getIncoming('c')).toEqual([]);
        expect(await collect(store.listRetained())).toEqual([]);
        expect(await collect(store.listWills())).toEqual([]);
        expect(await collect(store.listSubscriptions())).toEqual([]);
      });

      it('whenDurable calls back in call order, without an error, also when nothing is pending', async () => {
        const order: string[] = [];
        const errors: unknown[] = [];
        const cb = (label: string) => (err?: Error) => {
          if (err) errors.push(err);
          order.push(label);
        };
        store.whenDurable(cb('idle'));
        store.putSession({ clientId: 'c', protocolVersion: 4, expiryInterval: 1 });
        store.whenDurable(cb('1'));
        store.putOutgoing('c', outgoing(1, message()));
        store.whenDurable(cb('2'));
        await new Promise((r) => setImmediate(r));
        store.putOutgoing('c', outgoing(2, message()));
        store.whenDurable(cb('3'));
        store.whenDurable(cb('4'));
        await durable(store);
        expect(order).toEqual(['idle', '1', '2', '3', '4']);
        expect(errors).toEqual([]);
      });

      it('a whenDurable callback that throws does not keep the others from being called', async () => {
        const reported: unknown[] = [];
        store.onCallbackError = (err) => reported.push(err);
        const boom = new Error('boom');
        const called: string[] = [];
        const thrown: unknown[] = [];
        store.putSession({ clientId: 'c', protocolVersion: 4, expiryInterval: 1 });
        for (const label of ['a', 'b', 'c']) {
          try {
            store.whenDurable(() => {
              called.push(label);
              if (label === 'b') throw boom;
            });
          } catch (err) {
            // A backend calling back synchronously lets the throw reach the caller.
            thrown.push(err);
          }
        }
        await durable(store);
        expect(called).toEqual(['a', 'b', 'c']);
        // Reported once, one way or the other.
        expect([...reported, ...thrown]).toEqual([boom]);
        store.onCallbackError = undefined;
      });

      it('whenDurable inside a whenDurable callback is called back too', async () => {
        let inner = false;
        store.putSession({ clientId: 'c', protocolVersion: 4, expiryInterval: 1 });
        await new Promise<void>((resolve) =>
          store.whenDurable(() => {
            store.putSession({ clientId: 'd', protocolVersion: 4, expiryInterval: 1 });
            store.whenDurable(() => {
              inner = true;
              resolve();
            });
          }),
        );
        expect(inner).toBe(true);
        expect((await collect(store.listSessions())).length).toBe(2);
      });
    });

    describe('durability (backends with reopen)', () => {
      it('keeps everything across close and reopen', async (ctx) => {
        if (!fixture.reopen) return ctx.skip();
        const rich = richMessage();
        const shared = message();
        const sessions: SessionRecord[] = [
          { clientId: 'a', protocolVersion: 5, expiryInterval: 3600, disconnectedAt: 1234 },
          { clientId: 'ab', protocolVersion: 4, expiryInterval: 0xffffffff },
        ];
        for (const s of sessions) store.putSession(s);
        store.putSubscription('a', { filter: '$share/g/t/#', qos: 2, subscriptionId: 9, noLocal: true });
        store.putSubscription('ab', { filter: '+', qos: 0 });
        const outA = [
          outgoing(2_000_000_000_000_000, rich, { state: 'inflight', packetId: 65535, subscriptionIds: [9] }),
          outgoing(7, shared),
          outgoing(100, shared, { state: 'pubrel', packetId: 1, qos: 2 }),
        ];
        for (const r of outA) store.putOutgoing('a', r);
        store.putOutgoing('ab', outgoing(1, shared));
        store.addIncoming('a', 42);
        store.addIncoming('a', 7);
        store.setRetained(rich.topic, rich);
        store.setRetained('gone', message({ topic: 'gone' }));
        store.setRetained('gone', null);
        const will: WillRecord = {
          clientId: 'a',
          fireAt: 99,
          message: message({ payload: Buffer.alloc(0) }),
        };
        store.putWill(will);
        const connectedWill: WillRecord = { clientId: 'ab', message: rich, delay: 5, expiryInterval: 7 };
        store.putWill(connectedWill);
        store.putSession({ clientId: 'deleted', protocolVersion: 4, expiryInterval: 1 });
        store.putOutgoing('deleted', outgoing(1, message()));
        store.deleteSession('deleted');
        const held = groupMessage(9, rich, {
          attempts: 1,
          dueAt: 1_900_000_000_000,
          lastReason: 0x83,
          dup: true,
        });
        store.putGroupMessage('workers/jobs/#', held);
        store.putGroupMessage('workers/jobs/#', groupMessage(10, shared));
        const inFlight = groupMessage(11, shared, { dup: true, member: 'a', packetId: 7 });
        store.putGroupMessage('workers/jobs/#', groupMessage(11, shared));
        store.putGroupMessage('workers/jobs/#', inFlight);
        store.deleteGroupMessage('workers/jobs/#', 10);
        const key: DedupRecord = { topic: 'jobs/1', key: 'once', expiresAt: 1_900_000_000_000 };
        store.putDedup(key);
        const scoped: DedupRecord = { ...key, publisher: 'pub-1' };
        store.putDedup(scoped);
        store.putDedup({ topic: 'jobs/1', key: 'gone', expiresAt: 1 });
        store.deleteDedup('jobs/1', 'gone');
        store.putDedup({ topic: 'jobs/1', key: 'gone', expiresAt: 1, publisher: 'pub-1' });
        store.deleteDedup('jobs/1', 'gone', 'pub-1');

        const s = await reopen();
        expect(sessionsSorted(await collect(s.listSessions()))).toEqual(sessions);
        expect(byClientFilter(await collect(s.listSubscriptions()))).toEqual([
          { clientId: 'a', sub: { filter: '$share/g/t/#', qos: 2, subscriptionId: 9, noLocal: true } },
          { clientId: 'ab', sub: { filter: '+', qos: 0 } },
        ]);
        const gotA = await s.getOutgoing('a');
        expect(gotA).toEqual([outA[1], outA[2], outA[0]]);
        expectMessage(gotA[2].message, rich);
        expect(await s.getOutgoing('ab')).toEqual([outgoing(1, shared)]);
        expect(await s.getOutgoing('deleted')).toEqual([]);
        expect(sortNum(await s.getIncoming('a'))).toEqual([7, 42]);
        const retained = await collect(s.listRetained());
        expect(retained).toEqual([rich]);
        expectMessage(retained[0], rich);
        expect(willsSorted(await collect(s.listWills()))).toEqual([will, connectedWill]);
        const groups = await collect(s.listGroupMessages());
        expect(groups).toEqual([
          { group: 'workers/jobs/#', rec: held },
          { group: 'workers/jobs/#', rec: inFlight },
        ]);
        expectMessage(groups[0].rec.message, rich);
        expect(dedupSorted(await collect(s.listDedup()))).toEqual(dedupSorted([key, scoped]));
      });

      it('keeps working after reopen: replace, delete, cascade', async (ctx) => {
        if (!fixture.reopen) return ctx.skip();
        const m = message();
        store.putSession({ clientId: 'a', protocolVersion: 5, expiryInterval: 1 });
        store.putSubscription('a', { filter: 'x', qos: 1 });
        store.putOutgoing('a', outgoing(1, m));
        store.putOutgoing('a', outgoing(2, m));
        store.putOutgoing('b', outgoing(1, m));
        store.addIncoming('a', 1);
        let s = await reopen();
        s.putOutgoing('a', outgoing(1, m, { state: 'inflight', packetId: 3 }));
        s.deleteOutgoing('a', 2);
        expect(await s.getOutgoing('a')).toEqual([outgoing(1, m, { state: 'inflight', packetId: 3 })]);
        s.deleteSession('a');
        s = await reopen();
        expect(await s.getOutgoing('a')).toEqual([]);
        expect(await s.getIncoming('a')).toEqual([]);
        expect(await collect(s.listSubscriptions())).toEqual([]);
        expect(await collect(s.listSessions())).toEqual([]);
        const b = await s.getOutgoing('b');
        expect(b).toEqual([outgoing(1, m)]);
        expectMessage(b[0].message, m);
      });

      it('whenDurable means stored: what it confirmed is there after reopen', async (ctx) => {
        if (!fixture.reopen) return ctx.skip();
        for (let i = 0; i < 500; i++) store.putOutgoing('c', outgoing(i, message()));
        await durable(store);
        const s = await reopen();
        expect((await s.getOutgoing('c')).length).toBe(500);
      });
    });
  });
}
