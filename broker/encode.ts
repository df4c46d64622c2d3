import { generate, type IPublishPacket } from 'mqtt-packet';
import type { QoS } from '../persistence/types.js';
import type { Message } from './message.js';

/** Encoded PUBLISH packets of one message, one slot per outgoing form, shared across a fan-out. */
export type EncodeCache = (Buffer | undefined)[];

export interface PublishForm {
  version: 3 | 4 | 5;
  qos: QoS;
  retain: boolean;
  dup: boolean;
  packetId: number;
  subscriptionIds?: number[];
  /** Outbound topic alias; with aliasOnly the topic name is left empty. */
  topicAlias?: number;
  aliasOnly?: boolean;
}

type PublishProperties = NonNullable<IPublishPacket['properties']>;

/**
 * Encodes a PUBLISH with mqtt-packet. Forms that differ only in packet id share one encoding: the
 * cached buffer is copied and its two packet-id bytes patched, which is far cheaper than encoding.
 * Messages without properties that differ only in their payload bytes (same topic, form and payload
 * length) share one shape: the header of mqtt-packet's encoding of the first (everything before
 * the payload, which is a PUBLISH's last field), followed by each one's own payload. A steady
 * stream on one topic is then encoded by mqtt-packet once.
 */
export function encodePublish(msg: Message, f: PublishForm, cache: EncodeCache | undefined): Buffer {
  const plain =
    !f.dup && f.subscriptionIds === undefined && f.topicAlias === undefined && msg.expiresAt === undefined;
  const key = (f.version === 5 ? 6 : 0) + f.qos * 2 + (f.retain ? 1 : 0);
  if (plain && cache !== undefined) {
    const hit = cache[key];
    if (hit) return f.qos === 0 ? hit : withPacketId(hit, packetIdOffset(hit, msg.topic), f.packetId);
  }
  let buf: Buffer;
  if (plain && (f.version !== 5 || msg.properties === undefined)) {
    const shapeKey = `${key}:${msg.payload.length}:${msg.topic}`;
    const shape = shapes.get(shapeKey);
    if (shape !== undefined) {
      const head = shape.head;
      buf = Buffer.allocUnsafe(head.length + msg.payload.length);
      head.copy(buf, 0);
      msg.payload.copy(buf, head.length);
      if (shape.pidAt >= 0) {
        buf[shape.pidAt] = f.packetId >> 8;
        buf[shape.pidAt + 1] = f.packetId & 0xff;
      }
    } else {
      buf = generatePublish(msg, f);
      const head = keepHead(buf, buf.length - msg.payload.length);
      shapes.set(shapeKey, { head, pidAt: f.qos > 0 ? packetIdOffset(buf, msg.topic) : -1 });
    }
  } else buf = generatePublish(msg, f);
  if (plain && cache !== undefined) cache[key] = buf;
  return buf;
}

/** The header of an encoded PUBLISH (everything before the payload), reused by later ones of its topic, form and payload length. */
interface Shape {
  head: Buffer;
  /** Where its packet id is; -1 at QoS 0. */
  pidAt: number;
}
/**
 * Bounded in count and bytes; past either the map starts over. Sized for the working set of IoT
 * shapes: 10,000 devices each on its own topic (an ingest subscriber's deliveries, or commands to
 * each device) cycle through 10,000 shapes, and a smaller map would miss on every one of them.
 */
const MAX_SHAPES = 16_384;
const MAX_SHAPE_BYTES = 2 * 1024 * 1024;
const shapes = new Map<string, Shape>();
let shapeBytes = 0;
/** Heads are copied into slabs (not a slice of a pooled publish, nor a buffer each); dropped with the map. */
const SLAB = 64 * 1024;
let slab = Buffer.allocUnsafeSlow(SLAB);
let slabUsed = 0;

function keepHead(buf: Buffer, length: number): Buffer {
  if (shapes.size >= MAX_SHAPES || shapeBytes + length > MAX_SHAPE_BYTES) {
    shapes.clear();
    shapeBytes = 0;
    slab = Buffer.allocUnsafeSlow(SLAB);
    slabUsed = 0;
  }
  shapeBytes += length;
  if (length > SLAB / 8) {
    const own = Buffer.allocUnsafeSlow(length);
    buf.copy(own, 0, 0, length);
    return own;
  }
  if (slabUsed + length > SLAB) {
    slab = Buffer.allocUnsafeSlow(SLAB);
    slabUsed = 0;
  }
  const head = slab.subarray(slabUsed, slabUsed + length);
  buf.copy(head, 0, 0, length);
  slabUsed += length;
  return head;
}

function generatePublish(msg: Message, f: PublishForm): Buffer {
  const packet: IPublishPacket = {
    cmd: 'publish',
    topic: f.aliasOnly ? '' : msg.topic,
    payload: msg.payload,
    qos: f.qos,
    retain: f.retain,
    dup: f.dup,
  };
  if (f.qos > 0) packet.messageId = f.packetId;
  if (f.version === 5) {
    const props = outgoingProperties(msg, f);
    if (props) packet.properties = props;
  }
  return generate(packet, f.version === 5 ? V5 : undefined);
}

const V5 = { protocolVersion: 5 };

function outgoingProperties(msg: Message, f: PublishForm): PublishProperties | undefined {
  const p = msg.properties;
  if (!p && msg.expiresAt === undefined && !f.subscriptionIds && f.topicAlias === undefined) return undefined;
  const out: PublishProperties = p ? { ...p } : {};
  // The forwarded Message Expiry Interval is what remains of it [MQTT-3.3.2-6].
  if (msg.expiresAt !== undefined) {
    out.messageExpiryInterval = Math.max(0, Math.ceil((msg.expiresAt - Date.now()) / 1000));
  }
  if (f.subscriptionIds)
    out.subscriptionIdentifier = f.subscriptionIds.length === 1 ? f.subscriptionIds[0] : f.subscriptionIds;
  if (f.topicAlias !== undefined) out.topicAlias = f.topicAlias;
  return out;
}

/** Offset of the packet id in a QoS 1/2 PUBLISH of this topic: after the header, its Remaining Length and the topic. */
function packetIdOffset(buf: Buffer, topic: string): number {
  let i = 1;
  while (buf[i] & 0x80) i++; // skip the Remaining Length bytes
  return i + 1 + 2 + Buffer.byteLength(topic);
}

function withPacketId(template: Buffer, at: number, packetId: number): Buffer {
  const buf = Buffer.allocUnsafe(template.length);
  template.copy(buf);
  buf[at] = packetId >> 8;
  buf[at + 1] = packetId & 0xff;
  return buf;
}
