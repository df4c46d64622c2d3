import type { IAuthPacket } from 'mqtt-packet';
import type { Connection } from '../connection.js';
import { RC } from '../reason-codes.js';

/**
 * AUTH (5.0 enhanced authentication). No authentication method is offered, so an AUTH packet
 * is a protocol error: the client never had a method accepted.
 */
export function handleAuth(conn: Connection, _packet: IAuthPacket): void {
  conn.close(RC.PROTOCOL_ERROR, 'AUTH without an authentication method');
}
