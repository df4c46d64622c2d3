import type { Parser } from 'mqtt-packet';
import type { ByteQueue } from './byte-queue.js';

/**
 * mqtt-packet decodes a packet body from its input queue without holding it to the Remaining
 * Length: a field may run into the next packet's bytes (PUBACK `40 00` then PINGREQ reads `c0 00`
 * as its Packet Identifier), a missing field reads as -1 or undefined instead of failing (a QoS 1
 * PUBLISH without its Packet Identifier), and bytes left over after the last field are ignored.
 * These wrappers, installed on one parser, make each of those a parse error (a Malformed Packet
 * [MQTT-4.13.1-1], 3.1.1 [MQTT-4.8.0-1]):
 *
 * - while a body is decoded, reads past its Remaining Length throw (ByteQueue.limit), and the
 *   length checks inside mqtt-packet always pass so that they never turn a short read into a
 *   default value;
 * - every packet but PUBLISH (whose payload is the rest) must end exactly at its Remaining Length;
 * - a 5.0 property block must end exactly where its Property Length says;
 * - 5.0 Variable Byte Integers use the fewest bytes [MQTT-1.5.5-1] (3.1.1 states no such rule for
 *   the Remaining Length, so level 4 stays lenient).
 *
 * DISCONNECT and AUTH are the exception to the first rule: mqtt-packet decides from the queue's
 * length whether their optional reason code and properties are present, so for them the queue
 * reports the body's length instead (a missing optional part is then simply absent).
 */

interface Internals {
  _list: ByteQueue;
  _pos: number;
  packet: { cmd: string | null; length: number; protocolVersion?: number };
  settings: { protocolVersion?: number };
  error: Error | null;
  _emitError(err: Error): void;
  _parsePayload(): boolean;
  _parseProperties(): unknown;
  _parseVarByteNum(fullInfo?: boolean): false | number | { bytes: number; value: number };
}

/** What mqtt-packet's own length checks see while a body is decoded: never too short. */
const UNBOUNDED = Number.MAX_SAFE_INTEGER;

let original: Pick<Internals, '_parsePayload' | '_parseProperties' | '_parseVarByteNum'> | undefined;

/** Installs the checks on one parser (whose `_list` is a ByteQueue). */
export function strictParser(parser: Parser): void {
  const p = parser as unknown as Internals;
  original ??= Object.getPrototypeOf(parser) as Internals;
  p._parsePayload = parsePayload;
  p._parseProperties = parseProperties;
  p._parseVarByteNum = parseVarByteNum;
}

function parsePayload(this: Internals): boolean {
  const list = this._list;
  const packet = this.packet;
  const length = list.length;
  // As the original: wait until the whole body is here.
  if (packet.length > 0 && length < packet.length) return false;
  const optionalParts = packet.cmd === 'disconnect' || packet.cmd === 'auth';
  list.limit = packet.length;
  list.length = optionalParts ? packet.length : UNBOUNDED;
  let overrun = false;
  try {
    original!._parsePayload.call(this);
  } catch {
    overrun = true;
  } finally {
    list.length = length;
    list.limit = Number.POSITIVE_INFINITY;
  }
  if (this.error) return true;
  if (overrun) this._emitError(new Error('packet content runs past its Remaining Length'));
  else if (packet.cmd !== 'publish' && this._pos !== packet.length) {
    this._emitError(new Error('bytes left over after the packet content'));
  }
  return true;
}

function parseProperties(this: Internals): unknown {
  const start = this._pos;
  const result = original!._parseProperties.call(this);
  // Absent: only DISCONNECT and AUTH may omit them, at the end of the packet.
  if (this.error || start >= this.packet.length) return result;
  const end = propertiesEnd(this._list, start);
  if (this._pos !== end) this._emitError(new Error('properties do not end at their Property Length'));
  return result;
}

function parseVarByteNum(this: Internals, fullInfo?: boolean) {
  const before = this._pos;
  const r = original!._parseVarByteNum.call(this, fullInfo);
  if (r === false || (this.settings.protocolVersion ?? this.packet.protocolVersion) !== 5) return r;
  const value = typeof r === 'number' ? r : r.value;
  const bytes = typeof r === 'number' ? this._pos - before : r.bytes;
  if (bytes > varIntSize(value)) {
    this._emitError(new Error('Variable Byte Integer not encoded in the fewest bytes'));
  }
  return r;
}

/** Where a property block starting at `at` ends (its Property Length was read without error). */
function propertiesEnd(list: ByteQueue, at: number): number {
  let value = 0;
  let mul = 1;
  for (let i = 0; i < 4; i++) {
    const b = list.readUInt8(at + i);
    value += (b & 0x7f) * mul;
    if ((b & 0x80) === 0) return at + i + 1 + value;
    mul *= 128;
  }
  return -1;
}

function varIntSize(n: number): number {
  return n < 128 ? 1 : n < 16384 ? 2 : n < 2097152 ? 3 : 4;
}
