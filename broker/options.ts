import { totalmem } from 'node:os';
import type { Logger } from 'pino';
import type { Persistence } from '../persistence/types.js';
import type { PluginEntry } from '../plugins/api.js';
import type { Hooks } from '../plugins/types.js';
import type { LogRing } from './log-ring.js';
import { type DeclaredQueue, type QueueOptions, resolveQueues } from './shared/declared.js';
import { SHARE_STRATEGIES, type ShareStrategy } from './shared/strategies.js';
import { checkListeners, type ListenerOptions } from './transports/listeners.js';
import type { TlsOptions } from './transports/tls.js';
import { trustedProxies } from './transports/ws-checks.js';

export interface BrokerOptions {
  /** TCP port; 0 picks a free one; null disables the TCP listener. Default 1883. */
  port?: number | null;
  host?: string;
  /** MQTT over WebSocket port; null (the default for embedding) disables it. The CLI uses 8083. */
  wsPort?: number | null;
  /** WebSocket upgrade path. Default /mqtt. */
  wsPath?: string;
  /** Take WebSocket client addresses from X-Forwarded-For. Default false. */
  wsTrustProxy?: boolean;
  /**
   * Proxies (addresses or CIDR ranges) whose X-Forwarded-For is believed, with wsTrustProxy: the
   * client is the right-most entry not in this list. Default 127.0.0.1 and ::1.
   */
  wsTrustedProxies?: string[];
  /**
   * Origins (scheme://host[:port]) a browser page may open a WebSocket from; `*` = any. Default
   * (undefined): requests without Origin and pages on the Host header's host name only.
   */
  wsAllowedOrigins?: string[];
  /**
   * On TLS and WSS listeners, the Common Name of the client's verified certificate is its user name
   * (what CONNECT says is ignored, and the certificate replaces the password check); a client
   * without one is refused. Default false.
   */
  tlsIdentityAsUsername?: boolean;
  /** Certificate and key: enables MQTT over TLS and WSS. */
  tls?: TlsOptions;
  /** MQTT over TLS port when tls is set. Default 8883; null disables. */
  tlsPort?: number | null;
  /** WSS port when tls is set. Default 8084; null disables. */
  wssPort?: number | null;
  /**
   * More listeners, each with its own port, host, TLS files and allowAnonymous
   * (broker/transports/listeners.ts); started as well as those of the port options above.
   */
  listeners?: ListenerOptions[];
  /** State backend; defaults to in-memory. */
  persistence?: Persistence;
  logger?: Logger;
  /**
   * Where the logger keeps its recent warnings and errors (api.warnings()); give it with `logger`
   * (createLogger(level, ring)). Without `logger`, the broker makes both.
   */
  logRing?: LogRing;
  logLevel?: string;
  /** The older boolean hooks; run as the first plugin in the chain (true allows, false denies). */
  hooks?: Hooks;
  /** Plugins, each alone or with its options, set up in order before listen() accepts connections. */
  plugins?: PluginEntry[];
  /**
   * Let clients without a user name connect when no authenticate hook decides. Default: true
   * while no authentication is configured (no plugin registered an authenticate hook), else false.
   */
  allowAnonymous?: boolean;
  /** Milliseconds an asynchronous hook may take before it counts as a denial. Default 5000. */
  hookTimeout?: number;
  /** Outbound QoS 1/2 messages in flight per client (5.0 clients may ask for fewer). */
  maxInflight?: number;
  /** Messages waiting in memory per connected client beyond the inflight window. */
  maxQueued?: number;
  /**
   * Bytes (payload and topic) held per client: in memory (queued and in flight) while it is
   * connected, in persistence while its persistent session is offline or spilled.
   */
  maxQueuedBytes?: number;
  /** Bytes of message bodies held in session queues broker-wide, each body counted once. */
  maxMemory?: number;
  /** What happens to a QoS 1/2 message that a full queue cannot take (README "Flow control and overload"). */
  queueOverflow?: QueueOverflow;
  /**
   * The overflow policy by client id: a session takes the policy of the first rule whose `match`
   * (`*` = any run of characters, the rest literal) is its whole client id, else queueOverflow.
   */
  queueOverflowByClient?: QueueOverflowRule[];
  /**
   * Seconds a subscriber holding publishers back may go without progress (an acknowledgement)
   * before it is disconnected (clean session) or spilled to persistence (persistent session).
   */
  stuckTimeout?: number;
  /** Inbound QoS 1/2 publishes a client may have unacknowledged (our Receive Maximum). */
  receiveMaximum?: number;
  /** Largest packet accepted, in bytes (our Maximum Packet Size). */
  maxPacketSize?: number;
  /** Topic aliases a 5.0 client may set toward us (our Topic Alias Maximum). */
  topicAliasMaximum?: number;
  /** Topic aliases we use toward a 5.0 client, capped by what it allows. */
  outboundTopicAliases?: number;
  /** Upper bound on the keep-alive a client may ask for, in seconds; 0 = no bound. */
  maxKeepalive?: number;
  /** Seconds a new connection may take to complete CONNECT before it is closed. */
  connectTimeout?: number;
  /** Subscriptions one client may hold. */
  maxSubscriptionsPerClient?: number;
  /** Bytes buffered toward a client beyond which QoS 0 messages to it are dropped. */
  maxWriteBuffer?: number;
  /** How a shared subscription group picks the member for a message. Default round-robin. */
  shareStrategy?: ShareStrategy;
  /** Per share name (the `<group>` of `$share/<group>/…`; `$queue` for `$queue/…`) settings. */
  shareGroups?: { [group: string]: { strategy?: ShareStrategy } };
  /** Messages a shared group holds waiting for a member with room; beyond it new ones are dropped. */
  shareQueueMax?: number;
  /** First retry delay, ms, after a member answers PUBACK/PUBREC with a reason code >= 0x80. */
  retryBase?: number;
  /** Each further retry waits this many times longer. */
  retryFactor?: number;
  /**
   * Delivery attempts a failed message gets (the first one included) before it is published to
   * `$DLQ/<group>/<topic>`. 0 turns retry and dead-lettering off: a failed message is discarded, as
   * MQTT 5.0 [MQTT-4.8.2-6] says.
   */
  retryMaxAttempts?: number;
  /** Seconds an `idempotency-key` user property is remembered per publisher (client id) and topic; 0 turns dedup off. */
  dedupWindow?: number;
  /** Levels a topic name or filter may have (a shared filter: after `$share/<group>/`). Default 128. */
  maxTopicLevels?: number;
  /** UTF-8 bytes a topic name or filter may have. Default (and most) 65535, the MQTT string limit. */
  maxTopicLength?: number;
  /** Idempotency keys remembered at most; beyond it the oldest is forgotten. 0 = no limit. */
  dedupMaxKeys?: number;
  /** Clients connecting or connected at once; beyond it CONNECT is refused. 0 = no limit. */
  maxConnections?: number;
  /** CONNECTs a second per source address (token bucket refill); 0 = no limit. */
  connectRate?: number;
  /** CONNECTs a source address may make at once (token bucket size). */
  connectBurst?: number;
  /** Inbound PUBLISH packets a second per connection; over it reading pauses. 0 = no limit. */
  maxPublishRate?: number;
  /** Inbound PUBLISH bytes a second per connection; over it reading pauses. 0 = no limit. */
  maxPublishBytesRate?: number;
  /** Longest client id, UTF-8 bytes. 0 = no limit (beyond the protocol's 65535). */
  maxClientIdLength?: number;
  /** Connects of one client id within flappingWindow beyond which it is banned. 0 = off. */
  flappingMaxConnects?: number;
  /** Seconds over which connects of a client id are counted for flapping. */
  flappingWindow?: number;
  /** Seconds a flapping client id is refused. */
  flappingBan?: number;
  /**
   * Upper bound on a session's expiry interval, seconds; 3.1.1 persistent sessions (which never
   * expire by the protocol) expire after it too. 0 = no bound.
   */
  maxSessionExpiry?: number;
  /** Retained messages held at most. 0 = no limit. */
  maxRetained?: number;
  /** Bytes (topic + payload) of retained messages held at most. 0 = no limit. */
  maxRetainedBytes?: number;
  /** Shared subscription groups at most. 0 = no limit. */
  maxSharedGroups?: number;
  /** Shared subscription groups one client may have created (that still exist). 0 = no limit. */
  maxSharedGroupsPerClient?: number;
  /** Largest CONNECT, bytes: what a connection may buffer before its CONNECT is complete. */
  maxConnectSize?: number;
  /**
   * Declared queues (README "Job queues"): durable shared groups `$share/<name>/<filter>` that hold
   * matching QoS 1/2 messages from start on, for MQTT members and pull consumers.
   */
  queues?: QueueOptions[];
}

export const QUEUE_OVERFLOW = ['backpressure', 'reject', 'drop-oldest', 'drop-new'] as const;
export type QueueOverflow = (typeof QUEUE_OVERFLOW)[number];
export interface QueueOverflowRule {
  match: string;
  policy: QueueOverflow;
}

/**
 * Options Broker.reload() changes on a running broker: each is read where it is used (a new
 * connection, a queue check, the sweep), so a new value is safe at any moment. Every other option
 * needs a restart.
 */
export const RELOADABLE = [
  'logLevel',
  'maxInflight',
  'maxQueued',
  'maxQueuedBytes',
  'maxKeepalive',
  'connectTimeout',
  'maxConnections',
  'maxClientIdLength',
  'maxSessionExpiry',
  'shareQueueMax',
] as const;
export type ReloadableOption = (typeof RELOADABLE)[number];

type Listeners =
  | 'port'
  | 'host'
  | 'wsPort'
  | 'tls'
  | 'tlsPort'
  | 'wssPort'
  | 'wsAllowedOrigins'
  | 'listeners';

export type ResolvedOptions = Required<
  Omit<
    BrokerOptions,
    'persistence' | 'logger' | 'logRing' | 'hooks' | 'plugins' | 'allowAnonymous' | 'queues' | Listeners
  >
> & {
  queues: DeclaredQueue[];
  /** undefined: decided by whether authentication is configured (Broker.anonymousAllowed). */
  allowAnonymous: boolean | undefined;
  port: number | null;
  host: string | undefined;
  wsPort: number | null;
  tls: TlsOptions | undefined;
  tlsPort: number | null;
  wssPort: number | null;
  wsAllowedOrigins: string[] | undefined;
  listeners: ListenerOptions[];
};

export const DEFAULTS = {
  port: 1883,
  wsPort: 8083,
  wsPath: '/mqtt',
  wsTrustedProxies: ['127.0.0.1', '::1'],
  tlsPort: 8883,
  wssPort: 8084,
  logLevel: 'info',
  maxInflight: 1000,
  maxQueued: 1000,
  maxQueuedBytes: 256 * 1024 * 1024,
  queueOverflow: 'backpressure',
  stuckTimeout: 30,
  receiveMaximum: 65535,
  maxPacketSize: 1024 * 1024,
  topicAliasMaximum: 64,
  outboundTopicAliases: 64,
  maxKeepalive: 0,
  connectTimeout: 10,
  hookTimeout: 5000,
  maxSubscriptionsPerClient: 10000,
  maxWriteBuffer: 4 * 1024 * 1024,
  shareStrategy: 'round-robin',
  shareQueueMax: 10000,
  retryBase: 1000,
  retryFactor: 2,
  retryMaxAttempts: 5,
  dedupWindow: 600,
  maxTopicLevels: 128,
  maxTopicLength: 65535,
  dedupMaxKeys: 1_000_000,
  maxConnections: 100_000,
  connectRate: 1000,
  connectBurst: 10_000,
  maxPublishRate: 0,
  maxPublishBytesRate: 0,
  maxClientIdLength: 256,
  flappingMaxConnects: 15,
  flappingWindow: 60,
  flappingBan: 300,
  maxSessionExpiry: 7 * 24 * 3600,
  maxRetained: 1_000_000,
  maxRetainedBytes: 256 * 1024 * 1024,
  maxSharedGroups: 10_000,
  maxSharedGroupsPerClient: 100,
  maxConnectSize: 64 * 1024,
} as const;

export function resolveOptions(o: BrokerOptions): ResolvedOptions {
  const queueOverflow = oneOf(o.queueOverflow ?? DEFAULTS.queueOverflow, QUEUE_OVERFLOW, 'queueOverflow');
  const retryMaxAttempts = Math.max(0, Math.floor(o.retryMaxAttempts ?? DEFAULTS.retryMaxAttempts));
  return {
    port: o.port === undefined ? DEFAULTS.port : o.port,
    host: o.host,
    wsPort: o.wsPort ?? null,
    wsPath: o.wsPath ?? DEFAULTS.wsPath,
    wsTrustProxy: o.wsTrustProxy === true,
    wsTrustedProxies: validProxies([...(o.wsTrustedProxies ?? DEFAULTS.wsTrustedProxies)]),
    wsAllowedOrigins: o.wsAllowedOrigins && [...o.wsAllowedOrigins],
    tlsIdentityAsUsername: o.tlsIdentityAsUsername === true,
    tls: o.tls,
    tlsPort: o.tls ? (o.tlsPort === undefined ? DEFAULTS.tlsPort : o.tlsPort) : null,
    wssPort: o.tls ? (o.wssPort === undefined ? DEFAULTS.wssPort : o.wssPort) : null,
    listeners: validListeners(o.listeners ?? [], o.tls),
    logLevel: o.logLevel ?? DEFAULTS.logLevel,
    maxInflight: clamp(o.maxInflight ?? DEFAULTS.maxInflight, 1, 65535),
    maxQueued: Math.max(0, o.maxQueued ?? DEFAULTS.maxQueued),
    maxQueuedBytes: Math.max(0, o.maxQueuedBytes ?? DEFAULTS.maxQueuedBytes),
    maxMemory: Math.max(0, o.maxMemory ?? defaultMaxMemory()),
    queueOverflow,
    queueOverflowByClient: (o.queueOverflowByClient ?? []).map((r, i) => ({
      match: String(r.match),
      policy: oneOf(r.policy, QUEUE_OVERFLOW, `queueOverflowByClient[${i}].policy`),
    })),
    stuckTimeout: Math.max(0, o.stuckTimeout ?? DEFAULTS.stuckTimeout),
    receiveMaximum: clamp(o.receiveMaximum ?? DEFAULTS.receiveMaximum, 1, 65535),
    maxPacketSize: clamp(o.maxPacketSize ?? DEFAULTS.maxPacketSize, 64, 268435460),
    topicAliasMaximum: clamp(o.topicAliasMaximum ?? DEFAULTS.topicAliasMaximum, 0, 65535),
    outboundTopicAliases: clamp(o.outboundTopicAliases ?? DEFAULTS.outboundTopicAliases, 0, 65535),
    maxKeepalive: clamp(o.maxKeepalive ?? DEFAULTS.maxKeepalive, 0, 65535),
    connectTimeout: Math.max(1, o.connectTimeout ?? DEFAULTS.connectTimeout),
    allowAnonymous: o.allowAnonymous,
    hookTimeout: Math.max(1, o.hookTimeout ?? DEFAULTS.hookTimeout),
    maxSubscriptionsPerClient: Math.max(1, o.maxSubscriptionsPerClient ?? DEFAULTS.maxSubscriptionsPerClient),
    maxWriteBuffer: Math.max(1024, o.maxWriteBuffer ?? DEFAULTS.maxWriteBuffer),
    shareStrategy: shareStrategy(o.shareStrategy ?? DEFAULTS.shareStrategy, 'shareStrategy'),
    shareGroups: Object.fromEntries(
      Object.entries(o.shareGroups ?? {}).map(([group, g]) => [
        group,
        g.strategy === undefined
          ? {}
          : { strategy: shareStrategy(g.strategy, `shareGroups.${group}.strategy`) },
      ]),
    ),
    shareQueueMax: Math.max(0, Math.floor(o.shareQueueMax ?? DEFAULTS.shareQueueMax)),
    retryBase: Math.max(0, o.retryBase ?? DEFAULTS.retryBase),
    retryFactor: Math.max(1, o.retryFactor ?? DEFAULTS.retryFactor),
    retryMaxAttempts,
    dedupWindow: Math.max(0, o.dedupWindow ?? DEFAULTS.dedupWindow),
    maxTopicLevels: clamp(o.maxTopicLevels ?? DEFAULTS.maxTopicLevels, 1, 65536),
    maxTopicLength: clamp(o.maxTopicLength ?? DEFAULTS.maxTopicLength, 1, 65535),
    dedupMaxKeys: count(o.dedupMaxKeys ?? DEFAULTS.dedupMaxKeys),
    maxConnections: count(o.maxConnections ?? DEFAULTS.maxConnections),
    connectRate: Math.max(0, o.connectRate ?? DEFAULTS.connectRate),
    connectBurst: Math.max(1, o.connectBurst ?? DEFAULTS.connectBurst),
    maxPublishRate: Math.max(0, o.maxPublishRate ?? DEFAULTS.maxPublishRate),
    maxPublishBytesRate: Math.max(0, o.maxPublishBytesRate ?? DEFAULTS.maxPublishBytesRate),
    maxClientIdLength: clamp(o.maxClientIdLength ?? DEFAULTS.maxClientIdLength, 0, 65535),
    flappingMaxConnects: count(o.flappingMaxConnects ?? DEFAULTS.flappingMaxConnects),
    flappingWindow: Math.max(0, o.flappingWindow ?? DEFAULTS.flappingWindow),
    flappingBan: Math.max(0, o.flappingBan ?? DEFAULTS.flappingBan),
    maxSessionExpiry: clamp(o.maxSessionExpiry ?? DEFAULTS.maxSessionExpiry, 0, 0xffffffff),
    maxRetained: count(o.maxRetained ?? DEFAULTS.maxRetained),
    maxRetainedBytes: count(o.maxRetainedBytes ?? DEFAULTS.maxRetainedBytes),
    maxSharedGroups: count(o.maxSharedGroups ?? DEFAULTS.maxSharedGroups),
    maxSharedGroupsPerClient: count(o.maxSharedGroupsPerClient ?? DEFAULTS.maxSharedGroupsPerClient),
    maxConnectSize: Math.max(64, Math.floor(o.maxConnectSize ?? DEFAULTS.maxConnectSize)),
    queues: resolveQueues(o.queues ?? [], { queueOverflow, retryMaxAttempts }),
  };
}

function validListeners(list: ListenerOptions[], tls: TlsOptions | undefined): ListenerOptions[] {
  checkListeners(list, tls);
  return list.map((l) => ({ ...l }));
}

/** Checked here, so a bad entry fails createBroker() rather than listen(). */
function validProxies(list: string[]): string[] {
  trustedProxies(list);
  return list;
}

function shareStrategy(s: string, what: string): ShareStrategy {
  return oneOf(s, SHARE_STRATEGIES, what);
}

function oneOf<T extends string>(s: string, allowed: readonly T[], what: string): T {
  if (!(allowed as readonly string[]).includes(s))
    throw new TypeError(`${what} must be one of ${allowed.join(', ')}, got "${s}"`);
  return s as T;
}

/**
 * Three quarters of what the process may use: its cgroup limit where there is one, else the
 * machine's memory. Queued bodies are Buffers outside the V8 heap, so the heap limit is not it.
 */
export function defaultMaxMemory(): number {
  const constrained = process.constrainedMemory?.() ?? 0;
  const total = totalmem();
  const usable = constrained > 0 && constrained < total ? constrained : total;
  return Math.floor(usable * 0.75);
}

/** A non-negative integer limit (0 = none). */
function count(n: number): number {
  return Math.max(0, Math.floor(n));
}

function clamp(n: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, Math.floor(n)));
}
