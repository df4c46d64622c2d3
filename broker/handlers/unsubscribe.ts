import type { IUnsubscribePacket } from 'mqtt-packet';
import type { Connection } from '../connection.js';
import { RC } from '../reason-codes.js';
import { wellFormed } from '../topic-tree.js';

/** UNSUBSCRIBE removes each filter that matches exactly [MQTT-3.10.4-1] and is answered by UNSUBACK. */
export function handleUnsubscribe(conn: Connection, packet: IUnsubscribePacket): void {
  const broker = conn.broker;
  const session = conn.session!;
  // Same rules as SUBSCRIBE: at least one filter [MQTT-3.10.3-2], a non-zero Packet Identifier
  // [MQTT-2.3.1-1], well-formed UTF-8 [MQTT-1.5.4-1] [MQTT-1.5.4-2].
  if (packet.unsubscriptions.length === 0)
    return conn.close(RC.PROTOCOL_ERROR, 'UNSUBSCRIBE without filters');
  if (packet.messageId === 0) return conn.close(RC.PROTOCOL_ERROR, 'UNSUBSCRIBE with packet identifier 0');
  if (!packet.unsubscriptions.every(wellFormed)) {
    return conn.close(RC.MALFORMED_PACKET, 'topic filter is not well-formed UTF-8');
  }
  const codes: number[] = [];
  for (const filter of packet.unsubscriptions) {
    // A filter beyond the topic limits was never granted: nothing to look up (5.0: 0x8F).
    if (!broker.limits.filter(filter)) codes.push(RC.TOPIC_FILTER_INVALID);
    else if (session.removeSubscription(filter)) {
      broker.router.remove(session, filter);
      if (session.persistent) broker.persistence.deleteSubscription(session.clientId, filter);
      codes.push(RC.SUCCESS);
    } else codes.push(RC.NO_SUBSCRIPTION_EXISTED);
  }
  broker.persistence.whenDurable(() => {
    try {
      conn.send({
        cmd: 'unsuback',
        messageId: packet.messageId,
        granted: conn.protocolVersion === 5 ? codes : [],
      });
    } catch (err) {
      conn.fail(err, 'UNSUBACK after store');
    }
  });
}
