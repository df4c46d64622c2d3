import { randomBytes } from 'node:crypto';
import type { MessageProperties, OutgoingRecord, QoS, StoredMessage } from '../persistence/types.js';

export type Message = StoredMessage;

// Ids must stay unique across restarts: a per-boot random prefix plus a counter.
const bootPrefix = `${Date.now().toString(36)}${randomBytes(3).toString('hex')}.`;
let counter = 0;

export function newMessageId(): string {
  return bootPrefix + (counter++).toString(36);
}

let lastSeq = 0;
/** A broker-wide increasing sequence that keeps increasing across restarts (seeded from the clock). */
export function nextSeq(): number {
  const t = Date.now() * 1024;
  lastSeq = t > lastSeq ? t : lastSeq + 1;
  return lastSeq;
}

/** The clock time a seq was taken at (nextSeq seeds from Date.now() × 1024): a held message's age. */
export function seqTime(seq: number): number {
  return Math.floor(seq / 1024);
}

export function createMessage(
  topic: string,
  payload: Buffer,
  qos: QoS,
  retain: boolean,
  properties?: MessageProperties,
  expiryInterval?: number,
): Message {
  // Every field is always present, in one order: one hidden class keeps the hot paths' property
  // loads monomorphic.
  return {
    id: newMessageId(),
    topic,
    payload,
    qos,
    retain,
    properties,
    expiresAt: expiryInterval === undefined ? undefined : Date.now() + expiryInterval * 1000,
    held: 0,
  };
}

export function isExpired(msg: StoredMessage, now: number): boolean {
  return msg.expiresAt !== undefined && msg.expiresAt <= now;
}

/**
 * A new outgoing record with every field present, in one order (see createMessage): records made
 * here and copied with it share one hidden class whichever optional fields are set.
 */
export function outgoingRecord(r: OutgoingRecord): OutgoingRecord {
  return {
    seq: r.seq,
    state: r.state,
    packetId: r.packetId,
    qos: r.qos,
    retain: r.retain,
    subscriptionIds: r.subscriptionIds,
    message: r.message,
    group: r.group,
    attempts: r.attempts,
    dup: r.dup,
  };
}

/** What a queued message counts against byte bounds: its payload and topic. */
export function sizeOf(msg: StoredMessage): number {
  return msg.payload.length + msg.topic.length;
}
