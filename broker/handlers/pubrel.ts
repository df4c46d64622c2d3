import type { IPubrelPacket } from 'mqtt-packet';
import type { Connection } from '../connection.js';
import { RC } from '../reason-codes.js';

/**
 * PUBREL releases an inbound QoS 2 packet id: it is forgotten and PUBCOMP sent [MQTT-4.3.3-11].
 * The message itself was routed when first received, so nothing is delivered here.
 *
 * An unknown id gets PUBCOMP 0x92 (5.0), except on a connection that resumed its session: there a
 * client re-sends every PUBREL still owed [MQTT-4.4.0-1], also one whose PUBCOMP was lost with the
 * previous connection (or with a broker that stopped after storing the release). That release is
 * complete, and 0x92 would make the publisher report (and perhaps re-send) a message delivered
 * exactly once.
 */
export function handlePubrel(conn: Connection, packet: IPubrelPacket): void {
  const session = conn.session!;
  const id = packet.messageId!;
  const known = session.forgetIncoming(id);
  if (known) {
    if (session.persistent) conn.broker.persistence.deleteIncoming(session.clientId, id);
    if (conn.inboundUnacked > 0) conn.inboundUnacked--;
  }
  const code =
    conn.protocolVersion === 5 && !known && session.resumedBy !== conn ? RC.PACKET_ID_NOT_FOUND : RC.SUCCESS;
  // PUBCOMP follows the store of the release, so a crash cannot make the id reappear after it.
  if (known && session.persistent)
    conn.broker.persistence.whenDurable(() => {
      try {
        conn.sendAck('pubcomp', id, code);
      } catch (err) {
        conn.fail(err, 'PUBCOMP after store');
      }
    });
  else conn.sendAck('pubcomp', id, code);
}
