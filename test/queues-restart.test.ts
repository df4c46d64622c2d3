/**
 * Declared queues on LevelDB: what they hold, pulled jobs with their receipts, jobs in backoff and
 * expired leases survive a restart.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { type BrokerOptions, createBroker } from '../broker/index.js';
import { LevelPersistence } from '../persistence/level.js';
import { connect, onCleanup } from './helpers.js';
import { publishJobs, until, worker } from './shared-helpers.js';

const JOBS = { name: 'jobs', filter: 'jobs/#' };

describe('declared queues on LevelDB', () => {
  async function level(dir: string, opts: BrokerOptions = {}) {
    const broker = createBroker({
      port: 0,
      host: '127.0.0.1',
      logLevel: 'silent',
      persistence: new LevelPersistence({ dir }),
      queues: [JOBS],
      ...opts,
    });
    await broker.listen();
    return { broker, url: `mqtt://127.0.0.1:${broker.port()}` };
  }

  it('jobs published before any worker survive a restart; so do pulled jobs and their receipts', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'heron-queues-'));
    onCleanup(() => rm(dir, { recursive: true, force: true }));
    const one = await level(dir);
    const pub = await connect(one.url, { protocolVersion: 5 });
    await publishJobs(pub, (i) => `jobs/${i}`, 5);
    const [leased] = await one.broker.queues.pull('jobs', { visibilityMs: 60_000 });
    expect(leased.payload.toString()).toBe('job-0');
    await pub.endAsync();
    await one.broker.close();

    const two = await level(dir);
    onCleanup(() => two.broker.close());
    expect(two.broker.queues.stats('jobs')).toMatchObject({ waiting: 4, pulled: 1 });
    // The receipt given before the restart still acknowledges its job.
    expect(two.broker.queues.ack('jobs', [leased.receipt]).unknown).toEqual([]);
    const w = await worker(two.url, '$share/jobs/jobs/#', { protocolVersion: 5 });
    await until(() => w.jobs.length === 4, 'the 4 waiting jobs');
    expect(w.done().sort()).toEqual(['job-1', 'job-2', 'job-3', 'job-4']);
    await until(() => two.broker.queues.stats('jobs')!.waiting === 0, 'drained');
  });

  it('a nacked job keeps its delay and attempts across a restart; an expired lease is redelivered', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'heron-queues-'));
    onCleanup(() => rm(dir, { recursive: true, force: true }));
    const one = await level(dir);
    const pub = await connect(one.url, { protocolVersion: 5 });
    await publishJobs(pub, (i) => `jobs/${i}`, 2);
    const [a, b] = await one.broker.queues.pull('jobs', { max: 2, visibilityMs: 1 });
    one.broker.queues.nack('jobs', [a.receipt], 3_600_000);
    // b's 1 ms lease ends: it waits again with one attempt counted.
    await until(() => one.broker.queues.stats('jobs')!.waiting === 1, 'b back');
    await pub.endAsync();
    await one.broker.close();

    const two = await level(dir);
    onCleanup(() => two.broker.close());
    expect(two.broker.queues.peek('jobs').map((m) => [m.payload.toString(), m.state, m.attempts])).toEqual([
      [b.payload.toString(), 'waiting', 1],
      [a.payload.toString(), 'delayed', 1],
    ]);
    const [again] = await two.broker.queues.pull('jobs');
    expect(again).toMatchObject({ attempts: 2 });
    expect(again.payload.toString()).toBe(b.payload.toString());
  });
});
