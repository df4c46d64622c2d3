/**
 * Declared queues through the CLI: `--queue name=filter` and the config file's `queues:`, on
 * LevelDB, across a restart.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { output, run } from './cli-helpers.js';
import { connect, onCleanup } from './helpers.js';
import { publishJobs, until, worker } from './shared-helpers.js';

describe('heron --queue / queues:', () => {
  it('jobs published before any worker survive a restart and reach the first worker', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'heron-qcli-'));
    onCleanup(() => rmSync(dir, { recursive: true, force: true }));
    const base = [
      ...['--port', '0', '--host', '127.0.0.1', '--ws-port', '0', '--http-port', 'off'],
      ...['--data-dir', join(dir, 'data')],
    ];
    const first = run([...base, '--queue', 'jobs=jobs/#']);
    const l1 = await first.line((l) => l.msg === 'listening');
    const pub = await connect(`mqtt://127.0.0.1:${l1.port}`, { protocolVersion: 5 });
    await publishJobs(pub, (i) => `jobs/${i}`, 3);
    await pub.endAsync();
    first.child.kill('SIGTERM');
    expect((await first.done).code).toBe(0);

    // The same queue from a file, with a bound of its own.
    const file = join(dir, 'heron.yaml');
    writeFileSync(file, 'queues:\n  - name: jobs\n    filter: "jobs/#"\n    maxMessages: 10\n');
    const second = run([...base, '--config', file]);
    const l2 = await second.line((l) => l.msg === 'listening');
    const url = `mqtt://127.0.0.1:${l2.port}`;
    const w = await worker(url, '$share/jobs/jobs/#', { protocolVersion: 5 });
    await until(() => w.jobs.length === 3, 'the 3 jobs');
    expect(w.done().sort()).toEqual(['job-0', 'job-1', 'job-2']);
  });

  it('the HTTP listener serves the queue API: a consumer token pulls its queue, heron queue administers', async () => {
    const r = run([
      ...['--port', '0', '--host', '127.0.0.1', '--ws-port', '0', '--persistence', 'memory'],
      ...['--queue', 'jobs=jobs/#', '--queue', 'mail=mail/#'],
      ...['--http-port', '0', '--admin-token', 'adm', '--queue-consumer', 'worker=jobs'],
    ]);
    const mqtt = await r.line((l) => l.msg === 'listening');
    const api = await r.line((l) => l.msg.startsWith('admin API and dashboard on'));
    const base = `http://127.0.0.1:${api.port}`;
    const pub = await connect(`mqtt://127.0.0.1:${mqtt.port}`, { protocolVersion: 5 });
    await pub.publishAsync('jobs/1', 'hello', { qos: 1, properties: { payloadFormatIndicator: true } });
    await pub.publishAsync('mail/1', 'secret', { qos: 1 });
    const pull = (queue: string, token: string) =>
      fetch(`${base}/api/v1/queues/${queue}/pull`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ max: 10 }),
      });
    expect((await pull('mail', 'worker')).status).toBe(403);
    const res = await pull('jobs', 'worker');
    const { messages } = (await res.json()) as { messages: { payload: string; encoding: string }[] };
    expect(messages).toMatchObject([{ payload: 'hello', encoding: 'utf8' }]);
    const list = await output(['queue', 'list', '--http-url', base, '--admin-token', 'adm']);
    expect(list.code).toBe(0);
    expect(list.stdout).toMatch(/^jobs\s+jobs\/#\s+0\s+0\s+1\s/m);
    expect(list.stdout).toMatch(/^mail\s+mail\/#\s+1\s+0\s+0\s/m);
    // A consumer token is no admin token.
    expect(
      (await output(['queue', 'purge', 'jobs', '--http-url', base, '--admin-token', 'worker'])).code,
    ).toBe(1);
  });
});
