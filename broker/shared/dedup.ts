import type { UserProperties } from 'mqtt-packet';
import type { DedupRecord, Persistence } from '../../persistence/types.js';

/** The user property whose value identifies a publish for idempotent publishing. */
export const IDEMPOTENCY_KEY = 'idempotency-key';

/**
 * Idempotent publishing: a PUBLISH whose `idempotency-key` user property was already seen on the
 * same topic within the window is acknowledged as usual but not delivered again. Keys are written
 * through persistence (so they survive a restart on a durable backend) and purged once expired:
 * the map keeps insertion order, which is expiry order for a fixed window, so a purge stops at the
 * first live key.
 */
export class Dedup {
  private readonly seen = new Map<string, DedupRecord>();

  constructor(
    private readonly persistence: Persistence,
    /** Seconds; 0 turns dedup off. */
    private readonly windowSeconds: number,
  ) {}

  get size(): number {
    return this.seen.size;
  }

  /** True when this publish repeats a key seen on its topic within the window; otherwise records the key. */
  repeated(topic: string, userProperties: UserProperties): boolean {
    if (this.windowSeconds === 0) return false;
    const v = userProperties[IDEMPOTENCY_KEY];
    const key = Array.isArray(v) ? v[0] : v;
    if (typeof key !== 'string' || key.includes('\u0000')) return false;
    const id = `${topic}\u0000${key}`;
    const now = Date.now();
    const prev = this.seen.get(id);
    if (prev !== undefined) {
      if (prev.expiresAt > now) return true;
      this.seen.delete(id); // re-inserted below, at the end of the expiry order
    }
    const rec: DedupRecord = { topic, key, expiresAt: now + this.windowSeconds * 1000 };
    this.seen.set(id, rec);
    this.persistence.putDedup(rec);
    return false;
  }

  /** Forgets keys whose window has passed; returns how many. */
  purge(now = Date.now()): number {
    let n = 0;
    for (const [id, rec] of this.seen) {
      if (rec.expiresAt > now) break;
      this.seen.delete(id);
      this.persistence.deleteDedup(rec.topic, rec.key);
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
      else this.persistence.deleteDedup(rec.topic, rec.key);
    }
    live.sort((a, b) => a.expiresAt - b.expiresAt);
    for (const rec of live) this.seen.set(`${rec.topic}\u0000${rec.key}`, rec);
  }
}
