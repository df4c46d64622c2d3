import type { IPubcompPacket } from 'mqtt-packet';
import type { Connection } from '../connection.js';

/** PUBCOMP completes an outbound QoS 2 delivery and frees its packet id. */
export function handlePubcomp(conn: Connection, packet: IPubcompPacket): void {
  conn.session?.onPubcomp(packet.messageId!);
}
