import { readFileSync } from 'node:fs';
import { createServer, type TlsOptions as NodeTlsOptions, type TLSSocket } from 'node:tls';
import type { Broker } from '../broker.js';
import type { ListenerSettings } from './listeners.js';
import { listen, type Transport } from './transport.js';

export interface TlsOptions {
  /** PEM certificate chain and key, as contents or file paths. */
  cert: string | Buffer;
  key: string | Buffer;
  /** CA bundle that client certificates must chain to. */
  ca?: string | Buffer;
  /** Refuse clients without a certificate signed by `ca`. */
  requireClientCert?: boolean;
}

/** A value that looks like PEM is used as is; anything else is read as a file path. */
function pem(v: string | Buffer): string | Buffer {
  if (Buffer.isBuffer(v) || v.includes('-----BEGIN')) return v;
  return readFileSync(v);
}

export function tlsServerOptions(o: TlsOptions): NodeTlsOptions {
  return {
    cert: pem(o.cert),
    key: pem(o.key),
    ca: o.ca ? pem(o.ca) : undefined,
    requestCert: o.requireClientCert === true || o.ca !== undefined,
    rejectUnauthorized: o.requireClientCert === true,
  };
}

/** The subject of a verified client certificate, kept for authentication hooks. */
export function certificateSubject(socket: TLSSocket): Record<string, string | string[]> | undefined {
  if (!socket.authorized) return undefined;
  const cert = socket.getPeerCertificate();
  if (!cert?.subject) return undefined;
  return { ...cert.subject } as Record<string, string | string[]>;
}

/**
 * The user name a client certificate stands for (--tls-identity-as-username): the Common Name of a
 * verified certificate (the first, when the subject has several); null without one.
 */
export function certificateIdentity(subject: Record<string, string | string[]> | undefined): string | null {
  const cn = subject?.CN;
  const name = Array.isArray(cn) ? cn[0] : cn;
  return name === undefined || name === '' ? null : name;
}

/** MQTT over TLS (mqtts). handshakeTimeout (ms) bounds a socket that never completes the handshake. */
export async function listenTls(
  broker: Broker,
  port: number,
  host: string | undefined,
  o: TlsOptions,
  handshakeTimeout: number,
  listener?: ListenerSettings,
): Promise<Transport> {
  const server = createServer({ ...tlsServerOptions(o), handshakeTimeout }, (socket) => {
    socket.setNoDelay(true);
    broker.handle(socket, {
      transport: 'tls',
      remoteAddress: socket.remoteAddress,
      remotePort: socket.remotePort,
      certificateSubject: certificateSubject(socket),
      listener,
    });
  });
  // A failed handshake is the client's problem, not the broker's.
  server.on('tlsClientError', (err, socket) => {
    broker.log.debug({ err: err.message }, 'TLS handshake failed');
    // With a listener here Node leaves the socket open (a handshake timeout included).
    socket.destroy();
  });
  const boundPort = await listen(server, port, host);
  return {
    name: 'tls',
    port: boundPort,
    // Resolves once every socket is gone; the broker ends them.
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
