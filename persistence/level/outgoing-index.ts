/**
 * What LevelPersistence keeps in memory of the o␀ records and m␀ bodies: per client its written
 * records in compact columns (level/columns.ts) and its records whose put is still pending, and per
 * body the number of records referencing it. Needed without reading the disk: to release a body
 * when its last reference goes, to write a delete only for a key that was written, and for
 * outgoingBytes. Never a payload, and no object per written record.
 *
 * Puts of o␀ records and m␀ bodies are deferred: encoded when their batch is taken for writing. A
 * newer record for the same seq replaces a pending put in place, and a delete that comes first drops
 * it (nothing is encoded or written, nor deleted).
 */
import type { OutgoingRecord, StoredMessage } from '../types.js';
import { encodeMessage, encodeOutgoing } from './codec.js';
import { Columns } from './columns.js';
import { bodyKey, checkName, outKey } from './keys.js';

export type Op = { type: 'put'; key: string; value: string } | { type: 'del'; key: string };

/** A put encoded when its batch is taken; undefined if it was dropped meanwhile. */
export interface DeferredPut {
  type: 'deferred';
  take(): Op | undefined;
}

interface ClientOut {
  id: string;
  /** Written records (or taken for writing). */
  cols: Columns;
  /** Records whose put is pending, by seq. A written record put again is in both. */
  hot: Map<number, PendingOut> | undefined;
  /** Records and bytes of bodies over both. */
  count: number;
  bytes: number;
}

class PendingOut implements DeferredPut {
  readonly type = 'deferred';
  pending = true;
  constructor(
    readonly client: ClientOut,
    readonly seq: number,
    /** The body's message id. */
    public id: string,
    public size: number,
    public rec: OutgoingRecord | null,
    /** The client's columns hold this seq: it was written before. */
    readonly stored: boolean,
  ) {}

  take(): Op | undefined {
    if (!this.pending) return undefined;
    this.pending = false;
    const c = this.client;
    c.hot?.delete(this.seq);
    if (!this.stored) c.cols.insert(this.seq, this.id, this.size);
    const value = encodeOutgoing(this.rec as OutgoingRecord);
    this.rec = null;
    return { type: 'put', key: outKey(c.id, this.seq), value };
  }
}

class PendingBody implements DeferredPut {
  readonly type = 'deferred';
  pending = true;
  constructor(
    private readonly index: OutgoingIndex,
    public msg: StoredMessage | null,
    /** References so far. */
    public n: number,
    readonly size: number,
  ) {}

  take(): Op | undefined {
    if (!this.pending) return undefined;
    this.pending = false;
    const msg = this.msg as StoredMessage;
    this.msg = null;
    this.index.pendingBytes -= this.size;
    this.index.bodies.set(msg.id, this.n); // written from here on: a plain count
    return { type: 'put', key: bodyKey(msg.id), value: JSON.stringify(encodeMessage(msg)) };
  }
}

export class OutgoingIndex {
  private clients = new Map<string, ClientOut>();
  /** messageId → references: a number once written, its pending put before. */
  readonly bodies = new Map<string, number | PendingBody>();
  /** Payload and topic bytes of the bodies whose put is pending: memory held for the writer. */
  pendingBytes = 0;

  /** `emit` queues an op for the next batch. */
  constructor(private readonly emit: (op: Op | DeferredPut) => void) {}

  clear(): void {
    this.clients.clear();
    this.bodies.clear();
    this.pendingBytes = 0;
  }

  stats(): { bodies: number; references: number } {
    let references = 0;
    for (const b of this.bodies.values()) references += typeof b === 'number' ? b : b.n;
    return { bodies: this.bodies.size, references };
  }

  bytes(clientId: string): number {
    return this.clients.get(clientId)?.bytes ?? 0;
  }

  private client(clientId: string): ClientOut {
    let c = this.clients.get(clientId);
    if (c === undefined) {
      checkName('clientId', clientId);
      c = { id: clientId, cols: new Columns(), hot: undefined, count: 0, bytes: 0 };
      this.clients.set(clientId, c);
    }
    return c;
  }

  put(clientId: string, rec: OutgoingRecord): void {
    const c = this.client(clientId);
    const msg = rec.message;
    const id = msg.id;
    const hot = c.hot?.get(rec.seq);
    if (hot !== undefined) {
      // Still pending: the newer record replaces the one not yet taken for writing.
      if (hot.id !== id) {
        const size = msg.payload.length + msg.topic.length;
        this.hold(msg);
        this.release(hot.id);
        c.bytes += size - hot.size;
        if (hot.stored) c.cols.set(c.cols.find(rec.seq), id, size);
        hot.id = id;
        hot.size = size;
      }
      hot.rec = rec;
      return;
    }
    const i = c.cols.find(rec.seq);
    let size: number;
    if (i >= 0) {
      size = c.cols.size(i);
      const old = c.cols.id(i);
      if (old !== id) {
        size = msg.payload.length + msg.topic.length;
        this.hold(msg);
        this.release(old);
        c.bytes += size - c.cols.size(i);
        c.cols.set(i, id, size);
      }
    } else {
      size = msg.payload.length + msg.topic.length;
      this.hold(msg);
      c.count++;
      c.bytes += size;
    }
    const ref = new PendingOut(c, rec.seq, id, size, rec, i >= 0);
    c.hot ??= new Map();
    c.hot.set(rec.seq, ref);
    this.emit(ref);
  }

  delete(clientId: string, seq: number): void {
    const c = this.clients.get(clientId);
    if (c === undefined) return;
    const hot = c.hot?.get(seq);
    const i = c.cols.find(seq);
    let id: string;
    let size: number;
    if (hot !== undefined) {
      hot.pending = false;
      hot.rec = null;
      c.hot?.delete(seq);
      id = hot.id;
      size = hot.size;
    } else if (i >= 0) {
      id = c.cols.id(i);
      size = c.cols.size(i);
    } else return;
    if (i >= 0) {
      c.cols.remove(i);
      this.emit({ type: 'del', key: outKey(clientId, seq) });
    }
    this.release(id);
    c.count--;
    c.bytes -= size;
    if (c.count === 0) this.clients.delete(clientId);
  }

  /** Every record of the client: deletes written for the written ones, their bodies released. */
  deleteClient(clientId: string): void {
    const c = this.clients.get(clientId);
    if (c === undefined) return;
    this.clients.delete(clientId);
    if (c.hot !== undefined) {
      for (const ref of c.hot.values()) {
        ref.pending = false;
        ref.rec = null;
        if (!ref.stored) this.release(ref.id);
      }
    }
    for (const { seq, id } of c.cols.entries()) {
      this.emit({ type: 'del', key: outKey(clientId, seq) });
      this.release(id);
    }
  }

  /** Adds one reference to a body; its first one stores it. */
  private hold(msg: StoredMessage): void {
    const b = this.bodies.get(msg.id);
    if (b === undefined) {
      const size = msg.payload.length + msg.topic.length;
      const ref = new PendingBody(this, msg, 1, size);
      this.pendingBytes += size;
      this.bodies.set(msg.id, ref);
      this.emit(ref);
    } else if (typeof b === 'number') this.bodies.set(msg.id, b + 1);
    else b.n++;
  }

  /** Drops one reference to a body; deletes the body with its last reference. */
  private release(id: string): void {
    const b = this.bodies.get(id);
    if (b === undefined) return;
    if (typeof b === 'number') {
      if (b > 1) this.bodies.set(id, b - 1);
      else {
        this.bodies.delete(id);
        this.emit({ type: 'del', key: bodyKey(id) });
      }
    } else if (--b.n === 0) {
      this.bodies.delete(id);
      b.pending = false;
      b.msg = null;
      this.pendingBytes -= b.size;
    }
  }

  // ---- rebuilt at open -------------------------------------------------------------------------

  /** A record read from disk at open (in key order: per client, seq order). */
  loaded(clientId: string, seq: number, id: string): void {
    let c = this.clients.get(clientId);
    if (c === undefined) {
      c = { id: clientId, cols: new Columns(), hot: undefined, count: 0, bytes: 0 };
      this.clients.set(clientId, c);
    }
    c.cols.insert(seq, id, 0);
    c.count++;
    const b = this.bodies.get(id);
    this.bodies.set(id, typeof b === 'number' ? b + 1 : 1);
  }

  referenced(id: string): boolean {
    return this.bodies.has(id);
  }

  /**
   * Once the bodies were read: each record gets its body's size, and records whose body is
   * missing are dropped (their keys returned, to be deleted).
   */
  sized(sizes: Map<string, number>): string[] {
    const dangling: string[] = [];
    for (const [clientId, c] of this.clients) {
      const cols = new Columns();
      let bytes = 0;
      for (const { seq, id } of c.cols.entries()) {
        const size = sizes.get(id);
        if (size === undefined) {
          dangling.push(outKey(clientId, seq));
          this.bodies.delete(id);
          continue;
        }
        cols.insert(seq, id, size);
        bytes += size;
      }
      c.cols = cols;
      c.count = cols.live;
      c.bytes = bytes;
      if (c.count === 0) this.clients.delete(clientId);
    }
    return dangling;
  }
}
