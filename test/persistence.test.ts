import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Level } from 'level';
import { afterEach, describe, expect, it } from 'vitest';
import { FORMAT_VERSION, LevelPersistence } from '../persistence/level.js';
import { MemoryPersistence } from '../persistence/memory.js';
import { collect, durable, message, outgoing, persistenceConformance } from './persistence.conformance.js';

const tmp = () => mkdtemp(join(tmpdir(), 'heron-persistence-'));

persistenceConformance('MemoryPersistence', async () => ({
  store: new MemoryPersistence(),
  cleanup: async () => {},
}));

persistenceConformance('LevelPersistence', async () => {
  const dir = await tmp();
  return {
    store: new LevelPersistence({ dir }),
    reopen: async () => new LevelPersistence({ dir }),
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
});

persistenceConformance('LevelPersistence (sync)', async () => {
  const dir = await tmp();
  return {
    store: new LevelPersistence({ dir, sync: true }),
    reopen: async () => new LevelPersistence({ dir, sync: true }),
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
});

/** Every key/value of a closed store's directory, read with a raw LevelDB handle. */
async function rawEntries(dir: string): Promise<[string, string][]> {
  const db = new Level<string, string>(dir);
  await db.open({ createIfMissing: false });
  try {
    return await db.iterator().all();
  } finally {
    await db.close();
  }
}

async function rawPut(dir: string, entries: [string, string][]): Promise<void> {
  const db = new Level<string, string>(dir);
  await db.open();
  await db.batch(entries.map(([key, value]) => ({ type: 'put' as const, key, value })));
  await db.close();
}

const prefixed = (entries: [string, string][], prefix: string) =>
  entries.filter(([k]) => k.startsWith(`${prefix}\x00`));

describe('LevelPersistence', () => {
  const dirs: string[] = [];
  const stores: LevelPersistence[] = [];
  async function newDir(): Promise<string> {
    const dir = await tmp();
    dirs.push(dir);
    return dir;
  }
  async function openStore(dir: string, sync = false): Promise<LevelPersistence> {
    const s = new LevelPersistence({ dir, sync });
    stores.push(s);
    await s.open();
    return s;
  }

  afterEach(async () => {
    for (const s of stores.splice(0)) await s.close();
    for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
  });

  it('creates a missing directory and writes the format version', async () => {
    const dir = join(await newDir(), 'nested', 'data');
    const s = await openStore(dir);
    await s.close();
    expect(await readdir(dir)).toContain('CURRENT');
    expect(await rawEntries(dir)).toEqual([['meta\x00version', String(FORMAT_VERSION)]]);
  });

  it('refuses a directory written by another format version, and leaves it alone', async () => {
    const dir = await newDir();
    await rawPut(dir, [
      ['meta\x00version', '3'],
      ['s\x00c', '{"clientId":"c"}'],
    ]);
    const before = await rawEntries(dir);
    await expect(openStore(dir)).rejects.toThrow(
      `data dir ${dir} was written by format version 3; this Heron reads versions 1 and 2`,
    );
    expect(await rawEntries(dir)).toEqual(before);
  });

  it('reads a format 1 directory (JSON outgoing records) and marks it format 2', async () => {
    const dir = await newDir();
    const body = {
      id: 'b1',
      topic: 't/1',
      payload: Buffer.from('hi').toString('base64'),
      qos: 1,
      retain: false,
    };
    await rawPut(dir, [
      ['meta\x00version', '1'],
      ['s\x00c', '{"clientId":"c","protocolVersion":4,"expiryInterval":60}'],
      ['m\x00b1', JSON.stringify(body)],
      ['o\x00c\x000000000000000007', '{"m":"b1","s":"inflight","q":1,"r":false,"p":12}'],
      ['o\x00c\x000000000000000008', '{"m":"b1","s":"queued","q":1,"r":true,"i":[3]}'],
    ]);
    const s = await openStore(dir);
    expect(s.bodyStats()).toEqual({ bodies: 1, references: 2 });
    const out = await s.getOutgoing('c');
    expect(out.map((r) => ({ ...r, message: String(r.message.payload) }))).toEqual([
      { seq: 7, state: 'inflight', qos: 1, retain: false, packetId: 12, message: 'hi' },
      { seq: 8, state: 'queued', qos: 1, retain: true, subscriptionIds: [3], message: 'hi' },
    ]);
    await s.close();
    expect((await rawEntries(dir)).find(([k]) => k === 'meta\x00version')).toEqual(['meta\x00version', '2']);
  });

  it('writes a plain outgoing record in the short form, one with more fields as JSON', async () => {
    const dir = await newDir();
    const s = await openStore(dir);
    const m = message({});
    s.putOutgoing('c', { ...outgoing(1, m), state: 'inflight', packetId: 513, retain: true });
    s.putOutgoing('c', { ...outgoing(2, m), subscriptionIds: [4] });
    await durable(s);
    await s.close();
    const values = Object.fromEntries(await rawEntries(dir));
    expect(values['o\x00c\x000000000000000001']).toBe(`${m.id}|i11513`);
    expect(JSON.parse(values['o\x00c\x000000000000000002'])).toMatchObject({ m: m.id, s: 'queued', i: [4] });
    const again = await openStore(dir);
    expect((await again.getOutgoing('c')).map((r) => [r.seq, r.state, r.retain, r.packetId])).toEqual([
      [1, 'inflight', true, 513],
      [2, 'queued', false, undefined],
    ]);
  });

  it('refuses a LevelDB database it did not write, and a non-empty directory without one', async () => {
    const dir = await newDir();
    await rawPut(dir, [['foreign', 'x']]);
    await expect(openStore(dir)).rejects.toThrow(
      `data dir ${dir} holds a LevelDB database that Heron did not write`,
    );
    expect(await rawEntries(dir)).toEqual([['foreign', 'x']]);

    const other = await newDir();
    await writeFile(join(other, 'notes.txt'), 'hello');
    await expect(openStore(other)).rejects.toThrow(
      `data dir ${other} is not empty and holds no LevelDB database`,
    );
    expect(await readdir(other)).toEqual(['notes.txt']);
  });

  it('refuses a directory another instance holds, naming the directory', async () => {
    const dir = await newDir();
    const first = await openStore(dir);
    first.putSession({ clientId: 'c', protocolVersion: 4, expiryInterval: 1 });
    await durable(first);
    await expect(openStore(dir)).rejects.toThrow(`data dir ${dir} is locked`);
    // The first instance is unaffected.
    first.putSession({ clientId: 'd', protocolVersion: 4, expiryInterval: 1 });
    expect((await collect(first.listSessions())).length).toBe(2);
  });

  it('reports a corrupt directory clearly', async () => {
    const dir = await newDir();
    const s = await openStore(dir);
    s.putSession({ clientId: 'c', protocolVersion: 4, expiryInterval: 1 });
    await s.close();
    for (const f of await readdir(dir))
      if (f.startsWith('MANIFEST-')) await writeFile(join(dir, f), 'garbage');
    await expect(openStore(dir)).rejects.toThrow(`data dir ${dir} is corrupt`);
  });

  it('stores a body once for N recipients and deletes it with its last reference', async () => {
    const dir = await newDir();
    let s = await openStore(dir);
    const m = message({ payload: Buffer.alloc(10_000, 0x42) });
    const clients = Array.from({ length: 10 }, (_, i) => `c${i}`);
    for (const [i, c] of clients.entries()) s.putOutgoing(c, outgoing(i + 1, m));
    expect(s.bodyStats()).toEqual({ bodies: 1, references: 10 });
    await s.close();

    let raw = await rawEntries(dir);
    expect(prefixed(raw, 'm')).toHaveLength(1);
    expect(prefixed(raw, 'm')[0][0]).toBe(`m\x00${m.id}`);
    const refs = prefixed(raw, 'o');
    expect(refs).toHaveLength(10);
    for (const [, value] of refs) expect(value.length).toBeLessThan(100);

    // Counts are rebuilt at open from the references.
    s = await openStore(dir);
    expect(s.bodyStats()).toEqual({ bodies: 1, references: 10 });
    for (const [i, c] of clients.slice(0, 8).entries()) s.deleteOutgoing(c, i + 1);
    s.deleteSession('c8');
    await s.close();
    raw = await rawEntries(dir);
    expect(prefixed(raw, 'm')).toHaveLength(1);
    expect(prefixed(raw, 'o')).toHaveLength(1);

    s = await openStore(dir);
    expect(s.bodyStats()).toEqual({ bodies: 1, references: 1 });
    s.deleteOutgoing('c9', 10);
    expect(s.bodyStats()).toEqual({ bodies: 0, references: 0 });
    await s.close();
    raw = await rawEntries(dir);
    expect(prefixed(raw, 'm')).toEqual([]);
    expect(prefixed(raw, 'o')).toEqual([]);
  });

  it('releases the old body when a seq is replaced with another message', async () => {
    const dir = await newDir();
    const s = await openStore(dir);
    const m1 = message();
    const m2 = message();
    s.putOutgoing('c', outgoing(1, m1));
    s.putOutgoing('c', outgoing(1, m1, { state: 'inflight', packetId: 1 }));
    expect(s.bodyStats()).toEqual({ bodies: 1, references: 1 });
    s.putOutgoing('c', outgoing(1, m2));
    expect(s.bodyStats()).toEqual({ bodies: 1, references: 1 });
    await s.close();
    expect(prefixed(await rawEntries(dir), 'm').map(([k]) => k)).toEqual([`m\x00${m2.id}`]);
  });

  it('deletes orphan bodies and dangling references at open', async () => {
    const dir = await newDir();
    const s = await openStore(dir);
    const kept = message();
    s.putOutgoing('c', outgoing(1, kept));
    await s.close();
    await rawPut(dir, [
      ['m\x00orphan', '{"id":"orphan","topic":"t","payload":"","qos":0,"retain":false}'],
      [`o\x00c\x00${'2'.padStart(16, '0')}`, '{"m":"lost","s":"queued","q":1,"r":false}'],
    ]);
    const s2 = await openStore(dir);
    expect(s2.bodyStats()).toEqual({ bodies: 1, references: 1 });
    expect(await s2.getOutgoing('c')).toEqual([outgoing(1, kept)]);
    await s2.close();
    const raw = await rawEntries(dir);
    expect(prefixed(raw, 'm').map(([k]) => k)).toEqual([`m\x00${kept.id}`]);
    expect(prefixed(raw, 'o')).toHaveLength(1);
  });

  it('writes one batch per tick and calls whenDurable back once it is written', async () => {
    const dir = await newDir();
    const s = await openStore(dir);
    const before = s.batchesWritten;
    let calledBack = 0;
    for (let i = 0; i < 1000; i++) {
      s.putOutgoing(`c${i % 10}`, outgoing(i, message()));
      if (i % 100 === 0) s.whenDurable(() => calledBack++);
    }
    expect(calledBack).toBe(0);
    expect(s.batchesWritten).toBe(before);
    await durable(s);
    expect(calledBack).toBe(10);
    expect(s.batchesWritten).toBe(before + 1);

    // Two ticks, two batches.
    s.putSession({ clientId: 'x', protocolVersion: 4, expiryInterval: 1 });
    await new Promise((r) => setImmediate(r));
    s.putSession({ clientId: 'y', protocolVersion: 4, expiryInterval: 1 });
    await durable(s);
    expect(s.batchesWritten).toBe(before + 3);

    // A batch in flight and nothing pending: the callback waits for that batch.
    s.putSession({ clientId: 'z', protocolVersion: 4, expiryInterval: 1 });
    await new Promise((r) => setImmediate(r)); // the flush ran first: its batch is being written
    const seen = await new Promise((resolve) => s.whenDurable(() => resolve(s.batchesWritten)));
    expect(seen).toBe(before + 4);

    // Nothing pending: called back at once, no empty batch.
    let now = false;
    s.whenDurable(() => {
      now = true;
    });
    expect(now).toBe(true);
    expect(s.batchesWritten).toBe(before + 4);
  });

  it('rejects client ids and topics containing U+0000, and use when not open', async () => {
    const dir = await newDir();
    const s = await openStore(dir);
    expect(() => s.putSession({ clientId: 'a\x00b', protocolVersion: 4, expiryInterval: 1 })).toThrow(
      TypeError,
    );
    expect(() => s.setRetained('a\x00', null)).toThrow(TypeError);
    expect(() => s.putOutgoing('c', outgoing(-1, message()))).toThrow(RangeError);
    expect(() => s.putOutgoing('c', outgoing(1.5, message()))).toThrow(RangeError);
    await s.close();
    expect(() => s.putSession({ clientId: 'c', protocolVersion: 4, expiryInterval: 1 })).toThrow(/not open/);
    await expect(s.getOutgoing('c')).rejects.toThrow(/not open/);
  });

  it('a delivery record put and deleted before its batch is taken is neither encoded nor written', async () => {
    const dir = await newDir();
    const s = await openStore(dir);
    const before = s.batchesWritten;
    const opsBefore = s.opsWritten;
    const shared = message();
    s.putOutgoing('fast', outgoing(1, shared)); // acknowledged at once: nothing to keep
    s.putOutgoing('slow', outgoing(1, shared)); // still owed: its record and the body are written
    s.putOutgoing('fast', outgoing(2, message()));
    s.deleteOutgoing('fast', 1);
    s.deleteOutgoing('fast', 2);
    let called = false;
    s.whenDurable(() => {
      called = true;
    });
    await durable(s);
    expect(called).toBe(true);
    expect(s.batchesWritten).toBe(before + 1);
    expect(s.opsWritten - opsBefore).toBe(2); // slow's record and the body; nothing of fast's
    await s.close();
    const raw = await rawEntries(dir);
    expect(prefixed(raw, 'o').map(([k]) => k)).toEqual([`o\x00slow\x00${'1'.padStart(16, '0')}`]);
    expect(prefixed(raw, 'm').map(([k]) => k)).toEqual([`m\x00${shared.id}`]);
  });

  it('only cancelled writes pending: no batch is written and whenDurable still calls back', async () => {
    const dir = await newDir();
    const s = await openStore(dir);
    const before = s.batchesWritten;
    s.putOutgoing('c', outgoing(1, message()));
    s.deleteOutgoing('c', 1);
    await durable(s);
    expect(s.batchesWritten).toBe(before);
    expect(s.bodyStats()).toEqual({ bodies: 0, references: 0 });
    await s.close();
    expect(prefixed(await rawEntries(dir), 'o')).toEqual([]);
    expect(prefixed(await rawEntries(dir), 'm')).toEqual([]);
  });

  it('a record replaced before its batch is taken is written once, in its last state', async () => {
    const dir = await newDir();
    const s = await openStore(dir);
    const m = message();
    s.putOutgoing('c', outgoing(1, m));
    s.putOutgoing('c', outgoing(1, m, { state: 'inflight', packetId: 5 }));
    s.putOutgoing('c', outgoing(1, m, { state: 'pubrel', packetId: 5 }));
    expect(s.bodyStats()).toEqual({ bodies: 1, references: 1 });
    await s.close();
    const o = prefixed(await rawEntries(dir), 'o');
    expect(o).toHaveLength(1);
    expect(o[0][1]).toBe(`${m.id}|r105`); // pubrel, QoS 1, not retained, packet id 5
  });

  it('a written record replaced and then deleted before the next batch: the delete is written', async () => {
    const dir = await newDir();
    let s = await openStore(dir);
    const m = message();
    s.putOutgoing('c', outgoing(1, m));
    await durable(s);
    s.putOutgoing('c', outgoing(1, m, { state: 'inflight', packetId: 9 }));
    s.deleteOutgoing('c', 1);
    await s.close();
    let raw = await rawEntries(dir);
    expect(prefixed(raw, 'o')).toEqual([]);
    expect(prefixed(raw, 'm')).toEqual([]);
    // Same through deleteSession, for records written before it, pending, or both.
    s = await openStore(dir);
    s.putOutgoing('d', outgoing(1, m));
    s.putOutgoing('d', outgoing(2, message()));
    await durable(s);
    s.putOutgoing('d', outgoing(2, m, { state: 'inflight', packetId: 1 }));
    s.putOutgoing('d', outgoing(3, message()));
    s.deleteSession('d');
    await s.close();
    raw = await rawEntries(dir);
    expect(prefixed(raw, 'o')).toEqual([]);
    expect(prefixed(raw, 'm')).toEqual([]);
  });

  it('close waits for pending writes', async () => {
    const dir = await newDir();
    const s = await openStore(dir);
    s.putSession({ clientId: 'c', protocolVersion: 4, expiryInterval: 1 });
    await s.close();
    expect(prefixed(await rawEntries(dir), 's')).toHaveLength(1);
  });
});
