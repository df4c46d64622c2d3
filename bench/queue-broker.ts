/**
 * The broker of the `queues` bench (bench/scenarios/queues.ts), in its own process so that its CPU
 * is measured apart from the load generator: Heron with its defaults (in-memory state, as
 * createBroker) and two declared queues, `push` and `pull`, with the HTTP queue routes on a
 * Fastify instance. Prints one JSON line `{ mqtt, http }` (the ports) once it listens.
 */
import Fastify from 'fastify';
import { createBroker } from '../broker/index.js';
import { queueRoutes } from '../plugins/queues/http-routes.js';

const BENCH_TOKEN = 'bench-token';

const broker = createBroker({
  port: 0,
  host: '127.0.0.1',
  logLevel: 'warn',
  queues: [
    { name: 'push', filter: 'push/#' },
    { name: 'pull', filter: 'pull/#' },
  ],
});
await broker.listen();
const app = Fastify();
await app.register(queueRoutes, {
  queues: broker.queues,
  consumers: [{ token: BENCH_TOKEN, queues: ['*'] }],
});
await app.listen({ port: 0, host: '127.0.0.1' });
const address = app.server.address();
process.stdout.write(
  `${JSON.stringify({ mqtt: broker.port(), http: typeof address === 'object' && address ? address.port : 0 })}\n`,
);
process.on('SIGTERM', () => {
  void app.close().then(() => broker.close().then(() => process.exit(0)));
});
