import type { IDisconnectPacket } from 'mqtt-packet';
import type { Connection } from '../connection.js';
import { RC } from '../reason-codes.js';

/**
 * DISCONNECT from the client: a normal one discards the will [MQTT-3.1.2-10]; 5.0 reason 0x04
 * asks for it to be published. 5.0 may change the session expiry, but not from 0 [MQTT-3.14.2-2].
 */
export function handleDisconnect(conn: Connection, packet: IDisconnectPacket): void {
  const session = conn.session;
  const expiry = packet.properties?.sessionExpiryInterval;
  if (conn.protocolVersion === 5 && expiry !== undefined && session) {
    if (session.expiryInterval === 0 && expiry !== 0) {
      return conn.close(RC.PROTOCOL_ERROR, 'session expiry set from 0 at DISCONNECT');
    }
    // Still within --max-session-expiry.
    const cap = conn.broker.options.maxSessionExpiry;
    session.expiryInterval = cap > 0 ? Math.min(expiry, cap) : expiry;
  }
  const withWill = conn.protocolVersion === 5 && packet.reasonCode === RC.DISCONNECT_WITH_WILL;
  // Without the will, which is deleted from storage too (broker.connectionEnded).
  conn.close(undefined, 'client disconnected', withWill);
}
