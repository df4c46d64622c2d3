import type { Packet } from 'mqtt-packet';
import type { Connection } from '../connection.js';
import { RC } from '../reason-codes.js';
import { handleAuth } from './auth.js';
import { handleConnect } from './connect.js';
import { handleDisconnect } from './disconnect.js';
import { handlePingreq } from './pingreq.js';
import { handlePuback } from './puback.js';
import { handlePubcomp } from './pubcomp.js';
import { handlePublish } from './publish.js';
import { handlePubrec } from './pubrec.js';
import { handlePubrel } from './pubrel.js';
import { handleSubscribe } from './subscribe.js';
import { handleUnsubscribe } from './unsubscribe.js';
import { violation } from './validate.js';

/** Routes a parsed packet to its handler; one file per packet type. */
export function dispatch(conn: Connection, packet: Packet): void {
  if (packet.cmd === 'connect') {
    // A second CONNECT is a protocol violation [MQTT-3.1.0-2].
    if (conn.state !== 'connecting') return conn.close(RC.PROTOCOL_ERROR, 'second CONNECT');
    // Known before any check, so a refusal is worded for the client's version.
    conn.protocolVersion = (packet.protocolVersion ?? 4) as 3 | 4 | 5;
  }
  const bad = violation(packet);
  if (bad) return conn.close(bad.code, bad.why, packet.cmd !== 'connect');
  switch (packet.cmd) {
    case 'connect':
      return void handleConnect(conn, packet).catch((err: unknown) => conn.fail(err, 'CONNECT handler'));
    case 'publish':
      return handlePublish(conn, packet);
    case 'puback':
      return handlePuback(conn, packet);
    case 'pubrec':
      return handlePubrec(conn, packet);
    case 'pubrel':
      return handlePubrel(conn, packet);
    case 'pubcomp':
      return handlePubcomp(conn, packet);
    case 'subscribe':
      return handleSubscribe(conn, packet);
    case 'unsubscribe':
      return handleUnsubscribe(conn, packet);
    case 'pingreq':
      return handlePingreq(conn);
    case 'disconnect':
      return handleDisconnect(conn, packet);
    case 'auth':
      return handleAuth(conn, packet);
    default:
      // Server-to-client packets (CONNACK, SUBACK, ...) from a client are protocol errors.
      return conn.close(RC.PROTOCOL_ERROR, `unexpected ${packet.cmd} from client`);
  }
}
