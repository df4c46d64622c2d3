import { type AddressInfo, createServer, type Socket } from 'node:net';
import type { Broker } from '../broker.js';
import type { Transport } from './transport.js';

/** MQTT over plain TCP: each socket goes straight to the broker's stream handler. */
export async function listenTcp(broker: Broker, port: number, host?: string): Promise<Transport> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    socket.setNoDelay(true);
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    broker.handle(socket, {
      transport: 'tcp',
      remoteAddress: socket.remoteAddress,
      remotePort: socket.remotePort,
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return {
    name: 'tcp',
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        // Sockets still open after the broker said goodbye are cut so close() cannot hang.
        setTimeout(() => {
          for (const s of sockets) s.destroy();
        }, 500).unref();
      }),
  };
}
