import type { Packet } from 'mqtt-packet';
import type { Connection } from './connection.js';
import { RC } from './reason-codes.js';

/**
 * How a connection answers the violations it sees before any handler does: parse errors, and
 * packets judged by their fixed header while the body is still arriving (so a violation is closed
 * at once, not after a body that may never come).
 */

/** Packet types only a server sends: from a client they are refused as soon as their header is read. */
const SERVER_ONLY = new Set(['connack', 'suback', 'unsuback', 'pingresp']);

/** mqtt-packet errors that 5.0 calls a Protocol Error (section 3.8.3.1); every other one is a Malformed Packet. */
const PROTOCOL_ERROR_PREFIXES = ['Invalid subscribe QoS', 'Invalid retain handling'];

/** The fixed header of a packet whose body has not (all) arrived yet. */
export function checkArriving(conn: Connection, cmd: Packet['cmd'] | 'reserved', length: number): void {
  if (conn.state === 'new' && cmd !== 'connect') {
    // The first packet must be CONNECT [MQTT-3.1.0-1].
    conn.terminate('first packet was not CONNECT');
  } else if (cmd === 'connect' && conn.state !== 'new') {
    conn.close(RC.PROTOCOL_ERROR, 'second CONNECT'); // [MQTT-3.1.0-2]
  } else if (cmd === 'reserved' || (cmd === 'auth' && conn.protocolVersion !== 5)) {
    // Type 0, and type 15 before 5.0, are reserved (3.1.1 section 2.2.1, 5.0 section 2.1.2).
    conn.close(RC.MALFORMED_PACKET, 'reserved packet type');
  } else if (SERVER_ONLY.has(cmd)) {
    conn.close(RC.PROTOCOL_ERROR, `unexpected ${cmd} from client`);
  } else if (length > 0 && packetSize(length) > conn.maxIncoming()) {
    // Rejected as soon as its declared length is over our maximum (before CONNECT: --max-connect-size).
    conn.tooLarge();
  }
}

/** mqtt-packet (or strict-parser.ts) refused the input. */
export function parseError(conn: Connection, err: Error): void {
  conn.broker.log.debug({ clientId: conn.clientId, err: err.message }, 'malformed packet');
  if (conn.state === 'new') {
    const p = (conn.parser as unknown as { packet: { cmd: string; protocolVersion?: number } }).packet;
    if (err.message === 'Invalid protocol version') {
      // Unsupported protocol level: refuse with the answer the client can read [MQTT-3.1.2-2].
      const level = p.protocolVersion ?? 0;
      if (level > 5)
        conn.send({ cmd: 'connack', reasonCode: RC.UNSUPPORTED_PROTOCOL_VERSION, sessionPresent: false }, 5);
      else conn.send({ cmd: 'connack', returnCode: 1, sessionPresent: false }, 4);
      conn.close(undefined, 'unsupported protocol version');
      return;
    }
    if (p.cmd === 'connect' && p.protocolVersion === 5) {
      // A malformed 5.0 CONNECT may be answered with CONNACK 0x81 before the close [MQTT-3.1.4-1];
      // 3.1.1 closes without CONNACK [MQTT-3.1.4-1].
      conn.send({ cmd: 'connack', reasonCode: RC.MALFORMED_PACKET, sessionPresent: false }, 5);
      conn.close(undefined, `malformed CONNECT: ${err.message}`);
      return;
    }
  }
  const protocolError = PROTOCOL_ERROR_PREFIXES.some((prefix) => err.message.startsWith(prefix));
  conn.close(
    protocolError ? RC.PROTOCOL_ERROR : RC.MALFORMED_PACKET,
    `${protocolError ? 'protocol error' : 'malformed packet'}: ${err.message}`,
  );
}

/** Total bytes of a packet with this Remaining Length: fixed header byte, length bytes, body. */
export function packetSize(remaining: number): number {
  return 1 + (remaining < 128 ? 1 : remaining < 16384 ? 2 : remaining < 2097152 ? 3 : 4) + remaining;
}
