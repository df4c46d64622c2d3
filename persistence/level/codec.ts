/**
 * How LevelPersistence writes its values: JSON for most, with Buffers as base64, and the short
 * `<messageId>|<state><qos><retain><packetId?>` form for the common outgoing record.
 */
import type {
  DedupRecord,
  GroupMessageRecord,
  OutgoingRecord,
  OutgoingState,
  StoredMessage,
  WillRecord,
} from '../types.js';
import { SEP } from './keys.js';

export interface EncodedMessage {
  id: string;
  topic: string;
  payload: string;
  qos: StoredMessage['qos'];
  retain: boolean;
  properties?: Record<string, unknown>;
  expiresAt?: number;
}

export interface EncodedOutgoing {
  m: string;
  s: OutgoingState;
  q: OutgoingRecord['qos'];
  r: boolean;
  p?: number;
  i?: number[];
  g?: string;
  a?: number;
  u?: boolean;
}

interface EncodedWill {
  message: EncodedMessage;
  fireAt?: number;
  delay?: number;
  expiryInterval?: number;
}

interface EncodedGroupMessage {
  m: EncodedMessage;
  p: number;
  a: number;
  d?: number;
  c?: number;
  l?: string;
  u?: boolean;
  t?: string;
  n?: number;
  /** Pulled: receipt and visible-again time. */
  r?: string;
  v?: number;
}

export function encodeMessage(msg: StoredMessage): EncodedMessage {
  const enc: EncodedMessage = {
    id: msg.id,
    topic: msg.topic,
    payload: msg.payload.toString('base64'),
    qos: msg.qos,
    retain: msg.retain,
  };
  if (msg.properties) {
    const props: Record<string, unknown> = { ...msg.properties };
    if (msg.properties.correlationData)
      props.correlationData = msg.properties.correlationData.toString('base64');
    enc.properties = props;
  }
  if (msg.expiresAt !== undefined) enc.expiresAt = msg.expiresAt;
  return enc;
}

export function decodeMessage(enc: EncodedMessage): StoredMessage {
  const msg: StoredMessage = {
    id: enc.id,
    topic: enc.topic,
    payload: Buffer.from(enc.payload, 'base64'),
    qos: enc.qos,
    retain: enc.retain,
  };
  if (enc.properties) {
    const props = { ...enc.properties } as NonNullable<StoredMessage['properties']>;
    if (typeof enc.properties.correlationData === 'string') {
      props.correlationData = Buffer.from(enc.properties.correlationData, 'base64');
    }
    msg.properties = props;
  }
  if (enc.expiresAt !== undefined) msg.expiresAt = enc.expiresAt;
  return msg;
}

/** Payload and topic bytes of a stored body, as the broker counts a message (sizeOf). */
export function storedSize(value: string): number {
  try {
    const enc = JSON.parse(value) as EncodedMessage;
    return Buffer.byteLength(enc.payload, 'base64') + enc.topic.length;
  } catch {
    return value.length;
  }
}

const STATE_CODE: Record<OutgoingState, string> = { queued: 'q', inflight: 'i', pubrel: 'r' };
const CODE_STATE: Record<string, OutgoingState | undefined> = { q: 'queued', i: 'inflight', r: 'pubrel' };

/**
 * The o␀ value. Format 2 writes the common record (no subscription ids, group, attempts or DUP) as
 * `<messageId>|<state><qos><retain><packetId?>`, e.g. `lx2k9a1f3c.1b|i11042` (state q/i/r, retain
 * 0/1): every stored delivery writes one, and its bytes are written, flushed and compacted away
 * again, so size counts. Other records are JSON of an EncodedOutgoing, as in format 1, built by
 * hand (about half the cost of JSON.stringify on an object here).
 */
export function encodeOutgoing(rec: OutgoingRecord): string {
  const id = rec.message.id;
  if (
    rec.subscriptionIds === undefined &&
    rec.group === undefined &&
    rec.attempts === undefined &&
    rec.dup === undefined &&
    !id.includes('|')
  ) {
    return `${id}|${STATE_CODE[rec.state]}${rec.qos}${rec.retain ? 1 : 0}${rec.packetId ?? ''}`;
  }
  let s = `{"m":${JSON.stringify(id)},"s":"${rec.state}","q":${rec.qos},"r":${rec.retain}`;
  if (rec.packetId !== undefined) s += `,"p":${rec.packetId}`;
  if (rec.subscriptionIds !== undefined) s += `,"i":[${rec.subscriptionIds.join(',')}]`;
  if (rec.group !== undefined) s += `,"g":${JSON.stringify(rec.group)}`;
  if (rec.attempts !== undefined) s += `,"a":${rec.attempts}`;
  if (rec.dup !== undefined) s += `,"u":${rec.dup}`;
  return `${s}}`;
}

/** Reads an o␀ value of either form; throws on one that is neither. */
export function decodeOutgoing(value: string): EncodedOutgoing {
  if (value.startsWith('{')) return JSON.parse(value) as EncodedOutgoing;
  const bar = value.lastIndexOf('|');
  const s = CODE_STATE[value[bar + 1]];
  const q = value.charCodeAt(bar + 2) - 48;
  const r = value[bar + 3];
  const p = value.length > bar + 4 ? Number(value.slice(bar + 4)) : undefined;
  if (bar <= 0 || !s || (q !== 0 && q !== 1 && q !== 2) || (r !== '0' && r !== '1') || Number.isNaN(p)) {
    throw new SyntaxError(`not an outgoing record: ${JSON.stringify(value)}`);
  }
  const enc: EncodedOutgoing = { m: value.slice(0, bar), s, q, r: r === '1' };
  if (p !== undefined) enc.p = p;
  return enc;
}

export function encodeWill(rec: WillRecord): string {
  const enc: EncodedWill = { message: encodeMessage(rec.message) };
  if (rec.fireAt !== undefined) enc.fireAt = rec.fireAt;
  if (rec.delay !== undefined) enc.delay = rec.delay;
  if (rec.expiryInterval !== undefined) enc.expiryInterval = rec.expiryInterval;
  return JSON.stringify(enc);
}

export function decodeWill(clientId: string, value: string): WillRecord {
  const enc = JSON.parse(value) as EncodedWill;
  const rec: WillRecord = { clientId, message: decodeMessage(enc.message) };
  if (enc.fireAt !== undefined) rec.fireAt = enc.fireAt;
  if (enc.delay !== undefined) rec.delay = enc.delay;
  if (enc.expiryInterval !== undefined) rec.expiryInterval = enc.expiryInterval;
  return rec;
}

export function encodeGroupMessage(rec: GroupMessageRecord): string {
  const enc: EncodedGroupMessage = { m: encodeMessage(rec.message), p: rec.priority, a: rec.attempts };
  if (rec.dueAt !== undefined) enc.d = rec.dueAt;
  if (rec.lastReason !== undefined) enc.c = rec.lastReason;
  if (rec.lastMember !== undefined) enc.l = rec.lastMember;
  if (rec.dup !== undefined) enc.u = rec.dup;
  if (rec.member !== undefined) enc.t = rec.member;
  if (rec.packetId !== undefined) enc.n = rec.packetId;
  if (rec.receipt !== undefined) enc.r = rec.receipt;
  if (rec.visibleUntil !== undefined) enc.v = rec.visibleUntil;
  return JSON.stringify(enc);
}

export function decodeGroupMessage(seq: number, value: string): GroupMessageRecord {
  const enc = JSON.parse(value) as EncodedGroupMessage;
  const rec: GroupMessageRecord = { seq, message: decodeMessage(enc.m), priority: enc.p, attempts: enc.a };
  if (enc.d !== undefined) rec.dueAt = enc.d;
  if (enc.c !== undefined) rec.lastReason = enc.c;
  if (enc.l !== undefined) rec.lastMember = enc.l;
  if (enc.u !== undefined) rec.dup = enc.u;
  if (enc.t !== undefined) rec.member = enc.t;
  if (enc.n !== undefined) rec.packetId = enc.n;
  if (enc.r !== undefined) rec.receipt = enc.r;
  if (enc.v !== undefined) rec.visibleUntil = enc.v;
  return rec;
}

/** An outgoing record read back: its body joined to the stored reference. */
export function outgoingFrom(seq: number, enc: EncodedOutgoing, message: StoredMessage): OutgoingRecord {
  const rec: OutgoingRecord = { seq, state: enc.s, qos: enc.q, retain: enc.r, message };
  if (enc.p !== undefined) rec.packetId = enc.p;
  if (enc.i !== undefined) rec.subscriptionIds = enc.i;
  if (enc.g !== undefined) rec.group = enc.g;
  if (enc.a !== undefined) rec.attempts = enc.a;
  if (enc.u !== undefined) rec.dup = enc.u;
  return rec;
}

/** An idempotency key: k␀<publisher>␀<topic>␀<key> (scoped), or d␀<topic>␀<key> (stored before keys were). */
export function decodeDedup(k: string, value: string, scoped: boolean): DedupRecord {
  const expiresAt = (JSON.parse(value) as { e: number }).e;
  const a = k.indexOf(SEP, 2);
  if (!scoped) return { topic: k.slice(2, a), key: k.slice(a + 1), expiresAt };
  const b = k.indexOf(SEP, a + 1);
  return { topic: k.slice(a + 1, b), key: k.slice(b + 1), expiresAt, publisher: k.slice(2, a) };
}
