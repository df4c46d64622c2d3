import type { AddressInfo, Server } from 'node:net';

/** A started listener, whatever its protocol: the broker only needs to know its port and how to stop it. */
export interface Transport {
  readonly name: string;
  readonly port: number;
  close(): Promise<void>;
}

/** Starts a server listening; resolves with the port it got (port 0 picks a free one). */
export function listen(server: Server, port: number, host: string | undefined): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}
