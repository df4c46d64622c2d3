import { createServer } from 'node:net';
import type { Broker } from '../broker.js';
import { listen, type Transport } from './transport.js';

/** MQTT over plain TCP: each socket goes straight to the broker's stream handler. */
export async function listenTcp(broker: Broker, port: number, host?: string): Promise<Transport> {
  const server = createServer((socket) => {
    socket.setNoDelay(true);
    broker.handle(socket, {
      transport: 'tcp',
      remoteAddress: socket.remoteAddress,
      remotePort: socket.remotePort,
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
