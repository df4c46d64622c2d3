import { createServer as createHttpServer, type IncomingMessage, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { BlockList } from 'node:net';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { WebSocketServer } from 'ws';
import type { Broker } from '../broker.js';
import type { ListenerSettings } from './listeners.js';
import { certificateSubject, type TlsOptions, tlsServerOptions } from './tls.js';
import { listen, type Transport } from './transport.js';
import { forwardedFor, normalizeOrigin, originAllowed, trustedProxies } from './ws-checks.js';
import { WebSocketStream } from './ws-stream.js';

export interface WebSocketListenOptions {
  port: number;
  host?: string;
  path: string;
  /** Take the client address from X-Forwarded-For (behind a trusted reverse proxy). */
  trustProxy: boolean;
  /** Proxies (addresses, CIDR ranges) whose X-Forwarded-For entries are believed. */
  trustedProxies: readonly string[];
  /** Origins a browser page may connect from; undefined = same host name only (ws-checks.ts). */
  allowedOrigins: readonly string[] | undefined;
  /** Milliseconds a socket may take to complete the TLS handshake and the upgrade. */
  handshakeTimeout: number;
  /** Serve WSS instead of WS. */
  tls?: TlsOptions;
  maxPayload: number;
  /** The listener's own settings, for listeners from BrokerOptions.listeners. */
  listener?: ListenerSettings;
}

/** Subprotocols MQTT clients offer: "mqtt" (3.1.1 and 5.0) and the legacy "mqttv3.1". */
const MQTT_PROTOCOLS = ['mqtt', 'mqttv3.1'];

const kDeadline = Symbol('heron.upgradeDeadline');
type Pending = Duplex & { [kDeadline]?: NodeJS.Timeout };

function clearDeadline(this: Pending): void {
  clearTimeout(this[kDeadline]);
  this[kDeadline] = undefined;
}

/** MQTT over WebSocket (or WSS): one upgrade path, MQTT subprotocols only, binary frames only. */
export async function listenWebSocket(broker: Broker, o: WebSocketListenOptions): Promise<Transport> {
  const name = o.tls ? 'wss' : 'ws';
  const origins = o.allowedOrigins && new Set(o.allowedOrigins.map(normalizeOrigin));
  const proxies: BlockList | undefined = o.trustProxy ? trustedProxies(o.trustedProxies) : undefined;
  const notFound = (_req: IncomingMessage, res: import('node:http').ServerResponse) => {
    res
      .writeHead(404, { 'content-type': 'text/plain' })
      .end('MQTT over WebSocket is served on the upgrade path only\n');
  };
  const server: Server = o.tls
    ? createHttpsServer({ ...tlsServerOptions(o.tls), handshakeTimeout: o.handshakeTimeout }, notFound)
    : createHttpServer(notFound);
  // A socket that has not upgraded within the timeout (counted once TLS, if any, is up: the
  // handshake has its own) is cut: the CONNECT timeout's sweep only sees connections.
  const pending = (socket: Pending) => {
    socket[kDeadline] = setTimeout(() => socket.destroy(), o.handshakeTimeout);
    socket.once('close', clearDeadline);
  };
  if (o.tls) {
    server.on('secureConnection', pending);
    server.on('tlsClientError', (err, socket) => {
      broker.log.debug({ err: err.message }, 'TLS handshake failed');
      // With a listener here Node leaves the socket open (a handshake timeout included).
      socket.destroy();
    });
  } else server.on('connection', pending);
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: o.maxPayload,
    handleProtocols: (offered) => MQTT_PROTOCOLS.find((p) => offered.has(p)) ?? false,
  });

  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const path = (req.url ?? '').split('?')[0];
    const offered = (req.headers['sec-websocket-protocol'] ?? '')
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
    let refusal: string | undefined;
    // A page from another origin is refused before any MQTT (a browser sends Origin, and only a
    // browser page is a threat to a broker on localhost or behind a firewall).
    if (!originAllowed(req, origins)) refusal = '403 Forbidden';
    else if (path !== o.path) refusal = '404 Not Found';
    else if (offered.length > 0 && !offered.some((p) => MQTT_PROTOCOLS.includes(p)))
      refusal = '400 Bad Request';
    if (refusal) {
      socket.end(`HTTP/1.1 ${refusal}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
      return;
    }
    clearDeadline.call(socket as Pending);
    wss.handleUpgrade(req, socket, head, (ws) => {
      const forwarded = proxies
        ? forwardedFor(req.socket.remoteAddress, req.headers['x-forwarded-for'], proxies)
        : undefined;
      const tlsSocket = o.tls ? (req.socket as TLSSocket) : undefined;
      broker.handle(new WebSocketStream(ws), {
        transport: name,
        remoteAddress: forwarded ?? req.socket.remoteAddress,
        remotePort: forwarded ? undefined : req.socket.remotePort,
        certificateSubject: tlsSocket ? certificateSubject(tlsSocket) : undefined,
        listener: o.listener,
      });
    });
  });

  const boundPort = await listen(server, o.port, o.host);
  return {
    name,
    port: boundPort,
    close: () =>
      new Promise<void>((resolve) => {
        for (const ws of wss.clients) ws.terminate();
        wss.close();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
