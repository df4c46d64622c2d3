import type { Logger } from 'pino';
import type { PublishOptions } from '../broker/broker.js';
import type { Message } from '../broker/message.js';
import type { PulledMessage } from '../broker/shared/pull.js';
import type { MessageProperties, QoS } from '../persistence/types.js';

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
} from './admin-types.js';
import type { BrokerStatsSnapshot, GroupInfo, QueueInfo } from './stats-types.js';
import type { ClientInfo } from './types.js';

export type { PulledMessage };

/**
 * The public plugin contract: what a plugin module exports and the only thing its setup sees.
 * Nothing here reaches broker internals; README "Plugins" documents it.
 */

/** A chain hook's answer: decide now, or let the next plugin (finally the broker's default) decide. */
export type Verdict = 'allow' | 'deny' | 'pass';

type MaybePromise<T> = T | Promise<T>;

/** A subscription as a plugin observes it. */
export interface SubscriptionInfo {
  filter: string;
  qos: QoS;
}

/**
 * Hooks a plugin may register, all optional. Authorization hooks form a chain in registration
 * order; a hook that throws, rejects, answers anything but a Verdict, or takes longer than
 * hookTimeout denies (and is logged with the plugin's name). Observers never affect the broker.
 */
export interface PluginHooks {
  /** At CONNECT. Denied: CONNACK 0x86 (5.0) / 0x04 (3.1.1). May be async. */
  authenticate?(
    client: ClientInfo,
    username: string | undefined,
    password: Buffer | undefined,
  ): MaybePromise<Verdict>;
  /** Per inbound PUBLISH. Denied: 5.0 PUBACK/PUBREC 0x87, 3.1.1 acknowledged and dropped. May be async. */
  authorizePublish?(client: ClientInfo, topic: string): MaybePromise<Verdict>;
  /** Per filter in SUBSCRIBE (the full filter, `$share/<group>/` included). Denied: SUBACK 0x87 / 0x80. May be async. */
  authorizeSubscribe?(client: ClientInfo, filter: string): MaybePromise<Verdict>;
  /**
   * Per delivery of a message to a session (also through wildcards, shared groups and retained
   * messages). Synchronous only: it runs inside routing; a promise denies.
   */
  authorizeDeliver?(client: ClientInfo, topic: string): Verdict;
  /**
   * Optional, with authorizeDeliver in the same addHooks call: true when this plugin's
   * authorizeDeliver answers 'allow' for every topic a direct subscription's filter can match,
   * for this client, until the next reload. When the first authorizeDeliver hook of the chain says
   * so, the broker skips authorizeDeliver for deliveries through that subscription (asked again
   * after each reload and each new connection of the session). Answer true only where answers
   * change nowhere but at reload (an ACL file's rules, not an expiring token's claims).
   */
  coversDeliveries?(client: ClientInfo, filter: string): boolean;
  onConnect?(client: ClientInfo): void | Promise<void>;
  onDisconnect?(client: ClientInfo, reason: string): void | Promise<void>;
  /** A message accepted for routing; clientId is null for the broker's own (wills, api.publish). */
  onPublish?(message: Message, clientId: string | null): void | Promise<void>;
  onSubscribe?(clientId: string, subscription: SubscriptionInfo): void | Promise<void>;
}

export type HookName = keyof PluginHooks;

/**
 * One step of an enhanced-authentication exchange (MQTT 5.0 section 4.12): `continue` sends the
 * client AUTH 0x18 with `data` and keeps `state` for the next `continue` call; `success` accepts
 * (CONNACK 0x00, or AUTH 0x00 on re-authentication) with `data` as the final Authentication
 * Data and `username` as the client's user name (at CONNECT); `failure` refuses (CONNACK
 * `reasonCode`, default 0x87 Not authorized; on re-authentication DISCONNECT 0x87).
 */
export type AuthStep<State = unknown> =
  | { result: 'continue'; data?: Buffer; state: State }
  | { result: 'success'; data?: Buffer; username?: string }
  | { result: 'failure'; reasonCode?: 0x86 | 0x87 };

/**
 * An enhanced-authentication method (the CONNECT's Authentication Method names it). `start` runs
 * at CONNECT and at each re-authentication (AUTH 0x19) with the client's Authentication Data;
 * `continue` with each AUTH 0x18 the client answers. Either may be async; one that throws,
 * rejects, answers something else or takes longer than hookTimeout fails the exchange.
 */
export interface AuthMethod<State = unknown> {
  start(client: ClientInfo, data: Buffer | undefined): MaybePromise<AuthStep<State>>;
  continue(client: ClientInfo, state: State, data: Buffer | undefined): MaybePromise<AuthStep<State>>;
}

/** A declared queue's settings and state (README "Job queues"). */
export interface QueueStats {
  name: string;
  filter: string;
  /** Waiting for a consumer (member or puller). */
  waiting: number;
  /** In backoff after a failed attempt (nack with a delay, an MQTT member's negative PUBACK). */
  delayed: number;
  /** Pulled and not yet acknowledged (within their visibility timeout). */
  pulled: number;
  /** Payload and topic bytes of what it holds (waiting, delayed, pulled). */
  bytes: number;
  /** MQTT members subscribed to `$share/<name>/<filter>`, and of those connected. */
  members: number;
  membersOnline: number;
  /** Age of its oldest message, ms; null when it holds none. */
  oldestAgeMs: number | null;
  /** Messages sent to `$DLQ/<name>/…` since start. */
  deadLettered: number;
  maxMessages: number;
  maxBytes: number;
  overflow: string;
  maxAttempts: number;
  visibilityMs: number;
}

/** A held message seen without taking it. */
export interface PeekedMessage {
  topic: string;
  payload: Buffer;
  qos: QoS;
  properties?: MessageProperties;
  /** Failed attempts so far. */
  attempts: number;
  publishedAt: number;
  priority: number;
  state: 'waiting' | 'delayed' | 'pulled';
}

export interface PullOptions {
  /** Messages at most, 1–100 (default 1). */
  max?: number;
  /** Ms before an unacknowledged message is redelivered (default: the queue's visibilityMs). */
  visibilityMs?: number;
  /** Ms to wait for a message when none is waiting (long poll; default 0, at most 20000). */
  waitMs?: number;
  /** Aborted (the consumer went away): stop waiting, take nothing. */
  signal?: AbortSignal;
}

/**
 * Declared queues (README "Job queues"): pull consumers and administration. Every method but
 * list() and stats() throws a RangeError for a name that is no declared queue. Receipts come from
 * pull(); ack/nack/extend return the receipts they did not know (already settled, expired and
 * redelivered since, or never issued).
 */
export interface QueueApi {
  /** Whether `name` is a declared queue (cheap; stats() walks the queue for its oldest message). */
  has(name: string): boolean;
  list(): QueueStats[];
  stats(name: string): QueueStats | undefined;
  pull(name: string, options?: PullOptions): Promise<PulledMessage[]>;
  ack(name: string, receipts: readonly string[]): { unknown: string[] };
  /** Redelivered after `delayMs` (default 0), counted as an attempt; past maxAttempts dead-lettered. */
  nack(name: string, receipts: readonly string[], delayMs?: number): { unknown: string[] };
  extend(name: string, receipts: readonly string[], visibilityMs: number): { unknown: string[] };
  /** Resolves true once a message is waiting, false after `ms` or when `signal` aborts. */
  wait(name: string, ms: number, signal?: AbortSignal): Promise<boolean>;
  /** Up to `max` (default 10) held messages, next to be delivered first, without taking them. */
  peek(name: string, max?: number): PeekedMessage[];
  /** Deletes what it holds (waiting, delayed, pulled); returns how many. */
  purge(name: string): number;
  /**
   * Moves the dead letters of queue `name` back into it: the messages held by a declared queue
   * whose filter is `$DLQ/<name>/#`, on their original topic without the dead-letter user
   * properties, attempts reset. Returns how many.
   */
  replayDeadLetters(name: string, max?: number): number;
}

/** What a plugin's setup gets. */
export interface PluginApi {
  /** The plugin's name. */
  readonly name: string;
  /** A pino child logger bound to `{ plugin: name }`. */
  readonly log: Logger;
  /**
   * Registers hooks (may be called more than once; each call adds to the chains). Returns a
   * function that removes this call's hooks again: an observer needed only for a while (a
   * dashboard open) costs nothing once removed.
   */
  addHooks(hooks: PluginHooks): () => void;
  /**
   * Registers an enhanced-authentication method under `name` (case-sensitive, as the protocol
   * compares it); a name already registered throws.
   */
  addAuthMethod<State>(name: string, method: AuthMethod<State>): void;
  /** Publishes as the broker; false when a subscriber's queue was full (see Broker.publish). */
  publish(message: PublishOptions): boolean;
  /** The clients connected now. */
  clients(): ClientInfo[];
  /** A connected client by id. */
  client(clientId: string): ClientInfo | undefined;
  /**
   * Disconnects a connected client: a 5.0 client gets DISCONNECT with `reasonCode` (one a server
   * may send, section 3.14.2.1; default 0x98 Administrative action), a 3.1/3.1.1 client is just
   * closed. Its will is published. False when no such client is connected.
   */
  disconnect(clientId: string, reasonCode?: number): boolean;
  /** Declared queues: pull consumers and administration. */
  readonly queues: QueueApi;
  /**
   * A snapshot of the broker's figures (plugins/stats-types.ts documents each): clients by
   * transport and protocol, packets, PUBLISH messages by QoS, bytes, drops by reason, retained,
   * queues, retries, dead letters, the limit counters, event-loop lag, persistence batch latency,
   * `ready`. Counters count since start. Cheap enough to call every second (it walks connections,
   * sessions and shared groups once); nothing is counted per message beyond integer increments.
   */
  stats(): BrokerStatsSnapshot;
  /** The n sessions holding the most queue bytes (in memory and spilled), largest first; empty ones left out. */
  topQueues(n: number): QueueInfo[];
  /** Every shared subscription group (`$share/<group>/<filter>`): members, depth, in flight, in backoff, dead letters. */
  groups(): GroupInfo[];
  /**
   * Sessions, connected or not (plugins/admin-types.ts): a page sorted by client id, filtered by
   * id prefix, user name, connected. Walks every session: for operators' requests, not per message.
   */
  sessions(query?: SessionQuery): Page<SessionSummary>;
  /** One session with its subscriptions and the connected client's will. */
  session(clientId: string): SessionDetail | undefined;
  /**
   * Ends a session now: a connected client is disconnected (5.0: DISCONNECT 0x98) and its will
   * published; subscriptions, queue and stored state go. False when there is no such session.
   */
  deleteSession(clientId: string): boolean;
  /** Subscriptions of every session (or one), sorted by client id then filter. */
  subscriptions(query?: SubscriptionQuery): Page<SubscriptionEntry>;
  /** Retained messages (unexpired), sorted by topic, filtered by topic prefix. */
  retained(query?: RetainedQuery): Page<RetainedEntry>;
  /** The retained message of a topic. */
  retainedMessage(topic: string): RetainedEntry | undefined;
  /** Clears a topic's retained message (in memory and persistence); false when it had none. */
  deleteRetained(topic: string): boolean;
  /** The broker log's recent warnings and errors, newest first (empty with a logger given without a LogRing). */
  warnings(limit?: number): LogEntry[];
  /** Offers a service to other plugins by name (plugins/admin-types.ts Services); a name given twice throws. */
  provide<K extends keyof Services>(name: K, service: Services[K]): void;
  /** A service another plugin provides, looked up when needed (plugins set up in any order). */
  service<K extends keyof Services>(name: K): Services[K] | undefined;
  /** Runs at broker.close(), after clients are disconnected, before persistence closes. */
  onClose(fn: () => void | Promise<void>): void;
  /**
   * Runs at broker.reload() (the CLI calls it on SIGHUP): re-read configuration such as files.
   * `options` are the plugin's options: those given at setup, or new ones when the configuration
   * changed them (the CLI's config file). A failure (throw, rejection) should keep what was loaded
   * before; it is reported by reload().
   */
  onReload(fn: (options: unknown) => void | Promise<void>): void;
}

export interface Plugin<Options = unknown> {
  readonly name: string;
  setup(api: PluginApi, options: Options): void | Promise<void>;
}

/** A plugin alone, or with its options (setup is a method: a Plugin<O> of any O fits). */
export type PluginEntry = Plugin | readonly [Plugin, unknown];

/** DISCONNECT reason codes a server may send (MQTT 5.0 section 3.14.2.1). */
export const SERVER_DISCONNECT_CODES: ReadonlySet<number> = new Set([
  0x00, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8b, 0x8d, 0x8e, 0x8f, 0x90, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98,
  0x99, 0x9a, 0x9b, 0x9c, 0x9d, 0x9e, 0x9f, 0xa0, 0xa1, 0xa2,
]);

/** Identity with types: a plugin module's default export is `definePlugin({ name, setup })`. */
export function definePlugin<Options = unknown>(plugin: Plugin<Options>): Plugin<Options> {
  if (typeof plugin?.name !== 'string' || plugin.name === '') throw new TypeError('a plugin needs a name');
  if (typeof plugin.setup !== 'function')
    throw new TypeError(`plugin ${plugin.name}: setup must be a function`);
  return plugin;
}
