/**
 * LevelPersistence: the durable backend, on LevelDB through `level` (classic-level).
 *
 * Key layout: persistence/level/keys.ts.
 *
 * Bodies are reference-counted in memory (level/outgoing-index.ts): per body a count of the o␀
 * records referencing it, per client its records' seq, body id and size in compact columns
 * (level/columns.ts; needed to release a body when a seq is replaced or a session deleted, and for
 * outgoingBytes). Both are rebuilt at open by scanning the o␀ records (small values) and the m␀
 * bodies (for their payload and topic size); bodies nobody references and references whose body is
 * missing are deleted at open. Memory cost: about 20 bytes per queued outgoing record and a map
 * entry per distinct queued message, never a payload.
 *
 * Writes (level/batch-writer.ts): mutations are synchronous and append to a pending batch, written
 * as one atomic LevelDB batch per tick under light load, one batch in flight at a time.
 * o␀ and m␀ puts are coalesced: they are encoded when their batch is taken for writing, a newer record
 * for the same seq replaces a pending put in place, and a delete that comes first drops the pending
 * put (a delivery acknowledged before its batch was taken costs no encoding and no write); a delete
 * is written only for a key an earlier batch wrote. The result on disk is what writing every op
 * would leave.
 * `whenDurable` callbacks ride on the batch that holds the writes issued before them. Reads wait for
 * the pending and in-flight batches, so they observe every mutation issued before them. After a
 * failed write the store refuses further work and reports that error: the in-memory reference
 * counts may no longer match the disk, so the broker must stop and reopen.
 *
 * LevelDB's own memory is kept small (LEVEL_OPTIONS): it is native memory outside V8's heap, and a
 * spilled queue under load would otherwise hold tens of MB of write buffers.
 */
import { Level } from 'level';
import { BatchWriter } from './level/batch-writer.js';
import {
  decodeDedup,
  decodeGroupMessage,
  decodeMessage,
  decodeOutgoing,
  decodeWill,
  type EncodedMessage,
  encodeGroupMessage,
  encodeMessage,
  encodeWill,
  outgoingFrom,
} from './level/codec.js';
import {
  bodyKey,
  checkName,
  checkSeq,
  dedupKey,
  groupKey,
  inKey,
  outKey,
  PID_WIDTH,
  prefixRange,
  range,
  retainedKey,
  SEP,
  SEQ_WIDTH,
  sessionKey,
  subKey,
  unscopedDedupKey,
  VERSION_KEY,
  willKey,
} from './level/keys.js';
import { checkDir, checkVersion, FORMAT_VERSION, openError, rebuild } from './level/open.js';
import { OutgoingIndex } from './level/outgoing-index.js';
import type {
  DedupRecord,
  GroupMessageRecord,
  OutgoingRecord,
  Persistence,
  SessionRecord,
  StoredMessage,
  SubscriptionRecord,
  WillRecord,
} from './types.js';

export { FORMAT_VERSION };

export interface LevelPersistenceOptions {
  /** Directory of the LevelDB database; created if missing. */
  dir: string;
  /** Write every batch with fsync (survives an OS crash, not just a process crash). Default false. */
  sync?: boolean;
}

/**
 * LevelDB's options (see the header). A write buffer (memtable) is native memory, and LevelDB holds
 * up to two of them (one being flushed): 4 MiB instead of 16 keeps a spilled queue under load from
 * holding ~32 MB of anonymous memory in memtables; the cost is more, smaller level-0 tables to
 * compact (measured on bench slow-consumer: no change in broker CPU within the run-to-run noise).
 */
const LEVEL_OPTIONS = {
  createIfMissing: true,
  compression: false,
  writeBufferSize: 4 * 1024 * 1024,
};

export class LevelPersistence implements Persistence {
  readonly dir: string;
  private readonly sync: boolean;
  /** Created by open(): a Level instance opens itself on the next tick once constructed. */
  private db!: Level<string, string>;
  private state: 'new' | 'opening' | 'open' | 'closing' | 'closed' = 'new';
  private readonly writer: BatchWriter;
  private readonly index: OutgoingIndex;
  onCallbackError?: (err: unknown) => void;
  onBatch?: (ms: number) => void;

  constructor(opts: LevelPersistenceOptions) {
    this.dir = opts.dir;
    this.sync = opts.sync ?? false;
    this.writer = new BatchWriter(
      this.dir,
      this.sync,
      () => this.onCallbackError,
      () => this.onBatch,
    );
    this.index = new OutgoingIndex((op) => this.writer.push(op));
  }

  /** Number of `db.batch()` writes done by the flush loop since open (for tests and metrics). */
  get batchesWritten(): number {
    return this.writer.batches;
  }

  /** Number of puts and deletes written by those batches (for tests and metrics). */
  get opsWritten(): number {
    return this.writer.ops;
  }

  /** Distinct message bodies currently referenced, and references to them (for tests and metrics). */
  bodyStats(): { bodies: number; references: number } {
    return this.index.stats();
  }

  async open(): Promise<void> {
    if (this.state === 'open') return;
    if (this.state !== 'new' && this.state !== 'closed') {
      throw new Error(`LevelPersistence(${this.dir}) is ${this.state}: wait for it before opening`);
    }
    this.state = 'opening';
    this.writer.failed = undefined;
    this.index.clear();
    try {
      await checkDir(this.dir);
      this.db = new Level<string, string>(this.dir, { keyEncoding: 'utf8', valueEncoding: 'utf8' });
      try {
        await this.db.open(LEVEL_OPTIONS);
      } catch (e) {
        throw openError(this.dir, e);
      }
      try {
        const version = await checkVersion(this.db, this.dir);
        await rebuild(this.db, this.dir, this.index, this.sync);
        // Marked only once read without error: a directory refused as corrupt is left as it was.
        // From here on it holds records an older Heron could not read.
        if (version !== FORMAT_VERSION)
          await this.db.put(VERSION_KEY, String(FORMAT_VERSION), { sync: true });
      } catch (e) {
        this.index.clear();
        await this.db.close().catch(() => {});
        throw e;
      }
      this.writer.db = this.db;
      this.state = 'open';
    } catch (e) {
      this.state = 'closed';
      throw e;
    }
  }

  async close(): Promise<void> {
    if (this.state !== 'open') return;
    this.state = 'closing'; // mutations now throw; what is queued is still written
    if (!this.writer.idle) await new Promise<void>((resolve) => this.writer.whenDurable(() => resolve()));
    try {
      await this.db.close();
    } finally {
      this.state = 'closed';
      this.index.clear();
    }
  }

  // ---- write path ----------------------------------------------------------------------------

  private assertWritable(): void {
    if (this.writer.failed) throw this.writer.failed;
    if (this.state !== 'open') throw new Error(`LevelPersistence(${this.dir}) is not open`);
  }

  private put(key: string, value: string): void {
    this.writer.push({ type: 'put', key, value });
  }

  private del(key: string): void {
    this.writer.push({ type: 'del', key });
  }

  whenDurable(cb: (err?: Error) => void): void {
    this.writer.whenDurable(cb);
  }

  /** Resolves once every mutation issued so far is written, so a read observes them. */
  private written(): Promise<void> | undefined {
    if (this.writer.failed) return Promise.reject(this.writer.failed);
    if (this.state !== 'open') return Promise.reject(new Error(`LevelPersistence(${this.dir}) is not open`));
    if (this.writer.idle) return undefined;
    return new Promise((resolve, reject) =>
      this.writer.whenDurable((err) => (err ? reject(err) : resolve())),
    );
  }

  // ---- sessions ------------------------------------------------------------------------------

  putSession(rec: SessionRecord): void {
    this.assertWritable();
    checkName('clientId', rec.clientId);
    this.put(sessionKey(rec.clientId), JSON.stringify(rec));
  }

  deleteSession(clientId: string): void {
    this.assertWritable();
    checkName('clientId', clientId);
    this.del(sessionKey(clientId));
    this.del(willKey(clientId));
    this.index.deleteClient(clientId);
    this.writer.push({ type: 'clear', ...range('u', clientId) });
    this.writer.push({ type: 'clear', ...range('i', clientId) });
  }

  async *listSessions(): AsyncIterable<SessionRecord> {
    await this.written();
    for await (const value of this.db.values(prefixRange('s'))) yield JSON.parse(value) as SessionRecord;
  }

  // ---- subscriptions -------------------------------------------------------------------------

  putSubscription(clientId: string, sub: SubscriptionRecord): void {
    this.assertWritable();
    checkName('clientId', clientId);
    checkName('filter', sub.filter);
    this.put(subKey(clientId, sub.filter), JSON.stringify(sub));
  }

  deleteSubscription(clientId: string, filter: string): void {
    this.assertWritable();
    checkName('clientId', clientId);
    checkName('filter', filter);
    this.del(subKey(clientId, filter));
  }

  async *listSubscriptions(): AsyncIterable<{ clientId: string; sub: SubscriptionRecord }> {
    await this.written();
    for await (const [key, value] of this.db.iterator(prefixRange('u'))) {
      const clientId = key.slice(2, key.indexOf(SEP, 2));
      yield { clientId, sub: JSON.parse(value) as SubscriptionRecord };
    }
  }

  // ---- outgoing ------------------------------------------------------------------------------

  putOutgoing(clientId: string, rec: OutgoingRecord): void {
    this.assertWritable();
    checkSeq(rec.seq);
    this.index.put(clientId, rec);
  }

  deleteOutgoing(clientId: string, seq: number): void {
    this.assertWritable();
    this.index.delete(clientId, seq);
  }

  outgoingBytes(clientId: string): number {
    return this.index.bytes(clientId);
  }

  backlogBytes(): number {
    return this.index.pendingBytes;
  }

  async getOutgoing(clientId: string, limit?: number, after?: number): Promise<OutgoingRecord[]> {
    await this.written();
    // One snapshot for references and bodies: a batch written between the two reads cannot split them.
    const snapshot = this.db.snapshot();
    try {
      const bounds: { gte?: string; gt?: string; lt: string } = range('o', clientId);
      // A later page starts past the last one, not at the tombstones of what was acknowledged since.
      if (after !== undefined) {
        delete bounds.gte;
        bounds.gt = outKey(clientId, after);
      }
      const entries = await this.db.iterator({ ...bounds, snapshot, limit: limit ?? -1 }).all();
      const refs = entries.map(([key, value]) => ({
        seq: Number(key.slice(key.length - SEQ_WIDTH)),
        enc: decodeOutgoing(value),
      }));
      if (refs.length === 0) return [];
      const ids = [...new Set(refs.map((r) => r.enc.m))];
      const values = await this.db.getMany(ids.map(bodyKey), { snapshot });
      const bodies = new Map<string, StoredMessage>();
      for (let i = 0; i < ids.length; i++) {
        const v = values[i];
        if (v !== undefined) bodies.set(ids[i], decodeMessage(JSON.parse(v) as EncodedMessage));
      }
      const out: OutgoingRecord[] = [];
      for (const { seq, enc } of refs) {
        const message = bodies.get(enc.m);
        if (message) out.push(outgoingFrom(seq, enc, message)); // none: a body lost to damage
      }
      return out;
    } finally {
      await snapshot.close();
    }
  }

  // ---- inbound QoS 2 -------------------------------------------------------------------------

  addIncoming(clientId: string, packetId: number): void {
    this.assertWritable();
    checkName('clientId', clientId);
    this.put(inKey(clientId, packetId), '');
  }

  deleteIncoming(clientId: string, packetId: number): void {
    this.assertWritable();
    checkName('clientId', clientId);
    this.del(inKey(clientId, packetId));
  }

  async getIncoming(clientId: string): Promise<number[]> {
    await this.written();
    const ids: number[] = [];
    for await (const key of this.db.keys(range('i', clientId)))
      ids.push(Number(key.slice(key.length - PID_WIDTH)));
    return ids;
  }

  // ---- retained ------------------------------------------------------------------------------

  setRetained(topic: string, msg: StoredMessage | null): void {
    this.assertWritable();
    checkName('topic', topic);
    if (msg) this.put(retainedKey(topic), JSON.stringify(encodeMessage(msg)));
    else this.del(retainedKey(topic));
  }

  async *listRetained(): AsyncIterable<StoredMessage> {
    await this.written();
    for await (const value of this.db.values(prefixRange('r')))
      yield decodeMessage(JSON.parse(value) as EncodedMessage);
  }

  // ---- wills ---------------------------------------------------------------------------------

  putWill(rec: WillRecord): void {
    this.assertWritable();
    checkName('clientId', rec.clientId);
    this.put(willKey(rec.clientId), encodeWill(rec));
  }

  deleteWill(clientId: string): void {
    this.assertWritable();
    checkName('clientId', clientId);
    this.del(willKey(clientId));
  }

  async *listWills(): AsyncIterable<WillRecord> {
    await this.written();
    for await (const [key, value] of this.db.iterator(prefixRange('w')))
      yield decodeWill(key.slice(2), value);
  }

  // ---- shared subscription groups ------------------------------------------------------------

  putGroupMessage(group: string, rec: GroupMessageRecord): void {
    this.assertWritable();
    checkName('group', group);
    checkSeq(rec.seq);
    this.put(groupKey(group, rec.seq), encodeGroupMessage(rec));
  }

  deleteGroupMessage(group: string, seq: number): void {
    this.assertWritable();
    checkName('group', group);
    this.del(groupKey(group, seq));
  }

  async *listGroupMessages(): AsyncIterable<{ group: string; rec: GroupMessageRecord }> {
    await this.written();
    for await (const [key, value] of this.db.iterator(prefixRange('g'))) {
      const group = key.slice(2, key.length - SEQ_WIDTH - 1);
      yield { group, rec: decodeGroupMessage(Number(key.slice(key.length - SEQ_WIDTH)), value) };
    }
  }

  // ---- idempotency keys ----------------------------------------------------------------------

  putDedup(rec: DedupRecord): void {
    this.assertWritable();
    checkName('topic', rec.topic);
    checkName('idempotency key', rec.key);
    const value = JSON.stringify({ e: rec.expiresAt });
    if (rec.publisher === undefined) this.put(unscopedDedupKey(rec.topic, rec.key), value);
    else {
      checkName('publisher', rec.publisher);
      this.put(dedupKey(rec.publisher, rec.topic, rec.key), value);
    }
  }

  deleteDedup(topic: string, key: string, publisher?: string): void {
    this.assertWritable();
    checkName('topic', topic);
    checkName('idempotency key', key);
    if (publisher === undefined) this.del(unscopedDedupKey(topic, key));
    else {
      checkName('publisher', publisher);
      this.del(dedupKey(publisher, topic, key));
    }
  }

  async *listDedup(): AsyncIterable<DedupRecord> {
    await this.written();
    for await (const [k, value] of this.db.iterator(prefixRange('d'))) yield decodeDedup(k, value, false);
    for await (const [k, value] of this.db.iterator(prefixRange('k'))) yield decodeDedup(k, value, true);
  }
}
