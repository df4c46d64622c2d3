import type { IPubackPacket } from 'mqtt-packet';
import type { Connection } from '../connection.js';

/**
 * PUBACK completes an outbound QoS 1 delivery and frees its packet id [MQTT-4.3.2-3]. A 5.0 reason
 * code >= 0x80 on a shared group message marks the job failed (retried, then dead-lettered).
 */
export function handlePuback(conn: Connection, packet: IPubackPacket): void {
  conn.session?.onPuback(packet.messageId!, packet.reasonCode ?? 0);
}
