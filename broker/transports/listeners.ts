import type { Broker } from '../broker.js';
import type { ResolvedOptions } from '../options.js';
import { listenTcp } from './tcp.js';
import { listenTls, type TlsOptions } from './tls.js';
import type { Transport } from './transport.js';
import { listenWebSocket } from './ws.js';

export const LISTENER_TYPES = ['tcp', 'tls', 'ws', 'wss'] as const;
export type ListenerType = (typeof LISTENER_TYPES)[number];

/** One listener of BrokerOptions.listeners: each has its own port, host, TLS files and anonymous setting. */
export interface ListenerOptions {
  type: ListenerType;
  /** 0 picks a free port. */
  port: number;
  /** Default: the broker's host option (none = all interfaces). */
  host?: string;
  /** WebSocket upgrade path (ws, wss). Default: the broker's wsPath. */
  path?: string;
  /** Certificate and key (tls, wss). Default: the broker's tls option. */
  tls?: TlsOptions;
  /**
   * Clients without a user name may connect on this listener when no authenticate hook decides
   * (Mosquitto's per_listener_settings). Default: the broker's allowAnonymous.
   */
  allowAnonymous?: boolean;
  /** For logs. Default `<type>:<port>`. */
  name?: string;
}

/** What a connection knows of the listener it came through (ConnectionInfo.listener). */
export interface ListenerSettings {
  readonly name: string;
  readonly allowAnonymous?: boolean;
}

/** A listener to start: the shorthand ports (port, tlsPort, wsPort, wssPort) and then BrokerOptions.listeners. */
export interface ListenerSpec {
  type: ListenerType;
  port: number;
  host: string | undefined;
  path: string | undefined;
  tls: TlsOptions | undefined;
  /** Only for listeners from the list: the shorthand ones follow the broker-wide settings. */
  settings: ListenerSettings | undefined;
}

export function listenerSpecs(o: ResolvedOptions): ListenerSpec[] {
  const specs: ListenerSpec[] = [];
  const short = (type: ListenerType, port: number | null, tls?: TlsOptions) => {
    const ws = type === 'ws' || type === 'wss';
    if (port !== null)
      specs.push({ type, port, host: o.host, path: ws ? o.wsPath : undefined, tls, settings: undefined });
  };
  short('tcp', o.port);
  if (o.tls) short('tls', o.tlsPort, o.tls);
  short('ws', o.wsPort);
  if (o.tls) short('wss', o.wssPort, o.tls);
  for (const l of o.listeners) {
    const ws = l.type === 'ws' || l.type === 'wss';
    const secure = l.type === 'tls' || l.type === 'wss';
    specs.push({
      type: l.type,
      port: l.port,
      host: l.host ?? o.host,
      path: ws ? (l.path ?? o.wsPath) : undefined,
      tls: secure ? (l.tls ?? o.tls) : undefined,
      settings: { name: l.name ?? `${l.type}:${l.port}`, allowAnonymous: l.allowAnonymous },
    });
  }
  return specs;
}

/** Checked by resolveOptions, so a bad listener fails createBroker() rather than listen(). */
export function checkListeners(list: readonly ListenerOptions[], brokerTls: TlsOptions | undefined): void {
  list.forEach((l, i) => {
    if (!(LISTENER_TYPES as readonly string[]).includes(l.type))
      throw new TypeError(
        `listeners[${i}].type must be one of ${LISTENER_TYPES.join(', ')}, got "${l.type}"`,
      );
    if (!Number.isInteger(l.port) || l.port < 0 || l.port > 65535)
      throw new TypeError(`listeners[${i}].port must be a port number (0-65535), got ${l.port}`);
    if ((l.type === 'tls' || l.type === 'wss') && !l.tls && !brokerTls)
      throw new TypeError(`listeners[${i}]: a ${l.type} listener needs tls (its own, or the broker's)`);
  });
}

/** Starts one listener. The CONNECT timeout also bounds the TLS handshake and the WebSocket upgrade before it. */
export function startListener(broker: Broker, s: ListenerSpec): Promise<Transport> {
  const o = broker.options;
  const handshakeTimeout = o.connectTimeout * 1000;
  if (s.type === 'tcp') return listenTcp(broker, s.port, s.host, s.settings);
  if (s.type === 'tls')
    return listenTls(broker, s.port, s.host, s.tls as TlsOptions, handshakeTimeout, s.settings);
  return listenWebSocket(broker, {
    port: s.port,
    host: s.host,
    path: s.path ?? o.wsPath,
    trustProxy: o.wsTrustProxy,
    trustedProxies: o.wsTrustedProxies,
    allowedOrigins: o.wsAllowedOrigins,
    handshakeTimeout,
    maxPayload: o.maxPacketSize,
    tls: s.type === 'wss' ? s.tls : undefined,
    listener: s.settings,
  });
}
