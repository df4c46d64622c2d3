/**
 * What PluginApi.stats(), topQueues() and groups() answer (plugins/api.ts documents each call).
 * Counters (`…Total`, received, sent, dropped) count since the broker started; the rest are
 * current values. Every figure is a plain number: a snapshot is cheap to take and to serialise.
 */

/** Counts by QoS, index 0..2. */
export type ByQos = [number, number, number];

export interface ClientStats {
  /** Connections that completed CONNECT and are still open. */
  connected: number;
  /** Persistent sessions whose client is not connected. */
  disconnected: number;
  /** connected + disconnected. */
  total: number;
  /** Most clients connected at once since start. */
  maximum: number;
  /** Connected clients by transport (tcp, tls, ws, wss; another name counts under its own key). */
  byTransport: Record<string, number>;
  /** Connected clients by protocol: '3.1', '3.1.1', '5.0'. */
  byProtocol: Record<'3.1' | '3.1.1' | '5.0', number>;
  /** CONNECTs accepted since start. */
  connectsTotal: number;
  /** The same by transport and protocol ('3.1', '3.1.1', '5.0'): only pairs seen. */
  connectsBy: { transport: string; protocol: string; count: number }[];
  /** CONNECTs refused for credentials or authorization (0x86/0x87/0x8C, 3.1.1 0x04/0x05). */
  authFailuresTotal: number;
}

export interface MessageStats {
  /** MQTT packets of every kind received / sent. */
  received: number;
  sent: number;
  /** PUBLISH packets received from clients / sent to them, by QoS. */
  receivedByQos: ByQos;
  sentByQos: ByQos;
  /** Bytes of those PUBLISH packets by QoS (received: after the fixed header; sent: whole packets). */
  bytesReceivedByQos: ByQos;
  bytesSentByQos: ByQos;
  /** Messages not delivered to a session, by reason (queue full, slow consumer, …). */
  dropped: Record<string, number>;
  /** Messages held for sessions (queued or in flight, in memory) plus retained ones, and their bytes (in memory and spilled). */
  stored: { count: number; bytes: number };
}

/** A latency histogram: counts[i] observations ≤ bounds[i] seconds (cumulative), sum in seconds. */
export interface LatencyHistogram {
  bounds: number[];
  counts: number[];
  count: number;
  sum: number;
}

export interface BrokerStatsSnapshot {
  /** Seconds since the broker was created. */
  uptime: number;
  version: string;
  /** Persistence restored and the broker started. */
  ready: boolean;
  clients: ClientStats;
  messages: MessageStats;
  bytes: { received: number; sent: number };
  /** PUBLISH messages: received from clients, sent to clients, dropped (sum of messages.dropped). */
  publish: { received: number; sent: number; dropped: number };
  subscriptions: { count: number };
  retained: { count: number; bytes: number };
  /** Summed over sessions: messages waiting for the inflight window, and sent unacknowledged. */
  queues: { queued: number; inflight: number; bytes: number };
  /** Shared-group deliveries retried after a failure reason code, since start. */
  retries: number;
  /** Messages published to `$DLQ/...` after their attempts were used up, since start. */
  deadLetters: number;
  /** The broker's limit counters (Broker.stats). */
  limits: {
    queueOverflows: number;
    publishersWaiting: number;
    stuckConsumers: number;
    publishesRejected: number;
    connectionsRefused: Record<string, number>;
    publishRateLimited: number;
    retainedRefused: number;
    sharedGroupsRefused: number;
    sessionExpiryCapped: number;
    dedupKeysForgotten: number;
    flappingBanned: number;
  };
  /** Event-loop delay over the last completed 10 s window (the current one before that), in seconds. */
  eventLoopLag: { mean: number; p99: number; max: number };
  /** Time to write each persistence batch (backends that batch; empty otherwise). */
  persistence: { batchLatency: LatencyHistogram };
  /** Shared groups summed: messages held, in flight, and in backoff. */
  shared: { groups: number; depth: number; inflight: number; retrying: number };
}

export interface QueueInfo {
  clientId: string;
  connected: boolean;
  /** Messages waiting for the inflight window (in memory). */
  queued: number;
  inflight: number;
  /** Bytes held in memory and spilled to persistence. */
  queuedBytes: number;
}

export interface GroupInfo {
  /** The share name of `$share/<group>/<filter>`. */
  group: string;
  filter: string;
  strategy: string;
  members: number;
  /** Messages waiting for a member (not in backoff). */
  depth: number;
  /** Sent to members and not yet acknowledged. */
  inflight: number;
  /** In backoff after a failed delivery. */
  retrying: number;
  /** Messages of this group dead-lettered since start. */
  deadLetters: number;
}
