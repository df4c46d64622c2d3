import Fastify from 'fastify';
import { definePlugin } from '../api.js';
import { queueRoutes } from './http-routes.js';
import type { QueueConsumer } from './permissions.js';

/**
 * The `queues-http` plugin: the /api/v1/queues routes (http-routes.ts) on an HTTP listener of
 * their own, for pull consumers and `heron queue` (README "Job queues"). Loaded by the CLI with
 * `--queue-http-port`; embedding: `plugins: [[queuesHttp, { port: 8080, adminTokens: ['…'] }]]`.
 */
export interface QueuesHttpOptions {
  /** Port to listen on (0 = any free one). */
  port: number;
  /** Address to bind; default 127.0.0.1 (the routes hand out jobs: not on every interface unless asked). */
  host?: string;
  /** Tokens that may use every queue and route (peek, purge, dlq-replay included). */
  adminTokens?: string[];
  /** Tokens limited to their queues (pull, ack, nack, extend, stats). */
  consumers?: QueueConsumer[];
  /** Told the address once it listens (embedding, tests). */
  onListening?: (address: { host: string; port: number }) => void;
}

export default definePlugin<QueuesHttpOptions>({
  name: 'queues-http',
  async setup(api, o) {
    if (!Number.isInteger(o?.port) || o.port < 0 || o.port > 65535)
      throw new TypeError('queues-http: port must be a port number');
    const app = Fastify({ logger: false });
    await app.register(queueRoutes, {
      queues: api.queues,
      adminTokens: o.adminTokens,
      consumers: o.consumers,
    });
    const host = o.host ?? '127.0.0.1';
    await app.listen({ port: o.port, host });
    const address = app.server.address();
    const port = typeof address === 'object' && address !== null ? address.port : o.port;
    api.log.info({ host, port, transport: 'http' }, 'queue API listening');
    o.onListening?.({ host, port });
    api.onClose(() => app.close());
  },
});
