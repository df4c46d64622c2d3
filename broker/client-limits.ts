/**
 * Limits against abusive clients that need state of their own: a connect-rate token bucket per
 * source address, flapping detection per client id, and an inbound publish-rate bucket per
 * connection. The per-address and per-client-id tables are bounded themselves: entries that carry
 * no information any more are pruned (the broker's sweep calls prune()), and at the cap the oldest
 * is forgotten, so many addresses or ids cannot grow them without bound.
 */

import type { Connection } from './connection.js';

/** Entries the per-address and per-client-id tables hold at most. */
export const MAX_TRACKED = 100_000;

interface Bucket {
  tokens: number;
  at: number;
}

/**
 * CONNECTs per source address: a token bucket each, refilled at `rate` a second up to `burst`.
 * The map is kept in order of last use (an entry is re-inserted when touched), so pruning the
 * refilled ones stops at the first recent entry.
 */
export class AddressRate {
  private readonly buckets = new Map<string, Bucket>();
  /** ms after which an untouched bucket is full again, i.e. no different from an absent one. */
  private readonly refillMs: number;

  constructor(
    private readonly rate: number,
    private readonly burst: number,
    private readonly max = MAX_TRACKED,
  ) {
    this.refillMs = rate > 0 ? Math.ceil((burst / rate) * 1000) : 0;
  }

  get size(): number {
    return this.buckets.size;
  }

  /** Takes a token for this address; false when its bucket is empty (or rate is 0: no limit). */
  take(address: string, now: number): boolean {
    if (this.rate === 0) return true;
    let b = this.buckets.get(address);
    if (b !== undefined) {
      this.buckets.delete(address);
      b.tokens = Math.min(this.burst, b.tokens + ((now - b.at) * this.rate) / 1000);
      b.at = now;
    } else {
      if (this.buckets.size >= this.max) this.dropOldest();
      b = { tokens: this.burst, at: now };
    }
    this.buckets.set(address, b);
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  prune(now: number): void {
    for (const [address, b] of this.buckets) {
      if (now - b.at < this.refillMs) break;
      this.buckets.delete(address);
    }
  }

  private dropOldest(): void {
    for (const address of this.buckets.keys()) {
      this.buckets.delete(address);
      return;
    }
  }
}

interface Window {
  start: number;
  count: number;
}

/**
 * Flapping detection: a client id that connects more than `maxConnects` times in a window (which
 * starts at the first connect counted) is banned for `banMs`. Both maps are in time order (windows
 * by start, bans by end, each re-inserted when it restarts), so pruning stops at the first live one.
 */
export class Flapping {
  private readonly windows = new Map<string, Window>();
  /** Client id → epoch ms its ban ends. */
  private readonly bans = new Map<string, number>();

  constructor(
    private readonly maxConnects: number,
    private readonly windowMs: number,
    private readonly banMs: number,
    private readonly max = MAX_TRACKED,
  ) {}

  get banned(): number {
    return this.bans.size;
  }

  get tracked(): number {
    return this.windows.size;
  }

  isBanned(clientId: string, now: number): boolean {
    const until = this.bans.get(clientId);
    if (until === undefined) return false;
    if (until > now) return true;
    this.bans.delete(clientId);
    return false;
  }

  /** Counts a connect of this client id; true when it is one too many: the id is banned from now. */
  connected(clientId: string, now: number): boolean {
    if (this.maxConnects === 0 || this.banMs === 0) return false;
    let w = this.windows.get(clientId);
    if (w === undefined || now - w.start >= this.windowMs) {
      if (w !== undefined) this.windows.delete(clientId);
      else if (this.windows.size >= this.max) dropOldest(this.windows);
      w = { start: now, count: 0 };
      this.windows.set(clientId, w);
    }
    if (++w.count <= this.maxConnects) return false;
    this.windows.delete(clientId);
    this.bans.delete(clientId);
    if (this.bans.size >= this.max) dropOldest(this.bans);
    this.bans.set(clientId, now + this.banMs);
    return true;
  }

  prune(now: number): void {
    for (const [id, w] of this.windows) {
      if (now - w.start < this.windowMs) break;
      this.windows.delete(id);
    }
    for (const [id, until] of this.bans) {
      if (until > now) break;
      this.bans.delete(id);
    }
  }
}

function dropOldest(m: Map<string, unknown>): void {
  for (const k of m.keys()) {
    m.delete(k);
    return;
  }
}

/**
 * Inbound publish rate of one connection, in messages and bytes a second; each bucket holds one
 * second's worth. A publish is always handled (it was already read); when it leaves a bucket in
 * debt, reading pauses until the debt is paid back, so the average rate holds without disconnecting.
 */
export class PublishRate {
  private messages: number;
  private bytes: number;
  private at: number;
  /** Ends the pause of reading, while there is one. */
  timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly messageRate: number,
    private readonly byteRate: number,
    now: number,
  ) {
    this.messages = messageRate;
    this.bytes = byteRate;
    this.at = now;
  }

  private refill(now: number): void {
    const s = (now - this.at) / 1000;
    this.at = now;
    if (this.messageRate > 0)
      this.messages = Math.min(this.messageRate, this.messages + s * this.messageRate);
    if (this.byteRate > 0) this.bytes = Math.min(this.byteRate, this.bytes + s * this.byteRate);
  }

  /** Charges one publish of `size` bytes; returns the ms to stop reading for (0: read on). */
  charge(size: number, now: number): number {
    this.refill(now);
    this.messages -= 1;
    this.bytes -= size;
    return this.debt();
  }

  /** ms until neither bucket is in debt. */
  wait(now: number): number {
    this.refill(now);
    return this.debt();
  }

  stop(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  private debt(): number {
    let ms = 0;
    if (this.messageRate > 0 && this.messages < 0) ms = (-this.messages / this.messageRate) * 1000;
    if (this.byteRate > 0 && this.bytes < 0) ms = Math.max(ms, (-this.bytes / this.byteRate) * 1000);
    return Math.ceil(ms);
  }
}

/**
 * Charges an inbound PUBLISH against --max-publish-rate / --max-publish-bytes-rate; in debt,
 * reading pauses until it is paid back (the client is slowed down, not disconnected).
 */
export function chargePublish(conn: Connection, bytes: number): void {
  const o = conn.broker.options;
  if (o.maxPublishRate === 0 && o.maxPublishBytesRate === 0) return;
  const now = Date.now();
  conn.publishRate ??= new PublishRate(o.maxPublishRate, o.maxPublishBytesRate, now);
  const rate = conn.publishRate;
  const wait = rate.charge(bytes, now);
  if (wait === 0 || rate.timer !== null || conn.closing) return;
  conn.ratePause(true);
  conn.broker.clientLimits.hit('publishRate', { clientId: conn.clientId, pausedMs: wait });
  rate.timer = setTimeout(rateTimer, wait, conn).unref();
}

/** The publish-rate pause is over, or (still in debt) extended. */
function rateTimer(conn: Connection): void {
  const rate = conn.publishRate!;
  rate.timer = null;
  if (conn.closing) return;
  const wait = rate.wait(Date.now());
  if (wait > 0) rate.timer = setTimeout(rateTimer, wait, conn).unref();
  else conn.ratePause(false);
}

/** CONNECT refusals, by limit. */
export interface ConnectionsRefused {
  /** --max-connections reached: CONNACK 0x97 / 3.1.1 0x03. */
  maxConnections: number;
  /** Source address over --connect-rate: CONNACK 0x9F / 3.1.1 0x03. */
  connectRate: number;
  /** Client id longer than --max-client-id-length: CONNACK 0x85 / 3.1.1 0x02. */
  clientIdLength: number;
  /** Client id banned for flapping: CONNACK 0x8A / 3.1.1 0x05. */
  flapping: number;
  /** CONNECT larger than --max-connect-size: closed. */
  connectSize: number;
}

export type LimitKind = keyof ConnectionsRefused | 'publishRate' | 'retained' | 'sharedGroups';

/** The broker's limit state and counters (BrokerStats reports them). */
export class ClientLimits {
  readonly refused: ConnectionsRefused = {
    maxConnections: 0,
    connectRate: 0,
    clientIdLength: 0,
    flapping: 0,
    connectSize: 0,
  };
  /** Times a connection's reading was paused for its publish rate. */
  publishRateLimited = 0;
  /** Retained messages not stored for --max-retained / --max-retained-bytes. */
  retainedRefused = 0;
  /** `$share` subscriptions refused for --max-shared-groups / --max-shared-groups-per-client. */
  sharedGroupsRefused = 0;
  /** Sessions whose expiry interval was lowered to --max-session-expiry (counted, not logged). */
  sessionExpiryCapped = 0;
  /** Connections past the --max-connections check and not ended yet. */
  admitted = 0;
  readonly addresses: AddressRate;
  readonly flapping: Flapping;
  private readonly lastLog = new Map<LimitKind, number>();

  constructor(
    o: {
      connectRate: number;
      connectBurst: number;
      flappingMaxConnects: number;
      flappingWindow: number;
      flappingBan: number;
    },
    private readonly log: { warn(obj: object, msg: string): void },
  ) {
    this.addresses = new AddressRate(o.connectRate, o.connectBurst);
    this.flapping = new Flapping(o.flappingMaxConnects, o.flappingWindow * 1000, o.flappingBan * 1000);
  }

  /** Counts a limit being hit and logs it, at most once a second per kind (an attack must not flood the log). */
  hit(kind: LimitKind, fields: object): void {
    let count: number;
    if (kind in this.refused) count = ++this.refused[kind as keyof ConnectionsRefused];
    else if (kind === 'publishRate') count = ++this.publishRateLimited;
    else if (kind === 'retained') count = ++this.retainedRefused;
    else count = ++this.sharedGroupsRefused;
    const now = Date.now();
    if (now - (this.lastLog.get(kind) ?? 0) < 1000) return;
    this.lastLog.set(kind, now);
    this.log.warn({ ...fields, limit: kind, count }, 'limit reached');
  }

  prune(now: number): void {
    this.addresses.prune(now);
    this.flapping.prune(now);
  }
}
