import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';

type HistogramValues = Awaited<ReturnType<Histogram<string>['get']>>;
type HistogramValue = HistogramValues['values'][number];

import type { PluginApi } from '../api.js';
import type { BrokerStatsSnapshot, LatencyHistogram } from '../stats-types.js';

export interface Prometheus {
  /** The Content-Type of metrics()'s text (Prometheus text format 0.0.4). */
  contentType: string;
  /** Every metric, read now. */
  metrics(): Promise<string>;
  /** This broker's own registry (never prom-client's global one). */
  registry: Registry;
}

/** Sessions listed by client id in heron_session_queue_*: the largest queues only. */
export const TOP_SESSIONS = 10;
/** Shared groups listed by name at most (their number is bounded by --max-shared-groups too). */
const MAX_GROUPS = 1000;
/** One scrape reads one snapshot, however many metrics read it. */
const SNAPSHOT_TTL_MS = 250;

/** A histogram whose buckets are the broker's own (counted there): read, never observed here. */
class SnapshotHistogram extends Histogram<string> {
  constructor(
    private readonly metricName: string,
    private readonly metricHelp: string,
    bounds: number[],
    registry: Registry,
    private readonly read: () => LatencyHistogram,
  ) {
    super({ name: metricName, help: metricHelp, buckets: bounds, registers: [registry] });
  }

  /** What the registry reads for the text format (prom-client prefers it to get()). */
  async getForPromString(): Promise<HistogramValues> {
    return this.get();
  }

  override async get(): Promise<HistogramValues> {
    const h = this.read();
    const name = this.metricName;
    const values: HistogramValue[] = h.bounds.map((le, i) => ({
      labels: { le },
      value: h.counts[i],
      metricName: `${name}_bucket`,
    }));
    values.push(
      { labels: { le: '+Inf' }, value: h.count, metricName: `${name}_bucket` },
      { labels: {}, value: h.sum, metricName: `${name}_sum` },
      { labels: {}, value: h.count, metricName: `${name}_count` },
    );
    // The registry reads name, help, type and values.
    const out = { name, help: this.metricHelp, type: 'histogram', aggregator: 'sum', values };
    return out as unknown as HistogramValues;
  }
}

/**
 * Prometheus metrics for one broker, named `heron_*` (`_total` counters, seconds and bytes), on
 * a registry of its own. Everything is read at scrape time from api.stats(), topQueues() and
 * groups() in collect() callbacks: nothing is counted per message here. Call once per broker
 * (process metrics are collected with the prefix heron_ on the same registry).
 */
export function createPrometheus(api: PluginApi): Prometheus {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'heron_' });
  let cached: BrokerStatsSnapshot | undefined;
  let cachedAt = 0;
  const snap = (): BrokerStatsSnapshot => {
    const now = Date.now();
    if (cached === undefined || now - cachedAt > SNAPSHOT_TTL_MS) {
      cached = api.stats();
      cachedAt = now;
    }
    return cached;
  };
  const registers = [registry];

  /** A gauge set from the snapshot at each scrape. */
  const gauge = (name: string, help: string, read: (s: BrokerStatsSnapshot) => number) =>
    new Gauge({
      name,
      help,
      registers,
      collect() {
        this.set(read(snap()));
      },
    });
  /** A counter whose value is the broker's own count since start. */
  const counter = (name: string, help: string, read: (s: BrokerStatsSnapshot) => number) =>
    new Counter({
      name,
      help,
      registers,
      collect() {
        this.reset();
        this.inc(read(snap()));
      },
    });
  /** The same, one series per key of a record. */
  const labelled = <L extends string>(
    kind: 'gauge' | 'counter',
    name: string,
    help: string,
    label: L,
    read: (s: BrokerStatsSnapshot) => Record<string, number>,
  ) => {
    const collect = function (this: Gauge<L> | Counter<L>) {
      this.reset();
      for (const [k, v] of Object.entries(read(snap()))) {
        const labels = { [label]: k } as Record<L, string>;
        if (this instanceof Gauge) this.set(labels, v);
        else this.inc(labels, v);
      }
    };
    if (kind === 'gauge') return new Gauge({ name, help, labelNames: [label], registers, collect });
    return new Counter({ name, help, labelNames: [label], registers, collect });
  };
  const byQos = (q: number[]) => ({ '0': q[0], '1': q[1], '2': q[2] });

  new Gauge({
    name: 'heron_info',
    help: 'Always 1; the version as a label',
    labelNames: ['version'],
    registers,
    collect() {
      this.reset();
      this.set({ version: snap().version }, 1);
    },
  });
  gauge('heron_ready', '1 once persistence is restored and the broker started', (s) => (s.ready ? 1 : 0));
  labelled(
    'gauge',
    'heron_connections',
    'Connected clients by transport',
    'transport',
    (s) => s.clients.byTransport,
  );
  labelled(
    'gauge',
    'heron_connections_by_protocol',
    'Connected clients by MQTT protocol version',
    'protocol',
    (s) => s.clients.byProtocol,
  );
  gauge('heron_connections_max', 'Most clients connected at once since start', (s) => s.clients.maximum);
  gauge(
    'heron_sessions_disconnected',
    'Persistent sessions whose client is not connected',
    (s) => s.clients.disconnected,
  );
  new Counter({
    name: 'heron_connections_total',
    help: 'CONNECTs accepted since start, by transport and protocol version',
    labelNames: ['transport', 'protocol'],
    registers,
    collect() {
      this.reset();
      for (const c of snap().clients.connectsBy)
        this.inc({ transport: c.transport, protocol: c.protocol }, c.count);
    },
  });
  counter(
    'heron_auth_failures_total',
    'CONNECTs refused for credentials or authorization since start',
    (s) => s.clients.authFailuresTotal,
  );
  labelled(
    'counter',
    'heron_connections_refused_total',
    'CONNECTs refused by each limit since start',
    'limit',
    (s) => s.limits.connectionsRefused,
  );
  counter('heron_packets_received_total', 'MQTT packets received', (s) => s.messages.received);
  counter('heron_packets_sent_total', 'MQTT packets sent', (s) => s.messages.sent);
  labelled('counter', 'heron_messages_received_total', 'PUBLISH packets received by QoS', 'qos', (s) =>
    byQos(s.messages.receivedByQos),
  );
  labelled('counter', 'heron_messages_sent_total', 'PUBLISH packets sent by QoS', 'qos', (s) =>
    byQos(s.messages.sentByQos),
  );
  labelled(
    'counter',
    'heron_messages_dropped_total',
    'Messages not delivered to a session, by reason',
    'reason',
    (s) => s.messages.dropped,
  );
  labelled(
    'counter',
    'heron_messages_received_bytes_total',
    'Bytes of PUBLISH packets received by QoS (after the fixed header)',
    'qos',
    (s) => byQos(s.messages.bytesReceivedByQos),
  );
  labelled('counter', 'heron_messages_sent_bytes_total', 'Bytes of PUBLISH packets sent by QoS', 'qos', (s) =>
    byQos(s.messages.bytesSentByQos),
  );
  counter('heron_received_bytes_total', 'Bytes received from clients', (s) => s.bytes.received);
  counter('heron_sent_bytes_total', 'Bytes sent to clients', (s) => s.bytes.sent);
  gauge('heron_subscriptions', 'Subscriptions', (s) => s.subscriptions.count);
  gauge('heron_retained_messages', 'Retained messages', (s) => s.retained.count);
  gauge('heron_retained_bytes', 'Topic and payload bytes of retained messages', (s) => s.retained.bytes);
  gauge(
    'heron_queued_messages',
    'Messages queued for sessions (waiting for the inflight window), summed',
    (s) => s.queues.queued,
  );
  gauge(
    'heron_inflight_messages',
    'Messages sent to sessions and not acknowledged, summed',
    (s) => s.queues.inflight,
  );
  gauge(
    'heron_queued_bytes',
    'Bytes of session queues, in memory and spilled, summed',
    (s) => s.queues.bytes,
  );
  counter(
    'heron_queue_overflows_total',
    'QoS 1/2 messages a full queue could not take at once',
    (s) => s.limits.queueOverflows,
  );
  counter(
    'heron_publishes_rejected_total',
    '5.0 publishes refused 0x97 under the reject policy',
    (s) => s.limits.publishesRejected,
  );
  gauge(
    'heron_publishers_waiting',
    'Publishers not read from while a queue they feed is full',
    (s) => s.limits.publishersWaiting,
  );
  counter(
    'heron_retries_total',
    'Shared-group deliveries retried after a failure reason code',
    (s) => s.retries,
  );
  counter(
    'heron_dead_letters_total',
    'Messages published to $DLQ/... after their attempts',
    (s) => s.deadLetters,
  );
  gauge(
    'heron_event_loop_lag_seconds',
    'Mean event-loop delay over the last 10 s window',
    (s) => s.eventLoopLag.mean,
  );
  gauge(
    'heron_event_loop_lag_p99_seconds',
    '99th percentile event-loop delay over the last 10 s window',
    (s) => s.eventLoopLag.p99,
  );
  gauge(
    'heron_event_loop_lag_max_seconds',
    'Largest event-loop delay over the last 10 s window',
    (s) => s.eventLoopLag.max,
  );
  new SnapshotHistogram(
    'heron_persistence_batch_duration_seconds',
    'Time to write one persistence batch',
    snap().persistence.batchLatency.bounds,
    registry,
    () => snap().persistence.batchLatency,
  );

  // Series by client id and by group are listed afresh at each scrape (one that left goes away),
  // all from one listing: the first metric registered of each set fills the others, which the
  // registry reads after it.
  const sessionLabels = ['client_id'] as const;
  const topMessages: Gauge<'client_id'> = new Gauge({
    name: 'heron_session_queue_messages',
    help: `Messages queued plus in flight of the ${TOP_SESSIONS} largest session queues (by bytes)`,
    labelNames: sessionLabels,
    registers,
    collect() {
      this.reset();
      topBytes.reset();
      for (const q of api.topQueues(TOP_SESSIONS)) {
        this.set({ client_id: q.clientId }, q.queued + q.inflight);
        topBytes.set({ client_id: q.clientId }, q.queuedBytes);
      }
    },
  });
  const topBytes = new Gauge({
    name: 'heron_session_queue_bytes',
    help: `Queue bytes of the ${TOP_SESSIONS} largest session queues`,
    labelNames: sessionLabels,
    registers,
  });
  void topMessages;

  const groupLabels = ['group', 'filter'] as const;
  const groupGauge = (name: string, help: string) =>
    new Gauge({ name, help, labelNames: groupLabels, registers });
  new Gauge({
    name: 'heron_shared_group_depth',
    help: 'Messages waiting for a member of a shared group',
    labelNames: groupLabels,
    registers,
    collect() {
      this.reset();
      for (const m of [inflight, retrying, members, deadLetters]) m.reset();
      for (const g of api.groups().slice(0, MAX_GROUPS)) {
        const l = { group: g.group, filter: g.filter };
        this.set(l, g.depth);
        inflight.set(l, g.inflight);
        retrying.set(l, g.retrying);
        members.set(l, g.members);
        deadLetters.inc(l, g.deadLetters);
      }
    },
  });
  const inflight = groupGauge('heron_shared_group_inflight', 'Messages sent to members and not acknowledged');
  const retrying = groupGauge('heron_shared_group_retrying', 'Messages in backoff after a failed delivery');
  const members = groupGauge('heron_shared_group_members', 'Members of a shared group');
  const deadLetters = new Counter({
    name: 'heron_shared_group_dead_letters_total',
    help: 'Messages of a shared group dead-lettered',
    labelNames: groupLabels,
    registers,
  });

  // Declared job queues (README "Job queues"), by name.
  const queueLabels = ['queue'] as const;
  const queueGauge = (name: string, help: string) =>
    new Gauge({ name, help, labelNames: queueLabels, registers });
  new Gauge({
    name: 'heron_queue_messages',
    help: 'Messages a declared queue holds, by state (waiting, delayed, pulled = in flight)',
    labelNames: ['queue', 'state'] as const,
    registers,
    collect() {
      this.reset();
      for (const m of [queueBytes, queueOldest, queueMembers, queueDead]) m.reset();
      for (const q of api.queues.list().slice(0, MAX_GROUPS)) {
        const l = { queue: q.name };
        this.set({ queue: q.name, state: 'waiting' }, q.waiting);
        this.set({ queue: q.name, state: 'delayed' }, q.delayed);
        this.set({ queue: q.name, state: 'pulled' }, q.pulled);
        queueBytes.set(l, q.bytes);
        queueOldest.set(l, q.oldestAgeMs === null ? 0 : q.oldestAgeMs / 1000);
        queueMembers.set(l, q.members);
        queueDead.inc(l, q.deadLettered);
      }
    },
  });
  const queueBytes = queueGauge('heron_queue_bytes', 'Topic and payload bytes a declared queue holds');
  const queueOldest = queueGauge(
    'heron_queue_oldest_age_seconds',
    "Age of a declared queue's oldest message (0: empty)",
  );
  const queueMembers = queueGauge('heron_queue_members', 'MQTT members of a declared queue');
  const queueDead = new Counter({
    name: 'heron_queue_dead_letters_total',
    help: 'Messages of a declared queue sent to its dead-letter topic',
    labelNames: queueLabels,
    registers,
  });

  cached = undefined;
  return {
    contentType: registry.contentType,
    metrics: () => {
      // A scrape reads the broker now, not a snapshot left from a moment ago.
      cached = undefined;
      return registry.metrics();
    },
    registry,
  };
}
