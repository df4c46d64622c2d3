/**
 * The plugin layer (plugins/api.ts, broker/hooks.ts): hook chains in registration order where
 * each hook answers allow / deny / pass, over real sockets in 3.1.1 and 5.0; failing and hanging
 * hooks; observers; the api a plugin's setup gets; loading a plugin module by path.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Packet } from 'mqtt-packet';
import { pino } from 'pino';
import { describe, expect, it, vi } from 'vitest';
import {
  type ClientInfo,
  createBroker,
  definePlugin,
  loadPlugin,
  type PluginApi,
  type PluginEntry,
  type PluginHooks,
  type Verdict,
} from '../broker/index.js';
import { RC } from '../broker/reason-codes.js';
import { connect, connectPacket, nextMessages, onCleanup, RawClient, startBroker } from './helpers.js';

const publish = (topic: string, messageId: number, qos: 0 | 1 = 1): Packet => ({
  cmd: 'publish',
  topic,
  payload: Buffer.from('x'),
  qos,
  messageId,
  retain: false,
  dup: false,
});

const subscribe = (filter: string, messageId = 1): Packet => ({
  cmd: 'subscribe',
  messageId,
  subscriptions: [{ topic: filter, qos: 1 }],
});

/** A plugin registering the given hooks. */
const plugin = (name: string, hooks: PluginHooks) =>
  definePlugin({
    name,
    setup: (api) => {
      api.addHooks(hooks);
    },
  });

/** Nothing more arrives within ms (only to assert absence). */
async function silent(c: RawClient, ms = 150): Promise<Packet | null> {
  return Promise.race([c.next(), new Promise<null>((r) => setTimeout(() => r(null), ms))]);
}

function capturedLog() {
  const lines: Record<string, unknown>[] = [];
  const logger = pino({ level: 'error' }, { write: (s: string) => lines.push(JSON.parse(s)) });
  return { logger, lines };
}

type Chain = 'authenticate' | 'authorizePublish' | 'authorizeSubscribe' | 'authorizeDeliver';
// first, second, what the chain decides (the end of the chain allows).
const COMBOS: [Verdict, Verdict, 'allow' | 'deny'][] = [
  ['pass', 'pass', 'allow'],
  ['pass', 'deny', 'deny'],
  ['pass', 'allow', 'allow'],
  ['allow', 'deny', 'allow'],
  ['deny', 'allow', 'deny'],
];

/**
 * Two plugins whose `hook` answers `first` and `second` for what is under test (client ids and
 * topics starting with `x`), and pass for everything else. The first answers asynchronously when
 * `async` (never for authorizeDeliver, which is synchronous).
 */
function twoPlugins(hook: Chain, first: Verdict, second: Verdict, async: boolean): PluginEntry[] {
  const answer = (v: Verdict, later: boolean) => (client: ClientInfo, arg: unknown) => {
    const subject = hook === 'authenticate' ? client.clientId : String(arg);
    const out: Verdict = subject.startsWith('x') ? v : 'pass';
    return later ? Promise.resolve(out) : out;
  };
  return [
    plugin('first', { [hook]: answer(first, async) }),
    [
      definePlugin({
        name: 'second',
        setup: (api, o: { v: Verdict }) => {
          api.addHooks({ [hook]: answer(o.v, false) });
        },
      }),
      { v: second },
    ],
  ];
}

describe('hook chains: allow / deny / pass in registration order', () => {
  COMBOS.forEach(([first, second, result], i) => {
    const async = i % 2 === 1;
    const label = `${first} then ${second} → ${result}${async ? ' (first async)' : ''}`;

    // For authenticate the end of the chain refuses a client with a user name: with an
    // authenticator configured, one no hook knows is not let in (as Mosquitto's password_file).
    const authResult = first === 'pass' && second === 'pass' ? 'deny' : result;
    it(`authenticate: ${first} then ${second} → ${authResult}${async ? ' (first async)' : ''}; denied → CONNACK 0x86 / 0x04`, async () => {
      const { port } = await startBroker({ plugins: twoPlugins('authenticate', first, second, async) });
      for (const v of [4, 5] as const) {
        const c = await RawClient.open(port, v);
        c.send(connectPacket(v, { clientId: `x-${v}`, username: 'u' }));
        const ack = await c.next();
        if (authResult === 'allow')
          expect(ack).toMatchObject(v === 5 ? { reasonCode: 0 } : { returnCode: 0 });
        else
          expect(ack).toMatchObject(
            v === 5 ? { reasonCode: RC.BAD_USERNAME_OR_PASSWORD } : { returnCode: 4 },
          );
      }
    });

    it(`authorizePublish: ${label}; denied → 5.0 PUBACK 0x87, 3.1.1 acked and dropped [MQTT-3.3.5-2]`, async () => {
      const { port } = await startBroker({ plugins: twoPlugins('authorizePublish', first, second, async) });
      const sub = await RawClient.connected(port, 5);
      sub.send(subscribe('#'));
      expect(await sub.next()).toMatchObject({ cmd: 'suback', granted: [1] });
      for (const v of [4, 5] as const) {
        const pub = await RawClient.connected(port, v);
        pub.send(publish(`x/${v}`, 1));
        const ack = await pub.next();
        expect(ack).toMatchObject({ cmd: 'puback', messageId: 1 });
        if (v === 5)
          expect((ack as { reasonCode?: number }).reasonCode ?? 0).toBe(
            result === 'allow' ? 0 : RC.NOT_AUTHORIZED,
          );
        // A topic the chain passes on marks the end: the subscriber saw the tested one before it, or never.
        pub.send(publish(`open/${v}`, 2));
        const seen = [(await sub.nextOf('publish')) as { topic: string }];
        if (result === 'allow') seen.push((await sub.nextOf('publish')) as { topic: string });
        expect(seen.map((p) => p.topic)).toEqual(
          result === 'allow' ? [`x/${v}`, `open/${v}`] : [`open/${v}`],
        );
      }
    });

    it(`authorizeSubscribe: ${label}; denied → SUBACK 0x87 / 0x80`, async () => {
      const { port } = await startBroker({ plugins: twoPlugins('authorizeSubscribe', first, second, async) });
      for (const v of [4, 5] as const) {
        const c = await RawClient.connected(port, v);
        c.send({
          cmd: 'subscribe',
          messageId: 7,
          subscriptions: [
            { topic: 'x/#', qos: 1 },
            { topic: 'open/#', qos: 0 },
          ],
        });
        const refused = v === 5 ? RC.NOT_AUTHORIZED : 0x80;
        expect(await c.next()).toMatchObject({
          cmd: 'suback',
          messageId: 7,
          granted: [result === 'allow' ? 1 : refused, 0],
        });
      }
    });

    it(`authorizeDeliver (synchronous): ${first} then ${second} → ${result}; a # subscriber does not receive a denied topic`, async () => {
      const { port, broker } = await startBroker({
        plugins: twoPlugins('authorizeDeliver', first, second, false),
      });
      for (const v of [4, 5] as const) {
        const sub = await RawClient.connected(port, v);
        sub.send(subscribe('#'));
        expect(await sub.next()).toMatchObject({ cmd: 'suback' });
        broker.publish({ topic: 'x/secret', payload: 's', qos: 1 });
        broker.publish({ topic: 'open/marker', payload: 'm', qos: 1 });
        const first = (await sub.nextOf('publish')) as { topic: string };
        expect(first.topic).toBe(result === 'allow' ? 'x/secret' : 'open/marker');
        sub.socket.destroy();
        await sub.closed;
      }
    });
  });

  it('authorizeDeliver also filters retained messages sent on SUBSCRIBE', async () => {
    const { port, broker } = await startBroker({
      plugins: [plugin('acl', { authorizeDeliver: (_c, topic) => (topic === 'r/secret' ? 'deny' : 'pass') })],
    });
    broker.publish({ topic: 'r/secret', payload: 's', retain: true });
    broker.publish({ topic: 'r/open', payload: 'o', retain: true });
    const sub = await RawClient.connected(port, 5);
    sub.send(subscribe('r/#'));
    expect(await sub.next()).toMatchObject({ cmd: 'suback' });
    expect(await sub.next()).toMatchObject({ cmd: 'publish', topic: 'r/open' });
    expect(await silent(sub)).toBeNull();
  });

  it('shared group copies are not checked per delivery (the group filter was authorized at SUBSCRIBE)', async () => {
    const { port, broker } = await startBroker({
      plugins: [plugin('acl', { authorizeDeliver: () => 'deny' })],
    });
    const member = await RawClient.connected(port, 5);
    member.send(subscribe('$share/g/j/#'));
    expect(await member.next()).toMatchObject({ cmd: 'suback', granted: [1] });
    broker.publish({ topic: 'j/0', payload: 'x', qos: 0 });
    broker.publish({ topic: 'j/1', payload: 'x', qos: 1 });
    expect(await member.next()).toMatchObject({ cmd: 'publish', topic: 'j/0' });
    expect(await member.next()).toMatchObject({ cmd: 'publish', topic: 'j/1' });
  });

  it('a synchronous authorizeDeliver runs within routing: no promise, no later tick', async () => {
    const calls: string[] = [];
    const { port, broker } = await startBroker({
      plugins: [
        plugin('sync', {
          authorizeDeliver: (c, topic) => {
            calls.push(`${c.clientId}:${topic}`);
            return 'allow';
          },
        }),
      ],
    });
    const sub = await RawClient.connected(port, 4, { clientId: 'reader' });
    sub.send(subscribe('a/+'));
    await sub.next();
    broker.publish({ topic: 'a/b', payload: 'x' });
    // Checked before publish() returned.
    expect(calls).toEqual(['reader:a/b']);
    expect(await sub.next()).toMatchObject({ cmd: 'publish', topic: 'a/b' });
  });

  it('an authorizeDeliver returning a promise denies (it is synchronous only), logged with the plugin', async () => {
    const log = capturedLog();
    const { port, broker } = await startBroker({
      logger: log.logger,
      plugins: [
        plugin('wrong', {
          authorizeDeliver: ((_c: ClientInfo, t: string) =>
            t === 'p/async'
              ? Promise.resolve('allow')
              : 'allow') as unknown as PluginHooks['authorizeDeliver'],
        }),
      ],
    });
    const sub = await RawClient.connected(port, 5);
    sub.send(subscribe('p/#'));
    await sub.next();
    broker.publish({ topic: 'p/async', payload: 'x' });
    broker.publish({ topic: 'p/marker', payload: 'x' });
    expect(await sub.next()).toMatchObject({ cmd: 'publish', topic: 'p/marker' });
    expect(log.lines).toContainEqual(expect.objectContaining({ plugin: 'wrong', hook: 'authorizeDeliver' }));
  });
});

describe('asynchronous authorization keeps the order of a connection', () => {
  for (const v of [4, 5] as const) {
    it(`v${v}: PUBACKs follow PUBLISH order although answers come out of order [MQTT-4.6.0-2]`, async () => {
      // The first topic's answer comes last.
      const delays: Record<string, number> = { 'o/1': 80, 'o/2': 0, 'o/3': 20 };
      const { port } = await startBroker({
        plugins: [
          plugin('slow', {
            authorizePublish: (_c, topic) =>
              new Promise<Verdict>((r) =>
                setTimeout(() => r(topic === 'o/2' ? 'deny' : 'allow'), delays[topic] ?? 0),
              ),
          }),
        ],
      });
      const sub = await RawClient.connected(port, 5);
      sub.send(subscribe('o/#'));
      await sub.next();
      const pub = await RawClient.connected(port, v);
      for (const n of [1, 2, 3]) pub.send(publish(`o/${n}`, n));
      const acks = [await pub.next(), await pub.next(), await pub.next()];
      expect(acks.map((a) => (a as { messageId: number }).messageId)).toEqual([1, 2, 3]);
      if (v === 5)
        expect(acks.map((a) => (a as { reasonCode?: number }).reasonCode ?? 0)).toEqual([
          0,
          RC.NOT_AUTHORIZED,
          0,
        ]);
      const got = [await sub.nextOf('publish'), await sub.nextOf('publish')];
      expect(got.map((p) => (p as { topic: string }).topic)).toEqual(['o/1', 'o/3']);
    });
  }

  it('a SUBSCRIBE behind an asynchronous one is answered after it', async () => {
    const { port } = await startBroker({
      plugins: [
        plugin('slow', {
          authorizeSubscribe: (_c, f) =>
            new Promise<Verdict>((r) => setTimeout(() => r('allow'), f === 's/1' ? 60 : 0)),
        }),
      ],
    });
    const c = await RawClient.connected(port, 5);
    c.send(subscribe('s/1', 1));
    c.send(subscribe('s/2', 2));
    expect(await c.next()).toMatchObject({ cmd: 'suback', messageId: 1 });
    expect(await c.next()).toMatchObject({ cmd: 'suback', messageId: 2 });
  });
});

describe('failing hooks deny and harm no one else', () => {
  it('a throwing and a hanging (past hookTimeout) authorizePublish deny; other clients go on; logged with the plugin', async () => {
    const log = capturedLog();
    const { port } = await startBroker({
      logger: log.logger,
      hookTimeout: 100,
      plugins: [
        plugin('faulty', {
          authorizePublish: (client) => {
            if (client.clientId === 'thrower') throw new Error('policy bug');
            if (client.clientId === 'hanger') return new Promise<Verdict>(() => undefined);
            return 'pass';
          },
        }),
      ],
    });
    const sub = await RawClient.connected(port, 5);
    sub.send(subscribe('f/#'));
    await sub.next();
    const thrower = await RawClient.connected(port, 5, { clientId: 'thrower' });
    const hanger = await RawClient.connected(port, 5, { clientId: 'hanger' });
    const other = await RawClient.connected(port, 5, { clientId: 'other' });
    const started = Date.now();
    hanger.send(publish('f/hang', 1));
    thrower.send(publish('f/throw', 1));
    expect(await thrower.next()).toMatchObject({ cmd: 'puback', reasonCode: RC.NOT_AUTHORIZED });
    // Others are served while the hanging hook waits.
    other.send(publish('f/ok', 1));
    expect(await other.next()).toMatchObject({ cmd: 'puback', messageId: 1 });
    expect(await sub.nextOf('publish')).toMatchObject({ topic: 'f/ok' });
    expect(await hanger.next()).toMatchObject({ cmd: 'puback', reasonCode: RC.NOT_AUTHORIZED });
    expect(Date.now() - started).toBeGreaterThanOrEqual(90);
    // Still connected and answering.
    hanger.send({ cmd: 'pingreq' });
    expect(await hanger.next()).toMatchObject({ cmd: 'pingresp' });
    expect(log.lines).toContainEqual(
      expect.objectContaining({ plugin: 'faulty', clientId: 'thrower', msg: 'hook threw; denied' }),
    );
    expect(log.lines).toContainEqual(
      expect.objectContaining({ plugin: 'faulty', clientId: 'hanger', msg: 'hook timed out; denied' }),
    );
  });

  for (const v of [4, 5] as const) {
    it(`v${v}: an authenticate past hookTimeout refuses as a server error; a throwing observer changes nothing`, async () => {
      const { port } = await startBroker({
        hookTimeout: 50,
        // An authenticate hook turns anonymous access off by default; 'fine' connects without a user name.
        allowAnonymous: true,
        plugins: [
          plugin('hang', {
            authenticate: (c) => (c.clientId === 'stuck' ? new Promise<Verdict>(() => undefined) : 'pass'),
            onConnect: () => {
              throw new Error('observer bug');
            },
          }),
        ],
      });
      const c = await RawClient.open(port, v);
      c.send(connectPacket(v, { clientId: 'stuck' }));
      expect(await c.next()).toMatchObject(
        v === 5 ? { reasonCode: RC.UNSPECIFIED_ERROR } : { returnCode: 3 },
      );
      const ok = await RawClient.connected(port, v, { clientId: 'fine' });
      ok.send({ cmd: 'pingreq' });
      expect(await ok.next()).toMatchObject({ cmd: 'pingresp' });
    });
  }

  it('a hook answering something else than a verdict denies', async () => {
    const { port } = await startBroker({
      plugins: [
        plugin('odd', { authorizeSubscribe: (() => true) as unknown as PluginHooks['authorizeSubscribe'] }),
      ],
    });
    const c = await RawClient.connected(port, 5);
    c.send(subscribe('a'));
    expect(await c.next()).toMatchObject({ cmd: 'suback', granted: [RC.NOT_AUTHORIZED] });
  });
});

describe('observers and the plugin api', () => {
  it('onConnect, onSubscribe, onPublish, onDisconnect fire with what happened', async () => {
    const seen: string[] = [];
    const { url } = await startBroker({
      plugins: [
        plugin('watch', {
          onConnect: (c) => void seen.push(`connect ${c.clientId}`),
          onSubscribe: (id, s) => void seen.push(`subscribe ${id} ${s.filter} ${s.qos}`),
          onPublish: async (m, id) => void seen.push(`publish ${id} ${m.topic} ${m.payload}`),
          onDisconnect: (c) => void seen.push(`disconnect ${c.clientId}`),
        }),
      ],
    });
    const c = await connect(url, { clientId: 'w1' });
    await c.subscribeAsync('obs/#', { qos: 1 });
    await c.publishAsync('obs/a', 'hi', { qos: 1 });
    await c.endAsync();
    await vi.waitFor(() => expect(seen).toContain('disconnect w1'));
    expect(seen).toEqual(['connect w1', 'subscribe w1 obs/# 1', 'publish w1 obs/a hi', 'disconnect w1']);
  });

  it('api.publish reaches a subscriber; clients() and client() show connected clients; log carries the plugin name', async () => {
    let api: PluginApi | undefined;
    const log = capturedLog();
    const { url } = await startBroker({
      logger: log.logger,
      plugins: [
        definePlugin({
          name: 'svc',
          setup: (a) => {
            api = a;
          },
        }),
      ],
    });
    const c = await connect(url, { clientId: 'reader', protocolVersion: 5 });
    await c.subscribeAsync('svc/#');
    const got = nextMessages(c, 1);
    expect(api!.publish({ topic: 'svc/hello', payload: 'from plugin' })).toBe(true);
    expect((await got)[0]).toMatchObject({ topic: 'svc/hello', payload: 'from plugin' });
    expect(api!.clients().map((x) => x.clientId)).toEqual(['reader']);
    expect(api!.client('reader')).toMatchObject({ clientId: 'reader', protocolVersion: 5, transport: 'tcp' });
    expect(api!.client('nobody')).toBeUndefined();
    api!.log.error('note');
    expect(log.lines).toContainEqual(expect.objectContaining({ plugin: 'svc', msg: 'note' }));
  });

  it('listen() waits for an async setup; onClose runs at close()', async () => {
    const order: string[] = [];
    const broker = createBroker({
      port: 0,
      host: '127.0.0.1',
      logLevel: 'silent',
      plugins: [
        definePlugin({
          name: 'slow-setup',
          async setup(api) {
            await new Promise((r) => setTimeout(r, 50));
            api.addHooks({ authenticate: () => 'deny' });
            api.onClose(async () => void order.push('closed'));
            order.push('set up');
          },
        }),
      ],
    });
    onCleanup(() => broker.close());
    await broker.listen();
    order.push('listening');
    const c = await RawClient.open(broker.port(), 5);
    c.send(connectPacket(5, { username: 'u' }));
    expect(await c.next()).toMatchObject({ reasonCode: RC.BAD_USERNAME_OR_PASSWORD });
    await broker.close();
    expect(order).toEqual(['set up', 'listening', 'closed']);
  });

  it('a setup that throws fails listen(), naming the plugin', async () => {
    const broker = createBroker({
      port: 0,
      logLevel: 'silent',
      plugins: [definePlugin({ name: 'broken', setup: () => Promise.reject(new Error('no config')) })],
    });
    onCleanup(() => broker.close());
    await expect(broker.listen()).rejects.toThrow('plugin broken: setup failed: no config');
  });

  it('the older boolean hooks option runs first in the chain (true allows, false denies)', async () => {
    const { port } = await startBroker({
      hooks: { authorizeSubscribe: (_c, f) => f !== 'h/no' },
      plugins: [plugin('after', { authorizeSubscribe: () => 'deny' })],
    });
    const c = await RawClient.connected(port, 5);
    c.send({
      cmd: 'subscribe',
      messageId: 1,
      subscriptions: [
        { topic: 'h/yes', qos: 0 },
        { topic: 'h/no', qos: 0 },
      ],
    });
    expect(await c.next()).toMatchObject({ granted: [0, RC.NOT_AUTHORIZED] });
  });
});

describe('loading a plugin module (--plugin <path>[:<json>])', () => {
  it('loads an .mjs default export by path with JSON options, relative to cwd', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'heron-plugin-'));
    onCleanup(() => rm(dir, { recursive: true, force: true }));
    await writeFile(
      join(dir, 'deny-topic.mjs'),
      `export default {
  name: 'deny-topic',
  setup(api, options) {
    api.addHooks({ authorizePublish: (client, topic) => (topic === options.topic ? 'deny' : 'pass') });
  },
};
`,
    );
    const entry = await loadPlugin('./deny-topic.mjs:{"topic":"no/go"}', dir);
    expect(entry[0].name).toBe('deny-topic');
    expect(entry[1]).toEqual({ topic: 'no/go' });
    const { port } = await startBroker({ plugins: [entry] });
    const c = await RawClient.connected(port, 5);
    c.send(publish('no/go', 1));
    expect(await c.next()).toMatchObject({ cmd: 'puback', reasonCode: RC.NOT_AUTHORIZED });
    c.send(publish('fine', 2));
    expect(await c.next()).toMatchObject({
      cmd: 'puback',
      messageId: 2,
      reasonCode: RC.NO_MATCHING_SUBSCRIBERS,
    });

    await writeFile(join(dir, 'not-a-plugin.mjs'), 'export default 42;\n');
    await expect(loadPlugin(join(dir, 'not-a-plugin.mjs'))).rejects.toThrow('not a plugin');
    await expect(loadPlugin(`${join(dir, 'deny-topic.mjs')}:{bad`)).rejects.toThrow('not JSON');
  });
});
