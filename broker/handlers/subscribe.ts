import type { ISubscribePacket } from 'mqtt-packet';
import type { QoS, SubscriptionRecord } from '../../persistence/types.js';
import type { Connection } from '../connection.js';
import { ALLOW } from '../hooks.js';
import { RC } from '../reason-codes.js';
import { parseShared } from '../router.js';
import { validFilter, wellFormed } from '../topic-tree.js';

/**
 * SUBSCRIBE: each filter is validated and granted (or refused) on its own; a subscription to an
 * existing filter replaces it [MQTT-3.8.4-3]; SUBACK answers with one code per filter in order
 * [MQTT-3.8.4-6]; matching retained messages follow it.
 */
export function handleSubscribe(conn: Connection, packet: ISubscribePacket): void {
  const broker = conn.broker;
  const v5 = conn.protocolVersion === 5;
  // At least one filter [MQTT-3.8.3-3] (5.0: [MQTT-3.8.3-2]) and a non-zero Packet Identifier
  // [MQTT-2.3.1-1] (5.0: [MQTT-2.2.1-3]); a filter with ill-formed UTF-8 (U+FFFD once parsed) or
  // U+0000 makes the packet malformed [MQTT-1.5.4-1] [MQTT-1.5.4-2].
  if (packet.subscriptions.length === 0) return conn.close(RC.PROTOCOL_ERROR, 'SUBSCRIBE without filters');
  if (packet.messageId === 0) return conn.close(RC.PROTOCOL_ERROR, 'SUBSCRIBE with packet identifier 0');
  if (packet.subscriptions.some((s) => !wellFormed(s.topic))) {
    return conn.close(RC.MALFORMED_PACKET, 'topic filter is not well-formed UTF-8');
  }
  const subscriptionId = packet.properties?.subscriptionIdentifier;
  if (subscriptionId === 0) return conn.close(RC.PROTOCOL_ERROR, 'subscription identifier 0');
  // First every filter's own checks, then authorization (perhaps asynchronous) of those that pass.
  const v5Invalid = v5 ? RC.TOPIC_FILTER_INVALID : 0x80;
  const checked: (number | null)[] = [];
  for (const s of packet.subscriptions) {
    // Beyond --max-topic-levels / --max-topic-length: refused before anything splits it.
    if (!broker.limits.filter(s.topic)) {
      checked.push(v5Invalid);
      continue;
    }
    const shared = parseShared(s.topic);
    const filter = shared ? shared.filter : s.topic;
    // A share name is non-empty and free of wildcards and `/` [MQTT-4.8.2-1] [MQTT-4.8.2-2].
    const shareOk = !shared || (shared.group.length > 0 && !/[+#/]/.test(shared.group));
    if (!validFilter(filter) || !shareOk) {
      checked.push(v5Invalid);
      continue;
    }
    // No Local on a shared subscription is a protocol error [MQTT-3.8.3-4].
    if (shared && v5 && s.nl) return conn.close(RC.PROTOCOL_ERROR, 'No Local on a shared subscription');
    checked.push(null);
  }
  const plugins = broker.plugins;
  if (plugins.authorizeSubscribe.length === 0) return subscribe(conn, packet, checked);
  let pending: Promise<unknown>[] | undefined;
  const refused = v5 ? RC.NOT_AUTHORIZED : 0x80;
  packet.subscriptions.forEach((s, i) => {
    if (checked[i] !== null) return;
    const outcome = plugins.decide('authorizeSubscribe', conn.clientInfo, s.topic);
    if (typeof outcome === 'number') {
      if (outcome !== ALLOW) checked[i] = refused;
      return;
    }
    pending ??= [];
    pending.push(
      outcome.then((o) => {
        if (o !== ALLOW) checked[i] = refused;
      }),
    );
  });
  if (!pending) return subscribe(conn, packet, checked);
  // Later packets of this connection wait, so SUBACKs and PUBLISH acks keep their order.
  conn.hold();
  void Promise.all(pending).then(() => {
    if (conn.closing) return;
    try {
      subscribe(conn, packet, checked);
    } catch (err) {
      return conn.fail(err, 'subscribe handler');
    }
    conn.release();
  });
}

/** Grants the filters not refused already (`checked[i]` holds a refusal code, or null). */
function subscribe(conn: Connection, packet: ISubscribePacket, checked: (number | null)[]): void {
  const broker = conn.broker;
  const session = conn.session!;
  const v5 = conn.protocolVersion === 5;
  const subscriptionId = packet.properties?.subscriptionIdentifier;
  const codes: number[] = [];
  const retainedFor: { rec: SubscriptionRecord; isNew: boolean }[] = [];
  let joinedGroup = false;

  for (let i = 0; i < packet.subscriptions.length; i++) {
    const s = packet.subscriptions[i];
    const code = checked[i];
    if (code !== null) {
      codes.push(code);
      continue;
    }
    const shared = parseShared(s.topic);
    const isNew = !session.subscriptions.has(s.topic);
    if (isNew && session.subscriptions.size >= broker.options.maxSubscriptionsPerClient) {
      codes.push(v5 ? RC.QUOTA_EXCEEDED : 0x80);
      continue;
    }
    // A new shared group within --max-shared-groups and --max-shared-groups-per-client.
    const creates = shared !== null && broker.shares.find(shared.group, shared.filter) === undefined;
    if (creates && !broker.shares.mayCreate(conn.clientId)) {
      broker.clientLimits.hit('sharedGroups', {
        clientId: conn.clientId,
        filter: s.topic,
        groups: broker.shares.size,
      });
      codes.push(v5 ? RC.QUOTA_EXCEEDED : 0x80);
      continue;
    }
    const qos = Math.min(s.qos, 2) as QoS;
    const rec: SubscriptionRecord = { filter: s.topic, qos };
    if (v5) {
      if (s.nl) rec.noLocal = true;
      if (s.rap) rec.retainAsPublished = true;
      if (s.rh) rec.retainHandling = s.rh as 1 | 2;
      if (subscriptionId !== undefined) rec.subscriptionId = subscriptionId;
    }
    session.addSubscription(rec);
    broker.router.add(session, rec);
    if (creates) broker.shares.createdBy(shared.group, shared.filter, conn.clientId);
    if (session.persistent) broker.persistence.putSubscription(session.clientId, rec);
    codes.push(qos);
    // Retained messages are not sent for a shared subscription (5.0 section 4.8.2; section 3.3.1.3
    // sends them to a new non-shared subscription only).
    if (!shared) retainedFor.push({ rec, isNew });
    else joinedGroup = true;
    broker.emit('subscribe', conn.clientId, rec);
  }

  broker.persistence.whenDurable(() => {
    try {
      conn.send({ cmd: 'suback', messageId: packet.messageId, granted: codes });
      for (const { rec, isNew } of retainedFor) {
        // Retain Handling: 0 always, 1 only for a new subscription, 2 never [MQTT-3.3.1-9] [MQTT-3.3.1-10] [MQTT-3.3.1-11].
        const rh = rec.retainHandling ?? 0;
        if (rh === 2 || (rh === 1 && !isNew)) continue;
        const ids = rec.subscriptionId === undefined ? undefined : [rec.subscriptionId];
        for (const msg of broker.retained.match(rec.filter)) {
          // Sent because of a new subscription: RETAIN stays set [MQTT-3.3.1-8].
          session.deliver(msg, Math.min(msg.qos, rec.qos) as QoS, true, ids);
        }
      }
      // A new member: its groups may hand it messages that were waiting for one.
      if (joinedGroup) broker.shares.roomFor(session);
    } catch (err) {
      conn.fail(err, 'SUBACK after store');
    }
  });
}
