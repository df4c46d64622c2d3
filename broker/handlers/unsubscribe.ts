import type { IUnsubscribePacket } from 'mqtt-packet';
import type { Connection } from '../connection.js';
import { RC } from '../reason-codes.js';

/** UNSUBSCRIBE removes each filter that matches exactly [MQTT-3.10.4-1] and is answered by UNSUBACK. */
export function handleUnsubscribe(conn: Connection, packet: IUnsubscribePacket): void {
  const broker = conn.broker;
  const session = conn.session!;
  const codes: number[] = [];
  for (const filter of packet.unsubscriptions) {
    if (session.subscriptions.delete(filter)) {
      broker.router.remove(session, filter);
      if (session.persistent) broker.persistence.deleteSubscription(session.clientId, filter);
      codes.push(RC.SUCCESS);
    } else codes.push(RC.NO_SUBSCRIPTION_EXISTED);
  }
  broker.persistence.whenDurable(() => {
    if (conn.protocolVersion === 5)
      conn.send({ cmd: 'unsuback', messageId: packet.messageId, granted: codes });
    else conn.send({ cmd: 'unsuback', messageId: packet.messageId, granted: [] });
  });
}
