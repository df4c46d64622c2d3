import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { PeekedMessage, PulledMessage, QueueApi } from '../api.js';
import {
  type Caller,
  type QueueAction,
  QueuePermissions,
  type QueuePermissionsOptions,
} from './permissions.js';

/**
 * The queue routes under /api/v1/queues (README "Job queues"), as a Fastify plugin: pull consumers
 * (pull with long poll, ack, nack, extend) and administration (list, stats, peek, purge,
 * dlq-replay), over `api.queues`. Every request carries `Authorization: Bearer <token>`, checked
 * against QueuePermissions: 401 without a known token, 403 for a queue or route it may not use.
 */
export interface QueueRoutesOptions extends QueuePermissionsOptions {
  queues: QueueApi;
  /**
   * Whether an Authorization header carries the admin API's credentials (the HTTP listener's own
   * check, e.g. its token or Basic users): such a request may use every queue and route. Asked
   * only when the header is none of the tokens above.
   */
  isAdmin?: (authorization: string | undefined) => boolean | Promise<boolean>;
}

const MAX_RECEIPTS = 100;

const name = { type: 'object', required: ['name'], properties: { name: { type: 'string', minLength: 1 } } };
const receipts = {
  type: 'array',
  minItems: 1,
  maxItems: MAX_RECEIPTS,
  items: { type: 'string', minLength: 1, maxLength: 200 },
};
const settled = {
  200: {
    type: 'object',
    properties: { settled: { type: 'integer' }, unknown: { type: 'array', items: { type: 'string' } } },
  },
};

type Params = { name: string };

/** A message as the pull and peek routes answer it (a response schema: serialized without JSON.stringify's probing). */
const messageSchema = {
  type: 'object',
  properties: {
    receipt: { type: 'string' },
    topic: { type: 'string' },
    payload: { type: 'string' },
    encoding: { type: 'string' },
    qos: { type: 'integer' },
    attempts: { type: 'integer' },
    publishedAt: { type: 'number' },
    priority: { type: 'integer' },
    state: { type: 'string' },
    properties: {
      type: 'object',
      properties: {
        payloadFormatIndicator: { type: 'boolean' },
        contentType: { type: 'string' },
        responseTopic: { type: 'string' },
        correlationData: { type: 'string' },
        userProperties: { type: 'object', additionalProperties: true },
      },
    },
  },
};
const messages = {
  200: { type: 'object', properties: { messages: { type: 'array', items: messageSchema } } },
};
const pulled = {
  200: {
    type: 'object',
    properties: {
      messages: { type: 'array', items: messageSchema },
      settled: { type: 'integer' },
      unknown: { type: 'array', items: { type: 'string' } },
    },
  },
};

/** A message as JSON: the payload as text when the 5.0 Payload Format Indicator says UTF-8, else base64. */
function messageJson(m: PulledMessage | PeekedMessage): Record<string, unknown> {
  const p = m.properties;
  const text = p?.payloadFormatIndicator === true;
  const out: Record<string, unknown> = {
    topic: m.topic,
    payload: m.payload.toString(text ? 'utf8' : 'base64'),
    encoding: text ? 'utf8' : 'base64',
    qos: m.qos,
    attempts: m.attempts,
    publishedAt: m.publishedAt,
    priority: m.priority,
  };
  if ('receipt' in m) out.receipt = m.receipt;
  if ('state' in m) out.state = m.state;
  if (p !== undefined) {
    const props: Record<string, unknown> = {};
    if (p.payloadFormatIndicator !== undefined) props.payloadFormatIndicator = p.payloadFormatIndicator;
    if (p.contentType !== undefined) props.contentType = p.contentType;
    if (p.responseTopic !== undefined) props.responseTopic = p.responseTopic;
    if (p.correlationData !== undefined) props.correlationData = p.correlationData.toString('base64');
    if (p.userProperties !== undefined) props.userProperties = p.userProperties;
    out.properties = props;
  }
  return out;
}

export async function queueRoutes(app: FastifyInstance, opts: QueueRoutesOptions): Promise<void> {
  const { queues } = opts;
  const permissions = new QueuePermissions(opts);
  // In this plugin's scope only: plain JSON.parse. The routes read known fields of schema-checked
  // bodies and merge nothing, so the prototype-poisoning scan of Fastify's default parser buys nothing.
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_req, body, done) => {
    try {
      done(null, body === '' ? undefined : JSON.parse(body as string));
    } catch (err) {
      (err as { statusCode?: number }).statusCode = 400;
      done(err as Error, undefined);
    }
  });

  /**
   * The caller, or null with the reply already sent (401/403/404); a promise only when the admin
   * check has to decide, so the pull loop's requests (a queue token) take no extra turn.
   */
  const ADMIN: Caller = { admin: true, queues: null };
  function check(
    req: FastifyRequest,
    reply: FastifyReply,
    action: QueueAction,
  ): Caller | null | Promise<Caller | null> {
    const header = req.headers.authorization;
    const caller = permissions.caller(header);
    if (caller !== null || opts.isAdmin === undefined) return allowed(req, reply, action, caller);
    return Promise.resolve(opts.isAdmin(header)).then((admin) =>
      allowed(req, reply, action, admin ? ADMIN : null),
    );
  }

  function allowed(
    req: FastifyRequest,
    reply: FastifyReply,
    action: QueueAction,
    caller: Caller | null,
  ): Caller | null {
    if (caller === null) {
      void reply
        .code(401)
        .header('www-authenticate', 'Bearer')
        .send({ error: 'a valid bearer token is needed' });
      return null;
    }
    const q = (req.params as Partial<Params>).name;
    if (q === undefined) return caller;
    if (!QueuePermissions.allows(caller, q, action)) {
      void reply
        .code(403)
        .send({ error: `not allowed to ${action === 'admin' ? 'administer' : 'use'} queue ${q}` });
      return null;
    }
    if (!queues.has(q)) {
      void reply.code(404).send({ error: `no declared queue named ${q}` });
      return null;
    }
    return caller;
  }

  app.get('/api/v1/queues', async (req, reply) => {
    const caller = await check(req, reply, 'consume');
    if (caller === null) return reply;
    return { queues: queues.list().filter((q) => QueuePermissions.allows(caller, q.name, 'consume')) };
  });

  app.get<{ Params: Params }>('/api/v1/queues/:name', { schema: { params: name } }, async (req, reply) => {
    if ((await check(req, reply, 'consume')) === null) return reply;
    return queues.stats(req.params.name);
  });

  app.post<{
    Params: Params;
    Body: { max?: number; waitMs?: number; visibilityMs?: number; ack?: string[] };
  }>(
    '/api/v1/queues/:name/pull',
    {
      schema: {
        params: name,
        body: {
          type: ['object', 'null'],
          additionalProperties: false,
          properties: {
            max: { type: 'integer', minimum: 1, maximum: 100 },
            waitMs: { type: 'integer', minimum: 0, maximum: 20_000 },
            visibilityMs: { type: 'integer', minimum: 1, maximum: 12 * 3600 * 1000 },
            // The receipts of the previous batch, acknowledged before pulling: one request a batch.
            ack: { ...receipts, minItems: 0 },
          },
        },
        response: pulled,
      },
    },
    async (req, reply) => {
      let caller = check(req, reply, 'consume');
      if (caller instanceof Promise) caller = await caller;
      if (caller === null) return reply;
      const body = req.body ?? {};
      const acked = body.ack === undefined ? undefined : queues.ack(req.params.name, body.ack).unknown;
      const name = req.params.name;
      const max = body.max ?? 1;
      const waitMs = body.waitMs ?? 0;
      let got = await queues.pull(name, { max, visibilityMs: body.visibilityMs });
      if (got.length === 0 && waitMs > 0) {
        // A long poll: a consumer gone meanwhile takes nothing.
        const ac = new AbortController();
        const onClose = () => {
          if (!reply.raw.writableFinished) ac.abort();
        };
        reply.raw.once('close', onClose);
        try {
          got = await queues.pull(name, { max, waitMs, visibilityMs: body.visibilityMs, signal: ac.signal });
        } finally {
          reply.raw.off('close', onClose);
        }
      }
      const out: Record<string, unknown> = { messages: got.map(messageJson) };
      if (acked !== undefined) {
        out.settled = body.ack!.length - acked.length;
        out.unknown = acked;
      }
      return out;
    },
  );

  const settle = (
    path: string,
    extra: Record<string, unknown>,
    required: string[],
    run: (q: string, body: Record<string, unknown> & { receipts: string[] }) => { unknown: string[] },
  ) =>
    app.post<{ Params: Params; Body: Record<string, unknown> & { receipts: string[] } }>(
      `/api/v1/queues/:name/${path}`,
      {
        schema: {
          params: name,
          body: {
            type: 'object',
            additionalProperties: false,
            required: ['receipts', ...required],
            properties: { receipts, ...extra },
          },
          response: settled,
        },
      },
      async (req, reply) => {
        let caller = check(req, reply, 'consume');
        if (caller instanceof Promise) caller = await caller;
        if (caller === null) return reply;
        const { unknown } = run(req.params.name, req.body);
        return { settled: req.body.receipts.length - unknown.length, unknown };
      },
    );
  settle('ack', {}, [], (q, b) => queues.ack(q, b.receipts));
  settle('nack', { delayMs: { type: 'integer', minimum: 0, maximum: 12 * 3600 * 1000 } }, [], (q, b) =>
    queues.nack(q, b.receipts, (b.delayMs as number | undefined) ?? 0),
  );
  settle(
    'extend',
    { visibilityMs: { type: 'integer', minimum: 1, maximum: 12 * 3600 * 1000 } },
    ['visibilityMs'],
    (q, b) => queues.extend(q, b.receipts, b.visibilityMs as number),
  );

  app.get<{ Params: Params; Querystring: { max?: number } }>(
    '/api/v1/queues/:name/peek',
    {
      schema: {
        params: name,
        querystring: { type: 'object', properties: { max: { type: 'integer', minimum: 1, maximum: 100 } } },
        response: messages,
      },
    },
    async (req, reply) => {
      if ((await check(req, reply, 'admin')) === null) return reply;
      return { messages: queues.peek(req.params.name, req.query.max ?? 10).map(messageJson) };
    },
  );

  app.post<{ Params: Params }>(
    '/api/v1/queues/:name/purge',
    { schema: { params: name } },
    async (req, reply) => {
      if ((await check(req, reply, 'admin')) === null) return reply;
      return { purged: queues.purge(req.params.name) };
    },
  );

  app.post<{ Params: Params; Body: { max?: number } | null }>(
    '/api/v1/queues/:name/dlq-replay',
    {
      schema: {
        params: name,
        body: {
          type: ['object', 'null'],
          additionalProperties: false,
          properties: { max: { type: 'integer', minimum: 1 } },
        },
      },
    },
    async (req, reply) => {
      if ((await check(req, reply, 'admin')) === null) return reply;
      try {
        return { replayed: queues.replayDeadLetters(req.params.name, req.body?.max) };
      } catch (err) {
        if (err instanceof RangeError) return reply.code(409).send({ error: err.message });
        throw err;
      }
    },
  );
}
