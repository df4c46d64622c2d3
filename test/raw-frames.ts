/**
 * Byte builders for packets mqtt-packet refuses to encode (malformed lengths, flags, strings), shared
 * by the raw-socket tables (bad-input, must-close).
 */

import assert from 'node:assert/strict';

export type Bytes = Buffer | number[];

/** Bytes from hex digits, spaces ignored: hex('30 03 00 01 61'). */
export function hex(s: string): Buffer {
  return Buffer.from(s.replace(/\s+/g, ''), 'hex');
}

/** A fixed header (first byte + Remaining Length varint) in front of a body. */
export function frame(first: number, body: Bytes): Buffer {
  const b = Buffer.from(body);
  const len: number[] = [];
  let n = b.length;
  do {
    let d = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) d |= 0x80;
    len.push(d);
  } while (n > 0);
  return Buffer.concat([Buffer.from([first, ...len]), b]);
}

/** A length-prefixed string from text or from raw (possibly ill-formed) bytes. */
export function str(s: string | number[]): number[] {
  const b = typeof s === 'string' ? Buffer.from(s, 'utf8') : Buffer.from(s);
  return [b.length >> 8, b.length & 0xff, ...b];
}

/** A 5.0 property block: the Property Length varint (one byte here) and the property bytes. */
export function props(bytes: number[] = []): number[] {
  assert(bytes.length <= 127, 'props() writes a one-byte Property Length');
  return [bytes.length, ...bytes];
}

/** A User Property (0x26) with raw name and value bytes. */
export function userProperty(name: string | number[], value: string | number[]): number[] {
  return [0x26, ...str(name), ...str(value)];
}

export interface ConnectBytes {
  name?: string;
  level?: number;
  flags?: number;
  clientId?: string | number[];
  first?: number;
  /** Appended after the client id (will, user name, password fields). */
  tail?: number[];
  /** 5.0 CONNECT property bytes (the property length is added). */
  props?: number[];
}

export function rawConnect(o: ConnectBytes = {}): Buffer {
  const level = o.level ?? 4;
  const body = [...str(o.name ?? 'MQTT'), level, o.flags ?? 0x02, 0, 0];
  if (level === 5) body.push(...props(o.props));
  body.push(...str(o.clientId ?? 'bad-client'), ...(o.tail ?? []));
  return frame(o.first ?? 0x10, body);
}

export interface PublishBytes {
  qos?: number;
  id?: number;
  dup?: boolean;
  /** 5.0 property bytes (the property length is added). */
  props?: number[];
}

export function rawPublish(v: 4 | 5, topic: string | number[], o: PublishBytes = {}): Buffer {
  const qos = o.qos ?? 0;
  const body = str(topic);
  if (qos > 0) body.push((o.id ?? 1) >> 8, (o.id ?? 1) & 0xff);
  if (v === 5) body.push(...props(o.props));
  body.push(0x68, 0x69);
  return frame(0x30 | (o.dup ? 0x08 : 0) | (qos << 1), body);
}

export function rawSubscribe(
  v: 4 | 5,
  entries: [string | number[], number][],
  o: { first?: number; id?: number; props?: number[] } = {},
): Buffer {
  const id = o.id ?? 1;
  const body = [id >> 8, id & 0xff];
  if (v === 5) body.push(...props(o.props));
  for (const [topic, opts] of entries) body.push(...str(topic), opts);
  return frame(o.first ?? 0x82, body);
}

export function rawUnsubscribe(
  v: 4 | 5,
  topics: (string | number[])[],
  o: { first?: number; id?: number; props?: number[] } = {},
): Buffer {
  const id = o.id ?? 1;
  const body = [id >> 8, id & 0xff];
  if (v === 5) body.push(...props(o.props));
  for (const t of topics) body.push(...str(t));
  return frame(o.first ?? 0xa2, body);
}

/** A Remaining Length of 268,435,455 (the largest) followed by a handful of body bytes. */
export const HUGE = [0xff, 0xff, 0xff, 0x7f, 0x00, 0x01, 0x61];
