/**
 * Every case where the spec requires the server to close the connection, one row each: raw bytes
 * sent after a completed CONNECT (or instead of it), and what must arrive before the close. This is
 * the one table of must-close statements; test/bad-input.test.ts holds the violations the broker
 * answers and survives.
 *
 * A case passes when the server closes the connection at once: its socket's 'close' event comes
 * within BOUND_MS of the write, both for a client that closes its side on the server's FIN and for
 * one that keeps it open (the server must not wait for the peer), and 5.0 gets the reason code
 * first where the spec gives one: a DISCONNECT after CONNACK, a CONNACK instead of CONNECT. 3.1.1
 * has no reason codes: the connection is closed without a word, except for the CONNACK return codes
 * a refused CONNECT gets [MQTT-3.2.2-5]. A second client on the same broker must keep working.
 *
 * Statement numbers follow the version under test: 3.1.1 for protocol level 4, 5.0 for level 5.
 * A 3.1.1 protocol violation without its own statement cites [MQTT-4.8.0-1] ("unless stated
 * otherwise ... MUST close"), a 5.0 one [MQTT-4.13.1-1]; where a rule has no statement number the
 * section is cited.
 */

import { connect as netConnect, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Duplex } from 'node:stream';
import { parser as createParser, generate, type Packet } from 'mqtt-packet';
import { describe, expect, it, vi } from 'vitest';
import type { BrokerOptions } from '../broker/index.js';
import { RC } from '../broker/reason-codes.js';
import { connect, connectPacket, nextMessages, onCleanup, once, RawClient, startBroker } from './helpers.js';
import {
  type Bytes,
  frame,
  HUGE,
  hex,
  props,
  rawConnect,
  rawPublish,
  rawSubscribe,
  rawUnsubscribe,
  str,
  userProperty,
} from './raw-frames.js';

type Version = 4 | 5;

/** Close, measured from the write, must come within this. */
const BOUND_MS = 500;

interface Case {
  name: string;
  v: Version;
  /** 'connack' (default): sent after a completed CONNECT; 'nothing': sent instead of CONNECT. */
  after?: 'connack' | 'nothing';
  send: Bytes | Bytes[];
  /** The client half-closes (FIN) right after writing. */
  fin?: boolean;
  /** Packets that must arrive before the close, in order; nothing else may. */
  answer?: Record<string, unknown>[];
  broker?: BrokerOptions;
}

const disconnect = (reasonCode: number) => [{ cmd: 'disconnect', reasonCode }];
const connack5 = (reasonCode: number) => [{ cmd: 'connack', reasonCode, sessionPresent: false }];
const connack4 = (returnCode: number) => [{ cmd: 'connack', returnCode, sessionPresent: false }];
const NOTHING = 'nothing' as const;

/** A violation the same for both versions: 3.1.1 closes, 5.0 sends DISCONNECT `rc` first. */
function both(
  what: string,
  cite: { 4: string; 5: string },
  send: (v: Version) => Bytes | Bytes[],
  rc: number,
  extra: Partial<Case> = {},
): Case[] {
  const code = `0x${rc.toString(16).toUpperCase()}`;
  return [
    { name: `v4: ${what} ${cite[4]}`, v: 4, send: send(4), ...extra },
    {
      name: `v5: ${what}: DISCONNECT ${code} ${cite[5]}`,
      v: 5,
      send: send(5),
      answer: disconnect(rc),
      ...extra,
    },
  ];
}

/** A violation in CONNECT: 3.1.1 closes without CONNACK [MQTT-3.1.4-1], 5.0 gets CONNACK `rc`. */
function connectBoth(
  what: string,
  cite: { 4: string; 5: string },
  send: (v: Version) => Bytes,
  rc: number,
): Case[] {
  const code = `0x${rc.toString(16).toUpperCase()}`;
  return [
    { name: `v4: CONNECT ${what}: closed without CONNACK ${cite[4]}`, v: 4, after: NOTHING, send: send(4) },
    {
      name: `v5: CONNECT ${what}: CONNACK ${code} ${cite[5]}`,
      v: 5,
      after: NOTHING,
      send: send(5),
      answer: connack5(rc),
    },
  ];
}

const generic = { 4: '[MQTT-4.8.0-1]', 5: '[MQTT-4.13.1-1]' };
const cite = (c4: string, c5: string = c4) => ({ 4: c4, 5: c5 });
const pingreq = generate({ cmd: 'pingreq' });

/** Ill-formed UTF-8 and U+0000, each with the statement it breaks. */
const BAD_UTF8: { what: string; bytes: number[]; nul?: boolean }[] = [
  { what: 'an overlong "/" (C0 AF)', bytes: [0xc0, 0xaf] },
  { what: 'an overlong 3-byte form (E0 80 AF)', bytes: [0xe0, 0x80, 0xaf] },
  { what: 'the surrogate U+D800 (ED A0 80)', bytes: [0xed, 0xa0, 0x80] },
  { what: 'the surrogate U+DFFF (ED BF BF)', bytes: [0xed, 0xbf, 0xbf] },
  { what: 'a lone C0', bytes: [0xc0] },
  { what: 'the byte FF', bytes: [0xff] },
  { what: 'a lead byte without continuation (C3 28)', bytes: [0xc3, 0x28] },
  { what: 'U+0000', bytes: [0x00], nul: true },
];
const utf8Cite = (b: { nul?: boolean }) =>
  b.nul ? cite('[MQTT-1.5.3-2]', '[MQTT-1.5.4-2]') : cite('[MQTT-1.5.3-1]', '[MQTT-1.5.4-1]');
/** The places covered with every sequence; the others take the first, the surrogate and U+0000. */
const SOME_UTF8 = [BAD_UTF8[0], BAD_UTF8[2], BAD_UTF8[7]];
const bad = (b: { bytes: number[] }) => [0x61, ...b.bytes, 0x62];

/** CONNECT with a will (QoS 0) whose topic bytes are given; 5.0 gets empty will properties. */
const willConnect = (v: Version, topic: number[], flags = 0x02 | 0x04, willProps: number[] = []) =>
  rawConnect({
    level: v,
    flags,
    tail: [...(v === 5 ? props(willProps) : []), ...str(topic), ...str('bye')],
  });

const cases: Case[] = [
  // --- Fixed header: Remaining Length and other Variable Byte Integers -------------------------
  ...both(
    'a Remaining Length of five bytes',
    cite('(section 2.2.3: at most four bytes)', '(section 1.5.5: at most four bytes)'),
    () => hex('30 ff ff ff ff 01'),
    RC.MALFORMED_PACKET,
  ),
  ...both(
    'a fourth Remaining Length byte with its continuation bit: closed without waiting for a fifth',
    cite('(section 2.2.3)', '(section 1.5.5)'),
    () => hex('30 ff ff ff 80'),
    RC.MALFORMED_PACKET,
  ),
  {
    name: 'v4: CONNECT with a five-byte Remaining Length (section 2.2.3)',
    v: 4,
    after: NOTHING,
    send: hex('10 ff ff ff ff 01'),
  },
  {
    name: 'v5: a Remaining Length not minimally encoded (PINGREQ, 80 00): DISCONNECT 0x81 [MQTT-1.5.5-1]',
    v: 5,
    send: hex('c0 80 00'),
    answer: disconnect(RC.MALFORMED_PACKET),
  },
  {
    name: 'v5: a Property Length not minimally encoded (PUBLISH, 80 00): DISCONNECT 0x81 [MQTT-1.5.5-1]',
    v: 5,
    send: hex('30 07 0001 61 8000 6869'),
    answer: disconnect(RC.MALFORMED_PACKET),
  },
  {
    name: 'v5: a Subscription Identifier not minimally encoded (81 00): DISCONNECT 0x81 [MQTT-1.5.5-1]',
    v: 5,
    send: hex('82 0a 0001 03 0b8100 0001 61 00'),
    answer: disconnect(RC.MALFORMED_PACKET),
  },
  {
    name: 'v5: a Property Length of five bytes: DISCONNECT 0x81 (section 1.5.5)',
    v: 5,
    send: hex('30 0a 0001 61 ffffffff01 6869'),
    answer: disconnect(RC.MALFORMED_PACKET),
  },
  {
    name: 'v5: a Property Length unterminated at the end of the packet: DISCONNECT 0x81 (section 1.5.5)',
    v: 5,
    send: hex('30 04 0001 61 80'),
    answer: disconnect(RC.MALFORMED_PACKET),
  },
  // The client's FIN in the middle of a packet: the packet never completes, the client has closed
  // the connection; the server closes its side at once and, having nothing to say to a client that
  // left, says nothing.
  ...[4, 5].flatMap((v): Case[] => [
    {
      name: `v${v}: a Remaining Length cut off by the client's FIN is closed at once (section 2.2.3)`,
      v: v as Version,
      send: hex('30 80'),
      fin: true,
    },
    {
      name: `v${v}: a body cut off by the client's FIN is closed at once (section 2.2.3)`,
      v: v as Version,
      send: hex('32 0a 0001 61'),
      fin: true,
    },
    {
      name: `v${v}: a CONNECT cut off by the client's FIN is closed at once [MQTT-3.1.4-1]`,
      v: v as Version,
      after: NOTHING,
      send: rawConnect({ level: v }).subarray(0, 9),
      fin: true,
    },
  ]),

  // --- Remaining Length against the content ---------------------------------------------------
  ...both(
    'PUBLISH QoS 1 whose Remaining Length ends before its Packet Identifier',
    generic,
    () => hex('32 03 0001 61'),
    RC.MALFORMED_PACKET,
  ),
  ...both('PUBACK with a Remaining Length of 1', generic, () => hex('40 01 00'), RC.MALFORMED_PACKET),
  ...both(
    'PUBACK with a Remaining Length of 0, then PINGREQ (not read as its Packet Identifier)',
    generic,
    () => hex('40 00 c0 00'),
    RC.MALFORMED_PACKET,
  ),
  {
    name: 'v4: PUBACK with a Remaining Length of 3 is closed (section 3.4.1: it is 2) [MQTT-4.8.0-1]',
    v: 4,
    send: hex('40 03 0001 00'),
  },
  ...both(
    'PINGREQ with a Remaining Length of 1 (section 3.12: no variable header)',
    generic,
    () => hex('c0 01 00'),
    RC.MALFORMED_PACKET,
  ),
  ...both(
    'SUBSCRIBE whose topic filter overruns the Remaining Length',
    generic,
    (v) => (v === 5 ? hex('82 06 0001 00 0005 61') : hex('82 05 0001 0005 61')),
    RC.MALFORMED_PACKET,
  ),
  ...both(
    'SUBSCRIBE whose last filter has no options byte',
    generic,
    (v) => (v === 5 ? hex('82 06 0001 00 0001 61') : hex('82 05 0001 0001 61')),
    RC.MALFORMED_PACKET,
  ),
  ...both(
    'UNSUBSCRIBE whose topic filter overruns the Remaining Length',
    generic,
    (v) => (v === 5 ? hex('a2 06 0001 00 0005 61') : hex('a2 05 0001 0005 61')),
    RC.MALFORMED_PACKET,
  ),
  {
    name: 'v5: SUBSCRIBE without a Property Length: DISCONNECT 0x81 (section 3.8.2.1) [MQTT-4.13.1-1]',
    v: 5,
    send: hex('82 02 0001'),
    answer: disconnect(RC.MALFORMED_PACKET),
  },
  {
    name: 'v5: PUBLISH whose Property Length runs past the packet: DISCONNECT 0x81 [MQTT-4.13.1-1]',
    v: 5,
    send: hex('30 05 0001 61 05 01'),
    answer: disconnect(RC.MALFORMED_PACKET),
  },
  {
    name: 'v5: PUBLISH whose last property runs past the Property Length: DISCONNECT 0x81 [MQTT-4.13.1-1]',
    v: 5,
    send: hex('30 08 0001 61 02 230001 68'),
    answer: disconnect(RC.MALFORMED_PACKET),
  },
  {
    name: 'v5: PUBLISH whose Topic Alias is cut short by the packet end: DISCONNECT 0x81 [MQTT-4.13.1-1]',
    v: 5,
    send: hex('30 06 0001 61 02 2300'),
    answer: disconnect(RC.MALFORMED_PACKET),
  },
  {
    name: 'v4: CONNECT whose protocol name overruns the packet is closed [MQTT-3.1.4-1]',
    v: 4,
    after: NOTHING,
    send: hex('10 04 000a 4d51'),
  },
  {
    name: 'v4: CONNECT whose client id overruns the packet is closed [MQTT-3.1.4-1]',
    v: 4,
    after: NOTHING,
    send: frame(0x10, [...str('MQTT'), 4, 2, 0, 0, 0x00, 0x20, 0x61]),
  },
  ...connectBoth(
    'with bytes after its last field',
    cite('[MQTT-3.1.4-1]'),
    (v) => {
      const c = rawConnect({ level: v });
      return frame(0x10, [...c.subarray(2), 0x00]);
    },
    RC.MALFORMED_PACKET,
  ),
  {
    name: 'v5: CONNECT whose Property Length runs past the packet: CONNACK 0x81 [MQTT-3.1.4-1]',
    v: 5,
    after: NOTHING,
    send: frame(0x10, [...str('MQTT'), 5, 2, 0, 0, 0x20, ...str('x')]),
    answer: connack5(RC.MALFORMED_PACKET),
  },

  // --- Packet types and fixed-header flags ----------------------------------------------------
  ...both(
    'packet type 0 (reserved)',
    cite('(section 2.2.1) [MQTT-4.8.0-1]', '(section 2.1.2) [MQTT-4.13.1-1]'),
    () => hex('00 00'),
    RC.MALFORMED_PACKET,
  ),
  ...both(
    'a packet type 0 header: closed without waiting for its body',
    cite('(section 2.2.1)', '(section 2.1.2)'),
    () => hex('00 7f'),
    RC.MALFORMED_PACKET,
  ),
  {
    name: 'v4: packet type 0 (reserved) instead of CONNECT is closed (section 2.2.1)',
    v: 4,
    after: NOTHING,
    send: hex('00 00'),
  },
  { name: 'v4: packet type 15 (reserved in 3.1.1) is closed (section 2.2.1)', v: 4, send: hex('f0 00') },
  {
    name: 'v4: a packet type 15 header is closed without waiting for its body (section 2.2.1)',
    v: 4,
    send: hex('f0 7f'),
  },
  ...(
    [
      ['PUBACK', '42 02 0001'],
      ['PUBREC', '51 02 0001'],
      ['PUBCOMP', '78 02 0001'],
      ['PINGREQ', 'c1 00'],
      ['DISCONNECT', 'e2 00'],
    ] as const
  ).flatMap(([name, bytes]) =>
    both(
      `${name} with reserved fixed-header flags not 0000`,
      cite('[MQTT-2.2.2-2]', '[MQTT-2.1.3-1]'),
      () => hex(bytes),
      RC.MALFORMED_PACKET,
    ),
  ),
  ...both(
    'PUBREL with fixed-header flags 0000',
    cite('[MQTT-3.6.1-1]'),
    () => hex('60 02 0001'),
    RC.MALFORMED_PACKET,
  ),
  ...both(
    'PUBREL with fixed-header flags 0011',
    cite('[MQTT-3.6.1-1]'),
    () => hex('63 02 0001'),
    RC.MALFORMED_PACKET,
  ),
  ...both(
    'SUBSCRIBE with fixed-header flags 0000',
    cite('[MQTT-3.8.1-1]'),
    (v) => rawSubscribe(v, [['a', 0]], { first: 0x80 }),
    RC.MALFORMED_PACKET,
  ),
  ...both(
    'SUBSCRIBE with fixed-header flags 0011',
    cite('[MQTT-3.8.1-1]'),
    (v) => rawSubscribe(v, [['a', 0]], { first: 0x83 }),
    RC.MALFORMED_PACKET,
  ),
  ...both(
    'UNSUBSCRIBE with fixed-header flags 0000',
    cite('[MQTT-3.10.1-1]'),
    (v) => rawUnsubscribe(v, ['a'], { first: 0xa0 }),
    RC.MALFORMED_PACKET,
  ),
  ...both(
    'PUBLISH with QoS 3',
    cite('[MQTT-3.3.1-4]'),
    (v) => rawPublish(v, 'a', { qos: 3 }),
    RC.MALFORMED_PACKET,
  ),
  ...both(
    'a PUBLISH header with QoS 3: closed without waiting for its body',
    cite('[MQTT-3.3.1-4]'),
    () => hex('36 7f'),
    RC.MALFORMED_PACKET,
  ),
  ...both(
    'PUBLISH QoS 0 with DUP set',
    cite('[MQTT-3.3.1-2]'),
    (v) => rawPublish(v, 'a', { dup: true }),
    RC.MALFORMED_PACKET,
  ),
  {
    name: 'v4: CONNECT with reserved fixed-header flags 0001 is closed [MQTT-2.2.2-2]',
    v: 4,
    after: NOTHING,
    send: rawConnect({ first: 0x11 }),
  },

  // --- CONNECT first, and only once -----------------------------------------------------------
  {
    name: 'v4: PUBLISH instead of CONNECT is closed [MQTT-3.1.0-1]',
    v: 4,
    after: NOTHING,
    send: rawPublish(4, 'a'),
  },
  {
    name: 'v4: PINGREQ instead of CONNECT is closed [MQTT-3.1.0-1]',
    v: 4,
    after: NOTHING,
    send: pingreq,
  },
  {
    name: 'v4: a PUBLISH header instead of CONNECT is closed without waiting for its body [MQTT-3.1.0-1]',
    v: 4,
    after: NOTHING,
    send: hex('30 7f 00'),
  },
  {
    name: 'v5: SUBSCRIBE instead of CONNECT is closed, no DISCONNECT before a CONNACK [MQTT-3.1.0-1]',
    v: 5,
    after: NOTHING,
    send: rawSubscribe(5, [['a', 0]]),
  },
  {
    name: 'v5: AUTH instead of CONNECT is closed [MQTT-3.1.0-1]',
    v: 5,
    after: NOTHING,
    send: hex('f0 00'),
  },
  {
    name: 'v4: an HTTP request instead of CONNECT is closed [MQTT-3.1.0-1]',
    v: 4,
    after: NOTHING,
    send: Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'),
  },
  ...both(
    'a second CONNECT',
    cite('[MQTT-3.1.0-2]'),
    (v) => generate(connectPacket(v), { protocolVersion: v }),
    RC.PROTOCOL_ERROR,
  ),
  ...both(
    'a second CONNECT header: closed without waiting for its body',
    cite('[MQTT-3.1.0-2]'),
    () => hex('10 7f'),
    RC.PROTOCOL_ERROR,
  ),
  {
    name: 'v5: two CONNECTs in one chunk: CONNACK for the first, DISCONNECT 0x82 for the second [MQTT-3.1.0-2]',
    v: 5,
    after: NOTHING,
    send: [0, 1].map(() => generate(connectPacket(5, { clientId: 'twice' }), { protocolVersion: 5 })),
    answer: [
      { cmd: 'connack', reasonCode: 0 },
      { cmd: 'disconnect', reasonCode: RC.PROTOCOL_ERROR },
    ],
  },
  // Server-to-client packets from a client (direction of flow, 3.1.1 section 2.2.1, 5.0 section 2.1.2).
  ...(
    [
      ['CONNACK', '20 02 00 00', '20 03 00 00 00'],
      ['SUBACK', '90 03 0001 00', '90 04 0001 00 00'],
      ['UNSUBACK', 'b0 02 0001', 'b0 04 0001 00 00'],
      ['PINGRESP', 'd0 00', 'd0 00'],
      ['a CONNACK header', '20 7f', '20 7f'],
    ] as const
  ).flatMap(([name, v4, v5]) =>
    both(`${name} from a client`, generic, (v) => hex(v === 5 ? v5 : v4), RC.PROTOCOL_ERROR),
  ),
  {
    name: 'v5: AUTH without an Authentication Method in CONNECT: DISCONNECT 0x82 [MQTT-4.12.0-7]',
    v: 5,
    send: hex('f0 02 19 00'),
    answer: disconnect(RC.PROTOCOL_ERROR),
  },

  // --- CONNECT: protocol, flags, will ---------------------------------------------------------
  ...([2, 0] as const).map(
    (level): Case => ({
      name: `v4: protocol level ${level} is refused with CONNACK 0x01, then closed [MQTT-3.1.2-2]`,
      v: 4,
      after: NOTHING,
      send: rawConnect({ level }),
      answer: connack4(1),
    }),
  ),
  {
    name: 'v5: protocol level 6 is refused with CONNACK 0x84, then closed [MQTT-3.1.2-2]',
    v: 5,
    after: NOTHING,
    send: rawConnect({ level: 6 }),
    answer: connack5(RC.UNSUPPORTED_PROTOCOL_VERSION),
  },
  {
    name: 'v4: name "MQIsdp" with level 4 is refused with CONNACK 0x01 [MQTT-3.1.2-1] [MQTT-3.1.2-2]',
    v: 4,
    after: NOTHING,
    send: rawConnect({ name: 'MQIsdp', level: 4 }),
    answer: connack4(1),
  },
  {
    name: 'v4: name "MQTT" with level 3 is refused with CONNACK 0x01 [MQTT-3.1.2-1] [MQTT-3.1.2-2]',
    v: 4,
    after: NOTHING,
    send: rawConnect({ name: 'MQTT', level: 3 }),
    answer: connack4(1),
  },
  {
    name: 'v5: name "MQIsdp" with level 5 is refused with CONNACK 0x84 [MQTT-3.1.2-1]',
    v: 5,
    after: NOTHING,
    send: rawConnect({ name: 'MQIsdp', level: 5 }),
    answer: connack5(RC.UNSUPPORTED_PROTOCOL_VERSION),
  },
  {
    name: 'v4: unknown protocol name "MQTX" is closed [MQTT-3.1.2-1]',
    v: 4,
    after: NOTHING,
    send: rawConnect({ name: 'MQTX' }),
  },
  ...connectBoth(
    'with the reserved flag bit 0 set',
    cite('[MQTT-3.1.2-3]'),
    (v) => rawConnect({ level: v, flags: 0x03 }),
    RC.MALFORMED_PACKET,
  ),
  ...connectBoth(
    'with Will QoS 3',
    cite('[MQTT-3.1.2-14]', '[MQTT-3.1.2-12]'),
    (v) => willConnect(v, [0x77], 0x02 | 0x04 | 0x18),
    RC.MALFORMED_PACKET,
  ),
  ...connectBoth(
    'with Will QoS 1 and the Will Flag 0',
    cite('[MQTT-3.1.2-13]', '[MQTT-3.1.2-11]'),
    (v) => rawConnect({ level: v, flags: 0x02 | 0x08 }),
    RC.MALFORMED_PACKET,
  ),
  ...connectBoth(
    'with Will Retain and the Will Flag 0',
    cite('[MQTT-3.1.2-15]', '[MQTT-3.1.2-13]'),
    (v) => rawConnect({ level: v, flags: 0x02 | 0x20 }),
    RC.MALFORMED_PACKET,
  ),
  {
    name: 'v4: Password Flag without User Name Flag is closed without CONNACK [MQTT-3.1.2-22] [MQTT-3.1.4-1]',
    v: 4,
    after: NOTHING,
    send: rawConnect({ flags: 0x02 | 0x40, tail: str('secret') }),
  },
  {
    name: 'v4: Will Topic with a wildcard is closed without CONNACK [MQTT-3.3.2-2] (section 3.1.3.3)',
    v: 4,
    after: NOTHING,
    send: willConnect(4, [...Buffer.from('will/#')]),
  },
  {
    name: 'v5: Will Topic with a wildcard is refused with CONNACK 0x90 (section 3.1.3.3)',
    v: 5,
    after: NOTHING,
    send: willConnect(5, [...Buffer.from('will/+')]),
    answer: connack5(RC.TOPIC_NAME_INVALID),
  },
  {
    name: 'v4: empty client id with CleanSession 0 is refused with CONNACK 0x02, then closed [MQTT-3.1.3-8]',
    v: 4,
    after: NOTHING,
    send: rawConnect({ clientId: '', flags: 0x00 }),
    answer: connack4(2),
  },
  {
    name: 'v3.1: empty client id is refused with CONNACK 0x02 (MQTT 3.1 section 3.1: 1 to 23 characters)',
    v: 4,
    after: NOTHING,
    send: rawConnect({ name: 'MQIsdp', level: 3, clientId: '' }),
    answer: connack4(2),
  },
  {
    name: 'v5: an unsupported Authentication Method is refused with CONNACK 0x8C, then closed [MQTT-4.12.0-1]',
    v: 5,
    after: NOTHING,
    send: rawConnect({ level: 5, props: [0x15, ...str('SCRAM-SHA-1')] }),
    answer: connack5(RC.BAD_AUTHENTICATION_METHOD),
  },
  {
    name: 'v5: Receive Maximum 0 in CONNECT: CONNACK 0x82 (section 3.1.2.11.3)',
    v: 5,
    after: NOTHING,
    send: rawConnect({ level: 5, props: [0x21, 0x00, 0x00] }),
    answer: connack5(RC.PROTOCOL_ERROR),
  },
  {
    name: 'v5: Maximum Packet Size 0 in CONNECT: CONNACK 0x82 (section 3.1.2.11.4)',
    v: 5,
    after: NOTHING,
    send: rawConnect({ level: 5, props: [0x27, 0, 0, 0, 0] }),
    answer: connack5(RC.PROTOCOL_ERROR),
  },
  {
    name: 'v5: Session Expiry Interval twice in CONNECT: CONNACK 0x82 (section 3.1.2.11.2)',
    v: 5,
    after: NOTHING,
    send: rawConnect({ level: 5, props: [0x11, 0, 0, 0, 10, 0x11, 0, 0, 0, 20] }),
    answer: connack5(RC.PROTOCOL_ERROR),
  },
  {
    name: 'v5: a Topic Alias (not a CONNECT property) in CONNECT: CONNACK 0x81 (section 2.2.2.2)',
    v: 5,
    after: NOTHING,
    send: rawConnect({ level: 5, props: [0x23, 0x00, 0x01] }),
    answer: connack5(RC.MALFORMED_PACKET),
  },
  {
    name: 'v5: a Session Expiry Interval among the Will Properties: CONNACK 0x81 (section 2.2.2.2)',
    v: 5,
    after: NOTHING,
    send: willConnect(5, [0x77], 0x02 | 0x04, [0x11, 0, 0, 0, 1]),
    answer: connack5(RC.MALFORMED_PACKET),
  },
  {
    name: 'v5: an unknown property 0x05 in CONNECT: CONNACK 0x81 (section 2.2.2.2)',
    v: 5,
    after: NOTHING,
    send: rawConnect({ level: 5, props: [0x05, 0x00] }),
    answer: connack5(RC.MALFORMED_PACKET),
  },

  // --- Ill-formed UTF-8 and U+0000 ------------------------------------------------------------
  ...BAD_UTF8.flatMap((b) => [
    ...connectBoth(
      `with ${b.what} in the client id`,
      utf8Cite(b),
      (v) => rawConnect({ level: v, clientId: bad(b) }),
      RC.MALFORMED_PACKET,
    ),
    ...both(`PUBLISH topic with ${b.what}`, utf8Cite(b), (v) => rawPublish(v, bad(b)), RC.MALFORMED_PACKET),
  ]),
  ...SOME_UTF8.flatMap((b) => [
    ...connectBoth(
      `with ${b.what} in the user name`,
      utf8Cite(b),
      (v) => rawConnect({ level: v, flags: 0x02 | 0x80, tail: str(bad(b)) }),
      RC.MALFORMED_PACKET,
    ),
    ...connectBoth(
      `with ${b.what} in the will topic`,
      utf8Cite(b),
      (v) => willConnect(v, bad(b)),
      RC.MALFORMED_PACKET,
    ),
    ...both(
      `SUBSCRIBE filter with ${b.what}`,
      utf8Cite(b),
      (v) => rawSubscribe(v, [[bad(b), 0]]),
      RC.MALFORMED_PACKET,
    ),
    ...both(
      `UNSUBSCRIBE filter with ${b.what}`,
      utf8Cite(b),
      (v) => rawUnsubscribe(v, [bad(b)]),
      RC.MALFORMED_PACKET,
    ),
    {
      name: `v5: a PUBLISH User Property name with ${b.what}: DISCONNECT 0x81 ${utf8Cite(b)[5]}`,
      v: 5,
      send: rawPublish(5, 'a', { props: userProperty(bad(b), 'v') }),
      answer: disconnect(RC.MALFORMED_PACKET),
    } satisfies Case,
    {
      name: `v5: a SUBSCRIBE User Property value with ${b.what}: DISCONNECT 0x81 ${utf8Cite(b)[5]}`,
      v: 5,
      send: rawSubscribe(5, [['a', 0]], { props: userProperty('k', bad(b)) }),
      answer: disconnect(RC.MALFORMED_PACKET),
    } satisfies Case,
    {
      name: `v5: a PUBLISH Content Type with ${b.what}: DISCONNECT 0x81 ${utf8Cite(b)[5]}`,
      v: 5,
      send: rawPublish(5, 'a', { props: [0x03, ...str(bad(b))] }),
      answer: disconnect(RC.MALFORMED_PACKET),
    } satisfies Case,
    {
      name: `v5: a CONNECT User Property value with ${b.what}: CONNACK 0x81 ${utf8Cite(b)[5]}`,
      v: 5,
      after: NOTHING,
      send: rawConnect({ level: 5, props: userProperty('k', bad(b)) }),
      answer: connack5(RC.MALFORMED_PACKET),
    } satisfies Case,
    {
      name: `v5: a will User Property name with ${b.what}: CONNACK 0x81 ${utf8Cite(b)[5]}`,
      v: 5,
      after: NOTHING,
      send: willConnect(5, [0x77], 0x02 | 0x04, userProperty(bad(b), 'v')),
      answer: connack5(RC.MALFORMED_PACKET),
    } satisfies Case,
  ]),

  // --- PUBLISH contents -----------------------------------------------------------------------
  ...both('PUBLISH topic "a/+"', cite('[MQTT-3.3.2-2]'), (v) => rawPublish(v, 'a/+'), RC.TOPIC_NAME_INVALID),
  ...both(
    'PUBLISH topic "#" at QoS 1 (no acknowledgement)',
    cite('[MQTT-3.3.2-2]'),
    (v) => rawPublish(v, '#', { qos: 1 }),
    RC.TOPIC_NAME_INVALID,
  ),
  { name: 'v4: PUBLISH with an empty topic is closed [MQTT-4.7.3-1]', v: 4, send: rawPublish(4, '') },
  {
    name: 'v5: PUBLISH with an empty topic and no Topic Alias: DISCONNECT 0x82 (section 3.3.2.1)',
    v: 5,
    send: rawPublish(5, ''),
    answer: disconnect(RC.PROTOCOL_ERROR),
  },
  ...both(
    'PUBLISH QoS 1 with Packet Identifier 0',
    cite('[MQTT-2.3.1-1]', '[MQTT-2.2.1-3]'),
    (v) => rawPublish(v, 'a', { qos: 1, id: 0 }),
    RC.PROTOCOL_ERROR,
  ),
  ...both(
    'PUBLISH QoS 2 with Packet Identifier 0',
    cite('[MQTT-2.3.1-1]', '[MQTT-2.2.1-3]'),
    (v) => rawPublish(v, 'a', { qos: 2, id: 0 }),
    RC.PROTOCOL_ERROR,
  ),
  {
    name: 'v5: PUBLISH with a Subscription Identifier: DISCONNECT 0x82 [MQTT-3.3.4-6]',
    v: 5,
    send: rawPublish(5, 'a', { props: [0x0b, 0x03] }),
    answer: disconnect(RC.PROTOCOL_ERROR),
  },
  {
    name: 'v5: PUBLISH with Topic Alias 0: DISCONNECT 0x94 [MQTT-3.3.2-8]',
    v: 5,
    send: rawPublish(5, 'a', { props: [0x23, 0x00, 0x00] }),
    answer: disconnect(RC.TOPIC_ALIAS_INVALID),
  },
  {
    name: 'v5: PUBLISH with a Topic Alias above the maximum: DISCONNECT 0x94 [MQTT-3.3.2-9]',
    v: 5,
    broker: { topicAliasMaximum: 5 },
    send: rawPublish(5, 'a', { props: [0x23, 0x00, 0x06] }),
    answer: disconnect(RC.TOPIC_ALIAS_INVALID),
  },
  {
    name: 'v5: PUBLISH with an empty topic and an unmapped Topic Alias: DISCONNECT 0x82 (section 3.3.4)',
    v: 5,
    send: rawPublish(5, '', { props: [0x23, 0x00, 0x01] }),
    answer: disconnect(RC.PROTOCOL_ERROR),
  },
  {
    name: 'v5: PUBLISH with the Topic Alias twice: DISCONNECT 0x82 (section 3.3.2.3.4)',
    v: 5,
    send: rawPublish(5, 'a', { props: [0x23, 0x00, 0x01, 0x23, 0x00, 0x02] }),
    answer: disconnect(RC.PROTOCOL_ERROR),
  },
  {
    name: 'v5: PUBLISH with an unknown property 0x05: DISCONNECT 0x81 (section 2.2.2.2)',
    v: 5,
    send: rawPublish(5, 'a', { props: [0x05, 0x00] }),
    answer: disconnect(RC.MALFORMED_PACKET),
  },
  {
    name: 'v5: PUBLISH with property id 0: DISCONNECT 0x81 (section 2.2.2.2)',
    v: 5,
    send: rawPublish(5, 'a', { props: [0x00, 0x00] }),
    answer: disconnect(RC.MALFORMED_PACKET),
  },
  {
    name: 'v5: PUBLISH with a Session Expiry Interval (a CONNECT property): DISCONNECT 0x81 (section 2.2.2.2)',
    v: 5,
    send: rawPublish(5, 'a', { props: [0x11, 0, 0, 0, 1] }),
    answer: disconnect(RC.MALFORMED_PACKET),
  },
  {
    name: 'v5: more unacknowledged QoS 2 PUBLISHes than Receive Maximum: DISCONNECT 0x93 [MQTT-3.3.4-7]',
    v: 5,
    broker: { receiveMaximum: 2 },
    send: [1, 2, 3].map((id) => rawPublish(5, 'rm', { qos: 2, id })),
    answer: [
      { cmd: 'pubrec', messageId: 1 },
      { cmd: 'pubrec', messageId: 2 },
      { cmd: 'disconnect', reasonCode: RC.RECEIVE_MAXIMUM_EXCEEDED },
    ],
  },

  // --- Packet size ----------------------------------------------------------------------------
  {
    name: 'v5: a packet above the Maximum Packet Size: DISCONNECT 0x95 [MQTT-3.2.2-15]',
    v: 5,
    broker: { maxPacketSize: 128 },
    send: frame(0x32, [...str('big'), 0, 1, 0, ...Buffer.alloc(200, 0x41)]),
    answer: disconnect(RC.PACKET_TOO_LARGE),
  },
  {
    name: 'v4: a packet above the broker maximum is closed (3.1.1 has no Maximum Packet Size)',
    v: 4,
    broker: { maxPacketSize: 128 },
    send: frame(0x30, [...str('big'), ...Buffer.alloc(200, 0x41)]),
  },
  {
    name: 'v4: a declared 256 MB PUBLISH is closed without waiting for the body (section 2.2.3)',
    v: 4,
    send: [[0x30, ...HUGE]],
  },
  {
    name: 'v5: a declared 256 MB PUBLISH: DISCONNECT 0x95 without waiting for the body [MQTT-3.2.2-15]',
    v: 5,
    send: [[0x30, ...HUGE]],
    answer: disconnect(RC.PACKET_TOO_LARGE),
  },
  {
    name: 'v4: a declared 256 MB CONNECT is closed without waiting for the body (section 2.2.3)',
    v: 4,
    after: NOTHING,
    send: [[0x10, ...HUGE]],
  },

  // --- SUBSCRIBE and UNSUBSCRIBE contents -----------------------------------------------------
  ...both(
    'SUBSCRIBE with no topic filter',
    cite('[MQTT-3.8.3-3]', '[MQTT-3.8.3-2]'),
    (v) => rawSubscribe(v, []),
    RC.PROTOCOL_ERROR,
  ),
  ...both(
    'UNSUBSCRIBE with no topic filter',
    cite('[MQTT-3.10.3-2]'),
    (v) => rawUnsubscribe(v, []),
    RC.PROTOCOL_ERROR,
  ),
  ...both(
    'SUBSCRIBE with Packet Identifier 0',
    cite('[MQTT-2.3.1-1]', '[MQTT-2.2.1-3]'),
    (v) => rawSubscribe(v, [['a', 0]], { id: 0 }),
    RC.PROTOCOL_ERROR,
  ),
  ...both(
    'UNSUBSCRIBE with Packet Identifier 0',
    cite('[MQTT-2.3.1-1]', '[MQTT-2.2.1-3]'),
    (v) => rawUnsubscribe(v, ['a'], { id: 0 }),
    RC.PROTOCOL_ERROR,
  ),
  {
    name: 'v4: SUBSCRIBE requesting QoS 3 is closed [MQTT-3-8.3-4]',
    v: 4,
    send: rawSubscribe(4, [['a', 0x03]]),
  },
  {
    name: 'v4: SUBSCRIBE with a reserved option bit set is closed [MQTT-3-8.3-4]',
    v: 4,
    send: rawSubscribe(4, [['a', 0x04]]),
  },
  {
    name: 'v5: SUBSCRIBE requesting Maximum QoS 3: DISCONNECT 0x82 (section 3.8.3.1)',
    v: 5,
    send: rawSubscribe(5, [['a', 0x03]]),
    answer: disconnect(RC.PROTOCOL_ERROR),
  },
  {
    name: 'v5: SUBSCRIBE with Retain Handling 3: DISCONNECT 0x82 (section 3.8.3.1)',
    v: 5,
    send: rawSubscribe(5, [['a', 0x30]]),
    answer: disconnect(RC.PROTOCOL_ERROR),
  },
  {
    name: 'v5: SUBSCRIBE with reserved option bits 7-6 set: DISCONNECT 0x81 [MQTT-3.8.3-5]',
    v: 5,
    send: rawSubscribe(5, [['a', 0xc0]]),
    answer: disconnect(RC.MALFORMED_PACKET),
  },
  {
    name: 'v5: No Local on a shared subscription: DISCONNECT 0x82 [MQTT-3.8.3-4]',
    v: 5,
    send: rawSubscribe(5, [['$share/g/a', 0x04]]),
    answer: disconnect(RC.PROTOCOL_ERROR),
  },
  {
    name: 'v5: SUBSCRIBE with the Subscription Identifier twice: DISCONNECT 0x82 (section 3.8.2.1.2)',
    v: 5,
    send: rawSubscribe(5, [['a', 0]], { props: [0x0b, 0x01, 0x0b, 0x02] }),
    answer: disconnect(RC.PROTOCOL_ERROR),
  },
  {
    name: 'v5: SUBSCRIBE with Subscription Identifier 0: DISCONNECT 0x82 (section 3.8.2.1.2)',
    v: 5,
    send: rawSubscribe(5, [['a', 0]], { props: [0x0b, 0x00] }),
    answer: disconnect(RC.PROTOCOL_ERROR),
  },
  {
    name: 'v5: SUBSCRIBE with a Topic Alias (not a SUBSCRIBE property): DISCONNECT 0x81 (section 2.2.2.2)',
    v: 5,
    send: rawSubscribe(5, [['a', 0]], { props: [0x23, 0x00, 0x01] }),
    answer: disconnect(RC.MALFORMED_PACKET),
  },
  {
    name: 'v5: UNSUBSCRIBE with a Subscription Identifier (not an UNSUBSCRIBE property): DISCONNECT 0x81 (section 2.2.2.2)',
    v: 5,
    send: rawUnsubscribe(5, ['a'], { props: [0x0b, 0x01] }),
    answer: disconnect(RC.MALFORMED_PACKET),
  },

  // --- Other 5.0 packets ----------------------------------------------------------------------
  {
    name: 'v5: PUBACK with a Content Type (not a PUBACK property): DISCONNECT 0x81 (section 2.2.2.2)',
    v: 5,
    send: frame(0x40, [0, 1, 0, ...props([0x03, ...str('x')])]),
    answer: disconnect(RC.MALFORMED_PACKET),
  },
  {
    name: 'v5: DISCONNECT with a Topic Alias (not a DISCONNECT property): DISCONNECT 0x81 (section 2.2.2.2)',
    v: 5,
    send: frame(0xe0, [0, ...props([0x23, 0x00, 0x01])]),
    answer: disconnect(RC.MALFORMED_PACKET),
  },
  {
    name: 'v5: DISCONNECT setting a Session Expiry Interval after 0: DISCONNECT 0x82 [MQTT-3.14.2-2]',
    v: 5,
    send: frame(0xe0, [0, ...props([0x11, 0, 0, 0, 60])]),
    answer: disconnect(RC.PROTOCOL_ERROR),
  },
];

// --- running a case ---------------------------------------------------------------------------

/** A raw TCP client that records every packet the broker sends and when the broker ended. */
class Probe {
  readonly packets: Packet[] = [];
  /** Resolves with the time the broker's FIN (or a reset) arrived. */
  readonly ended: Promise<number>;
  private gotPacket: (() => void) | undefined;

  private constructor(
    readonly socket: Socket,
    v: Version,
  ) {
    const parser = createParser({ protocolVersion: v });
    parser.on('packet', (p: Packet) => {
      this.packets.push(p);
      this.gotPacket?.();
    });
    parser.on('error', () => undefined);
    socket.on('data', (d) => parser.parse(d));
    socket.on('error', () => undefined);
    this.ended = new Promise((resolve) => {
      const at = () => resolve(performance.now());
      socket.once('end', at);
      socket.once('close', at);
    });
  }

  /** halfOpen: the socket does not end its side when the broker's FIN arrives. */
  static async open(port: number, v: Version, halfOpen: boolean): Promise<Probe> {
    const socket = netConnect({ port, host: '127.0.0.1', allowHalfOpen: halfOpen });
    onCleanup(() => socket.destroy());
    await once(socket, 'connect');
    return new Probe(socket, v);
  }

  async handshake(v: Version): Promise<void> {
    this.socket.write(generate(connectPacket(v), { protocolVersion: v }));
    while (this.packets.length === 0) await new Promise<void>((r) => (this.gotPacket = r));
    expect(this.packets.shift()).toMatchObject({ cmd: 'connack', sessionPresent: false });
  }
}

/** The time the promise resolves with, or Infinity if that takes longer than ms. */
async function within(p: Promise<number>, ms: number): Promise<number> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<number>((r) => (timer = setTimeout(() => r(Number.POSITIVE_INFINITY), ms)));
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

async function run(c: Case, halfOpen: boolean): Promise<void> {
  const { broker, port } = await startBroker(c.broker);
  const bystander = await RawClient.connected(port, c.v);
  const streams: Duplex[] = [];
  const handle = broker.handle.bind(broker);
  broker.handle = (stream, info) => {
    streams.push(stream);
    return handle(stream, info);
  };
  const probe = await Probe.open(port, c.v, halfOpen);
  if (c.after !== NOTHING) await probe.handshake(c.v);
  await vi.waitFor(() => expect(streams).toHaveLength(1));
  const server = streams[0];
  const serverClosed = new Promise<number>((resolve) =>
    server.once('close', () => resolve(performance.now())),
  );

  const bytes = Buffer.concat(normalise(c.send).map((b) => Buffer.from(b)));
  const t0 = performance.now();
  probe.socket.write(bytes);
  if (c.fin) probe.socket.end();

  const closedAt = await within(serverClosed, BOUND_MS);
  expect(closedAt - t0, `the server closed its socket within ${BOUND_MS} ms`).toBeLessThan(BOUND_MS);
  const endedAt = await within(probe.ended, BOUND_MS);
  expect(endedAt - t0, `the client saw the end within ${BOUND_MS} ms`).toBeLessThan(BOUND_MS);
  expect(probe.packets).toMatchObject(c.answer ?? []);
  expect(probe.packets).toHaveLength((c.answer ?? []).length);
  // The broker let go of the connection, and the other client still works.
  expect(broker.connections.size).toBe(1);
  bystander.send({ cmd: 'pingreq' });
  expect(await bystander.next()).toMatchObject({ cmd: 'pingresp' });
}

function normalise(send: Bytes | Bytes[]): Bytes[] {
  if (Buffer.isBuffer(send)) return [send];
  if (send.length > 0 && typeof send[0] === 'number') return [send as number[]];
  return send as Bytes[];
}
describe('must-close cases: closed at once', () => {
  const names = new Set<string>();
  for (const c of cases) {
    if (names.has(c.name)) throw new Error(`duplicate case name: ${c.name}`);
    names.add(c.name);
  }
  for (const c of cases) it(c.name, () => run(c, false), 5000);
});

describe('must-close cases: closed at once when the client keeps its side open', () => {
  for (const c of cases) it(c.name, () => run(c, true), 5000);
});

describe('a FIN in the middle of a packet', () => {
  for (const v of [4, 5] as const) {
    it(`v${v}: is a connection closed without DISCONNECT: the will is published [MQTT-3.1.2-8]`, async () => {
      const { url, port } = await startBroker();
      const watcher = await connect(url, { protocolVersion: v });
      await watcher.subscribeAsync('fin/will');
      const got = nextMessages(watcher, 1);
      const raw = await RawClient.connected(port, v, {
        will: { topic: 'fin/will', payload: Buffer.from('gone'), qos: 0, retain: false },
      });
      raw.write(hex('32 0a 0001 61'));
      raw.socket.end();
      await raw.closed;
      const [m] = await got;
      expect(m.payload).toBe('gone');
    });
  }
});
