import type { UserProperties } from 'mqtt-packet';
import type { DedupRecord, Persistence } from '../../persistence/types.js';

/** The user property whose value identifies a publish for idempotent publishing. */
export const IDEMPOTENCY_KEY = 'idempotency-key';

/** The publisher scope of the broker's own messages (`broker.publish()`): no client id is empty. */
export const BROKER_PUBLISHER = '';

/**
 * Idempotent publishing: a PUBLISH whose `idempotency-key` user property its publisher (client id)
 * already used on the same topic within the window is acknowledged as usual but not delivered
 * again. Keys are per publisher, so one client cannot suppress another's message by reusing its
 * key. They are written through persistence (so they survive a restart on a durable backend) and
 * purged once expired: a map keeps insertion order, which is expiry order for a fixed window, so a
 * purge stops at the first live key. At most maxKeys are remembered: beyond it the oldest is
 * forgotten early, so the window is best-effort under a flood of distinct keys.
 */
export class Dedup {
  private readonly seen = new Map<string, DedupRecord>();
  /**
   * Keys stored before they were scoped (no `publisher`): they still hold for every publisher
   * until they expire, as they did when written. Empty once those have gone.
   */
  private readonly unscoped = new Map<string, DedupRecord>();
  /** Keys forgotten before their window ended, to stay within maxKeys. */
  forgotten = 0;

  constructor(
    private readonly persistence: Persistence,
    /** Seconds; 0 turns dedup off. */
    private readonly windowSeconds: number,
    /** Keys remembered at most; 0 = no limit. */
    private readonly maxKeys = 0,
  ) {}

  get size(): number {
    return this.seen.size + this.unscoped.size;
  }

  /**
   * True when this publish repeats a key its publisher used on its topic within the window;
   * otherwise records the key.
   */
  repeated(publisher: string, topic: string, userProperties: UserProperties): boolean {
    if (this.windowSeconds === 0) return false;
    const v = userProperties[IDEMPOTENCY_KEY];
    const key = Array.isArray(v) ? v[0] : v;
    if (typeof key !== 'string' || key.includes('\u0000')) return false;
    const now = Date.now();
    if (this.unscoped.size > 0) {
      const old = this.unscoped.get(`${topic}\u0000${key}`);
      if (old !== undefined && old.expiresAt > now) return true;
    }
    const id = `${publisher}\u0000${topic}\u0000${key}`;
    const prev = this.seen.get(id);
    if (prev !== undefined) {
      if (prev.expiresAt > now) return true;
      this.seen.delete(id); // re-inserted below, at the end of the expiry order
    }
    const rec: DedupRecord = { topic, key, expiresAt: now + this.windowSeconds * 1000, publisher };
    if (this.maxKeys > 0 && this.seen.size >= this.maxKeys) this.forgetOldest();
    this.seen.set(id, rec);
    this.persistence.putDedup(rec);
    return false;
  }

  private forgetOldest(): void {
    for (const [id, rec] of this.seen) {
      this.seen.delete(id);
      this.persistence.deleteDedup(rec.topic, rec.key, rec.publisher);
      this.forgotten++;
      return;
    }
  }

  /** Forgets keys whose window has passed; returns how many. */
  purge(now = Date.now()): number {
    return this.purgeFrom(this.seen, now) + (this.unscoped.size > 0 ? this.purgeFrom(this.unscoped, now) : 0);
  }

  private purgeFrom(map: Map<string, DedupRecord>, now: number): number {
    let n = 0;
    for (const [id, rec] of map) {
      if (rec.expiresAt > now) break;
      map.delete(id);
      this.persistence.deleteDedup(rec.topic, rec.key, rec.publisher);
      n++;
    }
    return n;
  }

  /** Loads the keys persistence holds; expired ones are deleted. */
  async restore(): Promise<void> {
    const now = Date.now();
    const live: DedupRecord[] = [];
    for await (const rec of this.persistence.listDedup()) {
      if (rec.expiresAt > now) live.push(rec);
      else this.persistence.deleteDedup(rec.topic, rec.key, rec.publisher);
    }
    live.sort((a, b) => a.expiresAt - b.expiresAt);
    // Over maxKeys (lowered since they were stored): the newest are kept.
    const drop = this.maxKeys > 0 ? Math.max(0, live.length - this.maxKeys) : 0;
    for (let i = 0; i < drop; i++)
      this.persistence.deleteDedup(live[i].topic, live[i].key, live[i].publisher);
    this.forgotten += drop;
    for (const rec of live.slice(drop)) {
      if (rec.publisher === undefined) this.unscoped.set(`${rec.topic}\u0000${rec.key}`, rec);
      else this.seen.set(`${rec.publisher}\u0000${rec.topic}\u0000${rec.key}`, rec);
    }
  }
}
