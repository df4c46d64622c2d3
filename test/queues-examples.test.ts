/**
 * The example workers in examples/ (README "Job queues") against a real broker: the MQTT push
 * worker and the HTTP pull worker each do the jobs published before they started.
 */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import Fastify from 'fastify';
import { describe, expect, it } from 'vitest';
import { queueRoutes } from '../plugins/queues/http-routes.js';
import { connect, onCleanup, startBroker } from './helpers.js';
import { publishJobs } from './shared-helpers.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** Runs an example to its exit; its stdout JSON lines. */
function example(
  file: string,
  env: Record<string, string>,
): Promise<{ code: number | null; lines: Record<string, unknown>[] }> {
  const child = spawn(process.execPath, [file], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  onCleanup(() => child.exitCode === null && child.kill('SIGKILL'));
  const lines: Record<string, unknown>[] = [];
  createInterface({ input: child.stdout }).on('line', (l) => lines.push(JSON.parse(l)));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, lines })));
}

describe('examples/', () => {
  it('mqtt-worker.mjs does the queued jobs one at a time (Receive Maximum 1), failing "fail…" jobs to $DLQ', async () => {
    const { url, broker } = await startBroker({
      queues: [
        { name: 'jobs', filter: 'jobs/#', maxAttempts: 1 },
        { name: 'dead', filter: '$DLQ/jobs/#' },
      ],
    });
    const pub = await connect(url, { protocolVersion: 5 });
    const sent = await publishJobs(pub, (i) => `jobs/${i}`, 4);
    await pub.publishAsync('jobs/bad', 'fail-1', { qos: 1 });
    const { code, lines } = await example('examples/mqtt-worker.mjs', { HERON_MQTT: url, MAX_JOBS: '5' });
    expect(code).toBe(0);
    expect(lines.filter((l) => 'done' in l).map((l) => l.done)).toEqual(sent);
    expect(lines.filter((l) => 'failed' in l).map((l) => l.failed)).toEqual(['fail-1']);
    expect(broker.queues.stats('jobs')).toMatchObject({ waiting: 0, deadLettered: 1 });
    expect(broker.queues.stats('dead')!.waiting).toBe(1);
  });

  it('http-worker.mjs pulls, does and acknowledges the queued jobs', async () => {
    const { url, broker } = await startBroker({ queues: [{ name: 'jobs', filter: 'jobs/#' }] });
    const app = Fastify();
    await app.register(queueRoutes, {
      queues: broker.queues,
      consumers: [{ token: 't0k', queues: ['jobs'] }],
    });
    const http = await app.listen({ port: 0, host: '127.0.0.1' });
    onCleanup(() => app.close());
    const pub = await connect(url, { protocolVersion: 5 });
    const sent = await publishJobs(pub, (i) => `jobs/${i}`, 12);
    const { code, lines } = await example('examples/http-worker.mjs', {
      HERON_HTTP: http,
      HERON_TOKEN: 't0k',
      MAX_JOBS: '12',
    });
    expect(code).toBe(0);
    expect(lines.filter((l) => 'done' in l).map((l) => l.done)).toEqual(sent);
    expect(broker.queues.stats('jobs')).toMatchObject({ waiting: 0, pulled: 0 });
  });
});
