import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { MemoryPersistence } from '../persistence/memory.js';
import type { MessageProperties, Persistence, QoS, SubscriptionRecord } from '../persistence/types.js';
import type { ClientInfo, Hooks } from '../plugins/types.js';
import { ClientLimits, type ConnectionsRefused } from './client-limits.js';
import { Connection, type ConnectionInfo } from './connection.js';
import { Counters, PROTOCOL_NAMES } from './counters.js';
import { Flow } from './flow.js';
import { NEVER_EXPIRES } from './handlers/connect.js';
import { adaptHooks, PluginHost } from './hooks.js';
import { createLogger } from './logger.js';
import { createMessage, type Message } from './message.js';
import {
  type BrokerOptions,
  RELOADABLE,
  type ReloadableOption,
  type ResolvedOptions,
  resolveOptions,
} from './options.js';
import { OverflowPolicies } from './overflow-policy.js';
import { RC } from './reason-codes.js';
import { reauthorizeSubscriptions } from './reauthorize.js';
import { restoreState } from './restore.js';
import { RetainedStore } from './retained.js';
import { Router } from './router.js';
import { Session } from './session.js';
import { BROKER_PUBLISHER, Dedup } from './shared/dedup.js';
import { SharedGroups } from './shared/groups.js';
import { longTimeout } from './timers.js';
import { TopicLimits } from './topic-limits.js';
import { listenerSpecs, startListener } from './transports/listeners.js';
import type { Transport } from './transports/transport.js';
import { WillScheduler } from './will.js';

export interface BrokerEvents {
  /** A client's CONNECT was accepted. */
  client: [client: ClientInfo];
  /** A connected client's connection ended. */
  clientDisconnect: [client: ClientInfo, reason: string];
  /** A message was accepted for routing (from a client, or from publish()). */
  publish: [message: Message, clientId: string | null];
  subscribe: [clientId: string, subscription: SubscriptionRecord];
  /** A message was not delivered to a session (queue full, slow consumer, too large). */
  drop: [clientId: string | null, message: Message, reason: string];
}

/** What Broker.reload() changes besides re-reading plugin files. */
export interface BrokerReload {
  options?: Partial<Pick<BrokerOptions, ReloadableOption>>;
  /** New options by plugin name, given to that plugin's onReload callbacks. */
  pluginOptions?: ReadonlyMap<string, unknown>;
}

export interface PublishOptions {
  topic: string;
  payload: Buffer | string;
  qos?: QoS;
  retain?: boolean;
  properties?: MessageProperties;
  messageExpiryInterval?: number;
}

export interface BrokerStats {
  connections: number;
  sessions: number;
  subscriptions: number;
  retained: number;
  /** Topic and payload bytes of the retained messages held. */
  retainedBytes: number;
  messagesDropped: number;
  /** QoS 1/2 messages a full queue could not take at once (each handled by the overflow policy). */
  queueOverflows: number;
  /** Publishers currently not read from because a queue they feed is full. */
  publishersWaiting: number;
  /** Consumers acted on after stuckTimeout without progress (disconnected or spilled). */
  stuckConsumers: number;
  /** Bytes of message bodies held in session queues in memory, each counted once. */
  queuedBytes: number;
  /** 5.0 publishes answered 0x97 Quota exceeded under the `reject` policy. */
  publishesRejected: number;
  /** CONNECTs refused by each limit, since start. */
  connectionsRefused: ConnectionsRefused;
  /** Times a connection's reading was paused for --max-publish-rate / --max-publish-bytes-rate. */
  publishRateLimited: number;
  /** Retained messages not stored for --max-retained / --max-retained-bytes (still routed unless refused). */
  retainedRefused: number;
  /** `$share` subscriptions refused for --max-shared-groups / --max-shared-groups-per-client. */
  sharedGroupsRefused: number;
  /** Sessions whose expiry interval was lowered to --max-session-expiry. */
  sessionExpiryCapped: number;
  /** Idempotency keys forgotten before their window ended, for --dedup-max-keys. */
  dedupKeysForgotten: number;
  /** Client ids currently banned for flapping. */
  flappingBanned: number;
}

/** The broker: sessions, routing and retained state over any number of transports. */
export class Broker extends EventEmitter<BrokerEvents> {
  readonly options: ResolvedOptions;
  readonly log: Logger;
  readonly persistence: Persistence;
  readonly hooks: Hooks;
  /** Hook chains and plugin services (broker/hooks.ts). */
  readonly plugins: PluginHost;
  private readonly pluginEntries: NonNullable<BrokerOptions['plugins']>;
  readonly sessions = new Map<string, Session>();
  readonly connections = new Set<Connection>();
  /** Shared subscription groups: strategies, group queues, redelivery, retry and dead-letter. */
  readonly shares: SharedGroups;
  readonly router: Router;
  /** Idempotency keys seen per publisher and topic (user property `idempotency-key`, 5.0). */
  readonly dedup: Dedup;
  readonly retained: RetainedStore;
  readonly wills: WillScheduler;
  /** Queue bounds, the memory budget, publishers waiting on full queues (broker/flow.ts). */
  readonly flow: Flow;
  /** 5.0 publishes refused with 0x97 under the `reject` policy. */
  publishesRejected = 0;
  /** Each session's queue overflow policy (queueOverflow, queueOverflowByClient). */
  readonly overflowPolicies: OverflowPolicies;
  /** maxTopicLevels / maxTopicLength, for every topic and filter. */
  readonly limits: TopicLimits;
  /** Limits against abusive clients (broker/client-limits.ts): connect rate, flapping, publish rate, their counters. */
  readonly clientLimits: ClientLimits;
  /** Traffic counters for stats, $SYS and metrics (broker/counters.ts, broker/stats-view.ts). */
  readonly counters = new Counters();
  /** Set once persistence is restored and plugins are set up. */
  ready = false;
  private transports: Transport[] = [];
  private started: Promise<void> | null = null;
  private stopping = false;
  private droppedCount = 0;
  private lastDropLog = 0;
  private readonly expiryTimers = new Map<Session, { cancel(): void }>();
  private readonly sweeper: NodeJS.Timeout;

  constructor(opts: BrokerOptions = {}) {
    super();
    this.options = resolveOptions(opts);
    this.log = opts.logger ?? createLogger(this.options.logLevel);
    this.persistence = opts.persistence ?? new MemoryPersistence();
    this.hooks = opts.hooks ?? {};
    this.plugins = new PluginHost(this, this.log, this.options.hookTimeout);
    if (opts.hooks) this.plugins.add('hooks', adaptHooks(opts.hooks));
    this.pluginEntries = opts.plugins ?? [];
    // A callback that belongs to a connection closes it itself (Connection.fail); what reaches
    // here belongs to none and is logged.
    this.persistence.onCallbackError ??= (err) =>
      this.log.error({ err }, 'exception in a persistence callback');
    this.persistence.onBatch ??= (ms) => this.counters.batch(ms);
    this.overflowPolicies = new OverflowPolicies(
      this.options.queueOverflow,
      this.options.queueOverflowByClient,
    );
    this.limits = new TopicLimits(this.options.maxTopicLevels, this.options.maxTopicLength, this.log);
    this.clientLimits = new ClientLimits(this.options, this.log);
    this.retained = new RetainedStore(
      this.persistence,
      this.options.maxRetained,
      this.options.maxRetainedBytes,
    );
    this.shares = new SharedGroups(this);
    this.router = new Router(this.shares);
    this.dedup = new Dedup(this.persistence, this.options.dedupWindow, this.options.dedupMaxKeys);
    this.wills = new WillScheduler(this);
    this.flow = new Flow(this.options.maxMemory, this.options.stuckTimeout * 1000);
    // One timer for every connection's keep-alive and CONNECT deadline, instead of one each.
    this.sweeper = setInterval(() => this.sweep(), 250);
    this.sweeper.unref();
  }

  private sweep(): void {
    const now = Date.now();
    try {
      this.flow.tick(now);
      if (this.started) this.dedup.purge(now);
      this.clientLimits.prune(now);
    } catch (err) {
      this.log.error({ err }, 'exception in the sweep');
    }
    const connectDeadline = now - this.options.connectTimeout * 1000;
    for (const c of this.connections) {
      try {
        if (c.state === 'connected') {
          // Not while its reading is paused for its publish rate: what it sent is not being read.
          if (c.keepaliveMs > 0 && now - c.lastSeen > c.keepaliveMs && !c.ratePaused)
            c.close(RC.KEEP_ALIVE_TIMEOUT, 'keep-alive timeout');
        } else if ((c.state === 'new' || c.state === 'connecting') && c.createdAt < connectDeadline) {
          // Also bounds a CONNECT whose authentication never answers.
          c.close(undefined, 'no CONNECT in time', false);
        }
      } catch (err) {
        c.fail(err, 'keep-alive sweep');
      }
    }
  }

  /** Whether a client without a user name may connect when no authenticate hook decides. */
  get anonymousAllowed(): boolean {
    const o = this.options;
    const p = this.plugins;
    return (
      o.allowAnonymous ??
      (p.authenticate.length === 0 && p.authMethods.size === 0 && !o.tlsIdentityAsUsername)
    );
  }

  /**
   * Re-reads plugin configuration (each plugin's onReload; the CLI calls this on SIGHUP) and applies
   * what `update` changes: the RELOADABLE options (others are ignored: they need a restart) and new
   * options for named plugins (passed to their onReload). New checks use what was reloaded at once,
   * and every session's existing subscriptions are asked about again: one no longer granted is
   * removed. Rejects, after all that, when a reload failed.
   */
  async reload(update: BrokerReload = {}): Promise<void> {
    const given = update.options ?? {};
    const keys = (Object.keys(given) as ReloadableOption[]).filter((k) => RELOADABLE.includes(k));
    // Clamped as at construction: resolveOptions fills the rest, which is not used.
    const resolved = resolveOptions(given);
    const target = this.options as Record<ReloadableOption, unknown>;
    for (const k of keys) target[k] = resolved[k];
    if (keys.includes('logLevel')) {
      this.log.level = this.options.logLevel;
      this.plugins.setLogLevel(this.options.logLevel);
    }
    let failed: unknown;
    try {
      await this.plugins.reload(update.pluginOptions);
    } catch (err) {
      failed = err;
    }
    await reauthorizeSubscriptions(this, 'reload');
    if (failed !== undefined) throw failed;
  }

  /** Opens persistence and restores state once; listen() calls it. */
  start(): Promise<void> {
    // Plugins are set up first: their hooks apply to everything restored and every connection.
    this.started ??= this.plugins
      .setup(this.pluginEntries)
      .then(() => restoreState(this))
      .then(() => {
        this.ready = true;
      });
    return this.started;
  }

  /** Starts the configured listeners (broker/transports/listeners.ts). */
  async listen(): Promise<this> {
    await this.start();
    const o = this.options;
    if (o.tlsIdentityAsUsername && o.tls && !o.tls.ca)
      this.log.warn(
        'tlsIdentityAsUsername without a tls CA: no certificate is asked for, every TLS client is refused',
      );
    const specs = listenerSpecs(o);
    const results = await Promise.allSettled(specs.map((spec) => startListener(this, spec)));
    for (const r of results) if (r.status === 'fulfilled') this.transports.push(r.value);
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) {
      await this.close();
      throw failed.reason;
    }
    results.forEach((r, i) => {
      if (r.status !== 'fulfilled') return;
      const { host, path, settings } = specs[i];
      const t = r.value;
      this.log.info(
        { transport: t.name, listener: settings?.name, host: host ?? '::', port: t.port, path },
        'listening',
      );
    });
    return this;
  }

  /** Adds a listener started elsewhere (WebSocket, TLS) so close() stops it too. */
  addTransport(t: Transport): void {
    this.transports.push(t);
  }

  /** The port a transport listens on (default: TCP). */
  port(name = 'tcp'): number {
    const t = this.transports.find((x) => x.name === name);
    if (!t) throw new Error(`no ${name} listener`);
    return t.port;
  }

  /** Serves MQTT over any Duplex stream: every transport, and tests, come through here. */
  handle(stream: Duplex, info: ConnectionInfo = { transport: 'stream' }): Connection {
    const conn = new Connection(this, stream, info);
    this.connections.add(conn);
    if (this.stopping) conn.close(undefined, 'broker shutting down', false);
    return conn;
  }

  /**
   * Publishes a message as the broker itself (embedding API). Returns false when a subscriber's
   * queue was full and took it beyond its bound (like a stream's write()): a caller publishing in
   * a loop should wait (e.g. for the `drain` of its own pacing) before publishing more. A bad
   * topic (invalid, or beyond maxTopicLevels / maxTopicLength) is a programming error: TypeError.
   */
  publish(p: PublishOptions): boolean {
    this.limits.assertTopic(p.topic, 'publish');
    // A repeated idempotency key within the dedup window: not delivered again.
    const user = p.properties?.userProperties;
    if (user !== undefined && this.dedup.repeated(BROKER_PUBLISHER, p.topic, user)) return true;
    const payload = typeof p.payload === 'string' ? Buffer.from(p.payload) : p.payload;
    return this.publishMessage(
      createMessage(p.topic, payload, p.qos ?? 0, p.retain === true, p.properties, p.messageExpiryInterval),
      null,
    );
  }

  /** Routes a message from no client (wills, the embedding API); false when a queue overflowed. */
  publishMessage(msg: Message, from: Session | null): boolean {
    // Over the retained bounds the message is still routed, only not retained (nobody to tell).
    if (msg.retain && !this.retained.set(msg)) this.retainRefused(msg.topic, from?.clientId ?? null);
    this.router.route(msg, from);
    this.emit('publish', msg, from?.clientId ?? null);
    const fits = this.flow.overflowed.length === 0;
    this.flow.overflowed.length = 0;
    return fits;
  }

  /** Counts and logs a retained message not stored for --max-retained / --max-retained-bytes. */
  retainRefused(topic: string, clientId: string | null): void {
    this.clientLimits.hit('retained', {
      clientId,
      topic,
      retained: this.retained.size,
      retainedBytes: this.retained.bytes,
    });
  }

  get stats(): BrokerStats {
    const l = this.clientLimits;
    return {
      connections: this.connections.size,
      sessions: this.sessions.size,
      subscriptions: this.router.size,
      retained: this.retained.size,
      retainedBytes: this.retained.bytes,
      messagesDropped: this.droppedCount,
      queueOverflows: this.flow.overflows,
      publishersWaiting: [...this.connections].filter((c) => c.blocked).length,
      stuckConsumers: this.flow.stuckConsumers,
      queuedBytes: this.flow.memoryHeld,
      publishesRejected: this.publishesRejected,
      connectionsRefused: { ...l.refused },
      publishRateLimited: l.publishRateLimited,
      retainedRefused: l.retainedRefused,
      sharedGroupsRefused: l.sharedGroupsRefused,
      sessionExpiryCapped: l.sessionExpiryCapped,
      dedupKeysForgotten: this.dedup.forgotten,
      flappingBanned: l.flapping.banned,
    };
  }

  /**
   * Binds a connection to its session: takes over a connected one [MQTT-3.1.4-3], discards it on
   * Clean Start [MQTT-3.1.2-4], or resumes it [MQTT-3.2.2-2].
   */
  attachSession(
    conn: Connection,
    clientId: string,
    version: 3 | 4 | 5,
    expiry: number,
    clean: boolean,
  ): { session: Session; present: boolean } {
    let session = this.sessions.get(clientId);
    if (session?.conn) session.conn.close(RC.SESSION_TAKEN_OVER, 'session taken over');
    session = this.sessions.get(clientId);
    if (session && clean) {
      // Clean Start ends the old session, which publishes a will still waiting for its delay
      // [MQTT-3.1.2-8] (5.0 section 3.1.3.2.2: "if Clean Start is 1 the Will Message is sent").
      this.endSession(session);
      session = undefined;
    }
    // Resuming the session before the Will Delay Interval passed: no will [MQTT-3.1.3-9].
    this.wills.cancel(clientId);
    const present = session !== undefined;
    if (session) {
      this.expiryTimers.get(session)?.cancel();
      this.expiryTimers.delete(session);
      session.protocolVersion = version;
      // Resumed with expiry 0: nothing of it stays on disk. A restored session still has its
      // messages only there: Session.load() reads them first, then deletes.
      if (session.persistent && expiry === 0 && session.loaded) this.persistence.deleteSession(clientId);
      session.expiryInterval = expiry;
    } else {
      session = new Session(this, clientId, version, expiry);
      this.sessions.set(clientId, session);
    }
    if (session.persistent)
      this.persistence.putSession({
        clientId,
        protocolVersion: version,
        expiryInterval: expiry,
        username: conn.username,
      });
    session.conn = conn;
    session.resumedBy = present ? conn : null;
    conn.session = session;
    // Stored after the old session's state is gone (a Clean Start deletes it, will included).
    if (conn.will) this.wills.connected(clientId, conn.will);
    return { session, present };
  }

  clientConnected(conn: Connection, sessionPresent: boolean): void {
    const info = conn.clientInfo;
    this.log.info(
      {
        clientId: info.clientId,
        address: info.remoteAddress,
        port: info.remotePort,
        transport: info.transport,
        protocolVersion: info.protocolVersion,
        sessionPresent,
      },
      'client connected',
    );
    const c = this.counters;
    c.connectsTotal++;
    const key = `${info.transport} ${PROTOCOL_NAMES[info.protocolVersion]}`;
    c.connects[key] = (c.connects[key] ?? 0) + 1;
    conn.counted = true;
    if (++c.connected > c.maxConnected) c.maxConnected = c.connected;
    this.emit('client', info);
  }

  /** Called once when a connection ends, however it ends. */
  connectionEnded(conn: Connection, why: string, fireWill: boolean): void {
    this.connections.delete(conn);
    if (conn.admitted) this.clientLimits.admitted--;
    if (conn.counted) {
      conn.counted = false;
      this.counters.connected--;
    }
    const session = conn.session;
    conn.session = null;
    const owned = session !== null && session.conn === conn;
    if (owned && conn.will) {
      // Published (now or after its delay), or deleted: a normal DISCONNECT [MQTT-3.1.2-10], and
      // a broker shutting down, which does not publish wills.
      if (fireWill && !this.stopping)
        this.wills.connectionLost(conn.clientId, conn.will, session.expiryInterval);
      else this.wills.discard(conn.clientId);
    }
    conn.will = undefined;
    if (owned) {
      session.lastClient = conn.clientInfo;
      session.conn = null;
      session.resumedBy = null;
      // Shared group messages it held go to other members now, not when it returns.
      if (session.hasGroupRecords) this.shares.memberOffline(session);
      this.sessionDisconnected(session);
    }
    if (conn.clientId !== '' && conn.state !== 'new') {
      this.log.info(
        { clientId: conn.clientId, address: conn.info.remoteAddress, reason: why },
        'client disconnected',
      );
      this.emit('clientDisconnect', conn.clientInfo, why);
    }
  }

  private sessionDisconnected(session: Session): void {
    if (session.expiryInterval === 0) return this.endSession(session);
    // Offline, its queue lives in persistence only (bounded in bytes), not in memory.
    session.offload();
    this.persistence.putSession({
      clientId: session.clientId,
      protocolVersion: session.protocolVersion,
      expiryInterval: session.expiryInterval,
      disconnectedAt: Date.now(),
      username: session.lastClient?.username,
    });
    this.armExpiry(session, session.expiryInterval * 1000);
  }

  /** Ends the session after ms unless it never expires (a session's own timer; restore arms it too). */
  armExpiry(session: Session, ms: number): void {
    if (session.expiryInterval === NEVER_EXPIRES) return;
    this.expiryTimers.get(session)?.cancel();
    this.expiryTimers.set(
      session,
      longTimeout(
        () => this.endSession(session),
        ms,
        (err) => this.log.error({ err, clientId: session.clientId }, 'exception in a session expiry timer'),
      ),
    );
  }

  /** The session is over: its subscriptions and stored state go, and a pending will is published. */
  endSession(session: Session): void {
    this.expiryTimers.get(session)?.cancel();
    this.expiryTimers.delete(session);
    // Before it leaves its groups: what it held goes back to them.
    if (session.hasGroupRecords) this.shares.sessionEnded(session);
    for (const filter of session.subscriptions.keys()) this.router.remove(session, filter);
    session.clearSubscriptions();
    session.ended();
    if (this.sessions.get(session.clientId) === session) this.sessions.delete(session.clientId);
    this.persistence.deleteSession(session.clientId);
    this.wills.fire(session.clientId);
  }

  dropped(session: { readonly clientId: string } | null, msg: Message, reason: string): void {
    this.droppedCount++;
    this.counters.drop(reason);
    const now = Date.now();
    if (now - this.lastDropLog > 1000) {
      this.lastDropLog = now;
      this.log.warn(
        { clientId: session?.clientId, topic: msg.topic, reason, dropped: this.droppedCount },
        'message dropped',
      );
    }
    this.emit('drop', session?.clientId ?? null, msg, reason);
  }

  /** Stops listening, disconnects every client (5.0: reason 0x8B), and closes persistence. */
  async close(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    clearInterval(this.sweeper);
    const stopped = Promise.all(this.transports.map((t) => t.close()));
    this.transports = [];
    const open = [...this.connections];
    for (const c of open) c.close(RC.SERVER_SHUTTING_DOWN, 'broker shutting down', false);
    // Peers that do not close their side within half a second are cut, so close() cannot hang.
    const cut = setTimeout(() => {
      for (const c of open) c.stream.destroy();
    }, 500);
    await stopped;
    clearTimeout(cut);
    for (const t of this.expiryTimers.values()) t.cancel();
    this.expiryTimers.clear();
    this.wills.stop();
    this.shares.stop();
    this.counters.stop();
    await this.plugins.close();
    // Persistence is flushed and closed only if it was opened.
    if (
      this.started &&
      (await this.started.then(
        () => true,
        () => false,
      ))
    ) {
      await new Promise<void>((resolve) => this.persistence.whenDurable(() => resolve()));
      await this.persistence.close();
    }
  }
}

export function createBroker(opts: BrokerOptions = {}): Broker {
  return new Broker(opts);
}
