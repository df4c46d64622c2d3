import { isUtf8 } from 'node:buffer';
import type { IPublishPacket } from 'mqtt-packet';
import type { MessageProperties } from '../../persistence/types.js';
import type { Connection } from '../connection.js';
import { createMessage } from '../message.js';
import { RC } from '../reason-codes.js';
import { validTopic } from '../topic-tree.js';

/**
 * An inbound PUBLISH: resolve its topic alias, validate, route once, then acknowledge after the
 * routed copies are stored (QoS 1 PUBACK, QoS 2 PUBREC).
 */
export function handlePublish(conn: Connection, packet: IPublishPacket): void {
  const broker = conn.broker;
  const v5 = conn.protocolVersion === 5;
  const qos = packet.qos;
  const id = packet.messageId ?? 0;
  let topic = packet.topic;
  const props = packet.properties;

  if (v5 && props) {
    const alias = props.topicAlias;
    if (alias !== undefined) {
      // Aliases are 1..our Topic Alias Maximum [MQTT-3.3.2-8] [MQTT-3.3.2-9].
      if (alias === 0 || alias > broker.options.topicAliasMaximum) {
        return conn.close(RC.TOPIC_ALIAS_INVALID, 'topic alias out of range');
      }
      if (topic === '') {
        const known = conn.inAliases?.get(alias);
        if (known === undefined) return conn.close(RC.PROTOCOL_ERROR, 'unknown topic alias');
        topic = known;
      } else {
        conn.inAliases ??= new Map();
        conn.inAliases.set(alias, topic);
      }
    }
    // A client must not send a Subscription Identifier in PUBLISH [MQTT-3.3.4-6].
    if (props.subscriptionIdentifier !== undefined) {
      return conn.close(RC.PROTOCOL_ERROR, 'subscription identifier in PUBLISH');
    }
  }

  // Topic names carry no wildcards and are valid UTF-8 [MQTT-3.3.2-2] [MQTT-1.5.4-1]; the parser
  // turns invalid UTF-8 into U+FFFD, which is refused here.
  if (!validTopic(topic) || topic.includes('\uFFFD')) {
    return conn.close(v5 ? RC.TOPIC_NAME_INVALID : undefined, `invalid topic name "${topic}"`);
  }

  if (qos > 0 && conn.inboundUnacked >= broker.options.receiveMaximum) {
    // More unacknowledged QoS 1/2 publishes than our Receive Maximum [MQTT-3.3.4-9].
    return conn.close(RC.RECEIVE_MAXIMUM_EXCEEDED, 'receive maximum exceeded');
  }

  const session = conn.session!;
  if (qos === 2 && session.incoming.has(id)) {
    // A re-sent QoS 2 PUBLISH before PUBREL is acknowledged again, not delivered again [MQTT-4.3.3-10].
    conn.send({ cmd: 'pubrec', messageId: id });
    return;
  }

  const payload = packet.payload as Buffer;
  let reasonCode: number = RC.SUCCESS;
  if (v5 && props?.payloadFormatIndicator && !isUtf8(payload)) {
    reasonCode = RC.PAYLOAD_FORMAT_INVALID;
  } else if (broker.hooks.authorizePublish && !broker.hooks.authorizePublish(conn.clientInfo, topic)) {
    // 3.1.1 cannot say no: the message is acknowledged and dropped [MQTT-3.3.5-2].
    reasonCode = RC.NOT_AUTHORIZED;
  } else {
    const retained = packet.retain || qos > 0;
    // Keep a private copy of bodies that outlive this tick so they don't pin the socket's chunk.
    const body =
      retained && payload.byteLength !== payload.buffer.byteLength ? Buffer.from(payload) : payload;
    const msg = createMessage(
      topic,
      body,
      qos,
      packet.retain,
      v5 && props ? messageProperties(props) : undefined,
      v5 ? props?.messageExpiryInterval : undefined,
    );
    if (packet.retain) broker.retained.set(msg);
    const reached = broker.router.route(msg, session);
    if (reached === 0 && v5) reasonCode = RC.NO_MATCHING_SUBSCRIBERS;
    broker.emit('publish', msg, conn.clientId);
  }

  if (qos === 0) return;
  // A refused QoS 2 message ends at PUBREC: no PUBREL follows, so nothing is remembered.
  const remember = qos === 2 && reasonCode < 0x80;
  if (qos === 1 || remember) conn.inboundUnacked++;
  if (remember) {
    session.incoming.add(id);
    if (session.persistent) broker.persistence.addIncoming(session.clientId, id);
  }
  const cmd = qos === 1 ? ('puback' as const) : ('pubrec' as const);
  const ack = v5 && reasonCode !== RC.SUCCESS ? { cmd, messageId: id, reasonCode } : { cmd, messageId: id };
  // Acknowledged only once every stored copy is written.
  broker.persistence.whenDurable((err) => {
    if (err) {
      broker.log.error({ err, clientId: conn.clientId }, 'store failed; not acknowledging');
      return conn.close(RC.UNSPECIFIED_ERROR, 'store failed');
    }
    if (qos === 1) conn.inboundUnacked--;
    conn.send(ack);
  });
}

function messageProperties(p: NonNullable<IPublishPacket['properties']>): MessageProperties | undefined {
  if (
    p.payloadFormatIndicator === undefined &&
    p.contentType === undefined &&
    p.responseTopic === undefined &&
    p.correlationData === undefined &&
    p.userProperties === undefined
  ) {
    return undefined;
  }
  const out: MessageProperties = {};
  if (p.payloadFormatIndicator !== undefined) out.payloadFormatIndicator = p.payloadFormatIndicator;
  if (p.contentType !== undefined) out.contentType = p.contentType;
  if (p.responseTopic !== undefined) out.responseTopic = p.responseTopic;
  if (p.correlationData !== undefined) out.correlationData = Buffer.from(p.correlationData);
  if (p.userProperties !== undefined) out.userProperties = p.userProperties;
  return out;
}
