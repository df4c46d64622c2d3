/**
 * The http-auth plugin against a real local HTTP service (node:http on 127.0.0.1): allow, deny,
 * ignore, timeouts and 5xx getting the default, the cache, and publish/subscribe authorization.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { IConnackPacket, IConnectPacket, IPubackPacket, ISubackPacket, Packet } from 'mqtt-packet';
import { describe, expect, it } from 'vitest';
import { definePlugin, type PluginApi, type PluginEntry } from '../plugins/api.js';
import { TtlCache } from '../plugins/http-auth/cache.js';
import httpAuthPlugin, { type HttpAuthOptions } from '../plugins/http-auth/index.js';
import { onCleanup, RawClient, startBroker } from './helpers.js';

type Body = Record<string, unknown>;

/**
 * The service: user `good` allowed, `bad` denied, `skip` ignored, `slow` never answered, `boom`
 * a 500; topics under `ok/` allowed, anything else denied. Every request body is recorded.
 */
async function service() {
  const requests: Body[] = [];
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    let data = '';
    req.on('data', (d: Buffer) => {
      data += d.toString();
    });
    req.on('end', () => {
      const body = JSON.parse(data) as Body;
      requests.push(body);
      const who = body.username;
      if (who === 'slow') return; // held until the server closes
      if (who === 'boom') {
        res.writeHead(500).end('oops');
        return;
      }
      let result: string;
      if (body.action) result = String(body.topic).startsWith('ok/') ? 'allow' : 'deny';
      else result = who === 'good' ? 'allow' : who === 'bad' ? 'deny' : 'ignore';
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ result }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  onCleanup(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/auth`;
  return { url, requests };
}

/** A broker with http-auth and, after it, a plugin allowing whatever reaches it. */
async function brokerWith(options: HttpAuthOptions) {
  const reached: string[] = [];
  const tail = definePlugin({
    name: 'tail',
    setup(api: PluginApi) {
      api.addHooks({
        authenticate: (_c, username) => {
          reached.push(username ?? '');
          return 'allow';
        },
      });
    },
  });
  const plugins: PluginEntry[] = [[httpAuthPlugin, options], tail];
  return { ...(await startBroker({ plugins })), reached };
}

async function connack(port: number, version: 4 | 5, fields: Partial<IConnectPacket>) {
  const client = await RawClient.open(port, version);
  client.send({
    cmd: 'connect',
    protocolId: 'MQTT',
    protocolVersion: version,
    clientId: `http-${Math.random().toString(16).slice(2)}`,
    clean: true,
    keepalive: 0,
    password: Buffer.from('pw'),
    ...fields,
  } as Packet);
  const ack = (await client.next()) as IConnackPacket | null;
  expect(ack?.cmd).toBe('connack');
  return { code: version === 5 ? ack?.reasonCode : ack?.returnCode, client };
}

describe('http-auth authentication', () => {
  it('allows, denies (5.0 0x86 / 3.1.1 0x04) and passes on ignore, posting the documented fields', async () => {
    const { url, requests } = await service();
    const { port, reached } = await brokerWith({ url });
    expect((await connack(port, 5, { clientId: 'c1', username: 'good' })).code).toBe(0);
    expect((await connack(port, 5, { username: 'bad' })).code).toBe(0x86);
    expect((await connack(port, 4, { username: 'bad' })).code).toBe(4);
    expect((await connack(port, 4, { username: 'skip' })).code).toBe(0);
    expect(reached).toEqual(['skip']);
    expect(requests[0]).toEqual({
      clientId: 'c1',
      username: 'good',
      password: 'pw',
      address: '127.0.0.1',
      protocol: '5.0',
    });
    expect(requests[3].protocol).toBe('3.1.1');
  });

  it('alone: ignore for a user name ends the chain refused (0x86 / 0x04); anonymous clients follow allowAnonymous', async () => {
    const { url } = await service();
    const alone = await startBroker({ plugins: [[httpAuthPlugin, { url }]] });
    expect((await connack(alone.port, 5, { username: 'skip' })).code).toBe(0x86);
    expect((await connack(alone.port, 4, { username: 'skip' })).code).toBe(4);
    expect((await connack(alone.port, 5, { username: 'good' })).code).toBe(0);
    // The service ignores an anonymous client too: anonymous access is off with authentication.
    expect((await connack(alone.port, 5, { password: undefined })).code).toBe(0x87);
    expect((await connack(alone.port, 4, { password: undefined })).code).toBe(5);
    const open = await startBroker({ plugins: [[httpAuthPlugin, { url }]], allowAnonymous: true });
    expect((await connack(open.port, 5, { password: undefined })).code).toBe(0);
    expect((await connack(open.port, 4, { password: undefined })).code).toBe(0);
    expect((await connack(open.port, 5, { username: 'skip' })).code).toBe(0x86);
  });

  it('gives a timeout and a 5xx the default: deny, or ignore', async () => {
    const { url } = await service();
    const denying = await brokerWith({ url, timeout: 200 });
    expect((await connack(denying.port, 5, { username: 'slow' })).code).toBe(0x86);
    expect((await connack(denying.port, 4, { username: 'slow' })).code).toBe(4);
    expect((await connack(denying.port, 5, { username: 'boom' })).code).toBe(0x86);
    expect((await connack(denying.port, 4, { username: 'boom' })).code).toBe(4);
    expect(denying.reached).toEqual([]);
    const ignoring = await brokerWith({ url, timeout: 200, default: 'ignore' });
    expect((await connack(ignoring.port, 5, { username: 'slow' })).code).toBe(0);
    expect((await connack(ignoring.port, 5, { username: 'boom' })).code).toBe(0);
    expect(ignoring.reached).toEqual(['slow', 'boom']);
  });

  it('denies when the service is not reachable', async () => {
    const { port } = await brokerWith({ url: 'http://127.0.0.1:1/auth', timeout: 1000 });
    expect((await connack(port, 5, { username: 'good' })).code).toBe(0x86);
  });

  it('answers a repeated CONNECT from the cache, and failures are not cached', async () => {
    const { url, requests } = await service();
    const { port } = await brokerWith({ url, timeout: 200 });
    for (let i = 0; i < 3; i++)
      expect((await connack(port, 5, { clientId: 'same', username: 'good' })).code).toBe(0);
    expect(requests.filter((r) => r.clientId === 'same')).toHaveLength(1);
    // Another password is another question.
    await connack(port, 5, { clientId: 'same', username: 'good', password: Buffer.from('other') });
    expect(requests.filter((r) => r.clientId === 'same')).toHaveLength(2);
    for (let i = 0; i < 2; i++) await connack(port, 5, { clientId: 'b', username: 'boom' });
    expect(requests.filter((r) => r.clientId === 'b')).toHaveLength(2);
  });

  it('asks again once the TTL is over; the cache stays within its size', () => {
    const cache = new TtlCache<string>(1000, 2);
    cache.set('a', 'x', 0);
    expect(cache.get('a', 999)).toBe('x');
    expect(cache.get('a', 1000)).toBeUndefined();
    cache.set('a', '1', 0);
    cache.set('b', '2', 0);
    cache.set('c', '3', 0);
    expect(cache.size).toBe(2);
    expect(cache.get('a', 0)).toBeUndefined();
    expect(cache.get('c', 0)).toBe('3');
  });
});

describe('http-auth authorization', () => {
  it('authorizes subscribe (0x87 / 0x80) and publish (PUBACK 0x87) per topic, cached [MQTT-3.3.5-2]', async () => {
    const { url, requests } = await service();
    const { port } = await brokerWith({ url });
    const { code, client } = await connack(port, 5, { clientId: 'pubsub', username: 'good' });
    expect(code).toBe(0);
    client.send({
      cmd: 'subscribe',
      messageId: 1,
      subscriptions: [
        { topic: 'ok/x', qos: 1 },
        { topic: 'no/x', qos: 1 },
      ],
    } as Packet);
    expect(((await client.nextOf('suback')) as ISubackPacket).granted).toEqual([1, 0x87]);
    const pub = async (topic: string, messageId: number) => {
      client.send({
        cmd: 'publish',
        topic,
        payload: Buffer.from('x'),
        qos: 1,
        messageId,
        retain: false,
        dup: false,
      });
      return ((await client.nextOf('puback')) as IPubackPacket).reasonCode;
    };
    expect(await pub('no/y', 2)).toBe(0x87);
    // Delivered to our own ok/x subscription: accepted.
    expect(await pub('ok/x', 3)).toBe(0);
    expect(await pub('ok/x', 4)).toBe(0);
    const acl = requests.filter((r) => r.action);
    expect(acl).toEqual([
      { clientId: 'pubsub', username: 'good', topic: 'ok/x', action: 'subscribe' },
      { clientId: 'pubsub', username: 'good', topic: 'no/x', action: 'subscribe' },
      { clientId: 'pubsub', username: 'good', topic: 'no/y', action: 'publish' },
      { clientId: 'pubsub', username: 'good', topic: 'ok/x', action: 'publish' },
    ]);

    const v4 = await connack(port, 4, { username: 'good' });
    v4.client.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'no/z', qos: 0 }] } as Packet);
    expect(((await v4.client.nextOf('suback')) as ISubackPacket).granted).toEqual([0x80]);
  });

  it("sends publish/subscribe questions to --http-acl-url, or none with 'none'", async () => {
    const auth = await service();
    const acl = await service();
    const { port } = await brokerWith({ url: auth.url, aclUrl: acl.url });
    const { client } = await connack(port, 5, { username: 'good' });
    client.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'no/x', qos: 0 }] } as Packet);
    expect(((await client.nextOf('suback')) as ISubackPacket).granted).toEqual([0x87]);
    expect(auth.requests.map((r) => r.action)).toEqual([undefined]);
    expect(acl.requests.map((r) => r.action)).toEqual(['subscribe']);

    const off = await brokerWith({ url: auth.url, aclUrl: 'none' });
    const c2 = await connack(off.port, 5, { username: 'good' });
    c2.client.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'no/x', qos: 0 }] } as Packet);
    expect(((await c2.client.nextOf('suback')) as ISubackPacket).granted).toEqual([0]);
  });
});
