import type { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { SubscriptionRecord } from '../persistence/types.js';
import {
  type HookName,
  type Plugin,
  type PluginApi,
  type PluginEntry,
  type PluginHooks,
  SERVER_DISCONNECT_CODES,
  type Verdict,
} from '../plugins/api.js';
import type { ClientInfo, Hooks } from '../plugins/types.js';
import { adminView } from './admin-view.js';
import type { Broker, BrokerEvents } from './broker.js';
import type { RegisteredMethod } from './enhanced-auth.js';
import type { Session } from './session.js';
import { groupsView, statsSnapshot, topQueues } from './stats-view.js';

/** Outcome of a chain: allowed, denied, or a hook failed (threw, rejected, timed out, bad answer). */
export const ALLOW = 1;
export const DENY = 0;
export const FAILED = -1;
/** The authenticate chain ended without a decision (every hook passed, or none is registered). */
export const UNDECIDED = 2;
export type Outcome = typeof ALLOW | typeof DENY | typeof FAILED | typeof UNDECIDED;

type Decider = (client: ClientInfo, a: unknown, b?: unknown) => unknown;
type ChainName = 'authenticate' | 'authorizePublish' | 'authorizeSubscribe' | 'authorizeDeliver';
interface Link {
  plugin: string;
  fn: Decider;
  /** authorizeDeliver links: the same plugin's coversDeliveries, when it has one. */
  covers?: (client: ClientInfo, filter: string) => unknown;
}

const OBSERVERS = ['onConnect', 'onDisconnect', 'onPublish', 'onSubscribe'] as const;
type ObserverName = (typeof OBSERVERS)[number];

/**
 * The plugin layer's runtime: hook chains in registration order, each hook guarded. A chain is an
 * array tested for length by callers, so a broker without plugins pays one check. A synchronous
 * answer stays synchronous (no promise on the publish path); only a hook returning a promise makes
 * the outcome a promise, bounded by hookTimeout. A failing hook denies and never throws out.
 */
export class PluginHost {
  readonly authenticate: Link[] = [];
  readonly authorizePublish: Link[] = [];
  readonly authorizeSubscribe: Link[] = [];
  readonly authorizeDeliver: Link[] = [];
  /** Enhanced-authentication methods by name (api.addAuthMethod, enhanced-auth.ts). */
  readonly authMethods = new Map<string, RegisteredMethod>();
  private readonly observers: Record<ObserverName, Link[]> = {
    onConnect: [],
    onDisconnect: [],
    onPublish: [],
    onSubscribe: [],
  };
  /** Services plugins provide one another (api.provide / api.service). */
  private readonly services = new Map<string, unknown>();
  private readonly closers: { plugin: string; fn: () => void | Promise<void> }[] = [];
  private readonly reloaders: { plugin: string; fn: (options: unknown) => void | Promise<void> }[] = [];
  /** Each plugin's options as last given (setup, then reloads): what its onReload is passed. */
  private readonly options = new Map<string, unknown>();
  /** Plugins' child loggers, which do not follow the broker logger's level by themselves. */
  private readonly loggers: Logger[] = [];

  constructor(
    private readonly broker: Broker,
    private readonly log: Logger,
    private readonly timeoutMs: number,
  ) {}

  /**
   * Bumped by each reload: what coversDeliveries answered before it is asked again (the router
   * keeps each subscription's answer with the generation it was given in).
   */
  generation = 0;

  /** Registers one plugin's hooks at the end of each chain; returns what removes them again. */
  add(plugin: string, hooks: PluginHooks): () => void {
    const added: { list: Link[]; link: Link; observer?: ObserverName }[] = [];
    for (const name of Object.keys(hooks) as HookName[]) {
      const fn = hooks[name];
      if (fn === undefined || name === 'coversDeliveries') continue;
      if (typeof fn !== 'function') throw new TypeError(`plugin ${plugin}: hook ${name} is not a function`);
      const link: Link = { plugin, fn: fn.bind(hooks) as Decider };
      if (name === 'authorizeDeliver' && typeof hooks.coversDeliveries === 'function')
        link.covers = hooks.coversDeliveries.bind(hooks);
      if ((OBSERVERS as readonly string[]).includes(name)) {
        this.observe(name as ObserverName, link);
        added.push({ list: this.observers[name as ObserverName], link, observer: name as ObserverName });
      } else if (name in CHAINS) {
        this[name as ChainName].push(link);
        added.push({ list: this[name as ChainName], link });
      } else throw new TypeError(`plugin ${plugin}: unknown hook ${name}`);
    }
    let removed = false;
    return () => {
      if (removed) return;
      removed = true;
      for (const { list, link, observer } of added) {
        const i = list.indexOf(link);
        if (i >= 0) list.splice(i, 1);
        // The last observer of a kind gone: the broker's listener goes too (nothing per event).
        if (observer !== undefined && list.length === 0) this.unobserve(observer);
        // A chain changed: coverage answers given before may no longer hold.
        if (observer === undefined) this.generation++;
      }
    };
  }

  /** Runs every plugin's setup in order; a failing one fails the start, naming it. */
  async setup(entries: readonly PluginEntry[]): Promise<void> {
    for (const entry of entries) {
      const [plugin, options] = Array.isArray(entry)
        ? (entry as readonly [Plugin, unknown])
        : [entry as Plugin, undefined];
      this.options.set(plugin.name, options);
      try {
        await plugin.setup(this.api(plugin.name), options);
      } catch (err) {
        throw new Error(`plugin ${plugin.name}: setup failed: ${(err as Error).message}`, { cause: err });
      }
      this.log.info({ plugin: plugin.name }, 'plugin loaded');
    }
  }

  private childLogger(name: string): Logger {
    const child = this.log.child({ plugin: name });
    this.loggers.push(child);
    return child;
  }

  /** Broker.reload() changed the log level: the plugins' loggers follow. */
  setLogLevel(level: string): void {
    for (const l of this.loggers) l.level = level;
  }

  private api(name: string): PluginApi {
    const broker = this.broker;
    return {
      name,
      log: this.childLogger(name),
      addHooks: (hooks) => this.add(name, hooks),
      addAuthMethod: (method, impl) => {
        if (typeof method !== 'string' || method === '')
          throw new TypeError(`plugin ${name}: an authentication method needs a name`);
        if (typeof impl?.start !== 'function' || typeof impl.continue !== 'function')
          throw new TypeError(`plugin ${name}: authentication method ${method} needs start and continue`);
        const had = this.authMethods.get(method);
        if (had) throw new TypeError(`plugin ${name}: authentication method ${method} is ${had.plugin}'s`);
        this.authMethods.set(method, { plugin: name, method: impl as RegisteredMethod['method'] });
      },
      publish: (message) => broker.publish(message),
      queues: broker.queues,
      stats: () => statsSnapshot(broker),
      topQueues: (n) => topQueues(broker, n),
      groups: () => groupsView(broker),
      ...adminView(broker, name, this.services),
      clients: () => {
        const out: ClientInfo[] = [];
        for (const c of broker.connections) if (c.state === 'connected') out.push(c.clientInfo);
        return out;
      },
      client: (id) => {
        const c = broker.sessions.get(id)?.conn;
        return c && c.state === 'connected' ? c.clientInfo : undefined;
      },
      disconnect: (id, reasonCode = 0x98) => {
        if (!SERVER_DISCONNECT_CODES.has(reasonCode))
          throw new TypeError(`plugin ${name}: ${reasonCode} is not a DISCONNECT reason code a server sends`);
        const c = broker.sessions.get(id)?.conn;
        if (c?.state !== 'connected') return false;
        c.close(reasonCode, `disconnected by plugin ${name}`);
        return true;
      },
      onClose: (fn) => {
        this.closers.push({ plugin: name, fn });
      },
      onReload: (fn) => {
        this.reloaders.push({ plugin: name, fn });
      },
    };
  }

  /**
   * Every plugin's onReload callbacks, in registration order, each given its plugin's options
   * (newOptions' where it names the plugin), each run even when one before failed; rejects with the failures (each naming its plugin) when there are any.
   */
  async reload(newOptions?: ReadonlyMap<string, unknown>): Promise<void> {
    for (const [plugin, o] of newOptions ?? []) if (this.options.has(plugin)) this.options.set(plugin, o);
    const failures: Error[] = [];
    // Rules may change below: coverage answers given before are stale from here on.
    this.generation++;
    for (const { plugin, fn } of this.reloaders) {
      try {
        await fn(this.options.get(plugin));
      } catch (err) {
        failures.push(
          new Error(`plugin ${plugin}: reload failed: ${(err as Error).message}`, { cause: err }),
        );
      }
    }
    // And after: an answer given while a reloader was reading its file may hold the old rules.
    this.generation++;
    if (failures.length > 0) throw new AggregateError(failures, failures.map((e) => e.message).join('; '));
  }

  /** Each plugin's onClose callbacks, in registration order; failures are logged. */
  async close(): Promise<void> {
    for (const { plugin, fn } of this.closers.splice(0)) {
      try {
        await fn();
      } catch (err) {
        this.log.error({ err, plugin }, 'plugin onClose failed');
      }
    }
  }

  /**
   * Runs a chain from link `from`: the first allow or deny decides, pass goes on, the end allows
   * (authenticate: the end is UNDECIDED, for CONNECT to apply allowAnonymous). Synchronous unless
   * a hook returns a promise.
   */
  decide(
    chain: ChainName,
    client: ClientInfo,
    a: unknown,
    b?: unknown,
    from = 0,
  ): Outcome | Promise<Outcome> {
    const links = this[chain];
    for (let i = from; i < links.length; i++) {
      const link = links[i];
      let answer: unknown;
      try {
        answer = link.fn(client, a, b);
      } catch (err) {
        this.log.error(
          { err, plugin: link.plugin, clientId: client.clientId, hook: chain, arg: a },
          'hook threw; denied',
        );
        return FAILED;
      }
      if (answer === 'pass') continue;
      if (answer === 'allow') return ALLOW;
      if (answer === 'deny') return DENY;
      if (typeof (answer as PromiseLike<unknown> | null)?.then === 'function') {
        if (chain === 'authorizeDeliver') {
          (answer as PromiseLike<unknown>).then(undefined, () => undefined);
          this.log.error(
            { plugin: link.plugin, clientId: client.clientId, hook: chain },
            'authorizeDeliver returned a promise; denied',
          );
          return FAILED;
        }
        return this.settle(answer as PromiseLike<unknown>, chain, i, client, a, b);
      }
      this.log.error(
        { plugin: link.plugin, clientId: client.clientId, hook: chain, answer: String(answer) },
        'hook answered neither allow, deny nor pass; denied',
      );
      return FAILED;
    }
    return chain === 'authenticate' ? UNDECIDED : ALLOW;
  }

  private settle(
    pending: PromiseLike<unknown>,
    chain: ChainName,
    at: number,
    client: ClientInfo,
    a: unknown,
    b: unknown,
  ): Promise<Outcome> {
    const plugin = this[chain][at].plugin;
    const fields = { plugin, clientId: client.clientId, hook: chain, arg: a };
    return new Promise<Outcome>((resolve) => {
      const timer = setTimeout(() => {
        this.log.error({ ...fields, timeoutMs: this.timeoutMs }, 'hook timed out; denied');
        resolve(FAILED);
      }, this.timeoutMs);
      pending.then(
        (answer) => {
          clearTimeout(timer);
          if (answer === 'allow') return resolve(ALLOW);
          if (answer === 'deny') return resolve(DENY);
          if (answer === 'pass') return resolve(this.decide(chain, client, a, b, at + 1));
          this.log.error(
            { ...fields, answer: String(answer) },
            'hook answered neither allow, deny nor pass; denied',
          );
          resolve(FAILED);
        },
        (err: unknown) => {
          clearTimeout(timer);
          this.log.error({ ...fields, err }, 'hook rejected');
          resolve(FAILED);
        },
      );
    });
  }

  /**
   * Would the authorizeDeliver chain allow every topic `filter` can match for this client? Only the
   * chain's first hook is asked (its 'allow' decides the chain); one without coversDeliveries, or
   * one that throws, answers no, so each delivery is checked as usual.
   */
  deliveriesCovered(client: ClientInfo, filter: string): boolean {
    const covers = this.authorizeDeliver[0]?.covers;
    if (covers === undefined) return false;
    try {
      return covers(client, filter) === true;
    } catch (err) {
      this.log.error(
        { err, plugin: this.authorizeDeliver[0].plugin, hook: 'coversDeliveries' },
        'hook threw',
      );
      return false;
    }
  }

  /** authorizeDeliver for a session (callers check the chain's length first). Always synchronous. */
  allowDeliver(session: Session, topic: string): boolean {
    // Set at CONNECT (its connection's info), kept after it (broker/handlers/connect.ts).
    const client = session.lastClient ?? session.offlineInfo();
    // One hook answering allow or deny (the common case, e.g. an ACL file): decided here, without
    // the general chain's bookkeeping; it runs once per delivery.
    const links = this.authorizeDeliver;
    if (links.length === 1) {
      let answer: unknown;
      try {
        answer = links[0].fn(client, topic);
      } catch {
        answer = undefined; // the chain below logs and denies
      }
      if (answer === 'allow') return true;
      if (answer === 'deny') return false;
    }
    return this.decide('authorizeDeliver', client, topic) === ALLOW;
  }

  /** The broker listener of each observer kind that has observers. */
  private readonly listeners = new Map<
    ObserverName,
    { event: keyof BrokerEvents; fn: (x: unknown, y: unknown) => void }
  >();

  private observe(name: ObserverName, link: Link): void {
    const list = this.observers[name];
    if (list.length === 0) {
      // One broker listener per observer kind, added only when a plugin observes it.
      const call = (x: unknown, y?: unknown) => this.notify(name, x, y);
      const b = this.broker;
      const event: keyof BrokerEvents =
        name === 'onConnect'
          ? 'client'
          : name === 'onDisconnect'
            ? 'clientDisconnect'
            : name === 'onPublish'
              ? 'publish'
              : 'subscribe';
      const fn =
        name === 'onSubscribe'
          ? (id: unknown, rec: unknown) => {
              const r = rec as SubscriptionRecord;
              call(id, { filter: r.filter, qos: r.qos });
            }
          : (x: unknown, y: unknown) => call(x, y);
      const entry = { event, fn };
      (b as unknown as EventEmitter).on(entry.event, entry.fn);
      this.listeners.set(name, entry);
    }
    list.push(link);
  }

  private unobserve(name: ObserverName): void {
    const entry = this.listeners.get(name);
    if (!entry) return;
    this.listeners.delete(name);
    (this.broker as unknown as EventEmitter).off(entry.event, entry.fn);
  }

  private notify(name: ObserverName, x: unknown, y: unknown): void {
    for (const link of this.observers[name]) {
      try {
        const r = (link.fn as (x: unknown, y: unknown) => unknown)(x, y);
        if (typeof (r as PromiseLike<unknown> | null)?.then === 'function') {
          (r as PromiseLike<unknown>).then(undefined, (err: unknown) =>
            this.log.error({ err, plugin: link.plugin, hook: name }, 'observer rejected'),
          );
        }
      } catch (err) {
        this.log.error({ err, plugin: link.plugin, hook: name }, 'observer threw');
      }
    }
  }
}

const CHAINS: Record<ChainName, true> = {
  authenticate: true,
  authorizePublish: true,
  authorizeSubscribe: true,
  authorizeDeliver: true,
};

/** The older boolean `hooks` option as one plugin: true allows, false denies. */
export function adaptHooks(hooks: Hooks): PluginHooks {
  const verdict = (r: unknown): Verdict => (r ? 'allow' : 'deny');
  const map = (r: unknown): Verdict | Promise<Verdict> =>
    typeof (r as PromiseLike<unknown> | null)?.then === 'function'
      ? Promise.resolve(r).then(verdict)
      : verdict(r);
  const out: PluginHooks = {};
  const { authenticate, authorizePublish, authorizeSubscribe } = hooks;
  if (authenticate) out.authenticate = (c, u, p) => map(authenticate.call(hooks, c, u, p));
  if (authorizePublish) out.authorizePublish = (c, t) => map(authorizePublish.call(hooks, c, t));
  if (authorizeSubscribe) out.authorizeSubscribe = (c, f) => map(authorizeSubscribe.call(hooks, c, f));
  return out;
}
