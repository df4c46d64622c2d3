import { readFileSync } from 'node:fs';
import type { BrokerStatsSnapshot, ByQos, GroupInfo, QueueInfo } from '../plugins/stats-types.js';
import type { Broker } from './broker.js';
import { BATCH_BOUNDS, PROTOCOL_NAMES as PROTOCOLS } from './counters.js';
import type { Session } from './session.js';

/** The package version, read once (from source: ../package.json; built: ../../package.json). */
const VERSION: string = (() => {
  for (const rel of ['../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as {
        name?: string;
        version?: string;
      };
      if (pkg.name === 'heron' && typeof pkg.version === 'string') return pkg.version;
    } catch {
      // not there: try the next
    }
  }
  return 'unknown';
})();

function queuedBytes(s: Session): number {
  return s.heldBytes + s.storedBytes;
}

/** PluginApi.stats(): every figure read now, from counters and the broker's structures. */
export function statsSnapshot(broker: Broker): BrokerStatsSnapshot {
  const c = broker.counters;
  const byTransport: Record<string, number> = { tcp: 0, tls: 0, ws: 0, wss: 0 };
  const byProtocol = { '3.1': 0, '3.1.1': 0, '5.0': 0 };
  let connected = 0;
  for (const conn of broker.connections) {
    if (conn.state !== 'connected') continue;
    connected++;
    const t = conn.info.transport;
    byTransport[t] = (byTransport[t] ?? 0) + 1;
    byProtocol[PROTOCOLS[conn.protocolVersion]]++;
  }
  let disconnected = 0;
  let queued = 0;
  let inflight = 0;
  let bytes = 0;
  for (const s of broker.sessions.values()) {
    if (s.conn === null) disconnected++;
    queued += s.queued;
    inflight += s.inflight.size;
    bytes += queuedBytes(s);
  }
  let depth = 0;
  let groupInflight = 0;
  let retrying = 0;
  for (const g of broker.shares.all()) {
    depth += g.waiting.size;
    retrying += g.delayed.length;
    groupInflight += groupInFlight(g.id, g.members);
  }
  const dropped = { ...c.dropped };
  let droppedTotal = 0;
  for (const k in dropped) droppedTotal += dropped[k];
  const st = broker.stats;
  const counts: number[] = [];
  let acc = 0;
  for (let i = 0; i < BATCH_BOUNDS.length; i++) {
    acc += c.batchCounts[i];
    counts.push(acc);
  }
  return {
    uptime: (Date.now() - c.createdAt) / 1000,
    version: VERSION,
    ready: broker.ready,
    clients: {
      connected,
      disconnected,
      total: connected + disconnected,
      maximum: c.maxConnected,
      byTransport,
      byProtocol,
      connectsTotal: c.connectsTotal,
      connectsBy: Object.entries(c.connects).map(([k, n]) => {
        const [transport, protocol] = k.split(' ');
        return { transport, protocol, count: n };
      }),
      authFailuresTotal: c.authFailures,
    },
    messages: {
      received: c.packetsReceived,
      sent: c.packetsSent,
      receivedByQos: [...c.publishReceived] as ByQos,
      sentByQos: [...c.publishSent] as ByQos,
      bytesReceivedByQos: [...c.publishBytesReceived] as ByQos,
      bytesSentByQos: [...c.publishBytesSent] as ByQos,
      dropped,
      stored: { count: queued + inflight + st.retained, bytes: bytes + st.retainedBytes },
    },
    bytes: { received: c.bytesReceived, sent: c.bytesSent },
    publish: {
      received: c.publishReceived[0] + c.publishReceived[1] + c.publishReceived[2],
      sent: c.publishSent[0] + c.publishSent[1] + c.publishSent[2],
      dropped: droppedTotal,
    },
    subscriptions: { count: st.subscriptions },
    retained: { count: st.retained, bytes: st.retainedBytes },
    queues: { queued, inflight, bytes },
    retries: c.retries,
    deadLetters: c.deadLetters,
    limits: {
      queueOverflows: st.queueOverflows,
      publishersWaiting: st.publishersWaiting,
      stuckConsumers: st.stuckConsumers,
      publishesRejected: st.publishesRejected,
      connectionsRefused: { ...st.connectionsRefused },
      publishRateLimited: st.publishRateLimited,
      retainedRefused: st.retainedRefused,
      sharedGroupsRefused: st.sharedGroupsRefused,
      sessionExpiryCapped: st.sessionExpiryCapped,
      dedupKeysForgotten: st.dedupKeysForgotten,
      flappingBanned: st.flappingBanned,
    },
    eventLoopLag: c.eventLoopLag(),
    persistence: {
      batchLatency: { bounds: [...BATCH_BOUNDS], counts, count: c.batchCount, sum: c.batchSum },
    },
    shared: { groups: broker.shares.size, depth, inflight: groupInflight, retrying },
  };
}

function groupInFlight(id: string, members: readonly { session: Session }[]): number {
  let n = 0;
  for (const m of members) for (const rec of m.session.inflight.values()) if (rec.group === id) n++;
  return n;
}

/**
 * PluginApi.topQueues(n): the sessions holding the most queue bytes (in memory and spilled: an
 * offline session's messages are only in persistence, its count unknown), largest first.
 */
export function topQueues(broker: Broker, n: number): QueueInfo[] {
  const limit = Math.max(0, Math.floor(n));
  if (limit === 0) return [];
  // A bounded sorted list: sessions can be many, n is small.
  const top: QueueInfo[] = [];
  for (const s of broker.sessions.values()) {
    const b = queuedBytes(s);
    const count = s.queued + s.inflight.size;
    if (b === 0 && count === 0) continue;
    if (top.length === limit && b <= top[top.length - 1].queuedBytes) continue;
    const info: QueueInfo = {
      clientId: s.clientId,
      connected: s.conn !== null,
      queued: s.queued,
      inflight: s.inflight.size,
      queuedBytes: b,
    };
    let i = top.length;
    while (i > 0 && top[i - 1].queuedBytes < b) i--;
    top.splice(i, 0, info);
    if (top.length > limit) top.pop();
  }
  return top;
}

/** PluginApi.groups(): every shared subscription group now. */
export function groupsView(broker: Broker): GroupInfo[] {
  const out: GroupInfo[] = [];
  for (const g of broker.shares.all()) {
    out.push({
      group: g.name,
      filter: g.filter,
      strategy: g.strategy,
      members: g.members.length,
      depth: g.waiting.size,
      inflight: groupInFlight(g.id, g.members),
      retrying: g.delayed.length,
      deadLetters: g.deadLetters,
    });
  }
  return out;
}
