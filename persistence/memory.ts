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

interface ClientState {
  session?: SessionRecord;
  subs: Map<string, SubscriptionRecord>;
  outgoing: Map<number, OutgoingRecord>;
  incoming: Set<number>;
}

/** No part holds U+0000: an unscoped record's id has one separator more than any scoped one's. */
const dedupId = (topic: string, key: string, publisher: string | undefined) =>
  `${publisher === undefined ? '\u0000' : publisher}\u0000${topic}\u0000${key}`;

/** Keeps everything in process memory: fast, and gone when the process ends. */
export class MemoryPersistence implements Persistence {
  private clients = new Map<string, ClientState>();
  private retained = new Map<string, StoredMessage>();
  private wills = new Map<string, WillRecord>();
  private groups = new Map<string, Map<number, GroupMessageRecord>>();
  private dedup = new Map<string, DedupRecord>();

  async open(): Promise<void> {}
  async close(): Promise<void> {}

  /** Everything is stored at once: called back synchronously, so a throw reaches the caller. */
  whenDurable(cb: (err?: Error) => void): void {
    cb();
  }

  private client(clientId: string): ClientState {
    let c = this.clients.get(clientId);
    if (!c) {
      c = { subs: new Map(), outgoing: new Map(), incoming: new Set() };
      this.clients.set(clientId, c);
    }
    return c;
  }

  putSession(rec: SessionRecord): void {
    this.client(rec.clientId).session = rec;
  }

  deleteSession(clientId: string): void {
    this.clients.delete(clientId);
    this.wills.delete(clientId);
  }

  async *listSessions(): AsyncIterable<SessionRecord> {
    for (const c of this.clients.values()) if (c.session) yield c.session;
  }

  putSubscription(clientId: string, sub: SubscriptionRecord): void {
    this.client(clientId).subs.set(sub.filter, sub);
  }

  deleteSubscription(clientId: string, filter: string): void {
    this.clients.get(clientId)?.subs.delete(filter);
  }

  async *listSubscriptions(): AsyncIterable<{ clientId: string; sub: SubscriptionRecord }> {
    for (const [clientId, c] of this.clients) for (const sub of c.subs.values()) yield { clientId, sub };
  }

  putOutgoing(clientId: string, rec: OutgoingRecord): void {
    this.client(clientId).outgoing.set(rec.seq, rec);
  }

  deleteOutgoing(clientId: string, seq: number): void {
    this.clients.get(clientId)?.outgoing.delete(seq);
  }

  outgoingBytes(clientId: string): number {
    let n = 0;
    const c = this.clients.get(clientId);
    if (c) for (const rec of c.outgoing.values()) n += rec.message.payload.length + rec.message.topic.length;
    return n;
  }

  async getOutgoing(clientId: string, limit?: number, after?: number): Promise<OutgoingRecord[]> {
    const c = this.clients.get(clientId);
    if (!c) return [];
    let all = [...c.outgoing.values()];
    if (after !== undefined) all = all.filter((r) => r.seq > after);
    all.sort((a, b) => a.seq - b.seq);
    return limit === undefined ? all : all.slice(0, limit);
  }

  addIncoming(clientId: string, packetId: number): void {
    this.client(clientId).incoming.add(packetId);
  }

  deleteIncoming(clientId: string, packetId: number): void {
    this.clients.get(clientId)?.incoming.delete(packetId);
  }

  async getIncoming(clientId: string): Promise<number[]> {
    return [...(this.clients.get(clientId)?.incoming ?? [])];
  }

  setRetained(topic: string, msg: StoredMessage | null): void {
    if (msg) this.retained.set(topic, msg);
    else this.retained.delete(topic);
  }

  async *listRetained(): AsyncIterable<StoredMessage> {
    yield* this.retained.values();
  }

  putWill(rec: WillRecord): void {
    this.wills.set(rec.clientId, rec);
  }

  deleteWill(clientId: string): void {
    this.wills.delete(clientId);
  }

  async *listWills(): AsyncIterable<WillRecord> {
    yield* this.wills.values();
  }

  putGroupMessage(group: string, rec: GroupMessageRecord): void {
    let g = this.groups.get(group);
    if (!g) {
      g = new Map();
      this.groups.set(group, g);
    }
    g.set(rec.seq, rec);
  }

  deleteGroupMessage(group: string, seq: number): void {
    this.groups.get(group)?.delete(seq);
  }

  async *listGroupMessages(): AsyncIterable<{ group: string; rec: GroupMessageRecord }> {
    for (const [group, g] of [...this.groups]) {
      for (const rec of [...g.values()].sort((a, b) => a.seq - b.seq)) yield { group, rec };
    }
  }

  putDedup(rec: DedupRecord): void {
    this.dedup.set(dedupId(rec.topic, rec.key, rec.publisher), rec);
  }

  deleteDedup(topic: string, key: string, publisher?: string): void {
    this.dedup.delete(dedupId(topic, key, publisher));
  }

  async *listDedup(): AsyncIterable<DedupRecord> {
    yield* [...this.dedup.values()];
  }
}
