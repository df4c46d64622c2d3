import { createServer, type Server, Socket } from 'node:net';
import type { Broker } from '../broker.js';
import type { Connection } from '../connection.js';
import type { ListenerSettings } from './listeners.js';
import { listen, type Transport } from './transport.js';

/** MQTT over plain TCP: each socket goes straight to the broker's stream handler. */
export async function listenTcp(
  broker: Broker,
  port: number,
  host?: string,
  listener?: ListenerSettings,
): Promise<Transport> {
  const server: Server = createServer({ pauseOnConnect: true }, (accepted) => {
    let conn: Connection | undefined;
    const socket =
      directReads(accepted, server, (bytes) => conn?.onData(bytes)) ??
      // Without direct reads the accepted socket is used as it is; it was paused by pauseOnConnect.
      accepted.resume();
    socket.setNoDelay(true);
    conn = broker.handle(socket, {
      transport: 'tcp',
      remoteAddress: socket.remoteAddress,
      remotePort: socket.remotePort,
      listener,
    });
  });
  const boundPort = await listen(server, port, host);
  return {
    name: 'tcp',
    port: boundPort,
    // Resolves once every socket is gone; the broker ends them.
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/**
 * Every TCP socket reads into this one buffer (net.Socket's `onread`), and each read is copied out
 * at its exact size. The default path allocates a 64 KiB buffer per read, shrinks it, and passes
 * it through the Readable stream's machinery; at a few packets per read (the common case for a
 * latency-sensitive client) that costs as much as the MQTT handling itself. Reads run one at a
 * time on the event loop, so sharing the buffer is safe as long as nothing keeps a view of it.
 */
const readBuffer = Buffer.allocUnsafe(64 * 1024);

type Handle = { readStart?: unknown; readStop?: unknown };
type ServerSide = { _handle?: Handle | null; _server?: Server | null; server?: Server | null };

/**
 * Re-wraps an accepted socket's handle in a Socket that reads with `onread` (Node offers the option
 * to client sockets only). Returns null, leaving the accepted socket as it is, when the handle is
 * not what this expects, so a Node release that changes these internals degrades to the default
 * path rather than failing.
 */
function directReads(accepted: Socket, server: Server, onData: (bytes: Buffer) => void): Socket | null {
  const s = accepted as unknown as ServerSide;
  const handle = s._handle;
  if (!handle || typeof handle.readStart !== 'function' || typeof handle.readStop !== 'function') return null;
  if (s._server !== server) return null;
  const socket = new Socket({
    handle,
    readable: true,
    writable: true,
    onread: {
      buffer: readBuffer,
      callback(n: number, buf: Uint8Array) {
        const bytes = Buffer.allocUnsafe(n);
        bytes.set(buf.subarray(0, n));
        onData(bytes);
      },
    },
  } as ConstructorParameters<typeof Socket>[0]);
  // The server counted the accepted socket; the new one stands in for it and uncounts it on close.
  const t = socket as unknown as ServerSide;
  t.server = server;
  t._server = server;
  return socket;
}
