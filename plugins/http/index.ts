/**
 * The HTTP plugin (`--http-port`, default 18083 on 127.0.0.1): the admin API under /api/v1 with
 * its OpenAPI document, /healthz and /readyz, Prometheus /metrics, and the live dashboard at `/`.
 * Built on Fastify against the public plugin API only.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import fastifyStatic from '@fastify/static';
import fastifySwagger from '@fastify/swagger';
import Fastify, { type FastifyInstance, type FastifyReply } from 'fastify';
import { definePlugin } from '../api.js';
import { createPrometheus } from '../metrics/index.js';
import { queueRoutes } from '../queues/http-routes.js';
import type { QueueConsumer } from '../queues/permissions.js';
import { type AdminAuth, isAdmin } from './auth.js';
import { LiveStats } from './live.js';
import { adminRoutes } from './routes.js';
import { generatedToken } from './token.js';

export interface HttpOptions {
  /** Port to listen on; 0 = a free one. */
  port?: number;
  /** Address to bind (default 127.0.0.1: loopback only). */
  host?: string;
  /** The admin bearer token. */
  token?: string;
  /** Where a generated token is kept (the CLI: <data-dir>/admin-token); none = a new one each run, logged. */
  tokenFile?: string;
  /** Password-file users allowed as admin, with Basic auth. */
  adminUsers?: string[];
  /** No credentials needed at all (only when asked for). */
  anonymous?: boolean;
  /** Tokens that may use only their declared queues' pull routes (README "Job queues"). */
  queueConsumers?: QueueConsumer[];
  /** Called once listening (embedding, tests: the port when `port` is 0). */
  onListen?: (address: { host: string; port: number; url: string }) => void;
}

export const DEFAULT_HTTP_PORT = 18083;

/** Paths served without credentials: probes, the API's description, the dashboard's files. */
function isPublic(path: string): boolean {
  return (
    path === '/healthz' ||
    path === '/readyz' ||
    path === '/api/v1/openapi.json' ||
    !(path.startsWith('/api/') || path === '/metrics')
  );
}

/** The dashboard's directory: beside this file in the sources, or from dist/ back to them. */
function dashboardDir(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  const beside = join(here, 'dashboard');
  return existsSync(join(beside, 'index.html'))
    ? beside
    : join(here, '..', '..', '..', 'plugins', 'http', 'dashboard');
}

export default definePlugin<HttpOptions | undefined>({
  name: 'http',
  async setup(api, options = {}) {
    const o = options ?? {};
    const users = new Set(o.adminUsers ?? []);
    const auth: AdminAuth = { users, anonymous: o.anonymous === true, token: o.token || undefined };
    if (!auth.anonymous && auth.token === undefined && users.size === 0)
      auth.token = await generatedToken(o.tokenFile, api.log);
    if (auth.anonymous) api.log.warn('admin API open to anyone who reaches it (--admin-anonymous)');

    const live = new LiveStats(api);
    const prometheus = createPrometheus(api);
    const app: FastifyInstance = Fastify({
      logger: false,
      forceCloseConnections: true,
      // Unknown fields are refused (400), not silently dropped: a typo must not go unnoticed.
      ajv: { customOptions: { removeAdditional: false } },
      // The admin API's bodies are small: a publish payload at most.
      bodyLimit: 1024 * 1024,
    });
    await app.register(fastifySwagger, {
      openapi: {
        info: { title: 'Heron admin API', version: '1' },
        components: {
          securitySchemes: {
            bearer: { type: 'http', scheme: 'bearer' },
            basic: { type: 'http', scheme: 'basic' },
          },
        },
        security: [{ bearer: [] }, { basic: [] }],
      },
    });

    // A callback hook, not an async one: the requests it lets through at once take no extra turn.
    app.addHook('onRequest', (req, reply, done) => {
      const path = req.url.split('?', 1)[0];
      // The queue routes check their own credentials: admin ones (below) or a queue consumer's token.
      if (isPublic(path) || path === '/api/v1/queues' || path.startsWith('/api/v1/queues/')) return done();
      // EventSource cannot send headers: the SSE route takes the same value as `auth`.
      let header = req.headers.authorization;
      if (header === undefined && path === '/api/v1/events') {
        const auth = new URL(req.url, 'http://x').searchParams.get('auth');
        header = auth ?? undefined;
      }
      isAdmin(auth, api, header).then((ok) => {
        if (ok) return done();
        refuse(reply);
      }, done);
    });
    const refuse = (reply: FastifyReply) => {
      reply
        .code(401)
        .header(
          'www-authenticate',
          users.size > 0 ? 'Bearer realm="heron", Basic realm="heron"' : 'Bearer realm="heron"',
        )
        .send({ error: 'admin credentials required' });
    };
    app.setErrorHandler((err: { statusCode?: number; message: string }, _req, reply) => {
      const code = err.statusCode ?? 500;
      if (code >= 500) api.log.error({ err }, 'admin API request failed');
      reply.code(code).send({ error: code >= 500 ? 'internal error' : err.message });
    });

    app.get(
      '/healthz',
      { schema: { summary: 'Liveness: 200 while the process serves', querystring: { type: 'object' } } },
      async () => ({
        status: 'ok',
      }),
    );
    app.get(
      '/readyz',
      {
        schema: { summary: 'Readiness: 503 until persistence is restored', querystring: { type: 'object' } },
      },
      async (_req, reply) => {
        const ready = api.stats().ready;
        return reply.code(ready ? 200 : 503).send({ ready });
      },
    );
    app.get(
      '/metrics',
      { schema: { summary: 'Prometheus metrics (heron_*)', querystring: { type: 'object' } } },
      async (_req, reply) => reply.type(prometheus.contentType).send(await prometheus.metrics()),
    );
    adminRoutes(app, api, live);
    await app.register(queueRoutes, {
      queues: api.queues,
      consumers: o.queueConsumers,
      isAdmin: (header) => isAdmin(auth, api, header),
    });
    app.get('/api/v1/openapi.json', { schema: { hide: true } }, async () => app.swagger());

    const uplot = join(dirname(createRequire(import.meta.url).resolve('uplot/package.json')), 'dist');
    await app.register(fastifyStatic, { root: dashboardDir(), prefix: '/', index: 'index.html' });
    await app.register(fastifyStatic, { root: uplot, prefix: '/vendor/uplot/', decorateReply: false });

    const address = await app.listen({ port: o.port ?? DEFAULT_HTTP_PORT, host: o.host || '127.0.0.1' });
    const a = app.server.address();
    const port = typeof a === 'object' && a ? a.port : (o.port ?? DEFAULT_HTTP_PORT);
    const host = o.host || '127.0.0.1';
    api.log.info({ url: address, port }, `admin API and dashboard on ${address}/`);
    o.onListen?.({ host, port, url: address });

    api.onClose(async () => {
      live.close();
      await app.close();
    });
  },
});
