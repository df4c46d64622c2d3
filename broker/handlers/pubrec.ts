import type { IPubrecPacket } from 'mqtt-packet';
import type { Connection } from '../connection.js';
import { RC } from '../reason-codes.js';

/** PUBREC for an outbound QoS 2 message is answered with PUBREL [MQTT-4.3.3-4]. */
export function handlePubrec(conn: Connection, packet: IPubrecPacket): void {
  const id = packet.messageId!;
  const session = conn.session;
  const outcome = session?.onPubrec(id, packet.reasonCode ?? 0) ?? 'unknown';
  if (outcome === 'unknown') {
    // Still answered so the client's state machine can finish; 5.0 says the id was not found.
    conn.sendAck('pubrel', id, RC.PACKET_ID_NOT_FOUND);
  } else if (outcome === 'pubrel') {
    // PUBREL follows the store of the 'pubrel' state: once it is sent the PUBLISH must never be
    // re-sent [MQTT-4.3.3-6], which a restart that found the message still 'inflight' would do.
    if (session!.persistent)
      conn.broker.persistence.whenDurable((err) => {
        try {
          if (!err) conn.sendPubrel(id);
        } catch (e) {
          conn.fail(e, 'PUBREL after store');
        }
      });
    else conn.sendPubrel(id);
  }
}
