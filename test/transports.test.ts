import { request } from 'node:http';
import { beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import type { ClientInfo } from '../broker/index.js';
import { makePki, type TestPki } from './certs.js';
import { connect, nextMessages, once, startBroker } from './helpers.js';

let pki: TestPki;
beforeAll(() => {
  pki = makePki();
});

describe('WebSocket transport', () => {
  it('mqtt.js over ws:// on /mqtt exchanges messages with a TCP client, both ways', async () => {
    const { broker, url } = await startBroker({ wsPort: 0 });
    const wsUrl = `ws://127.0.0.1:${broker.port('ws')}/mqtt`;
    const wsClient = await connect(wsUrl, { protocolVersion: 5 });
    const tcpClient = await connect(url, { protocolVersion: 4 });
    await wsClient.subscribeAsync('from/tcp', { qos: 1 });
    await tcpClient.subscribeAsync('from/ws', { qos: 1 });
    const atWs = nextMessages(wsClient, 1);
    const atTcp = nextMessages(tcpClient, 1);
    await tcpClient.publishAsync('from/tcp', 'hello ws', { qos: 1 });
    await wsClient.publishAsync('from/ws', 'hello tcp', { qos: 1 });
    expect((await atWs)[0].payload).toBe('hello ws');
    expect((await atTcp)[0].payload).toBe('hello tcp');
  });

  it('a large message spans many frames and several packets share one frame', async () => {
    const { broker } = await startBroker({ wsPort: 0 });
    const wsUrl = `ws://127.0.0.1:${broker.port('ws')}/mqtt`;
    const sub = await connect(wsUrl);
    const pub = await connect(wsUrl);
    await sub.subscribeAsync('big/#', { qos: 0 });
    const got = nextMessages(sub, 21);
    const big = 'x'.repeat(300_000);
    pub.publish('big/0', big);
    for (let i = 1; i <= 20; i++) pub.publish(`big/${i}`, `small ${i}`);
    const msgs = await got;
    expect(msgs[0].payload.length).toBe(big.length);
    expect(msgs.slice(1).map((m) => m.payload)).toEqual(
      Array.from({ length: 20 }, (_, i) => `small ${i + 1}`),
    );
  });

  it('refuses an upgrade on another path and a non-MQTT subprotocol', async () => {
    const { broker } = await startBroker({ wsPort: 0 });
    const port = broker.port('ws');
    const status = (path: string, protocol: string) =>
      new Promise<number>((resolve, reject) => {
        const ws = new WebSocket(`ws://127.0.0.1:${port}${path}`, protocol);
        ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
        ws.on('open', () => reject(new Error('upgrade accepted')));
        ws.on('error', () => undefined);
      });
    expect(await status('/other', 'mqtt')).toBe(404);
    expect(await status('/mqtt', 'chat')).toBe(400);
    // A plain HTTP request gets a 404, not a hang.
    const code = await new Promise<number>((resolve) =>
      request({ host: '127.0.0.1', port, path: '/mqtt' }, (res) => resolve(res.statusCode ?? 0)).end(),
    );
    expect(code).toBe(404);
  });

  it('closes a connection that sends a text frame, with code 1003', async () => {
    const { broker } = await startBroker({ wsPort: 0 });
    const ws = new WebSocket(`ws://127.0.0.1:${broker.port('ws')}/mqtt`, 'mqtt');
    await once(ws, 'open');
    const closed = new Promise<number>((resolve) => ws.on('close', (code) => resolve(code)));
    ws.send('not mqtt');
    expect(await closed).toBe(1003);
  });

  it('fires the will when the WebSocket drops without DISCONNECT (a closed tab)', async () => {
    const { broker, url } = await startBroker({ wsPort: 0 });
    const watcher = await connect(url);
    await watcher.subscribeAsync('wills/#');
    const got = nextMessages(watcher, 1);
    const tab = await connect(`ws://127.0.0.1:${broker.port('ws')}/mqtt`, {
      will: { topic: 'wills/tab', payload: Buffer.from('tab gone'), qos: 0, retain: false },
    });
    (tab.stream as unknown as { destroy(): void }).destroy();
    expect((await got)[0].payload).toBe('tab gone');
  });

  it('takes the client address from X-Forwarded-For only when trusted', async () => {
    for (const trust of [true, false]) {
      const { broker } = await startBroker({ wsPort: 0, wsTrustProxy: trust });
      const seen = once<ClientInfo>(broker, 'client');
      await connect(`ws://127.0.0.1:${broker.port('ws')}/mqtt`, {
        wsOptions: { headers: { 'X-Forwarded-For': '203.0.113.7, 10.0.0.1' } },
      });
      const info = await seen;
      expect(info.transport).toBe('ws');
      // The right-most entry that is not a trusted proxy (10.0.0.1 is not one by default).
      expect(info.remoteAddress).toBe(trust ? '10.0.0.1' : '127.0.0.1');
    }
  });
});

describe('TLS transports', () => {
  it('mqtt.js over mqtts:// and wss:// with the test CA', async () => {
    const { broker, url } = await startBroker({
      tls: { cert: pki.cert, key: pki.key },
      tlsPort: 0,
      wssPort: 0,
    });
    const tls = await connect(`mqtts://127.0.0.1:${broker.port('tls')}`, { ca: pki.ca });
    const wss = await connect(`wss://127.0.0.1:${broker.port('wss')}/mqtt`, {
      ca: pki.ca,
      protocolVersion: 5,
    });
    const tcp = await connect(url);
    await tcp.subscribeAsync('secure/+', { qos: 1 });
    const got = nextMessages(tcp, 2);
    await tls.publishAsync('secure/tls', 'via tls', { qos: 1 });
    await wss.publishAsync('secure/wss', 'via wss', { qos: 1 });
    expect((await got).map((m) => m.payload).sort()).toEqual(['via tls', 'via wss']);
  });

  it('requires a client certificate when asked and keeps its subject for hooks', async () => {
    const { broker } = await startBroker({
      tls: { cert: pki.cert, key: pki.key, ca: pki.ca, requireClientCert: true },
      tlsPort: 0,
      wssPort: null,
    });
    const tlsUrl = `mqtts://127.0.0.1:${broker.port('tls')}`;
    const seen = once<ClientInfo>(broker, 'client');
    await connect(tlsUrl, { ca: pki.ca, cert: pki.clientCert, key: pki.clientKey });
    const info = await seen;
    expect(info.transport).toBe('tls');
    expect(info.certificateSubject?.CN).toBe('device-42');
    // Without a certificate the handshake is refused.
    await expect(connect(tlsUrl, { ca: pki.ca, connectTimeout: 3000 })).rejects.toThrow();
  });
});
