import { isUtf8 } from 'node:buffer';
import type { IPublishPacket } from 'mqtt-packet';
import type { MessageProperties } from '../../persistence/types.js';
import { chargePublish } from '../client-limits.js';
import type { Connection } from '../connection.js';
import { ALLOW } from '../hooks.js';
import { createMessage } from '../message.js';
import { RC } from '../reason-codes.js';
import { DLQ_PREFIX } from '../shared/groups.js';
import { clipTopic, validTopic, wellFormed } from '../topic-tree.js';

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
  const counters = broker.counters;
  counters.publishReceived[qos]++;
  counters.publishBytesReceived[qos] += packet.length ?? 0;
  // Over --max-publish-rate / --max-publish-bytes-rate this one is still handled, then reading pauses.
  chargePublish(conn, packet.length ?? 0);

  // DUP must be 0 at QoS 0 [MQTT-3.3.1-2]; QoS 1/2 need a non-zero Packet Identifier
  // [MQTT-2.3.1-1] (5.0: [MQTT-2.2.1-3]).
  if (qos === 0 && packet.dup) return conn.close(RC.MALFORMED_PACKET, 'DUP set on a QoS 0 PUBLISH');
  if (qos > 0 && id === 0) return conn.close(RC.PROTOCOL_ERROR, 'PUBLISH with packet identifier 0');

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

  // Ill-formed UTF-8 (which the parser turns into U+FFFD) or U+0000 makes the packet malformed
  // [MQTT-1.5.4-1] [MQTT-1.5.4-2]; an empty topic without a Topic Alias is a Protocol Error (5.0
  // section 3.3.2.1, 3.1.1 [MQTT-4.7.3-1]); topic names carry no wildcards [MQTT-3.3.2-2].
  if (!wellFormed(topic)) return conn.close(RC.MALFORMED_PACKET, 'topic name is not well-formed UTF-8');
  if (topic === '') return conn.close(RC.PROTOCOL_ERROR, 'empty topic name without topic alias');
  if (!validTopic(topic))
    return conn.close(RC.TOPIC_NAME_INVALID, `invalid topic name "${clipTopic(topic)}"`);
  // Beyond --max-topic-levels / --max-topic-length (3.1.1 has no code: the connection is closed).
  if (!broker.limits.topic(topic)) {
    return conn.close(RC.TOPIC_NAME_INVALID, 'topic name beyond the topic limits');
  }

  if (qos > 0 && conn.inboundUnacked >= broker.options.receiveMaximum) {
    // More unacknowledged QoS 1/2 publishes than our Receive Maximum [MQTT-3.3.4-9].
    return conn.close(RC.RECEIVE_MAXIMUM_EXCEEDED, 'receive maximum exceeded');
  }

  const session = conn.session!;
  if (qos === 2 && session.incoming.has(id)) {
    // A re-sent QoS 2 PUBLISH before PUBREL is acknowledged again, not delivered again [MQTT-4.3.3-10].
    conn.ackPublish('pubrec', id, RC.SUCCESS);
    return;
  }

  const payload = packet.payload as Buffer;
  if (v5 && props?.payloadFormatIndicator && !isUtf8(payload)) {
    return accept(conn, packet, topic, RC.PAYLOAD_FORMAT_INVALID);
  }
  // The broker's own topics: `$SYS/…` and `$DLQ/…` carry what the broker says, never a client's
  // message (5.0 PUBACK/PUBREC 0x87; 3.1.1 acknowledged and dropped [MQTT-3.3.5-2]).
  if (topic.charCodeAt(0) === 36 && (topic.startsWith('$SYS/') || topic.startsWith(DLQ_PREFIX))) {
    return accept(conn, packet, topic, RC.NOT_AUTHORIZED);
  }
  const plugins = broker.plugins;
  if (plugins.authorizePublish.length > 0) {
    const outcome = plugins.decide('authorizePublish', conn.clientInfo, topic);
    if (typeof outcome !== 'number') {
      // An asynchronous answer: this connection's later packets wait behind it, so its
      // acknowledgements stay in PUBLISH order [MQTT-4.6.0-2] (and its messages in order).
      conn.hold();
      void outcome.then((o) => {
        if (conn.closing) return;
        try {
          accept(conn, packet, topic, o === ALLOW ? RC.SUCCESS : RC.NOT_AUTHORIZED);
        } catch (err) {
          return conn.fail(err, 'publish handler');
        }
        conn.release();
      });
      return;
    }
    // 3.1.1 cannot say no: the message is acknowledged and dropped [MQTT-3.3.5-2].
    if (outcome !== ALLOW) return accept(conn, packet, topic, RC.NOT_AUTHORIZED);
  }
  accept(conn, packet, topic, RC.SUCCESS);
}

/** The PUBLISH once authorized (or refused with reasonCode): stored, routed, acknowledged. */
function accept(conn: Connection, packet: IPublishPacket, topic: string, refused: number): void {
  const broker = conn.broker;
  const v5 = conn.protocolVersion === 5;
  const qos = packet.qos;
  const id = packet.messageId ?? 0;
  const props = packet.properties;
  const session = conn.session!;
  const payload = packet.payload as Buffer;
  let reasonCode: number = refused;
  let retain = packet.retain;
  if (reasonCode !== RC.SUCCESS) {
    // refused before: payload format, or not authorized
  } else if (retain && !broker.retained.admits(topic, payload.length)) {
    // Over --max-retained / --max-retained-bytes: a 5.0 QoS 1/2 publisher is told 0x97 Quota
    // exceeded and the message goes nowhere (a failure code means not accepted: routing it anyway
    // would deliver the publisher's retry twice). Others cannot be told: routed, not retained.
    retain = false;
    broker.retainRefused(topic, conn.clientId);
    if (v5 && qos > 0) reasonCode = RC.QUOTA_EXCEEDED;
  }

  // A refused QoS 2 message ends at PUBREC: no PUBREL follows, so nothing is remembered. An
  // accepted one's packet id is stored before routing, in the same write as the copies routing
  // stores: after a crash both are on disk (a re-sent PUBLISH is recognised) or neither is.
  const remember = qos === 2 && reasonCode < 0x80;
  if (qos === 1 || remember) conn.inboundUnacked++;
  if (remember) {
    session.rememberIncoming(id);
    if (session.persistent) broker.persistence.addIncoming(session.clientId, id);
  }

  if (reasonCode !== RC.SUCCESS) {
    // refused above: acknowledged with its reason code, not routed
  } else if (
    v5 &&
    props?.userProperties !== undefined &&
    broker.dedup.repeated(conn.clientId, topic, props.userProperties)
  ) {
    // This client used its idempotency key on this topic within the dedup window: acknowledged
    // as usual, not delivered (or retained) again.
  } else {
    const retained = retain || qos > 0;
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
    // Under `reject` (some session's policy), a 5.0 publisher is told when a queue is full instead of being held back.
    const reject = v5 && qos > 0 && broker.overflowPolicies.anyReject;
    const reached = broker.router.route(msg, session, reject);
    if (reached < 0) {
      // Routed to no one, not retained: the publisher may retry later [MQTT-3.3.4-7 allows 0x97].
      reasonCode = RC.QUOTA_EXCEEDED;
      broker.publishesRejected++;
      if (remember) {
        // A refused QoS 2 message ends at PUBREC: nothing is remembered.
        session.forgetIncoming(id);
        if (session.persistent) broker.persistence.deleteIncoming(session.clientId, id);
        conn.inboundUnacked--;
      }
    } else {
      if (retain && !broker.retained.set(msg)) broker.retainRefused(topic, conn.clientId);
      if (reached === 0 && v5) reasonCode = RC.NO_MATCHING_SUBSCRIBERS;
      broker.emit('publish', msg, conn.clientId);
      // A queue took it beyond its bound: this publisher is not read from, and its acknowledgements
      // wait, until there is room (broker/flow.ts).
      if (broker.flow.overflowed.length > 0) broker.flow.blockOn(conn);
    }
  }

  if (qos === 0) return;
  const cmd = qos === 1 ? ('puback' as const) : ('pubrec' as const);
  const code = v5 ? reasonCode : RC.SUCCESS;
  // Acknowledged only once every stored copy is written.
  broker.persistence.whenDurable((err) => {
    try {
      if (err) {
        broker.log.error({ err, clientId: conn.clientId }, 'store failed; not acknowledging');
        return conn.close(RC.UNSPECIFIED_ERROR, 'store failed');
      }
      if (qos === 1) conn.inboundUnacked--;
      conn.ackPublish(cmd, id, code);
    } catch (e) {
      conn.fail(e, `${cmd} after store`);
    }
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
