import type { IPubackPacket } from 'mqtt-packet';
import type { Connection } from '../connection.js';

/** PUBACK completes an outbound QoS 1 delivery and frees its packet id [MQTT-4.3.2-3]. */
export function handlePuback(conn: Connection, packet: IPubackPacket): void {
  conn.session?.onPuback(packet.messageId!);
}
