/**
 * `heron queue list|stats|peek|purge|dlq-replay` (plugins/queues/queue-cli.ts), spawned, against the
 * queue routes on a Fastify instance over a real broker.
 */
import Fastify from 'fastify';
import { describe, expect, it } from 'vitest';
import { queueRoutes } from '../plugins/queues/http-routes.js';
import { output } from './cli-helpers.js';
import { connect, onCleanup, startBroker } from './helpers.js';
import { until } from './shared-helpers.js';

describe('heron queue', () => {
  it('lists, shows, peeks, replays dead letters and purges through the admin API', async () => {
    const { url, broker } = await startBroker({
      queues: [
        { name: 'jobs', filter: 'jobs/#', maxAttempts: 1 },
        { name: 'jobs-dead', filter: '$DLQ/jobs/#' },
      ],
    });
    const app = Fastify();
    await app.register(queueRoutes, { queues: broker.queues, adminTokens: ['adm'] });
    const http = await app.listen({ port: 0, host: '127.0.0.1' });
    onCleanup(() => app.close());
    const q = (...args: string[]) => output(['queue', ...args, '--http-url', http, '--admin-token', 'adm']);

    const pub = await connect(url, { protocolVersion: 5 });
    await pub.publishAsync('jobs/a', 'hello', { qos: 1, properties: { payloadFormatIndicator: true } });
    await pub.publishAsync('jobs/b', 'bad', { qos: 1 });

    const list = await q('list');
    expect(list.code).toBe(0);
    expect(list.stdout.split('\n')[0]).toMatch(
      /^NAME\s+FILTER\s+WAITING\s+DELAYED\s+PULLED\s+MEMBERS\s+OLDEST\s+DEAD-LETTERED$/,
    );
    expect(list.stdout).toMatch(/^jobs\s+jobs\/#\s+2\s+0\s+0\s+0\/0\s+\S+\s+0$/m);
    expect(list.stdout).toMatch(/^jobs-dead\s+\$DLQ\/jobs\/#\s+0\s/m);

    const stats = await q('stats', 'jobs', '--json');
    expect(JSON.parse(stats.stdout)).toMatchObject({ name: 'jobs', waiting: 2, maxAttempts: 1 });

    const peek = await q('peek', 'jobs', '--max', '5');
    expect(peek.stdout).toMatch(/^waiting\s+0\s+jobs\/a\s+hello$/m);
    expect(peek.stdout).toMatch(
      new RegExp(`^waiting\\s+0\\s+jobs/b\\s+base64:${Buffer.from('bad').toString('base64')}$`, 'm'),
    );

    // One job fails its only attempt: dead-lettered, kept by jobs-dead, replayed.
    const [a, b] = await broker.queues.pull('jobs', { max: 2 });
    broker.queues.ack('jobs', [a.receipt]);
    broker.queues.nack('jobs', [b.receipt]);
    await until(() => broker.queues.stats('jobs-dead')!.waiting === 1, 'dead letter');
    expect((await q('dlq-replay', 'jobs')).stdout).toBe('replayed 1\n');
    expect(broker.queues.stats('jobs')!.waiting).toBe(1);
    expect((await q('purge', 'jobs')).stdout).toBe('purged 1\n');

    // Errors: unknown queue (1), wrong token (1), bad usage (2), nothing listening (1).
    const missing = await q('stats', 'nope');
    expect(missing).toMatchObject({ code: 1 });
    expect(missing.stderr).toMatch(/HTTP 404: no declared queue named nope/);
    const denied = await output(['queue', 'list', '--http-url', http, '--admin-token', 'wrong']);
    expect(denied.code).toBe(1);
    expect(denied.stderr).toMatch(/HTTP 401/);
    expect((await output(['queue', 'peek'])).code).toBe(2);
    expect((await output(['queue', 'frobnicate', 'x'])).code).toBe(2);
    await app.close();
    expect((await q('list')).code).toBe(1);
  });
});
