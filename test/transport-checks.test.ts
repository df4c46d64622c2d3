import { type Socket, connect as tcpConnect } from 'node:net';
import { beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import type { ClientInfo } from '../broker/index.js';
import { makePki, type TestPki } from './certs.js';
import { connect, nextMessages, onCleanup, once, startBroker } from './helpers.js';

let pki: TestPki;
beforeAll(() => {
  pki = makePki();
});

/** The HTTP status of a WebSocket upgrade with this Origin (101 when it opened). */
function upgradeStatus(port: number, origin: string | undefined): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/mqtt`, 'mqtt', origin === undefined ? {} : { origin });
    ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
    ws.on('open', () => {
      ws.terminate();
      resolve(101);
    });
    ws.on('error', (err) => reject(err));
  });
}

describe('WebSocket Origin check (--ws-allowed-origins)', () => {
  it('by default: no Origin (not a browser) and pages on the same host name pass, other origins get 403', async () => {
    const { broker } = await startBroker({ wsPort: 0 });
    const port = broker.port('ws');
    expect(await upgradeStatus(port, undefined)).toBe(101);
    // A development server on another port of the same host (the browser test's case).
    expect(await upgradeStatus(port, 'http://127.0.0.1:3000')).toBe(101);
    expect(await upgradeStatus(port, 'https://evil.example')).toBe(403);
    expect(await upgradeStatus(port, 'null')).toBe(403);
  });

  it('with a list: listed origins only (case and trailing slash aside); the same host is not implied', async () => {
    const { broker } = await startBroker({
      wsPort: 0,
      wsAllowedOrigins: ['https://app.example.com', 'http://localhost:3000'],
    });
    const port = broker.port('ws');
    expect(await upgradeStatus(port, 'https://APP.example.com/')).toBe(101);
    expect(await upgradeStatus(port, 'http://localhost:3000')).toBe(101);
    expect(await upgradeStatus(port, 'http://localhost:4000')).toBe(403);
    expect(await upgradeStatus(port, 'http://127.0.0.1:3000')).toBe(403);
    expect(await upgradeStatus(port, undefined)).toBe(101);
  });

  it('a refused origin never reaches MQTT; `*` allows any origin', async () => {
    const { broker } = await startBroker({ wsPort: 0, wsAllowedOrigins: ['https://app.example.com'] });
    let clients = 0;
    broker.on('client', () => clients++);
    expect(await upgradeStatus(broker.port('ws'), 'https://evil.example')).toBe(403);
    expect(clients).toBe(0);
    expect(broker.stats.connections).toBe(0);

    const any = await startBroker({ wsPort: 0, wsAllowedOrigins: ['*'] });
    const c = await connect(`ws://127.0.0.1:${any.broker.port('ws')}/mqtt`, {
      wsOptions: { origin: 'https://evil.example' },
    });
    expect(c.connected).toBe(true);
  });
});

describe('X-Forwarded-For behind trusted proxies (--ws-trusted-proxies)', () => {
  const clientAddress = async (opts: Parameters<typeof startBroker>[0], xff: string) => {
    const { broker } = await startBroker({ wsPort: 0, ...opts });
    const seen = once<ClientInfo>(broker, 'client');
    await connect(`ws://127.0.0.1:${broker.port('ws')}/mqtt`, {
      wsOptions: { headers: { 'X-Forwarded-For': xff } },
    });
    return (await seen).remoteAddress;
  };

  it('takes the right-most entry that is not a trusted proxy, not the left-most the client wrote', async () => {
    // The client spoofed 198.51.100.1; the edge proxy saw 203.0.113.7; 10.0.0.2 is an inner proxy.
    const xff = '198.51.100.1, 203.0.113.7, 10.0.0.2';
    expect(
      await clientAddress({ wsTrustProxy: true, wsTrustedProxies: ['127.0.0.1', '10.0.0.0/8'] }, xff),
    ).toBe('203.0.113.7');
    // With only the local proxy trusted, the inner proxy's address is as far as it can be believed.
    expect(await clientAddress({ wsTrustProxy: true }, xff)).toBe('10.0.0.2');
  });

  it('ignores the header when the direct peer is not a trusted proxy, or without --ws-trust-proxy', async () => {
    const xff = '198.51.100.1';
    expect(await clientAddress({ wsTrustProxy: true, wsTrustedProxies: ['192.0.2.1'] }, xff)).toBe(
      '127.0.0.1',
    );
    expect(await clientAddress({ wsTrustProxy: false }, xff)).toBe('127.0.0.1');
  });

  it('a bad --ws-trusted-proxies entry fails at creation', async () => {
    await expect(startBroker({ wsPort: 0, wsTrustedProxies: ['not-an-address'] })).rejects.toThrow(
      /not an IP address/,
    );
  });
});

/** A raw TCP socket that connects and sends nothing; resolves with ms until the broker closed it. */
async function idleSocket(port: number): Promise<() => Promise<number>> {
  const socket: Socket = tcpConnect(port, '127.0.0.1');
  onCleanup(() => socket.destroy());
  socket.on('error', () => undefined);
  await once(socket, 'connect');
  const start = Date.now();
  const closed = new Promise<number>((resolve) => socket.on('close', () => resolve(Date.now() - start)));
  return () => closed;
}

describe('the CONNECT timeout covers the TLS handshake and the WebSocket upgrade', () => {
  it('a socket to the TLS port that never handshakes and one to the WS port that never upgrades are closed after connectTimeout, while another client is served', async () => {
    const { broker, url } = await startBroker({
      connectTimeout: 1,
      wsPort: 0,
      tls: { cert: pki.cert, key: pki.key },
      tlsPort: 0,
      wssPort: 0,
    });
    const tlsIdle = await idleSocket(broker.port('tls'));
    const wsIdle = await idleSocket(broker.port('ws'));
    const wssIdle = await idleSocket(broker.port('wss'));
    // Meanwhile a TLS client and a TCP client exchange a message.
    const tcp = await connect(url);
    await tcp.subscribeAsync('t', { qos: 1 });
    const got = nextMessages(tcp, 1);
    const tls = await connect(`mqtts://127.0.0.1:${broker.port('tls')}`, { ca: pki.ca });
    await tls.publishAsync('t', 'served', { qos: 1 });
    expect((await got)[0].payload).toBe('served');
    for (const closedAfter of [await tlsIdle(), await wsIdle(), await wssIdle()]) {
      expect(closedAfter).toBeGreaterThanOrEqual(900);
      expect(closedAfter).toBeLessThan(4000);
    }
    expect(tls.connected).toBe(true);
  });

  it('an HTTP connection that sent headers but never asked for an upgrade is closed too', async () => {
    const { broker } = await startBroker({ connectTimeout: 1, wsPort: 0 });
    const socket = tcpConnect(broker.port('ws'), '127.0.0.1');
    onCleanup(() => socket.destroy());
    socket.on('error', () => undefined);
    await once(socket, 'connect');
    const start = Date.now();
    const closed = new Promise<number>((resolve) => socket.on('close', () => resolve(Date.now() - start)));
    // Headers never finished: a slow client holding the socket.
    socket.write('GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\n');
    const after = await closed;
    expect(after).toBeGreaterThanOrEqual(900);
    expect(after).toBeLessThan(4000);
  });
});

describe('--tls-identity-as-username', () => {
  const tlsBroker = () =>
    startBroker({
      tls: { cert: pki.cert, key: pki.key, ca: pki.ca },
      tlsPort: 0,
      wssPort: 0,
      tlsIdentityAsUsername: true,
    });

  for (const protocolVersion of [4, 5] as const) {
    it(`v${protocolVersion}: the verified certificate's CN is the user name, over what CONNECT says (mqtts and wss)`, async () => {
      const { broker } = await tlsBroker();
      const certOpts = { ca: pki.ca, cert: pki.clientCert, key: pki.clientKey, protocolVersion };
      for (const [transport, u] of [
        ['tls', `mqtts://127.0.0.1:${broker.port('tls')}`],
        ['wss', `wss://127.0.0.1:${broker.port('wss')}/mqtt`],
      ] as const) {
        const seen = once<ClientInfo>(broker, 'client');
        await connect(u, { ...certOpts, username: 'someone-else', password: 'ignored' });
        const info = await seen;
        expect(info.transport).toBe(transport);
        expect(info.username).toBe('device-42');
      }
    });

    it(`v${protocolVersion}: a TLS client without a certificate is refused as a bad user name or password (Mosquitto's answer)`, async () => {
      const { broker } = await tlsBroker();
      let clients = 0;
      broker.on('client', () => clients++);
      const err = await connect(`mqtts://127.0.0.1:${broker.port('tls')}`, {
        ca: pki.ca,
        protocolVersion,
        username: 'device-42',
        connectTimeout: 3000,
      }).then(
        () => undefined,
        (e: Error & { code?: number }) => e,
      );
      expect(err?.code).toBe(protocolVersion === 5 ? 0x86 : 4);
      expect(clients).toBe(0);
    });
  }

  it('a plain TCP client authenticates as usual (the option is about TLS listeners)', async () => {
    const { broker, url } = await tlsBroker();
    const seen = once<ClientInfo>(broker, 'client');
    await connect(url, { username: 'alice' });
    expect((await seen).username).toBe('alice');
  });
});
