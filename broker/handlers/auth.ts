import type { IAuthPacket } from 'mqtt-packet';
import type { Connection } from '../connection.js';
import { reauthenticate } from '../enhanced-auth.js';

/** AUTH (5.0 enhanced authentication) on a connected client: re-authentication (enhanced-auth.ts). */
export function handleAuth(conn: Connection, packet: IAuthPacket): void {
  reauthenticate(conn, packet);
}
