import { mkdtemp, readFile, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createBroker } from '../broker/index.js';
import { MemoryPersistence } from '../persistence/memory.js';
import httpPlugin from '../plugins/http/index.js';
import passwordFilePlugin from '../plugins/password-file/index.js';
import { formatHash, hashPassword } from '../plugins/password-file/passwords.js';
import { run } from './cli-helpers.js';
import { connect, disconnected, nextMessages, onCleanup, QUIET_CLI } from './helpers.js';
import { startAdmin, TOKEN } from './http-helpers.js';

interface Page<T> {
  items: T[];
  total: number;
  next?: string;
}

/** Every admin route: method, path, body. */
const ROUTES: [string, string, unknown?][] = [
  ['GET', '/api/v1/clients'],
  ['GET', '/api/v1/clients/c1'],
  ['POST', '/api/v1/clients/c1/kick'],
  ['DELETE', '/api/v1/clients/c1'],
  ['GET', '/api/v1/subscriptions'],
  ['GET', '/api/v1/retained'],
  ['GET', '/api/v1/retained/r%2Fone'],
  ['DELETE', '/api/v1/retained/r%2Fone'],
  ['POST', '/api/v1/publish', { topic: 'x/y', payload: 'p' }],
  ['GET', '/api/v1/groups'],
  ['GET', '/api/v1/stats'],
  ['GET', '/api/v1/live'],
  ['GET', '/api/v1/warnings'],
  ['GET', '/api/v1/events'],
  ['GET', '/metrics'],
];

describe('admin API authentication', () => {
  it('answers 401 on every route without credentials or with wrong ones, and serves them with the token', async () => {
    const a = await startAdmin();
    for (const [method, path, body] of ROUTES) {
      const init = { method, body: body === undefined ? undefined : JSON.stringify(body) };
      for (const auth of [null, 'Bearer wrong', `Basic ${Buffer.from('u:p').toString('base64')}`, TOKEN]) {
        const res = await a.call(path, { ...init, auth });
        expect(res.status, `${method} ${path} with ${auth}`).toBe(401);
        expect(res.headers.get('www-authenticate')).toContain('Bearer');
        await res.body?.cancel();
      }
      const res = await a.call(path, init);
      // 404: c1 and r/one do not exist yet; everything else succeeds.
      expect([200, 204, 404], `${method} ${path}`).toContain(res.status);
      await res.body?.cancel();
    }
    // Probes and the API description need no credentials.
    for (const path of ['/healthz', '/readyz', '/api/v1/openapi.json']) {
      expect((await a.call(path, { auth: null })).status, path).toBe(200);
    }
    const doc = await (await a.call('/api/v1/openapi.json', { auth: null })).json();
    expect(Object.keys(doc.paths)).toEqual(
      expect.arrayContaining(['/api/v1/clients/{clientId}/kick', '/api/v1/publish']),
    );
  });

  it('the SSE stream takes the Authorization value as the auth query parameter', async () => {
    const a = await startAdmin();
    expect(a.broker.listenerCount('publish')).toBe(0);
    const bad = await a.call(`/api/v1/events?auth=${encodeURIComponent('Bearer nope')}`, { auth: null });
    expect(bad.status).toBe(401);
    const res = await a.call(`/api/v1/events?auth=${encodeURIComponent(`Bearer ${TOKEN}`)}`, { auth: null });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/event-stream');
    const reader = res.body!.getReader();
    const { value } = await reader.read();
    const text = new TextDecoder().decode(value);
    expect(text.startsWith('data: ')).toBe(true);
    expect(JSON.parse(text.slice(6)).ready).toBe(true);
    // Top topics are counted only while a stream is open: the onPublish hook is added, then removed.
    expect(a.broker.listenerCount('publish')).toBe(1);
    await reader.cancel();
    await expect.poll(() => a.broker.listenerCount('publish')).toBe(0);
  });

  it('admin users log in with Basic auth checked against the password file', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'heron-admin-'));
    const file = join(dir, 'passwd');
    await writeFile(
      file,
      `boss:${formatHash(await hashPassword('s3cret'))}\nworker:${formatHash(await hashPassword('w'))}\n`,
    );
    const a = await startAdmin(
      { token: undefined, adminUsers: ['boss'] },
      { plugins: [[passwordFilePlugin, { file }]] },
    );
    const basic = (u: string, p: string) => `Basic ${Buffer.from(`${u}:${p}`).toString('base64')}`;
    expect((await a.call('/api/v1/clients', { auth: basic('boss', 's3cret') })).status).toBe(200);
    expect((await a.call('/api/v1/clients', { auth: basic('boss', 'wrong') })).status).toBe(401);
    // In the password file but not an admin.
    expect((await a.call('/api/v1/clients', { auth: basic('worker', 'w') })).status).toBe(401);
    // No token was generated: admin users were configured.
    expect((await a.call('/api/v1/clients', { auth: `Bearer ${TOKEN}` })).status).toBe(401);
  });

  it('anonymous admin only when asked for', async () => {
    const a = await startAdmin({ token: undefined, anonymous: true });
    expect((await a.call('/api/v1/clients', { auth: null })).status).toBe(200);
  });

  it('generates a token into tokenFile (mode 0600) and reuses it on the next start', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'heron-admin-'));
    const tokenFile = join(dir, 'data', 'admin-token');
    const a = await startAdmin({ token: undefined, tokenFile });
    const token = (await readFile(tokenFile, 'utf8')).trim();
    expect(token.length).toBeGreaterThanOrEqual(40);
    expect((await stat(tokenFile)).mode & 0o777).toBe(0o600);
    expect((await a.call('/api/v1/clients', { auth: `Bearer ${token}` })).status).toBe(200);
    await a.broker.close();
    const b = await startAdmin({ token: undefined, tokenFile });
    expect((await b.call('/api/v1/clients', { auth: `Bearer ${token}` })).status).toBe(200);
  });
});

describe('admin API routes', () => {
  it('/healthz is 200 and /readyz 503 until persistence is restored', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    class SlowOpen extends MemoryPersistence {
      override async open(): Promise<void> {
        await gate;
      }
    }
    let base = '';
    const broker = createBroker({
      port: 0,
      host: '127.0.0.1',
      logLevel: 'silent',
      persistence: new SlowOpen(),
      plugins: [[httpPlugin, { token: TOKEN, port: 0, onListen: (x: { url: string }) => (base = x.url) }]],
    });
    onCleanup(() => broker.close());
    const listening = broker.listen();
    // Plugins are set up before persistence opens: wait for the HTTP listener.
    while (base === '') await new Promise((r) => setImmediate(r));
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    const before = await fetch(`${base}/readyz`);
    expect(before.status).toBe(503);
    expect(await before.json()).toEqual({ ready: false });
    release();
    await listening;
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
  });

  it('kick: a 5.0 client gets DISCONNECT 0x98 Administrative action', async () => {
    const a = await startAdmin();
    const c = await connect(a.url, { protocolVersion: 5, clientId: 'kick-me' });
    const got = new Promise<number | undefined>((resolve) =>
      c.on('disconnect', (p) => resolve(p.reasonCode)),
    );
    const res = await a.call('/api/v1/clients/kick-me/kick', { method: 'POST' });
    expect(res.status).toBe(204);
    expect(await got).toBe(0x98);
    expect((await a.call('/api/v1/clients/nobody/kick', { method: 'POST' })).status).toBe(404);
    expect(
      (await a.call('/api/v1/clients/x/kick', { method: 'POST', body: '{"reasonCode":1}' })).status,
    ).toBe(400);
  });

  it('publish through the API reaches a subscriber; a wildcard topic is 400', async () => {
    const a = await startAdmin();
    const sub = await connect(a.url, { protocolVersion: 5, clientId: 'api-sub' });
    await sub.subscribeAsync('api/#', { qos: 1 });
    const got = nextMessages(sub, 2);
    expect(
      await a.json('/api/v1/publish', {
        method: 'POST',
        body: JSON.stringify({ topic: 'api/t', payload: 'hello', qos: 1 }),
      }),
    ).toEqual({ queued: true });
    await a.json('/api/v1/publish', {
      method: 'POST',
      body: JSON.stringify({
        topic: 'api/bin',
        payload: Buffer.from([0, 255]).toString('base64'),
        encoding: 'base64',
      }),
    });
    const [m1, m2] = await got;
    expect([m1.topic, m1.payload.toString(), m1.packet.qos]).toEqual(['api/t', 'hello', 1]);
    expect(m2.packet.payload).toEqual(Buffer.from([0, 255]));
    const bad = await a.call('/api/v1/publish', { method: 'POST', body: JSON.stringify({ topic: 'api/#' }) });
    expect(bad.status).toBe(400);
    // Schema validation: qos 3 and unknown fields are refused before the handler.
    expect(
      (await a.call('/api/v1/publish', { method: 'POST', body: JSON.stringify({ topic: 't', qos: 3 }) }))
        .status,
    ).toBe(400);
    expect(
      (await a.call('/api/v1/publish', { method: 'POST', body: JSON.stringify({ topic: 't', x: 1 }) }))
        .status,
    ).toBe(400);
  });

  it('clients: paged by id, filtered by prefix, user and connected; one session in detail; delete', async () => {
    const a = await startAdmin();
    for (let i = 0; i < 5; i++)
      await connect(a.url, { protocolVersion: 5, clientId: `pg-${i}`, username: i % 2 ? 'odd' : 'even' });
    const off = await connect(a.url, {
      protocolVersion: 5,
      clientId: 'zz-offline',
      clean: false,
      properties: { sessionExpiryInterval: 300 },
    });
    await off.subscribeAsync('keep/+', { qos: 1 });
    const gone = disconnected(a.broker, 'zz-offline');
    await off.endAsync();
    await gone;
    const w = await connect(a.url, {
      protocolVersion: 5,
      clientId: 'with-will',
      will: { topic: 'wills/w', payload: Buffer.from('bye'), qos: 1, retain: false },
    });
    await w.subscribeAsync(['s/1', 's/2']);

    const p1 = await a.json<Page<{ clientId: string }>>('/api/v1/clients?prefix=pg-&limit=2');
    expect(p1.items.map((c) => c.clientId)).toEqual(['pg-0', 'pg-1']);
    expect(p1.total).toBe(5);
    const p2 = await a.json<Page<{ clientId: string }>>(
      `/api/v1/clients?prefix=pg-&limit=2&cursor=${p1.next}`,
    );
    expect(p2.items.map((c) => c.clientId)).toEqual(['pg-2', 'pg-3']);
    const p3 = await a.json<Page<{ clientId: string }>>(
      `/api/v1/clients?prefix=pg-&limit=2&cursor=${p2.next}`,
    );
    expect(p3.items.map((c) => c.clientId)).toEqual(['pg-4']);
    expect(p3.next).toBeUndefined();

    const odd = await a.json<Page<{ clientId: string }>>('/api/v1/clients?user=odd');
    expect(odd.items.map((c) => c.clientId)).toEqual(['pg-1', 'pg-3']);
    const offline = await a.json<Page<{ clientId: string; connected: boolean }>>(
      '/api/v1/clients?connected=false',
    );
    expect(offline.items).toMatchObject([{ clientId: 'zz-offline', connected: false }]);
    expect((await a.call('/api/v1/clients?limit=0')).status).toBe(400);

    const one = await a.json<Record<string, unknown>>('/api/v1/clients/with-will');
    expect(one).toMatchObject({
      clientId: 'with-will',
      connected: true,
      subscriptionCount: 2,
      queued: 0,
      inflight: 0,
      will: { topic: 'wills/w', qos: 1, retain: false, payloadBytes: 3 },
    });
    expect((one.subscriptions as { filter: string }[]).map((s) => s.filter).sort()).toEqual(['s/1', 's/2']);

    const subs = await a.json<Page<{ clientId: string; filter: string }>>('/api/v1/subscriptions?limit=2');
    expect(subs.total).toBe(3);
    expect(subs.items.map((s) => `${s.clientId} ${s.filter}`)).toEqual(['with-will s/1', 'with-will s/2']);
    const subs2 = await a.json<Page<{ clientId: string; filter: string }>>(
      `/api/v1/subscriptions?limit=2&cursor=${encodeURIComponent(subs.next!)}`,
    );
    expect(subs2.items).toMatchObject([{ clientId: 'zz-offline', filter: 'keep/+', qos: 1 }]);

    // Deleting the offline session ends it; deleting a connected one disconnects it (0x98), will published.
    expect((await a.call('/api/v1/clients/zz-offline', { method: 'DELETE' })).status).toBe(204);
    expect((await a.call('/api/v1/clients/zz-offline')).status).toBe(404);
    const watcher = await connect(a.url, { clientId: 'watcher' });
    await watcher.subscribeAsync('wills/#');
    const will = nextMessages(watcher, 1);
    const reason = new Promise<number | undefined>((resolve) =>
      w.on('disconnect', (p) => resolve(p.reasonCode)),
    );
    expect((await a.call('/api/v1/clients/with-will', { method: 'DELETE' })).status).toBe(204);
    expect(await reason).toBe(0x98);
    expect((await will)[0].payload.toString()).toBe('bye');
    await expect.poll(async () => (await a.call('/api/v1/clients/with-will')).status).toBe(404);
  });

  it('retained: paged list by topic with prefix, get one, delete one', async () => {
    const a = await startAdmin();
    for (const t of ['r/a', 'r/b', 'r/c', 'other/x'])
      a.broker.publish({ topic: t, payload: `v-${t}`, retain: true, qos: 1 });
    a.broker.publish({ topic: 'r/bin', payload: Buffer.from([0xff, 0xfe]), retain: true });
    const p1 = await a.json<Page<{ topic: string; payload: string; encoding: string }>>(
      '/api/v1/retained?prefix=r/&limit=3',
    );
    expect(p1.total).toBe(4);
    expect(p1.items.map((m) => m.topic)).toEqual(['r/a', 'r/b', 'r/bin']);
    expect(p1.items[2]).toMatchObject({
      encoding: 'base64',
      payload: Buffer.from([0xff, 0xfe]).toString('base64'),
    });
    const p2 = await a.json<Page<{ topic: string }>>(
      `/api/v1/retained?prefix=r/&limit=3&cursor=${encodeURIComponent(p1.next!)}`,
    );
    expect(p2.items.map((m) => m.topic)).toEqual(['r/c']);
    expect(p2.next).toBeUndefined();

    expect(await a.json('/api/v1/retained/r/a')).toMatchObject({
      topic: 'r/a',
      payload: 'v-r/a',
      qos: 1,
      encoding: 'utf8',
    });
    expect((await a.call('/api/v1/retained/r/a', { method: 'DELETE' })).status).toBe(204);
    expect((await a.call('/api/v1/retained/r/a')).status).toBe(404);
    expect((await a.call('/api/v1/retained/r/a', { method: 'DELETE' })).status).toBe(404);
    // A new subscriber no longer gets it [MQTT-3.3.1-6 clears by empty payload; here by the API].
    const c = await connect(a.url, { clientId: 'ret-sub' });
    const got = nextMessages(c, 2);
    await c.subscribeAsync('r/+');
    expect((await got).map((m) => m.topic).sort()).toEqual(['r/b', 'r/c']);
  });

  it('groups, stats and warnings', async () => {
    // The ring keeps what the log writes: warn level, not the helpers' silent.
    const a = await startAdmin({}, { logLevel: 'warn' });
    const m = await connect(a.url, { protocolVersion: 5, clientId: 'g-1' });
    await m.subscribeAsync('$share/workers/jobs/#', { qos: 1 });
    const groups = await a.json<{ group: string; filter: string; members: number }[]>('/api/v1/groups');
    expect(groups).toMatchObject([{ group: 'workers', filter: 'jobs/#', members: 1 }]);
    const stats = await a.json<{ clients: { connected: number } }>('/api/v1/stats');
    expect(stats.clients.connected).toBe(1);
    a.broker.log.warn({ clientId: 'g-1' }, 'something odd');
    const warnings =
      await a.json<{ level: string; msg: string; fields: Record<string, unknown> }[]>('/api/v1/warnings');
    expect(warnings[0]).toMatchObject({ level: 'warn', msg: 'something odd', fields: { clientId: 'g-1' } });
  });
});

describe('the CLI with the HTTP listener', () => {
  it('generates the admin token into the LevelDB data dir, serves the dashboard, and keeps the token across restarts', async () => {
    const dataDir = join(await mkdtemp(join(tmpdir(), 'heron-admin-cli-')), 'data');
    const args = [
      '--port',
      '0',
      '--host',
      '127.0.0.1',
      '--ws-port',
      '0',
      '--http-port',
      '0',
      '--data-dir',
      dataDir,
    ];
    const start = async () => {
      const r = run(args);
      const line = await r.line((l) => l.plugin === 'http' && typeof l.url === 'string');
      await r.line((l) => l.msg === 'listening');
      return { r, base: line.url as string };
    };
    const first = await start();
    const warn = first.r.lines.find((l) => l.plugin === 'http' && l.level === 40);
    expect(warn?.file).toBe(join(dataDir, 'admin-token'));
    const token = (await readFile(join(dataDir, 'admin-token'), 'utf8')).trim();
    const page = await fetch(`${first.base}/`);
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('<title>Heron</title>');
    expect((await fetch(`${first.base}/vendor/uplot/uPlot.iife.min.js`)).status).toBe(200);
    expect((await fetch(`${first.base}/api/v1/clients`)).status).toBe(401);
    const auth = { headers: { authorization: `Bearer ${token}` } };
    expect((await fetch(`${first.base}/api/v1/clients`, auth)).status).toBe(200);
    first.r.child.kill('SIGTERM');
    expect((await first.r.done).code).toBe(0);

    // The data dir now holds LevelDB and the token: it opens, with the same token.
    const second = await start();
    expect((await fetch(`${second.base}/api/v1/clients`, auth)).status).toBe(200);
    second.r.child.kill('SIGTERM');
    await second.r.done;
  });

  it('--http-port off: no HTTP listener', async () => {
    const r = run([...QUIET_CLI]);
    await r.line((l) => l.msg === 'listening');
    expect(r.lines.some((l) => l.plugin === 'http')).toBe(false);
    r.child.kill('SIGTERM');
    await r.done;
  });
});
