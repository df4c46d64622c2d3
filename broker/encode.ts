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
 */
export function encodePublish(msg: Message, f: PublishForm, cache: EncodeCache | undefined): Buffer {
  const cacheable =
    cache !== undefined &&
    !f.dup &&
    f.subscriptionIds === undefined &&
    f.topicAlias === undefined &&
    msg.expiresAt === undefined;
  const key = (f.version === 5 ? 6 : 0) + f.qos * 2 + (f.retain ? 1 : 0);
  if (cacheable) {
    const hit = cache[key];
    if (hit) return f.qos === 0 ? hit : withPacketId(hit, msg.topic, f.packetId);
  }
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
  const buf = generate(packet, f.version === 5 ? V5 : undefined);
  if (cacheable) cache[key] = buf;
  return buf;
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

function withPacketId(template: Buffer, topic: string, packetId: number): Buffer {
  const buf = Buffer.allocUnsafe(template.length);
  template.copy(buf);
  let i = 1;
  while (buf[i] & 0x80) i++; // skip the Remaining Length bytes
  const at = i + 1 + 2 + Buffer.byteLength(topic);
  buf[at] = packetId >> 8;
  buf[at + 1] = packetId & 0xff;
  return buf;
}
