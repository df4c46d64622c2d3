/**
 * The HTTP pull routes (plugins/queues/http-routes.ts) on a Fastify instance over a real broker:
 * pull with long poll, ack, nack, extend, list, stats, peek, purge, dlq-replay, and per-queue
 * permissions by bearer token.
 */
import Fastify from 'fastify';
import { describe, expect, it } from 'vitest';
import type { BrokerOptions } from '../broker/index.js';
import { queueRoutes } from '../plugins/queues/http-routes.js';
import { connect, onCleanup, startBroker } from './helpers.js';
import { allPayloads, publishJobs, until, worker } from './shared-helpers.js';

const ADMIN = 'admin-secret';
const JOBS_ONLY = 'jobs-consumer';
const QUEUES: BrokerOptions['queues'] = [
  { name: 'jobs', filter: 'jobs/#', maxAttempts: 2 },
  { name: 'mail', filter: 'mail/#' },
  { name: 'jobs-dead', filter: '$DLQ/jobs/#' },
];

// biome-ignore lint/suspicious/noExplicitAny: response bodies are read as loose JSON in these tests
type Json = Record<string, any>;

async function setup(opts: BrokerOptions = {}) {
  const tb = await startBroker({ queues: QUEUES, ...opts });
  const app = Fastify();
  await app.register(queueRoutes, {
    queues: tb.broker.queues,
    adminTokens: [ADMIN],
    consumers: [{ token: JOBS_ONLY, queues: ['jobs'] }],
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
  onCleanup(() => app.close());
  const address = app.server.address();
  const base = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
  const call = async (method: string, path: string, body?: unknown, token = JOBS_ONLY) => {
    const res = await fetch(`${base}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${token}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: text === '' ? undefined : (JSON.parse(text) as Json) };
  };
  return { ...tb, base, call };
}

describe('HTTP pull routes', () => {
  it('pull, ack: payload as text when UTF-8 is declared, else base64; receipts settle once', async () => {
    const { url, call } = await setup();
    const pub = await connect(url, { protocolVersion: 5 });
    await pub.publishAsync('jobs/text', 'héllo', {
      qos: 1,
      properties: {
        payloadFormatIndicator: true,
        userProperties: { 'job-id': '1' },
        correlationData: Buffer.from([1, 2]),
      },
    });
    await pub.publishAsync('jobs/bin', Buffer.from([0, 255, 1]), { qos: 1 });
    const r = await call('POST', '/api/v1/queues/jobs/pull', { max: 10, visibilityMs: 60_000 });
    expect(r.status).toBe(200);
    const [a, b] = r.body!.messages;
    expect(a).toMatchObject({ topic: 'jobs/text', payload: 'héllo', encoding: 'utf8', attempts: 1, qos: 1 });
    expect(a.properties).toEqual({
      payloadFormatIndicator: true,
      correlationData: 'AQI=',
      userProperties: { 'job-id': '1' },
    });
    expect(typeof a.publishedAt).toBe('number');
    expect(b).toMatchObject({
      topic: 'jobs/bin',
      payload: Buffer.from([0, 255, 1]).toString('base64'),
      encoding: 'base64',
    });
    const ack = await call('POST', '/api/v1/queues/jobs/ack', { receipts: [a.receipt, b.receipt, 'nope'] });
    expect(ack).toEqual({ status: 200, body: { settled: 2, unknown: ['nope'] } });
    // A pull may acknowledge the previous batch (one request a batch).
    await pub.publishAsync('jobs/3', 'three', { qos: 1 });
    const [c] = (await call('POST', '/api/v1/queues/jobs/pull', {})).body!.messages;
    const next = await call('POST', '/api/v1/queues/jobs/pull', { ack: [c.receipt, 'nope'] });
    expect(next.body).toEqual({ messages: [], settled: 1, unknown: ['nope'] });
    const stats = await call('GET', '/api/v1/queues/jobs');
    expect(stats.body).toMatchObject({ name: 'jobs', filter: 'jobs/#', waiting: 0, pulled: 0 });
  });

  it('bad bodies are 400: max 1–100, waitMs ≤ 20000, receipts required', async () => {
    const { call } = await setup();
    expect((await call('POST', '/api/v1/queues/jobs/pull', { max: 101 })).status).toBe(400);
    expect((await call('POST', '/api/v1/queues/jobs/pull', { max: 0 })).status).toBe(400);
    expect((await call('POST', '/api/v1/queues/jobs/pull', { waitMs: 20_001 })).status).toBe(400);
    expect((await call('POST', '/api/v1/queues/jobs/ack', {})).status).toBe(400);
    expect((await call('POST', '/api/v1/queues/jobs/extend', { receipts: ['x'] })).status).toBe(400);
    // No body at all is an empty pull.
    expect(await call('POST', '/api/v1/queues/jobs/pull')).toEqual({ status: 200, body: { messages: [] } });
  });

  it('long poll answers as soon as a job arrives', async () => {
    const { url, call } = await setup();
    const pub = await connect(url, { protocolVersion: 5 });
    const t0 = Date.now();
    const polling = call('POST', '/api/v1/queues/jobs/pull', { waitMs: 20_000 });
    // The poll is waiting in the broker before the job is published.
    await new Promise((r) => setTimeout(r, 100));
    await pub.publishAsync('jobs/1', 'now', { qos: 1 });
    const r = await polling;
    expect(
      r.body!.messages.map((m: { payload: string }) => Buffer.from(m.payload, 'base64').toString()),
    ).toEqual(['now']);
    expect(Date.now() - t0).toBeLessThan(5000);
  });

  it('nack with delay, extend, visibility timeout, then dead letters and dlq-replay', async () => {
    const { url, call, broker } = await setup();
    const pub = await connect(url, { protocolVersion: 5 });
    await pub.publishAsync('jobs/x', 'flaky', { qos: 1, properties: { userProperties: { 'job-id': '9' } } });
    const [m1] = (await call('POST', '/api/v1/queues/jobs/pull', {})).body!.messages;
    expect(
      (await call('POST', '/api/v1/queues/jobs/extend', { receipts: [m1.receipt], visibilityMs: 50 })).body,
    ).toEqual({
      settled: 1,
      unknown: [],
    });
    expect(
      (await call('POST', '/api/v1/queues/jobs/nack', { receipts: [m1.receipt], delayMs: 200 })).body!
        .settled,
    ).toBe(1);
    const t0 = Date.now();
    const [m2] = (await call('POST', '/api/v1/queues/jobs/pull', { waitMs: 5000, visibilityMs: 50 })).body!
      .messages;
    expect(Date.now() - t0).toBeGreaterThanOrEqual(150);
    expect(m2.attempts).toBe(2);
    // Not acknowledged within 50 ms: its 2nd attempt was the last (maxAttempts 2): dead-lettered.
    await until(() => broker.queues.stats('jobs-dead')!.waiting === 1, 'dead letter kept');
    const peek = await call('GET', '/api/v1/queues/jobs-dead/peek?max=5', undefined, ADMIN);
    expect(peek.body!.messages[0]).toMatchObject({ topic: '$DLQ/jobs/jobs/x', state: 'waiting' });
    expect(peek.body!.messages[0].properties.userProperties).toEqual({
      'job-id': '9',
      'original-topic': 'jobs/x',
      attempts: '2',
      'reason-code': '0x80',
    });
    expect((await call('POST', '/api/v1/queues/jobs/dlq-replay', undefined, ADMIN)).body).toEqual({
      replayed: 1,
    });
    const [back] = (await call('POST', '/api/v1/queues/jobs/pull', {})).body!.messages;
    expect(back).toMatchObject({ topic: 'jobs/x', attempts: 1 });
    expect(back.properties.userProperties).toEqual({ 'job-id': '9' });
    // A queue with no dead-letter queue declared for it: 409.
    expect((await call('POST', '/api/v1/queues/mail/dlq-replay', undefined, ADMIN)).status).toBe(409);
    await pub.publishAsync('mail/1', 'm', { qos: 1 });
    expect((await call('POST', '/api/v1/queues/mail/purge', undefined, ADMIN)).body).toEqual({ purged: 1 });
  });

  it('two MQTT workers and one HTTP puller share a queue: every job done exactly once', async () => {
    const { url, call } = await setup();
    const a = await worker(url, '$share/jobs/jobs/#', { protocolVersion: 5 });
    const b = await worker(url, '$share/jobs/jobs/#', { protocolVersion: 5 });
    const pulled: string[] = [];
    let stop = false;
    const puller = (async () => {
      while (!stop) {
        const { messages } = (await call('POST', '/api/v1/queues/jobs/pull', { max: 10, waitMs: 200 })).body!;
        for (const m of messages) pulled.push(Buffer.from(m.payload, 'base64').toString());
        if (messages.length > 0)
          await call('POST', '/api/v1/queues/jobs/ack', {
            receipts: messages.map((m: { receipt: string }) => m.receipt),
          });
      }
    })();
    const pub = await connect(url, { protocolVersion: 5 });
    const sent = await publishJobs(pub, (i) => `jobs/${i % 7}`, 300);
    await until(() => allPayloads([a, b]).length + pulled.length === sent.length, 'every job', 10_000);
    stop = true;
    await puller;
    expect([...allPayloads([a, b]), ...pulled].sort()).toEqual([...sent].sort());
  });

  it('permissions: a consumer token uses its queues only; admin routes need an admin token', async () => {
    const { call } = await setup();
    expect((await call('POST', '/api/v1/queues/jobs/pull', {}, 'wrong')).status).toBe(401);
    expect((await call('GET', '/api/v1/queues', undefined, '')).status).toBe(401);
    expect((await call('POST', '/api/v1/queues/mail/pull', {})).status).toBe(403);
    expect((await call('POST', '/api/v1/queues/mail/ack', { receipts: ['x'] })).status).toBe(403);
    expect((await call('GET', '/api/v1/queues/mail')).status).toBe(403);
    expect((await call('GET', '/api/v1/queues/jobs/peek')).status).toBe(403);
    expect((await call('POST', '/api/v1/queues/jobs/purge')).status).toBe(403);
    expect((await call('POST', '/api/v1/queues/jobs/dlq-replay')).status).toBe(403);
    // The list shows what the caller may use.
    expect((await call('GET', '/api/v1/queues')).body!.queues.map((q: { name: string }) => q.name)).toEqual([
      'jobs',
    ]);
    expect(
      (await call('GET', '/api/v1/queues', undefined, ADMIN)).body!.queues.map(
        (q: { name: string }) => q.name,
      ),
    ).toEqual(['jobs', 'mail', 'jobs-dead']);
    expect((await call('POST', '/api/v1/queues/mail/pull', {}, ADMIN)).status).toBe(200);
    expect((await call('POST', '/api/v1/queues/nothing/pull', {}, ADMIN)).status).toBe(404);
  });

  it("isAdmin: the HTTP listener's own admin check admits its credentials to every route", async () => {
    const { broker } = await startBroker({ queues: QUEUES });
    const app = Fastify();
    const basic = `Basic ${Buffer.from('ops:pw').toString('base64')}`;
    await app.register(queueRoutes, { queues: broker.queues, isAdmin: async (h) => h === basic });
    const base = await app.listen({ port: 0, host: '127.0.0.1' });
    onCleanup(() => app.close());
    const get = async (authorization: string) =>
      (await fetch(`${base}/api/v1/queues/jobs/peek`, { headers: { authorization } })).status;
    expect(await get(basic)).toBe(200);
    expect(await get(`Basic ${Buffer.from('ops:no').toString('base64')}`)).toBe(401);
  });
});
