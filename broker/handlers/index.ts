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

/** Routes a parsed packet to its handler; one file per packet type. */
export function dispatch(conn: Connection, packet: Packet): void {
  // 5.0: a property other than User Property appears at most once, a repeat is a Protocol Error
  // (each property's own section, e.g. 3.1.2.11.2, 3.3.2.3.4, 3.8.2.1.2).
  const repeated = repeatedProperty(packet);
  if (repeated) return conn.close(RC.PROTOCOL_ERROR, `property ${repeated} given more than once`);
  switch (packet.cmd) {
    case 'connect':
      // A second CONNECT is a protocol violation [MQTT-3.1.0-2].
      if (conn.state !== 'connecting') return conn.close(RC.PROTOCOL_ERROR, 'second CONNECT');
      return void handleConnect(conn, packet).catch((err: Error) => {
        conn.broker.log.error({ err, clientId: conn.clientId }, 'connect failed');
        conn.close(RC.UNSPECIFIED_ERROR, 'connect failed');
      });
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

/** mqtt-packet collects a repeated property into an array: the name of the first such, if any. */
function repeatedProperty(packet: Packet): string | undefined {
  const sets: (object | undefined)[] = [(packet as { properties?: object }).properties];
  if (packet.cmd === 'connect') sets.push(packet.will?.properties);
  for (const props of sets) {
    if (!props) continue;
    for (const [name, value] of Object.entries(props)) {
      if (name !== 'userProperties' && Array.isArray(value)) return name;
    }
  }
  return undefined;
}
