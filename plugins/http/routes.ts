import type { FastifyInstance } from 'fastify';
import type { RetainedEntry } from '../admin-types.js';
import type { PluginApi } from '../api.js';
import { SERVER_DISCONNECT_CODES } from '../api.js';
import type { LiveStats } from './live.js';

/**
 * The admin API's routes under /api/v1 (authentication is the server's onRequest hook). Every
 * route declares its params, query and body as JSON schema: Fastify validates (400 on bad input)
 * and @fastify/swagger documents them at /api/v1/openapi.json.
 */

const page = {
  limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100 },
  cursor: { type: 'string', description: "the previous page's `next`" },
} as const;

const clientIdParam = {
  type: 'object',
  properties: { clientId: { type: 'string', minLength: 1 } },
  required: ['clientId'],
} as const;

const topicParam = {
  type: 'object',
  properties: { '*': { type: 'string', minLength: 1, description: 'the topic, URL-encoded' } },
  required: ['*'],
} as const;

const noQuery = { type: 'object', properties: {}, additionalProperties: false } as const;

const notFound = {
  description: 'no such client or topic',
  type: 'object',
  properties: { error: { type: 'string' } },
};

interface PageQuery {
  limit?: number;
  cursor?: string;
}

/** A retained message for JSON: the payload as UTF-8 when it is valid UTF-8, else base64. */
function retainedJson(m: RetainedEntry) {
  const text = m.payload.toString('utf8');
  const utf8 = Buffer.from(text, 'utf8').equals(m.payload);
  return {
    topic: m.topic,
    qos: m.qos,
    encoding: utf8 ? 'utf8' : 'base64',
    payload: utf8 ? text : m.payload.toString('base64'),
    bytes: m.payload.length,
    ...(m.expiresAt !== undefined ? { expiresAt: m.expiresAt } : {}),
    ...(m.contentType !== undefined ? { contentType: m.contentType } : {}),
  };
}

export function adminRoutes(app: FastifyInstance, api: PluginApi, live: LiveStats): void {
  app.get<{ Querystring: PageQuery & { prefix?: string; user?: string; connected?: boolean } }>(
    '/api/v1/clients',
    {
      schema: {
        summary: 'Sessions (connected clients and persistent sessions), a page sorted by client id',
        querystring: {
          type: 'object',
          properties: {
            ...page,
            prefix: { type: 'string', description: 'client ids starting with this' },
            user: { type: 'string', description: 'user name' },
            connected: { type: 'boolean' },
          },
          additionalProperties: false,
        },
      },
    },
    async (req) => api.sessions(req.query),
  );

  app.get<{ Params: { clientId: string } }>(
    '/api/v1/clients/:clientId',
    {
      schema: {
        summary: "One session: subscriptions, queued, inflight, the connected client's will",
        params: clientIdParam,
        querystring: noQuery,
        response: { 404: notFound },
      },
    },
    async (req, reply) => {
      const s = api.session(req.params.clientId);
      return s ?? reply.code(404).send({ error: 'no such session' });
    },
  );

  app.post<{ Params: { clientId: string }; Body: { reasonCode?: number } | undefined }>(
    '/api/v1/clients/:clientId/kick',
    {
      schema: {
        summary: 'Disconnects a connected client (5.0: DISCONNECT 0x98 Administrative action)',
        params: clientIdParam,
        querystring: noQuery,
        body: {
          type: 'object',
          nullable: true,
          properties: { reasonCode: { type: 'integer', enum: [...SERVER_DISCONNECT_CODES] } },
          additionalProperties: false,
        },
        response: { 204: { type: 'null', description: 'disconnected' }, 404: notFound },
      },
    },
    async (req, reply) => {
      const ok = api.disconnect(req.params.clientId, req.body?.reasonCode ?? 0x98);
      if (!ok) return reply.code(404).send({ error: 'no such connected client' });
      api.log.info({ clientId: req.params.clientId }, 'client kicked by admin');
      return reply.code(204).send();
    },
  );

  app.delete<{ Params: { clientId: string } }>(
    '/api/v1/clients/:clientId',
    {
      schema: {
        summary: 'Ends a session: disconnects its client (0x98) and drops subscriptions, queue and state',
        params: clientIdParam,
        querystring: noQuery,
        response: { 204: { type: 'null', description: 'deleted' }, 404: notFound },
      },
    },
    async (req, reply) =>
      api.deleteSession(req.params.clientId)
        ? reply.code(204).send()
        : reply.code(404).send({ error: 'no such session' }),
  );

  app.get<{ Querystring: PageQuery & { clientId?: string; prefix?: string } }>(
    '/api/v1/subscriptions',
    {
      schema: {
        summary: 'Subscriptions, sorted by client id then filter',
        querystring: {
          type: 'object',
          properties: {
            ...page,
            clientId: { type: 'string' },
            prefix: { type: 'string', description: 'filters starting with this' },
          },
          additionalProperties: false,
        },
      },
    },
    async (req) => api.subscriptions(req.query),
  );

  app.get<{ Querystring: PageQuery & { prefix?: string } }>(
    '/api/v1/retained',
    {
      schema: {
        summary: 'Retained messages, sorted by topic',
        querystring: {
          type: 'object',
          properties: { ...page, prefix: { type: 'string', description: 'topics starting with this' } },
          additionalProperties: false,
        },
      },
    },
    async (req) => {
      const p = api.retained(req.query);
      return { ...p, items: p.items.map(retainedJson) };
    },
  );

  app.get<{ Params: { '*': string } }>(
    '/api/v1/retained/*',
    {
      schema: {
        summary: 'The retained message of a topic',
        params: topicParam,
        querystring: noQuery,
        response: { 404: notFound },
      },
    },
    async (req, reply) => {
      const m = api.retainedMessage(req.params['*']);
      return m ? retainedJson(m) : reply.code(404).send({ error: 'no retained message' });
    },
  );

  app.delete<{ Params: { '*': string } }>(
    '/api/v1/retained/*',
    {
      schema: {
        summary: 'Clears the retained message of a topic',
        params: topicParam,
        querystring: noQuery,
        response: { 204: { type: 'null', description: 'cleared' }, 404: notFound },
      },
    },
    async (req, reply) =>
      api.deleteRetained(req.params['*'])
        ? reply.code(204).send()
        : reply.code(404).send({ error: 'no retained message' }),
  );

  app.post<{
    Body: {
      topic: string;
      payload?: string;
      encoding?: 'utf8' | 'base64';
      qos?: 0 | 1 | 2;
      retain?: boolean;
    };
  }>(
    '/api/v1/publish',
    {
      schema: {
        summary: 'Publishes a message as the broker',
        querystring: noQuery,
        body: {
          type: 'object',
          properties: {
            topic: { type: 'string', minLength: 1, maxLength: 65535 },
            payload: { type: 'string', default: '' },
            encoding: { type: 'string', enum: ['utf8', 'base64'], default: 'utf8' },
            qos: { type: 'integer', enum: [0, 1, 2], default: 0 },
            retain: { type: 'boolean', default: false },
          },
          required: ['topic'],
          additionalProperties: false,
        },
        response: {
          200: { type: 'object', properties: { queued: { type: 'boolean' } } },
          400: { type: 'object', properties: { error: { type: 'string' } } },
        },
      },
    },
    async (req, reply) => {
      const b = req.body;
      try {
        const payload = Buffer.from(b.payload ?? '', b.encoding === 'base64' ? 'base64' : 'utf8');
        // false: a subscriber's queue was full; the message still went where there was room.
        return { queued: api.publish({ topic: b.topic, payload, qos: b.qos, retain: b.retain }) };
      } catch (err) {
        // A topic with wildcards, or beyond the topic limits: api.publish refuses it.
        return reply.code(400).send({ error: (err as Error).message });
      }
    },
  );

  app.get(
    '/api/v1/groups',
    {
      schema: {
        summary: 'Shared subscription groups: members, depth, in flight, retrying, dead letters',
        querystring: noQuery,
      },
    },
    async () => api.groups(),
  );

  app.get(
    '/api/v1/stats',
    { schema: { summary: "The broker's figures (api.stats())", querystring: noQuery } },
    async () => api.stats(),
  );

  app.get(
    '/api/v1/live',
    {
      schema: {
        summary: "The dashboard's sample: rates, top topics, top queues, groups, warnings",
        querystring: noQuery,
      },
    },
    async () => live.sample(),
  );

  app.get<{ Querystring: { limit?: number } }>(
    '/api/v1/warnings',
    {
      schema: {
        summary: "The broker log's recent warnings and errors, newest first",
        querystring: {
          type: 'object',
          properties: { limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100 } },
          additionalProperties: false,
        },
      },
    },
    async (req) => api.warnings(req.query.limit),
  );

  app.get<{ Querystring: { auth?: string } }>(
    '/api/v1/events',
    {
      schema: {
        summary:
          'Server-sent events: one dashboard sample (as /api/v1/live) each second. EventSource cannot set headers: `auth` carries the Authorization value instead',
        querystring: {
          type: 'object',
          properties: { auth: { type: 'string', description: 'e.g. "Bearer <token>", URL-encoded' } },
          additionalProperties: false,
        },
      },
    },
    (_req, reply) => {
      reply.hijack();
      live.attach(reply.raw);
    },
  );
}
