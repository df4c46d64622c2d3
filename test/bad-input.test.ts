/**
 * Protocol violations sent over raw sockets, one case per row: the bytes (or mqtt-packet packets)
 * sent, the packets expected back, and whether the broker then closes the connection or keeps
 * it. After every case a second, well-behaved mqtt.js client on the same broker must still
 * publish and receive, so a case also proves the broker did not crash or wedge.
 *
 * Statement numbers follow the version under test: 3.1.1 ([MQTT-1.5.3-n], [MQTT-2.3.1-n], ...)
 * for protocol level 4, 5.0 ([MQTT-1.5.4-n], [MQTT-2.2.1-n], ...) for level 5. Where a rule has
 * no numbered statement the section is cited instead.
 */
import type { IConnectPacket, IPublishPacket, Packet } from 'mqtt-packet';
import { generate } from 'mqtt-packet';
import { describe, expect, it, vi } from 'vitest';
import { seededRandom as prng } from '../bench/random.js';
import type { BrokerOptions } from '../broker/index.js';
import { RC } from '../broker/reason-codes.js';
import { connect, nextMessages, RawClient, startBroker } from './helpers.js';

type Version = 4 | 5;
type Bytes = Buffer | number[];

/** What the broker must do: send these packets (matched in order), then close or stay open. */
interface Expectation {
  packets: Record<string, unknown>[];
  end: 'closed' | 'open';
}

interface Case {
  name: string;
  version: Version;
  /** Complete CONNECT/CONNACK before sending (default true). */
  connected?: boolean;
  /** Written to the socket as one chunk, in order; packets are encoded for `version`. */
  send: (Packet | Bytes)[];
  expect: Expectation;
  broker?: BrokerOptions;
}

// --- expectations -----------------------------------------------------------------------------

const closed: Expectation = { packets: [], end: 'closed' };
const disconnect = (reasonCode: number): Expectation => ({
  packets: [{ cmd: 'disconnect', reasonCode }],
  end: 'closed',
});
const refused4 = (returnCode: number): Expectation => ({
  packets: [{ cmd: 'connack', returnCode, sessionPresent: false }],
  end: 'closed',
});
const refused5 = (reasonCode: number): Expectation => ({
  packets: [{ cmd: 'connack', reasonCode, sessionPresent: false }],
  end: 'closed',
});
const answered = (...packets: Record<string, unknown>[]): Expectation => ({ packets, end: 'open' });

// --- byte builders, for what mqtt-packet refuses to encode ----------------------------------

/** A fixed header (first byte + Remaining Length varint) in front of a body. */
function frame(first: number, body: Bytes): Buffer {
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
function str(s: string | number[]): number[] {
  const b = typeof s === 'string' ? Buffer.from(s, 'utf8') : Buffer.from(s);
  return [b.length >> 8, b.length & 0xff, ...b];
}

interface ConnectBytes {
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

function rawConnect(o: ConnectBytes = {}): Buffer {
  const level = o.level ?? 4;
  const body = [...str(o.name ?? 'MQTT'), level, o.flags ?? 0x02, 0, 0];
  if (level === 5) body.push((o.props ?? []).length, ...(o.props ?? []));
  body.push(...str(o.clientId ?? 'bad-client'), ...(o.tail ?? []));
  return frame(o.first ?? 0x10, body);
}

interface PublishBytes {
  qos?: number;
  id?: number;
  dup?: boolean;
  /** 5.0 property bytes (the property length is added). */
  props?: number[];
}

function rawPublish(v: Version, topic: string | number[], o: PublishBytes = {}): Buffer {
  const qos = o.qos ?? 0;
  const body = str(topic);
  if (qos > 0) body.push((o.id ?? 1) >> 8, (o.id ?? 1) & 0xff);
  if (v === 5) body.push((o.props ?? []).length, ...(o.props ?? []));
  body.push(0x68, 0x69);
  return frame(0x30 | (o.dup ? 0x08 : 0) | (qos << 1), body);
}

function rawSubscribe(
  v: Version,
  entries: [string | number[], number][],
  o: { first?: number; id?: number; props?: number[] } = {},
) {
  const id = o.id ?? 1;
  const body = [id >> 8, id & 0xff];
  if (v === 5) body.push((o.props ?? []).length, ...(o.props ?? []));
  for (const [topic, opts] of entries) body.push(...str(topic), opts);
  return frame(o.first ?? 0x82, body);
}

function rawUnsubscribe(v: Version, topics: string[], o: { first?: number } = {}) {
  const body = [0, 1];
  if (v === 5) body.push(0);
  for (const t of topics) body.push(...str(t));
  return frame(o.first ?? 0xa2, body);
}

const connectPacket = (v: Version, over: Partial<IConnectPacket> = {}): IConnectPacket => ({
  cmd: 'connect',
  protocolId: 'MQTT',
  protocolVersion: v,
  clientId: 'second-connect',
  clean: true,
  keepalive: 0,
  ...over,
});

const pingreq: Packet = { cmd: 'pingreq' };
/** A Remaining Length of 268,435,455 (the largest) followed by a handful of body bytes. */
const HUGE = [0xff, 0xff, 0xff, 0x7f, 0x00, 0x01, 0x61];

// --- the table --------------------------------------------------------------------------------

const cases: Case[] = [
  // CONNECT first, and only once.
  {
    name: 'v4: PUBLISH before CONNECT is closed [MQTT-3.1.0-1]',
    version: 4,
    connected: false,
    send: [{ cmd: 'publish', topic: 'a', payload: 'x', qos: 0, retain: false, dup: false }],
    expect: closed,
  },
  {
    name: 'v4: PINGREQ before CONNECT is closed [MQTT-3.1.0-1]',
    version: 4,
    connected: false,
    send: [pingreq],
    expect: closed,
  },
  {
    name: 'v5: SUBSCRIBE before CONNECT is closed, with no DISCONNECT before a CONNACK [MQTT-3.1.0-1] [MQTT-3.14.0-1]',
    version: 5,
    connected: false,
    send: [rawSubscribe(5, [['a', 0]])],
    expect: closed,
  },
  {
    name: 'v4: a second CONNECT is a protocol violation: closed [MQTT-3.1.0-2]',
    version: 4,
    send: [connectPacket(4)],
    expect: closed,
  },
  {
    name: 'v5: a second CONNECT is a Protocol Error: DISCONNECT 0x82 [MQTT-3.1.0-2]',
    version: 5,
    send: [connectPacket(5)],
    expect: disconnect(RC.PROTOCOL_ERROR),
  },
  {
    name: 'v5: two CONNECTs in one chunk: CONNACK for the first, DISCONNECT 0x82 for the second [MQTT-3.1.0-2]',
    version: 5,
    connected: false,
    send: [connectPacket(5, { clientId: 'twice' }), connectPacket(5, { clientId: 'twice' })],
    expect: {
      packets: [
        { cmd: 'connack', reasonCode: 0 },
        { cmd: 'disconnect', reasonCode: RC.PROTOCOL_ERROR },
      ],
      end: 'closed',
    },
  },

  // Protocol name and level.
  {
    name: 'v4: protocol level 2 is refused with CONNACK 0x01, then closed [MQTT-3.1.2-2]',
    version: 4,
    connected: false,
    send: [rawConnect({ level: 2 })],
    expect: refused4(1),
  },
  {
    name: 'v4: protocol level 0 is refused with CONNACK 0x01, then closed [MQTT-3.1.2-2]',
    version: 4,
    connected: false,
    send: [rawConnect({ level: 0 })],
    expect: refused4(1),
  },
  {
    name: 'v5: protocol level 6 is refused with CONNACK 0x84, then closed [MQTT-3.1.2-2]',
    version: 5,
    connected: false,
    send: [rawConnect({ level: 6 })],
    expect: refused5(RC.UNSUPPORTED_PROTOCOL_VERSION),
  },
  {
    name: 'v4: name "MQIsdp" with level 4 is refused with CONNACK 0x01 [MQTT-3.1.2-1] [MQTT-3.1.2-2]',
    version: 4,
    connected: false,
    send: [rawConnect({ name: 'MQIsdp', level: 4 })],
    expect: refused4(1),
  },
  {
    name: 'v4: name "MQTT" with level 3 is refused with CONNACK 0x01 [MQTT-3.1.2-1] [MQTT-3.1.2-2]',
    version: 4,
    connected: false,
    send: [rawConnect({ name: 'MQTT', level: 3 })],
    expect: refused4(1),
  },
  {
    name: 'v5: name "MQIsdp" with level 5 is refused with CONNACK 0x84 [MQTT-3.1.2-1]',
    version: 5,
    connected: false,
    send: [rawConnect({ name: 'MQIsdp', level: 5 })],
    expect: refused5(RC.UNSUPPORTED_PROTOCOL_VERSION),
  },
  {
    name: 'v4: unknown protocol name "MQTX" is closed [MQTT-3.1.2-1]',
    version: 4,
    connected: false,
    send: [rawConnect({ name: 'MQTX' })],
    expect: closed,
  },

  // Connect flags and fixed header.
  {
    name: 'v4: reserved connect flag bit 0 set is closed without CONNACK [MQTT-3.1.2-3] [MQTT-3.1.4-1]',
    version: 4,
    connected: false,
    send: [rawConnect({ flags: 0x03 })],
    expect: closed,
  },
  {
    name: 'v5: reserved connect flag bit 0 set is closed [MQTT-3.1.2-3]',
    version: 5,
    connected: false,
    send: [rawConnect({ level: 5, flags: 0x03 })],
    expect: closed,
  },
  {
    name: 'v4: Will QoS 1 with the Will Flag 0 is closed [MQTT-3.1.2-13]',
    version: 4,
    connected: false,
    send: [rawConnect({ flags: 0x02 | 0x08 })],
    expect: closed,
  },
  {
    name: 'v4: Will Retain with the Will Flag 0 is closed [MQTT-3.1.2-15]',
    version: 4,
    connected: false,
    send: [rawConnect({ flags: 0x02 | 0x20 })],
    expect: closed,
  },
  {
    name: 'v5: Will QoS 1 with the Will Flag 0 is closed [MQTT-3.1.2-11]',
    version: 5,
    connected: false,
    send: [rawConnect({ level: 5, flags: 0x02 | 0x08 })],
    expect: closed,
  },
  {
    name: 'v4: Password Flag without User Name Flag is closed without CONNACK [MQTT-3.1.2-22] [MQTT-3.1.4-1]',
    version: 4,
    connected: false,
    send: [rawConnect({ flags: 0x02 | 0x40, tail: str('secret') })],
    expect: closed,
  },
  {
    name: 'v5: a password without a user name is allowed in 5.0 (section 3.1.2.9)',
    version: 5,
    connected: false,
    send: [rawConnect({ level: 5, flags: 0x02 | 0x40, tail: str('secret') })],
    expect: answered({ cmd: 'connack', reasonCode: 0 }),
  },
  {
    name: 'v4: CONNECT with reserved fixed-header flags 0x1 is closed [MQTT-2.2.2-2]',
    version: 4,
    connected: false,
    send: [rawConnect({ first: 0x11 })],
    expect: closed,
  },
  {
    name: 'v4: Will Topic with a wildcard is closed without CONNACK [MQTT-3.3.2-2] (section 3.1.3.3)',
    version: 4,
    connected: false,
    send: [rawConnect({ flags: 0x02 | 0x04, tail: [...str('will/#'), ...str('bye')] })],
    expect: closed,
  },
  {
    name: 'v5: Will Topic with a wildcard is refused with CONNACK 0x90 (section 3.1.3.3)',
    version: 5,
    connected: false,
    send: [rawConnect({ level: 5, flags: 0x02 | 0x04, tail: [0, ...str('will/+'), ...str('bye')] })],
    expect: refused5(RC.TOPIC_NAME_INVALID),
  },

  // 5.0 properties in CONNECT.
  {
    name: 'v5: an unsupported Authentication Method is refused with CONNACK 0x8C, then closed [MQTT-4.12.0-1]',
    version: 5,
    connected: false,
    send: [rawConnect({ level: 5, props: [0x15, ...str('SCRAM-SHA-1')] })],
    expect: refused5(RC.BAD_AUTHENTICATION_METHOD),
  },
  {
    name: 'v5: Receive Maximum 0 in CONNECT is a Protocol Error: closed (section 3.1.2.11.3)',
    version: 5,
    connected: false,
    send: [rawConnect({ level: 5, props: [0x21, 0x00, 0x00] })],
    expect: closed,
  },
  {
    name: 'v5: Session Expiry Interval twice in CONNECT is a Protocol Error: closed (section 3.1.2.11.2)',
    version: 5,
    connected: false,
    send: [rawConnect({ level: 5, props: [0x11, 0, 0, 0, 10, 0x11, 0, 0, 0, 20] })],
    expect: closed,
  },

  // Client identifiers.
  {
    name: 'v4: empty client id with CleanSession 0 is refused with CONNACK 0x02, then closed [MQTT-3.1.3-8]',
    version: 4,
    connected: false,
    send: [rawConnect({ clientId: '', flags: 0x00 })],
    expect: refused4(2),
  },
  {
    name: 'v4: empty client id with CleanSession 1 is accepted [MQTT-3.1.3-6]',
    version: 4,
    connected: false,
    send: [rawConnect({ clientId: '', flags: 0x02 })],
    expect: answered({ cmd: 'connack', returnCode: 0, sessionPresent: false }),
  },
  {
    name: 'v3.1: empty client id is refused with CONNACK 0x02 (MQTT 3.1 section 3.1: 1 to 23 characters)',
    version: 4,
    connected: false,
    send: [rawConnect({ name: 'MQIsdp', level: 3, clientId: '' })],
    expect: refused4(2),
  },
  {
    name: 'v4: client id containing U+0000 is refused with CONNACK 0x02 and closed [MQTT-1.5.3-2] [MQTT-3.1.3-9]',
    version: 4,
    connected: false,
    send: [rawConnect({ clientId: [0x61, 0x00, 0x62] })],
    expect: refused4(2),
  },
  {
    name: 'v5: client id with ill-formed UTF-8 is refused with CONNACK 0x85 and closed [MQTT-1.5.4-1] [MQTT-3.1.3-8]',
    version: 5,
    connected: false,
    send: [rawConnect({ level: 5, clientId: [0xc3, 0x28] })],
    expect: refused5(RC.CLIENT_IDENTIFIER_NOT_VALID),
  },

  // Malformed bytes.
  {
    name: 'v4: a Remaining Length of five bytes is malformed: closed (section 2.2.3)',
    version: 4,
    connected: false,
    send: [[0x10, 0xff, 0xff, 0xff, 0xff, 0x01]],
    expect: closed,
  },
  {
    name: 'v5: a Remaining Length of five bytes after CONNECT: DISCONNECT 0x81 (section 1.5.5)',
    version: 5,
    send: [[0x30, 0x80, 0x80, 0x80, 0x80, 0x01]],
    expect: disconnect(RC.MALFORMED_PACKET),
  },
  {
    name: 'v4: CONNECT whose protocol name overruns the packet is closed [MQTT-3.1.4-1]',
    version: 4,
    connected: false,
    send: [[0x10, 0x04, 0x00, 0x0a, 0x4d, 0x51]],
    expect: closed,
  },
  {
    name: 'v4: CONNECT whose client id overruns the packet is closed [MQTT-3.1.4-1]',
    version: 4,
    connected: false,
    send: [frame(0x10, [...str('MQTT'), 4, 2, 0, 0, 0x00, 0x20, 0x61])],
    expect: closed,
  },
  {
    name: 'v4: PUBLISH whose topic overruns the packet is closed [MQTT-4.8.0-1]',
    version: 4,
    send: [[0x30, 0x03, 0x00, 0x05, 0x61]],
    expect: closed,
  },
  {
    name: 'v5: PUBLISH whose topic overruns the packet: DISCONNECT 0x81 [MQTT-4.13.1-1]',
    version: 5,
    send: [[0x30, 0x03, 0x00, 0x05, 0x61]],
    expect: disconnect(RC.MALFORMED_PACKET),
  },
  {
    name: 'v4: an HTTP request instead of CONNECT is closed [MQTT-3.1.0-1]',
    version: 4,
    connected: false,
    send: [Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n')],
    expect: closed,
  },
  {
    name: 'v4: packet type 0 (reserved) as the first packet is closed (section 2.2.1)',
    version: 4,
    connected: false,
    send: [[0x00, 0x00]],
    expect: closed,
  },
  {
    name: 'v4: packet type 0 (reserved) after CONNECT is closed [MQTT-4.8.0-1]',
    version: 4,
    send: [[0x00, 0x00]],
    expect: closed,
  },
  {
    name: 'v4: packet type 15 (reserved in 3.1.1) is closed [MQTT-4.8.0-1]',
    version: 4,
    send: [[0xf0, 0x00]],
    expect: closed,
  },
  {
    name: 'v5: packet type 0 (reserved) after CONNECT: DISCONNECT 0x81 (section 2.1.2)',
    version: 5,
    send: [[0x00, 0x00]],
    expect: disconnect(RC.MALFORMED_PACKET),
  },
  {
    name: 'v5: AUTH without an Authentication Method in CONNECT: DISCONNECT 0x82 [MQTT-4.12.0-7]',
    version: 5,
    send: [{ cmd: 'auth', reasonCode: 0x19 }],
    expect: disconnect(RC.PROTOCOL_ERROR),
  },
  {
    name: 'v4: PUBREL with fixed-header flags 0000 is closed [MQTT-3.6.1-1]',
    version: 4,
    send: [[0x60, 0x02, 0x00, 0x01]],
    expect: closed,
  },

  // PUBLISH.
  {
    name: 'v4: PUBLISH with QoS 3 is closed [MQTT-3.3.1-4]',
    version: 4,
    send: [rawPublish(4, 'a', { qos: 3 })],
    expect: closed,
  },
  {
    name: 'v5: PUBLISH with QoS 3 is a Malformed Packet: DISCONNECT 0x81 [MQTT-3.3.1-4]',
    version: 5,
    send: [rawPublish(5, 'a', { qos: 3 })],
    expect: disconnect(RC.MALFORMED_PACKET),
  },
  {
    name: 'v4: PUBLISH QoS 0 with DUP set is closed [MQTT-3.3.1-2]',
    version: 4,
    send: [rawPublish(4, 'a', { dup: true })],
    expect: closed,
  },
  {
    name: 'v5: PUBLISH QoS 0 with DUP set: DISCONNECT 0x81 [MQTT-3.3.1-2]',
    version: 5,
    send: [rawPublish(5, 'a', { dup: true })],
    expect: disconnect(RC.MALFORMED_PACKET),
  },
  {
    name: 'v4: PUBLISH topic "a/+" is closed [MQTT-3.3.2-2]',
    version: 4,
    send: [rawPublish(4, 'a/+')],
    expect: closed,
  },
  {
    name: 'v5: PUBLISH topic "a/#": DISCONNECT 0x90 [MQTT-3.3.2-2]',
    version: 5,
    send: [rawPublish(5, 'a/#')],
    expect: disconnect(RC.TOPIC_NAME_INVALID),
  },
  {
    name: 'v5: PUBLISH topic "+" at QoS 1: DISCONNECT 0x90, no PUBACK [MQTT-3.3.2-2]',
    version: 5,
    send: [rawPublish(5, '+', { qos: 1 })],
    expect: disconnect(RC.TOPIC_NAME_INVALID),
  },
  {
    name: 'v4: PUBLISH with an empty topic is closed [MQTT-4.7.3-1]',
    version: 4,
    send: [rawPublish(4, '')],
    expect: closed,
  },
  {
    name: 'v5: PUBLISH with an empty topic and no Topic Alias: DISCONNECT 0x82 (section 3.3.2.1)',
    version: 5,
    send: [rawPublish(5, '')],
    expect: disconnect(RC.PROTOCOL_ERROR),
  },
  {
    name: 'v4: PUBLISH topic with ill-formed UTF-8 (C3 28) is closed [MQTT-1.5.3-1]',
    version: 4,
    send: [rawPublish(4, [0x61, 0xc3, 0x28])],
    expect: closed,
  },
  {
    name: 'v5: PUBLISH topic with ill-formed UTF-8 (C3 28): DISCONNECT 0x81 [MQTT-1.5.4-1]',
    version: 5,
    send: [rawPublish(5, [0x61, 0xc3, 0x28])],
    expect: disconnect(RC.MALFORMED_PACKET),
  },
  {
    name: 'v5: PUBLISH topic with an encoded surrogate (ED A0 80): DISCONNECT 0x81 [MQTT-1.5.4-1]',
    version: 5,
    send: [rawPublish(5, [0x61, 0xed, 0xa0, 0x80])],
    expect: disconnect(RC.MALFORMED_PACKET),
  },
  {
    name: 'v4: PUBLISH topic containing U+0000 is closed [MQTT-1.5.3-2]',
    version: 4,
    send: [rawPublish(4, [0x61, 0x00, 0x62])],
    expect: closed,
  },
  {
    name: 'v5: PUBLISH topic containing U+0000: DISCONNECT 0x81 [MQTT-1.5.4-2]',
    version: 5,
    send: [rawPublish(5, [0x61, 0x00, 0x62])],
    expect: disconnect(RC.MALFORMED_PACKET),
  },
  {
    name: 'v5: PUBLISH with a Subscription Identifier: DISCONNECT 0x82 [MQTT-3.3.4-6]',
    version: 5,
    send: [rawPublish(5, 'a', { props: [0x0b, 0x03] })],
    expect: disconnect(RC.PROTOCOL_ERROR),
  },
  {
    name: 'v5: PUBLISH with Topic Alias 0: DISCONNECT 0x94 [MQTT-3.3.2-8]',
    version: 5,
    send: [rawPublish(5, 'a', { props: [0x23, 0x00, 0x00] })],
    expect: disconnect(RC.TOPIC_ALIAS_INVALID),
  },
  {
    name: 'v5: PUBLISH with a Topic Alias above the maximum: DISCONNECT 0x94 [MQTT-3.3.2-9]',
    version: 5,
    broker: { topicAliasMaximum: 5 },
    send: [rawPublish(5, 'a', { props: [0x23, 0x00, 0x06] })],
    expect: disconnect(RC.TOPIC_ALIAS_INVALID),
  },
  {
    name: 'v5: PUBLISH with an empty topic and an unmapped Topic Alias: DISCONNECT 0x82 (section 3.3.4)',
    version: 5,
    send: [rawPublish(5, '', { props: [0x23, 0x00, 0x01] })],
    expect: disconnect(RC.PROTOCOL_ERROR),
  },
  {
    name: 'v5: PUBLISH with the Topic Alias twice: DISCONNECT 0x82 (section 3.3.2.3.4)',
    version: 5,
    send: [rawPublish(5, 'a', { props: [0x23, 0x00, 0x01, 0x23, 0x00, 0x02] })],
    expect: disconnect(RC.PROTOCOL_ERROR),
  },
  {
    name: 'v5: more unacknowledged QoS 2 PUBLISHes than Receive Maximum: DISCONNECT 0x93 [MQTT-3.3.4-7] (section 3.3.4)',
    version: 5,
    broker: { receiveMaximum: 2 },
    send: [1, 2, 3].map((id) => rawPublish(5, 'rm', { qos: 2, id })),
    expect: {
      packets: [
        { cmd: 'pubrec', messageId: 1 },
        { cmd: 'pubrec', messageId: 2 },
        { cmd: 'disconnect', reasonCode: RC.RECEIVE_MAXIMUM_EXCEEDED },
      ],
      end: 'closed',
    },
  },
  {
    name: 'v4: PUBLISH QoS 1 with Packet Identifier 0 is closed [MQTT-2.3.1-1]',
    version: 4,
    send: [rawPublish(4, 'a', { qos: 1, id: 0 })],
    expect: closed,
  },
  {
    name: 'v5: PUBLISH QoS 2 with Packet Identifier 0: DISCONNECT 0x82 [MQTT-2.2.1-3]',
    version: 5,
    send: [rawPublish(5, 'a', { qos: 2, id: 0 })],
    expect: disconnect(RC.PROTOCOL_ERROR),
  },

  // Packet size.
  {
    name: 'v5: a packet above the Maximum Packet Size: DISCONNECT 0x95 [MQTT-3.2.2-15] (section 3.2.2.3.6)',
    version: 5,
    broker: { maxPacketSize: 128 },
    send: [frame(0x32, [...str('big'), 0, 1, 0, ...Buffer.alloc(200, 0x41)])],
    expect: disconnect(RC.PACKET_TOO_LARGE),
  },
  {
    name: 'v5: a packet of exactly the Maximum Packet Size is accepted (section 3.2.2.3.6)',
    version: 5,
    broker: { maxPacketSize: 128 },
    // 1 + 2 (Remaining Length 125) + 125 = 128 bytes.
    send: [frame(0x32, [...str('big'), 0, 7, 0, ...Buffer.alloc(125 - 8, 0x41)])],
    expect: answered({ cmd: 'puback', messageId: 7 }),
  },
  {
    name: 'v4: a packet above the broker maximum is closed (3.1.1 has no Maximum Packet Size)',
    version: 4,
    broker: { maxPacketSize: 128 },
    send: [frame(0x30, [...str('big'), ...Buffer.alloc(200, 0x41)])],
    expect: closed,
  },
  {
    name: 'v4: a declared 256 MB PUBLISH with 3 body bytes is closed without waiting for the body (section 2.2.3)',
    version: 4,
    send: [[0x30, ...HUGE]],
    expect: closed,
  },
  {
    name: 'v5: a declared 256 MB PUBLISH with 3 body bytes: DISCONNECT 0x95 without waiting for the body [MQTT-3.2.2-15]',
    version: 5,
    send: [[0x30, ...HUGE]],
    expect: disconnect(RC.PACKET_TOO_LARGE),
  },
  {
    name: 'v4: a declared 256 MB CONNECT is closed without waiting for the body (section 2.2.3)',
    version: 4,
    connected: false,
    send: [[0x10, ...HUGE]],
    expect: closed,
  },

  // SUBSCRIBE and UNSUBSCRIBE.
  {
    name: 'v4: SUBSCRIBE with no topic filter is closed [MQTT-3.8.3-3]',
    version: 4,
    send: [rawSubscribe(4, [])],
    expect: closed,
  },
  {
    name: 'v5: SUBSCRIBE with no topic filter: DISCONNECT 0x82 [MQTT-3.8.3-2]',
    version: 5,
    send: [rawSubscribe(5, [])],
    expect: disconnect(RC.PROTOCOL_ERROR),
  },
  {
    name: 'v4: UNSUBSCRIBE with no topic filter is closed [MQTT-3.10.3-2]',
    version: 4,
    send: [rawUnsubscribe(4, [])],
    expect: closed,
  },
  {
    name: 'v5: UNSUBSCRIBE with no topic filter: DISCONNECT 0x82 [MQTT-3.10.3-2]',
    version: 5,
    send: [rawUnsubscribe(5, [])],
    expect: disconnect(RC.PROTOCOL_ERROR),
  },
  {
    name: 'v4: SUBSCRIBE with fixed-header flags 0000 is closed [MQTT-3.8.1-1]',
    version: 4,
    send: [rawSubscribe(4, [['a', 0]], { first: 0x80 })],
    expect: closed,
  },
  {
    name: 'v5: SUBSCRIBE with fixed-header flags 0000: DISCONNECT 0x81 [MQTT-3.8.1-1]',
    version: 5,
    send: [rawSubscribe(5, [['a', 0]], { first: 0x80 })],
    expect: disconnect(RC.MALFORMED_PACKET),
  },
  {
    name: 'v4: UNSUBSCRIBE with fixed-header flags 0000 is closed [MQTT-3.10.1-1]',
    version: 4,
    send: [rawUnsubscribe(4, ['a'], { first: 0xa0 })],
    expect: closed,
  },
  {
    name: 'v4: SUBSCRIBE with a reserved option bit set is closed [MQTT-3-8.3-4]',
    version: 4,
    send: [rawSubscribe(4, [['a', 0x04]])],
    expect: closed,
  },
  {
    name: 'v4: SUBSCRIBE requesting QoS 3 is closed [MQTT-3-8.3-4]',
    version: 4,
    send: [rawSubscribe(4, [['a', 0x03]])],
    expect: closed,
  },
  {
    name: 'v5: SUBSCRIBE with reserved option bits 7-6 set: DISCONNECT 0x81 [MQTT-3.8.3-5]',
    version: 5,
    send: [rawSubscribe(5, [['a', 0xc0]])],
    expect: disconnect(RC.MALFORMED_PACKET),
  },
  {
    name: 'v4: SUBSCRIBE "a/#/b" is refused in SUBACK (0x80), the connection stays [MQTT-4.7.1-2]',
    version: 4,
    send: [rawSubscribe(4, [['a/#/b', 0]], { id: 9 })],
    expect: answered({ cmd: 'suback', messageId: 9, granted: [0x80] }),
  },
  {
    name: 'v5: SUBSCRIBE "a+" next to a valid filter: SUBACK [0x8F, 0x01] [MQTT-4.7.1-2] [MQTT-3.9.3-1]',
    version: 5,
    send: [
      rawSubscribe(
        5,
        [
          ['a+', 0],
          ['ok/+', 1],
        ],
        { id: 9 },
      ),
    ],
    expect: answered({ cmd: 'suback', messageId: 9, granted: [RC.TOPIC_FILTER_INVALID, 1] }),
  },
  {
    name: 'v4: SUBSCRIBE filter containing U+0000 is closed [MQTT-1.5.3-2]',
    version: 4,
    send: [rawSubscribe(4, [[[0x61, 0x00], 0]])],
    expect: closed,
  },
  {
    name: 'v5: SUBSCRIBE filter with ill-formed UTF-8: DISCONNECT 0x81 [MQTT-1.5.4-1]',
    version: 5,
    send: [rawSubscribe(5, [[[0x61, 0xc3, 0x28], 0]])],
    expect: disconnect(RC.MALFORMED_PACKET),
  },
  {
    name: 'v5: UNSUBSCRIBE filter containing U+0000: DISCONNECT 0x81 [MQTT-1.5.4-2]',
    version: 5,
    send: [frame(0xa2, [0, 1, 0, ...str([0x61, 0x00])])],
    expect: disconnect(RC.MALFORMED_PACKET),
  },
  {
    name: 'v5: SUBSCRIBE with the Subscription Identifier twice: DISCONNECT 0x82 (section 3.8.2.1.2)',
    version: 5,
    send: [rawSubscribe(5, [['a', 0]], { props: [0x0b, 0x01, 0x0b, 0x02] })],
    expect: disconnect(RC.PROTOCOL_ERROR),
  },
  {
    name: 'v5: SUBSCRIBE with Subscription Identifier 0: DISCONNECT 0x82 (section 3.8.2.1.2)',
    version: 5,
    send: [rawSubscribe(5, [['a', 0]], { props: [0x0b, 0x00] })],
    expect: disconnect(RC.PROTOCOL_ERROR),
  },
  {
    name: 'v4: SUBSCRIBE with Packet Identifier 0 is closed [MQTT-2.3.1-1]',
    version: 4,
    send: [rawSubscribe(4, [['a', 0]], { id: 0 })],
    expect: closed,
  },

  // Acknowledgements for packet ids the broker never used.
  {
    name: 'v4: PUBREL for an unknown id is still answered with PUBCOMP (section 4.3.3)',
    version: 4,
    send: [{ cmd: 'pubrel', messageId: 42 }],
    expect: answered({ cmd: 'pubcomp', messageId: 42 }),
  },
  {
    name: 'v5: PUBREL for an unknown id: PUBCOMP 0x92 [MQTT-4.3.3-11]',
    version: 5,
    send: [{ cmd: 'pubrel', messageId: 42 }],
    expect: answered({ cmd: 'pubcomp', messageId: 42, reasonCode: RC.PACKET_ID_NOT_FOUND }),
  },
  {
    name: 'v4: PUBACK for an unknown id is ignored (section 4.3.2)',
    version: 4,
    send: [{ cmd: 'puback', messageId: 42 }],
    expect: answered(),
  },
  {
    name: 'v5: PUBCOMP for an unknown id is ignored (section 4.3.3)',
    version: 5,
    send: [{ cmd: 'pubcomp', messageId: 42 }],
    expect: answered(),
  },
  {
    name: 'v5: PUBREC for an unknown id: PUBREL 0x92 (section 3.6.2.1)',
    version: 5,
    send: [{ cmd: 'pubrec', messageId: 42 }],
    expect: answered({ cmd: 'pubrel', messageId: 42, reasonCode: RC.PACKET_ID_NOT_FOUND }),
  },

  // Server-to-client packets from a client (direction of flow, 3.1.1 section 2.2.1, 5.0 section 2.1.2).
  ...(
    [
      ['CONNACK', { cmd: 'connack', returnCode: 0, reasonCode: 0, sessionPresent: false }],
      ['SUBACK', { cmd: 'suback', messageId: 1, granted: [0] }],
      ['UNSUBACK', { cmd: 'unsuback', messageId: 1, granted: [0] }],
      ['PINGRESP', { cmd: 'pingresp' }],
    ] as [string, Packet][]
  ).flatMap(([name, packet]): Case[] => [
    {
      name: `v4: ${name} from a client is a protocol violation: closed [MQTT-4.8.0-1]`,
      version: 4,
      send: [packet],
      expect: closed,
    },
    {
      name: `v5: ${name} from a client: DISCONNECT 0x82 [MQTT-4.13.1-1]`,
      version: 5,
      send: [packet],
      expect: disconnect(RC.PROTOCOL_ERROR),
    },
  ]),
];

// --- running a case ---------------------------------------------------------------------------

function encode(item: Packet | Bytes, v: Version): Buffer {
  if (Buffer.isBuffer(item)) return item;
  if (Array.isArray(item)) return Buffer.from(item);
  return generate(item, { protocolVersion: v });
}

/** A fresh pair of mqtt.js clients on the same broker still exchange a QoS 1 message. */
async function assertHealthy(url: string, protocolVersion: Version): Promise<void> {
  const sub = await connect(url, { protocolVersion });
  const pub = await connect(url, { protocolVersion });
  await sub.subscribeAsync('health/+', { qos: 1 });
  const got = nextMessages(sub, 1);
  await pub.publishAsync('health/check', 'still fine', { qos: 1 });
  const [m] = await got;
  expect(m.topic).toBe('health/check');
  expect(m.payload).toBe('still fine');
}

async function assertOutcome(raw: RawClient, e: Expectation): Promise<void> {
  for (const want of e.packets) expect(await raw.next()).toMatchObject(want);
  if (e.end === 'closed') {
    // Nothing more arrives and the connection ends: next() resolves null on 'close'.
    expect(await raw.next()).toBeNull();
  } else {
    raw.send(pingreq);
    expect(await raw.next()).toMatchObject({ cmd: 'pingresp' });
  }
}

describe('protocol violations over raw sockets', () => {
  for (const c of cases) {
    it(c.name, async () => {
      const { broker, port, url } = await startBroker(c.broker);
      const raw =
        c.connected === false
          ? await RawClient.open(port, c.version)
          : await RawClient.connected(port, c.version);
      raw.write(Buffer.concat(c.send.map((s) => encode(s, c.version))));
      await assertOutcome(raw, c.expect);
      if (c.expect.end === 'closed') {
        // The broker let go of the connection, not only the socket.
        await vi.waitFor(() => expect(broker.connections.size).toBe(0));
      }
      await assertHealthy(url, c.version);
    }, 5000);
  }
});

describe('connection-level rules', () => {
  it('v4: two clients with empty client ids get distinct ids and both stay connected [MQTT-3.1.3-6]', async () => {
    const { broker, port, url } = await startBroker();
    const ids: string[] = [];
    broker.on('client', (info) => ids.push(info.clientId));
    const a = await RawClient.connected(port, 4, { clientId: '' });
    const b = await RawClient.connected(port, 4, { clientId: '' });
    expect(ids).toHaveLength(2);
    expect(ids[0]).not.toBe(ids[1]);
    // Neither took over the other's session.
    for (const c of [a, b]) {
      c.send(pingreq);
      expect(await c.next()).toMatchObject({ cmd: 'pingresp' });
    }
    await assertHealthy(url, 4);
  });

  it('v5: an empty client id gets an Assigned Client Identifier in CONNACK [MQTT-3.2.2-16]', async () => {
    const { broker, port, url } = await startBroker();
    const raw = await RawClient.open(port, 5);
    raw.send(connectPacket(5, { clientId: '' }));
    const ack = await raw.next();
    expect(ack).toMatchObject({ cmd: 'connack', reasonCode: 0 });
    const assigned = (ack as { properties?: { assignedClientIdentifier?: string } }).properties
      ?.assignedClientIdentifier;
    expect(assigned).toMatch(/.+/);
    expect(broker.sessions.has(assigned!)).toBe(true);
    await assertHealthy(url, 5);
  });

  it('v4: packets after a refused CONNECT are not processed [MQTT-3.1.4-6] (5.0 numbering)', async () => {
    const { broker, port, url } = await startBroker();
    const raw = await RawClient.open(port, 4);
    raw.write(
      Buffer.concat([
        rawConnect({ clientId: '', flags: 0x00 }),
        generate(
          { cmd: 'publish', topic: 'after/refusal', payload: 'x', qos: 0, retain: true, dup: false },
          { protocolVersion: 4 },
        ),
      ]),
    );
    await assertOutcome(raw, refused4(2));
    expect(broker.retained.size).toBe(0);
    await assertHealthy(url, 4);
  });

  it('v4: a CONNECT split across many one-byte writes is still accepted (section 4.2: a byte stream)', async () => {
    const { port, url } = await startBroker();
    const raw = await RawClient.open(port, 4);
    raw.socket.setNoDelay(true);
    for (const byte of rawConnect({ clientId: 'byte-by-byte' })) {
      raw.write([byte]);
      // Each byte leaves the socket before the next is written.
      await new Promise<void>((resolve) => raw.socket.write(Buffer.alloc(0), () => resolve()));
    }
    expect(await raw.next()).toMatchObject({ cmd: 'connack', returnCode: 0 });
    await assertHealthy(url, 4);
  });

  it('v5: a session written in random pieces (1-17 bytes) parses as written (section 4.2: a byte stream)', async () => {
    const { port, url } = await startBroker();
    const raw = await RawClient.open(port, 5);
    raw.socket.setNoDelay(true);
    const big = Buffer.alloc(70_000, 7); // a 3-byte Remaining Length
    const mid = Buffer.from(Array.from({ length: 300 }, (_, i) => i & 0xff)); // a 2-byte one
    const v5 = { protocolVersion: 5 } as const;
    const bytes = Buffer.concat([
      generate(
        {
          cmd: 'connect',
          protocolId: 'MQTT',
          protocolVersion: 5,
          clientId: 'pieces',
          clean: true,
          keepalive: 0,
          properties: { sessionExpiryInterval: 60, userProperties: { a: 'b' } },
        },
        v5,
      ),
      generate(
        {
          cmd: 'subscribe',
          messageId: 1,
          subscriptions: [{ topic: 'pieces/#', qos: 2 }],
          properties: { subscriptionIdentifier: 300 },
        },
        v5,
      ),
      generate(
        {
          cmd: 'publish',
          topic: 'pieces/mid',
          payload: mid,
          qos: 1,
          messageId: 2,
          retain: false,
          dup: false,
          properties: { userProperties: { k: ['v1', 'v2'] }, correlationData: Buffer.from('corr') },
        },
        v5,
      ),
      generate({ cmd: 'publish', topic: 'pieces/big', payload: big, qos: 0, retain: false, dup: false }, v5),
      generate(
        {
          cmd: 'publish',
          topic: 'pieces/two',
          payload: 'q2',
          qos: 2,
          messageId: 3,
          retain: false,
          dup: false,
        },
        v5,
      ),
      generate({ cmd: 'pubrel', messageId: 3 }, v5),
      generate({ cmd: 'pingreq' }, v5),
    ]);
    const random = prng(42);
    for (let at = 0; at < bytes.length; ) {
      const n = 1 + Math.floor(random() * 17);
      raw.write(bytes.subarray(at, at + n));
      at += n;
      if (random() < 0.5)
        await new Promise<void>((resolve) => raw.socket.write(Buffer.alloc(0), () => resolve()));
    }
    const got: Packet[] = [];
    for (let p = await raw.next(); p !== null && p.cmd !== 'pingresp'; p = await raw.next()) got.push(p);
    const byCmd = (cmd: string) => got.filter((p) => p.cmd === cmd);
    expect(byCmd('connack')).toMatchObject([{ reasonCode: 0 }]);
    expect(byCmd('suback')).toMatchObject([{ messageId: 1, granted: [2] }]);
    expect(byCmd('puback')).toMatchObject([{ messageId: 2 }]);
    expect(byCmd('pubrec')).toMatchObject([{ messageId: 3 }]);
    expect(byCmd('pubcomp')).toMatchObject([{ messageId: 3 }]);
    const delivered = byCmd('publish') as IPublishPacket[];
    expect(delivered.map((p) => p.topic)).toEqual(['pieces/mid', 'pieces/big', 'pieces/two']);
    expect(Buffer.compare(delivered[0].payload as Buffer, mid)).toBe(0);
    expect(delivered[0].properties).toMatchObject({
      userProperties: { k: ['v1', 'v2'] },
      correlationData: Buffer.from('corr'),
      subscriptionIdentifier: 300,
    });
    expect(Buffer.compare(delivered[1].payload as Buffer, big)).toBe(0);
    expect(String(delivered[2].payload)).toBe('q2');
    await assertHealthy(url, 5);
  });
});
