/**
 * BrokerOptions.listeners (#12): several listeners, each with its own port, TLS files, WebSocket
 * path and allowAnonymous (Mosquitto's per_listener_settings), beside the shorthand port options.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { createBroker } from '../broker/broker.js';
import { makePki, type TestPki } from './certs.js';
import { connect, nextMessages, startBroker } from './helpers.js';

let pki: TestPki;
beforeAll(() => {
  pki = makePki();
});

describe('listeners', () => {
  it('a TLS and a WSS listener with their own certificate and anonymous setting, and the shorthand TCP one', async () => {
    const { broker, url } = await startBroker({
      allowAnonymous: true,
      listeners: [
        {
          type: 'tls',
          port: 0,
          tls: { cert: pki.cert, key: pki.key },
          allowAnonymous: false,
          name: 'devices',
        },
        { type: 'wss', port: 0, tls: { cert: pki.cert, key: pki.key }, path: '/browser' },
      ],
    });
    const tlsUrl = `mqtts://127.0.0.1:${broker.port('tls')}`;
    // No user name on `devices`: CONNACK 0x87 Not authorized; with one, in.
    await expect(connect(tlsUrl, { ca: pki.ca, protocolVersion: 5 })).rejects.toThrow(/Not authorized/i);
    const device = await connect(tlsUrl, { ca: pki.ca, protocolVersion: 5, username: 'dev-1' });
    // The WSS listener serves its own path and takes the broker-wide allowAnonymous (true).
    const page = await connect(`wss://127.0.0.1:${broker.port('wss')}/browser`, {
      ca: pki.ca,
      protocolVersion: 5,
    });
    const tcp = await connect(url);
    await tcp.subscribeAsync('l/+', { qos: 1 });
    const got = nextMessages(tcp, 2);
    await device.publishAsync('l/tls', 'a', { qos: 1 });
    await page.publishAsync('l/wss', 'b', { qos: 1 });
    expect((await got).map((m) => m.topic).sort()).toEqual(['l/tls', 'l/wss']);
  });

  it('a TLS listener without certificate (its own or the broker’s) or with a bad port fails createBroker', () => {
    expect(() => createBroker({ listeners: [{ type: 'wss', port: 0 }] })).toThrow(
      'listeners[0]: a wss listener needs tls',
    );
    expect(() => createBroker({ listeners: [{ type: 'tcp', port: 70000 }] })).toThrow(
      'listeners[0].port must be a port number',
    );
  });
});
