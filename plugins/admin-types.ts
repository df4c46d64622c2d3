/**
 * What the admin views of PluginApi answer (sessions, subscriptions, retained messages, recent
 * warnings; plugins/api.ts documents each call). Pages are ordered by key (client id, topic) and
 * continue after `next`, so a page does not shift when entries come or go before it.
 */
import type { QoS, SubscriptionRecord } from '../persistence/types.js';

export interface PageQuery {
  /** Entries per page, 1..1000 (default 100). */
  limit?: number;
  /** The `next` of the previous page: entries after it. */
  cursor?: string;
}

export interface Page<T> {
  items: T[];
  /** Entries matching the query, all pages. */
  total: number;
  /** Where the next page starts; absent on the last page. */
  next?: string;
}

export interface SessionQuery extends PageQuery {
  /** Client ids starting with this. */
  prefix?: string;
  /** Sessions of this user name (the connected client's, or the last one's). */
  user?: string;
  /** Only connected (true) or only disconnected (false) sessions. */
  connected?: boolean;
}

export interface SessionSummary {
  clientId: string;
  connected: boolean;
  username?: string;
  protocolVersion: 3 | 4 | 5;
  /** tcp, tls, ws, wss (of the connection, or of the last one); absent for a session restored and not reconnected. */
  transport?: string;
  remoteAddress?: string;
  /** Session Expiry Interval, seconds (0xFFFFFFFF never). */
  expiryInterval: number;
  subscriptionCount: number;
  /** Messages waiting for the inflight window (in memory), and sent unacknowledged. */
  queued: number;
  inflight: number;
  /** Queue bytes held in memory and spilled to persistence. */
  queuedBytes: number;
}

export interface WillInfo {
  topic: string;
  qos: QoS;
  retain: boolean;
  payloadBytes: number;
  /** Will Delay Interval, seconds. */
  delay: number;
}

export interface SessionDetail extends SessionSummary {
  subscriptions: SubscriptionRecord[];
  /** The connected client's will, absent without one. */
  will?: WillInfo;
}

export interface SubscriptionQuery extends PageQuery {
  /** One session's subscriptions. */
  clientId?: string;
  /** Filters starting with this. */
  prefix?: string;
}

export interface SubscriptionEntry extends SubscriptionRecord {
  clientId: string;
}

export interface RetainedQuery extends PageQuery {
  /** Topics starting with this. */
  prefix?: string;
}

export interface RetainedEntry {
  topic: string;
  qos: QoS;
  payload: Buffer;
  /** Epoch ms the message expires at (5.0 Message Expiry Interval), when it has one. */
  expiresAt?: number;
  contentType?: string;
}

/** One warning or error the broker logged. */
export interface LogEntry {
  time: number;
  level: 'warn' | 'error' | 'fatal';
  msg: string;
  /** The line's other fields (clientId, plugin, err…), as logged. */
  fields: Record<string, unknown>;
}

/**
 * Services a plugin offers others by name (api.provide / api.service): typed here so that neither
 * side imports the other.
 */
export interface Services {
  /** The password file's verification (password-file plugin): true when the user exists and the password matches. */
  passwords: { check(username: string, password: Buffer): Promise<boolean> };
}
