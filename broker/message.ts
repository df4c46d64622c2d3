import { randomBytes } from 'node:crypto';
import type { MessageProperties, QoS, StoredMessage } from '../persistence/types.js';

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

export function createMessage(
  topic: string,
  payload: Buffer,
  qos: QoS,
  retain: boolean,
  properties?: MessageProperties,
  expiryInterval?: number,
): Message {
  const msg: Message = { id: newMessageId(), topic, payload, qos, retain };
  if (properties) msg.properties = properties;
  if (expiryInterval !== undefined) msg.expiresAt = Date.now() + expiryInterval * 1000;
  return msg;
}

export function isExpired(msg: StoredMessage, now: number): boolean {
  return msg.expiresAt !== undefined && msg.expiresAt <= now;
}
