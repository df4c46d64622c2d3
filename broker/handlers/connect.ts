import { randomBytes } from 'node:crypto';
import type { IConnackPacket, IConnectPacket } from 'mqtt-packet';
import type { Connection } from '../connection.js';
import { authenticateAtConnect } from '../enhanced-auth.js';
import { ALLOW, DENY, FAILED, type Outcome, UNDECIDED } from '../hooks.js';
import { createMessage } from '../message.js';
import { CONNACK_V4, RC } from '../reason-codes.js';
import { DLQ_PREFIX } from '../shared/groups.js';
import { validTopic } from '../topic-tree.js';
import { certificateIdentity } from '../transports/tls.js';

type ConnackProps = NonNullable<IConnackPacket['properties']>;

/** Session Expiry Interval meaning "never" (5.0), and what a 3.1.1 clean-session-0 session gets. */
export const NEVER_EXPIRES = 0xffffffff;

/**
 * CONNECT: checks the protocol, the client id and credentials, takes over or starts the session,
 * answers CONNACK and resends what the resumed session still owes.
 */
export async function handleConnect(conn: Connection, packet: IConnectPacket): Promise<void> {
  const broker = conn.broker;
  const opts = broker.options;
  const version = packet.protocolVersion ?? 4;
  conn.protocolVersion = version;
  conn.hold();

  const refuse = (v4Code: number, v5Code: number, why: string) => {
    if (
      v5Code === RC.BAD_USERNAME_OR_PASSWORD ||
      v5Code === RC.NOT_AUTHORIZED ||
      v5Code === RC.BAD_AUTHENTICATION_METHOD
    )
      broker.counters.authFailures++;
    if (version === 5) conn.send({ cmd: 'connack', reasonCode: v5Code, sessionPresent: false });
    else conn.send({ cmd: 'connack', returnCode: v4Code, sessionPresent: false });
    // A refused CONNECT is followed by closing the connection [MQTT-3.2.2-5].
    conn.close(undefined, why, false);
  };

  // First, before any other work: CONNECTs per source address (a token bucket each).
  const limits = broker.clientLimits;
  const now = Date.now();
  const address = conn.info.remoteAddress;
  if (address !== undefined && !limits.addresses.take(address, now)) {
    limits.hit('connectRate', { address });
    return refuse(CONNACK_V4.SERVER_UNAVAILABLE, RC.CONNECTION_RATE_EXCEEDED, 'connect rate exceeded');
  }

  // Level 3 goes with "MQIsdp", 4 and 5 with "MQTT" [MQTT-3.1.2-1] [MQTT-3.1.2-2].
  if ((packet.protocolId === 'MQIsdp') !== (version === 3)) {
    return refuse(
      CONNACK_V4.UNACCEPTABLE_PROTOCOL_VERSION,
      RC.UNSUPPORTED_PROTOCOL_VERSION,
      'protocol name/level mismatch',
    );
  }

  // 3.1.1: no Password Flag without the User Name Flag [MQTT-3.1.2-22]; a CONNECT that does not
  // conform is closed without CONNACK [MQTT-3.1.4-1]. 5.0 allows a password alone.
  if (version !== 5 && packet.password !== undefined && packet.username === undefined) {
    return conn.close(undefined, 'password without user name', false);
  }

  const props = packet.properties;
  const authMethod = version === 5 ? props?.authenticationMethod : undefined;
  if (authMethod !== undefined && !broker.plugins.authMethods.has(authMethod)) {
    // No plugin registered this enhanced authentication method: refuse and close [MQTT-4.12.0-1].
    return refuse(0, RC.BAD_AUTHENTICATION_METHOD, 'unsupported authentication method');
  }
  const clean = packet.clean !== false;
  let clientId = packet.clientId ?? '';
  let assigned: string | undefined;
  if (clientId === '') {
    // An empty id needs a clean session in 3.1.1 [MQTT-3.1.3-8]; 5.0 gets one assigned [MQTT-3.2.2-16].
    if (version === 3 || (version === 4 && !clean)) {
      return refuse(CONNACK_V4.IDENTIFIER_REJECTED, RC.CLIENT_IDENTIFIER_NOT_VALID, 'empty client id');
    }
    clientId = `heron-${randomBytes(8).toString('hex')}`;
    if (version === 5) assigned = clientId;
  }
  if (opts.maxClientIdLength > 0 && Buffer.byteLength(clientId) > opts.maxClientIdLength) {
    limits.hit('clientIdLength', { address, length: Buffer.byteLength(clientId) });
    return refuse(CONNACK_V4.IDENTIFIER_REJECTED, RC.CLIENT_IDENTIFIER_NOT_VALID, 'client id too long');
  }
  if (limits.flapping.isBanned(clientId, now)) {
    limits.hit('flapping', { clientId, address });
    return refuse(CONNACK_V4.NOT_AUTHORIZED, RC.BANNED, 'client id banned for flapping');
  }
  // At --max-connections only a client taking over its own connected session gets in.
  if (
    opts.maxConnections > 0 &&
    limits.admitted >= opts.maxConnections &&
    !broker.sessions.get(clientId)?.conn
  ) {
    limits.hit('maxConnections', { clientId, address, connections: limits.admitted });
    return refuse(CONNACK_V4.SERVER_UNAVAILABLE, RC.QUOTA_EXCEEDED, 'too many connections');
  }
  conn.admitted = true;
  limits.admitted++;
  if (version === 5 && (props?.receiveMaximum === 0 || props?.maximumPacketSize === 0)) {
    // Zero is not a valid Receive Maximum or Maximum Packet Size.
    return conn.close(RC.PROTOCOL_ERROR, 'zero receive maximum or maximum packet size');
  }

  // Keep-alive: bounded by --max-keepalive; 5.0 is told the value, 3.1.1 asking for more is refused.
  let keepalive = packet.keepalive ?? 0;
  let serverKeepAlive: number | undefined;
  if (opts.maxKeepalive > 0 && (keepalive === 0 || keepalive > opts.maxKeepalive)) {
    if (version !== 5) {
      return refuse(CONNACK_V4.IDENTIFIER_REJECTED, RC.UNSPECIFIED_ERROR, 'keep-alive above maximum');
    }
    keepalive = opts.maxKeepalive;
    serverKeepAlive = keepalive;
  }

  // The will's topic must be a valid topic name within the topic limits (its UTF-8 was checked
  // before, see validate.ts): 5.0 CONNACK 0x90 (Topic Name invalid); 3.1.1 has no return code for
  // it, so the connection is closed.
  const w = packet.will;
  if (w && (!validTopic(w.topic) || !broker.limits.topic(w.topic))) {
    return version === 5
      ? refuse(0, RC.TOPIC_NAME_INVALID, 'invalid will topic')
      : conn.close(undefined, 'invalid will topic', false);
  }

  conn.clientId = clientId;
  conn.username = packet.username;
  // --tls-identity-as-username, as Mosquitto's use_identity_as_username: on a TLS listener the
  // verified certificate's CN is the user name and the certificate is the credential (the
  // authenticate chain is not asked); no verified certificate → bad user name or password.
  const identity = opts.tlsIdentityAsUsername ? tlsIdentity(conn) : undefined;
  if (identity === null)
    return refuse(CONNACK_V4.BAD_USERNAME_OR_PASSWORD, RC.BAD_USERNAME_OR_PASSWORD, 'no client certificate');
  if (identity !== undefined) conn.username = identity;
  const anonymous = conn.username === undefined;
  let outcome: Outcome = identity !== undefined ? ALLOW : UNDECIDED;
  let authData: Buffer | undefined;
  if (authMethod !== undefined) {
    // Enhanced authentication replaces the authenticate chain for this client.
    const done = await authenticateAtConnect(conn, authMethod, props?.authenticationData);
    if (done === null || conn.closing) return;
    if (done.result === 'broken') return refuse(0, RC.UNSPECIFIED_ERROR, 'authentication method failed');
    // Rejected: CONNACK 0x80 or above, then closed [MQTT-4.12.0-4].
    if (done.result !== 'success')
      return refuse(
        0,
        done.result === 'failure' ? (done.reasonCode ?? RC.NOT_AUTHORIZED) : RC.NOT_AUTHORIZED,
        'enhanced authentication failed',
      );
    if (identity === undefined && done.username !== undefined) conn.username = done.username;
    conn.authMethod = authMethod;
    authData = done.data;
    outcome = ALLOW;
  } else if (identity === undefined && broker.plugins.authenticate.length > 0) {
    outcome = await broker.plugins.decide('authenticate', conn.clientInfo, packet.username, packet.password);
    if (conn.closing) return;
    if (outcome === FAILED) {
      // A failing hook (logged with its plugin) refuses the client, as a server error rather
      // than bad credentials.
      broker.log.error({ clientId }, 'authenticate hook failed');
      return refuse(CONNACK_V4.SERVER_UNAVAILABLE, RC.UNSPECIFIED_ERROR, 'authenticate hook failed');
    }
  }
  // No plugin decided: a client without a user name is let in only with allowAnonymous (on by
  // default only while no authentication is configured); refused, that is anonymous access
  // refused: 0x87 / 0x05. One with a user name is let in only while no authenticate hook and no
  // authentication method is registered: configured authentication that vouches for no one of
  // that name (a user missing from the password file, as Mosquitto does) refuses it as bad
  // credentials: 0x86 / 0x04.
  // With an enhanced-authentication method registered, a client that uses none gets in only when
  // a hook allows it (or allowAnonymous is set true): registering one configures authentication.
  // A listener's own allowAnonymous (BrokerOptions.listeners) stands in for the broker's.
  const listenerAnonymous = conn.info.listener?.allowAnonymous;
  if (
    outcome === UNDECIDED &&
    broker.plugins.authMethods.size > 0 &&
    (listenerAnonymous ?? opts.allowAnonymous) !== true
  )
    return refuse(CONNACK_V4.NOT_AUTHORIZED, RC.NOT_AUTHORIZED, 'enhanced authentication required');
  if (
    anonymous &&
    (outcome === DENY || (outcome === UNDECIDED && !(listenerAnonymous ?? broker.anonymousAllowed)))
  )
    return refuse(CONNACK_V4.NOT_AUTHORIZED, RC.NOT_AUTHORIZED, 'anonymous access refused');
  const authConfigured = broker.plugins.authenticate.length > 0 || broker.plugins.authMethods.size > 0;
  if (outcome === DENY || (outcome === UNDECIDED && !anonymous && authConfigured))
    return refuse(CONNACK_V4.BAD_USERNAME_OR_PASSWORD, RC.BAD_USERNAME_OR_PASSWORD, 'authentication failed');
  // Counted once authenticated, so that nobody can get another client's id banned.
  if (limits.flapping.connected(clientId, Date.now())) {
    limits.hit('flapping', { clientId, address });
    return refuse(CONNACK_V4.NOT_AUTHORIZED, RC.BANNED, 'client id banned for flapping');
  }
  // The will is published as this client, so its topic needs publish permission now, not when the
  // connection ends: denied → 5.0 CONNACK 0x87, 3.1.1 0x05. The broker's own topics never.
  if (w && (w.topic.startsWith('$SYS/') || w.topic.startsWith(DLQ_PREFIX)))
    return refuse(CONNACK_V4.NOT_AUTHORIZED, RC.NOT_AUTHORIZED, 'will topic is the broker’s');
  if (w && broker.plugins.authorizePublish.length > 0) {
    const verdict = await broker.plugins.decide('authorizePublish', conn.clientInfo, w.topic);
    if (conn.closing) return;
    if (verdict !== ALLOW)
      return refuse(CONNACK_V4.NOT_AUTHORIZED, RC.NOT_AUTHORIZED, 'will topic not authorized');
  }

  if (version === 5) {
    conn.outboundWindow = Math.min(opts.maxInflight, props?.receiveMaximum ?? 65535);
    if (props?.maximumPacketSize) conn.maxOutboundPacket = props.maximumPacketSize;
    conn.outAliasMax = Math.min(opts.outboundTopicAliases, props?.topicAliasMaximum ?? 0);
  }
  if (w) {
    const wp = w.properties;
    const payload = typeof w.payload === 'string' ? Buffer.from(w.payload) : Buffer.from(w.payload);
    const message = createMessage(
      w.topic,
      payload,
      w.qos ?? 0,
      w.retain === true,
      version === 5 && wp
        ? {
            ...(wp.payloadFormatIndicator !== undefined && {
              payloadFormatIndicator: wp.payloadFormatIndicator,
            }),
            ...(wp.contentType !== undefined && { contentType: wp.contentType }),
            ...(wp.responseTopic !== undefined && { responseTopic: wp.responseTopic }),
            ...(wp.correlationData !== undefined && { correlationData: wp.correlationData }),
            ...(wp.userProperties !== undefined && { userProperties: wp.userProperties }),
          }
        : undefined,
    );
    if (message.properties && Object.keys(message.properties).length === 0) delete message.properties;
    conn.will = { message, delay: version === 5 ? (wp?.willDelayInterval ?? 0) : 0 };
    if (version === 5 && wp?.messageExpiryInterval !== undefined)
      conn.will.expiryInterval = wp.messageExpiryInterval;
  }

  // --max-session-expiry bounds what a 5.0 client asks for (it is told, below) and ends 3.1.1
  // persistent sessions, which never expire by the protocol, after as long.
  const asked = version === 5 ? (props?.sessionExpiryInterval ?? 0) : clean ? 0 : NEVER_EXPIRES;
  const expiry = opts.maxSessionExpiry > 0 ? Math.min(asked, opts.maxSessionExpiry) : asked;
  if (expiry !== asked) limits.sessionExpiryCapped++;
  const { session, present } = broker.attachSession(conn, clientId, version, expiry, clean);

  const connack: IConnackPacket = { cmd: 'connack', sessionPresent: present };
  if (version === 5) {
    connack.reasonCode = RC.SUCCESS;
    const p: ConnackProps = {
      receiveMaximum: opts.receiveMaximum,
      maximumPacketSize: opts.maxPacketSize,
      topicAliasMaximum: opts.topicAliasMaximum,
      retainAvailable: true,
      wildcardSubscriptionAvailable: true,
      subscriptionIdentifiersAvailable: true,
      sharedSubscriptionAvailable: true,
    };
    if (assigned) p.assignedClientIdentifier = assigned;
    // A successful CONNACK names the CONNECT's method [MQTT-4.12.0-5], never another [MQTT-4.12.0-6].
    if (conn.authMethod !== undefined) {
      p.authenticationMethod = conn.authMethod;
      if (authData !== undefined) p.authenticationData = authData;
    }
    if (serverKeepAlive !== undefined) p.serverKeepAlive = serverKeepAlive;
    // The client is told the Session Expiry Interval used when it differs from its own (5.0 section 3.2.2.3.2).
    if (expiry !== asked) p.sessionExpiryInterval = expiry;
    connack.properties = p;
  } else connack.returnCode = CONNACK_V4.ACCEPTED;

  conn.state = 'connected';
  // What hooks see of the session from now on, also per delivery (no getter on that path).
  session.lastClient = conn.clientInfo;
  conn.send(connack);
  conn.startKeepalive(keepalive);
  broker.clientConnected(conn, present);
  if (present) await session.resume();
  if (!conn.closing) conn.release();
}

/** The CN a TLS connection's verified certificate names (null: none); undefined off TLS. */
function tlsIdentity(conn: Connection): string | null | undefined {
  const t = conn.info.transport;
  return t === 'tls' || t === 'wss' ? certificateIdentity(conn.info.certificateSubject) : undefined;
}
