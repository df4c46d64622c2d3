import type { IPubrecPacket } from 'mqtt-packet';
import type { Connection } from '../connection.js';
import { RC } from '../reason-codes.js';

/** PUBREC for an outbound QoS 2 message is answered with PUBREL [MQTT-4.3.3-4]. */
export function handlePubrec(conn: Connection, packet: IPubrecPacket): void {
  const id = packet.messageId!;
  const outcome = conn.session?.onPubrec(id, packet.reasonCode ?? 0) ?? 'unknown';
  if (outcome === 'pubrel') conn.sendPubrel(id);
  // Still answered so the client's state machine can finish; 5.0 says the id was not found.
  else if (outcome === 'unknown') conn.sendAck('pubrel', id, RC.PACKET_ID_NOT_FOUND);
}
