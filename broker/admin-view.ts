import type {
  LogEntry,
  Page,
  RetainedEntry,
  RetainedQuery,
  Services,
  SessionDetail,
  SessionQuery,
  SessionSummary,
  SubscriptionEntry,
  SubscriptionQuery,
} from '../plugins/admin-types.js';
import type { PluginApi } from '../plugins/api.js';
import type { Broker } from './broker.js';
import type { Message } from './message.js';
import type { Session } from './session.js';

/**
 * The admin part of PluginApi (sessions, subscriptions, retained messages, recent warnings,
 * services): read-only views over broker state built per call, plus the few admin actions. Nothing
 * here runs per message. Pages are sorted by key and continue strictly after the cursor; a call
 * walks every session (or retained message) once, which is fine for an operator's request.
 */
type AdminApi = Pick<
  PluginApi,
  | 'sessions'
  | 'session'
  | 'deleteSession'
  | 'subscriptions'
  | 'retained'
  | 'retainedMessage'
  | 'deleteRetained'
  | 'warnings'
  | 'provide'
  | 'service'
>;

const MAX_LIMIT = 1000;

function limitOf(n: number | undefined): number {
  if (n === undefined || !Number.isFinite(n)) return 100;
  return Math.min(MAX_LIMIT, Math.max(1, Math.floor(n)));
}

/** Sorts the keyed matches past the cursor and cuts a page. */
function page<T>(matches: [string, T][], total: number, limit: number): Page<T> {
  matches.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const items = matches.slice(0, limit);
  const out: Page<T> = { items: items.map((m) => m[1]), total };
  if (matches.length > limit) out.next = items[items.length - 1][0];
  return out;
}

function summary(s: Session): SessionSummary {
  const info = s.conn?.clientInfo ?? s.lastClient;
  const out: SessionSummary = {
    clientId: s.clientId,
    connected: s.conn !== null,
    protocolVersion: s.protocolVersion,
    expiryInterval: s.expiryInterval,
    subscriptionCount: s.subscriptions.size,
    queued: s.queued,
    inflight: s.inflight.size,
    queuedBytes: s.heldBytes + s.storedBytes,
  };
  if (info?.username !== undefined) out.username = info.username;
  if (info && info.transport !== 'none') out.transport = info.transport;
  if (info?.remoteAddress !== undefined) out.remoteAddress = info.remoteAddress;
  return out;
}

function retainedEntry(m: Message): RetainedEntry {
  const out: RetainedEntry = { topic: m.topic, qos: m.qos, payload: m.payload };
  if (m.expiresAt !== undefined) out.expiresAt = m.expiresAt;
  if (m.properties?.contentType !== undefined) out.contentType = m.properties.contentType;
  return out;
}

export function adminView(broker: Broker, plugin: string, services: Map<string, unknown>): AdminApi {
  return {
    sessions: (q: SessionQuery = {}) => {
      const limit = limitOf(q.limit);
      const matches: [string, SessionSummary][] = [];
      let total = 0;
      for (const [id, s] of broker.sessions) {
        if (q.prefix !== undefined && !id.startsWith(q.prefix)) continue;
        if (q.connected !== undefined && (s.conn !== null) !== q.connected) continue;
        if (q.user !== undefined && (s.conn?.username ?? s.lastClient?.username) !== q.user) continue;
        total++;
        if (q.cursor === undefined || id > q.cursor) matches.push([id, summary(s)]);
      }
      return page(matches, total, limit);
    },
    session: (clientId) => {
      const s = broker.sessions.get(clientId);
      if (!s) return undefined;
      const out: SessionDetail = { ...summary(s), subscriptions: [...s.subscriptions.values()] };
      const will = s.conn?.will;
      if (will)
        out.will = {
          topic: will.message.topic,
          qos: will.message.qos,
          retain: will.message.retain,
          payloadBytes: will.message.payload.length,
          delay: will.delay,
        };
      return out;
    },
    deleteSession: (clientId) => {
      const s = broker.sessions.get(clientId);
      if (!s) return false;
      broker.log.info({ clientId, plugin }, 'session deleted by admin');
      if (s.conn) {
        // Expiry 0: the connection's end ends the session too (Broker.sessionDisconnected).
        s.expiryInterval = 0;
        s.conn.close(0x98, `session deleted by plugin ${plugin}`);
      } else broker.endSession(s);
      return true;
    },
    subscriptions: (q: SubscriptionQuery = {}) => {
      const limit = limitOf(q.limit);
      const matches: [string, SubscriptionEntry][] = [];
      let total = 0;
      const one = q.clientId !== undefined ? broker.sessions.get(q.clientId) : undefined;
      const sessions = q.clientId !== undefined ? (one ? [one] : []) : broker.sessions.values();
      for (const s of sessions) {
        for (const rec of s.subscriptions.values()) {
          if (q.prefix !== undefined && !rec.filter.startsWith(q.prefix)) continue;
          total++;
          // The key sorts by client id, then filter (a NUL is in neither).
          const key = `${s.clientId}\u0000${rec.filter}`;
          if (q.cursor === undefined || key > q.cursor) matches.push([key, { clientId: s.clientId, ...rec }]);
        }
      }
      return page(matches, total, limit);
    },
    retained: (q: RetainedQuery = {}) => {
      const limit = limitOf(q.limit);
      const matches: [string, RetainedEntry][] = [];
      let total = 0;
      for (const m of broker.retained.all()) {
        if (q.prefix !== undefined && !m.topic.startsWith(q.prefix)) continue;
        total++;
        if (q.cursor === undefined || m.topic > q.cursor) matches.push([m.topic, retainedEntry(m)]);
      }
      return page(matches, total, limit);
    },
    retainedMessage: (topic) => {
      const m = broker.retained.get(topic);
      return m ? retainedEntry(m) : undefined;
    },
    deleteRetained: (topic) => broker.retained.delete(topic),
    warnings: (limit?: number): LogEntry[] => broker.logRing?.recent(limit) ?? [],
    provide: (name, service) => {
      if (services.has(name)) throw new TypeError(`plugin ${plugin}: service ${name} is already provided`);
      services.set(name, service);
    },
    service: <K extends keyof Services>(name: K) => services.get(name) as Services[K] | undefined,
  };
}
