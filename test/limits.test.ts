import { generate } from 'mqtt-packet';
import { describe, expect, it } from 'vitest';
import { connect, connectPacket, nextMessages, RawClient, startBroker } from './helpers.js';

describe('per-connection limits', () => {
  it('closes a connection that does not complete CONNECT within connectTimeout', async () => {
    const { port, url } = await startBroker({ connectTimeout: 1 });
    const silent = await RawClient.open(port, 4);
    const started = Date.now();
    // Half a CONNECT: a declared length the client never fills.
    silent.write([0x10, 0x20, 0x00, 0x04]);
    await silent.closed;
    const waited = Date.now() - started;
    expect(waited).toBeGreaterThanOrEqual(900);
    expect(waited).toBeLessThan(3000);
    // Others are unaffected.
    const c = await connect(url);
    await c.subscribeAsync('still/here');
    const got = nextMessages(c, 1);
    await c.publishAsync('still/here', 'yes');
    expect((await got)[0].payload).toBe('yes');
  });

  it('packets pipelined behind CONNECT wait for an asynchronous authentication, then run in order', async () => {
    let allow!: (ok: boolean) => void;
    const decided = new Promise<boolean>((resolve) => {
      allow = resolve;
    });
    let asked!: () => void;
    const authenticating = new Promise<void>((resolve) => {
      asked = resolve;
    });
    const { port } = await startBroker({
      hooks: {
        authenticate: () => {
          asked();
          return decided;
        },
      },
    });
    const c = await RawClient.open(port, 4);
    // One write: CONNECT, SUBSCRIBE, PUBLISH to the topic just subscribed, PINGREQ.
    c.write(
      Buffer.concat([
        generate(connectPacket(4)),
        generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'pipe/t', qos: 1 }] }),
        generate({
          cmd: 'publish',
          topic: 'pipe/t',
          payload: Buffer.from('after auth'),
          qos: 1,
          messageId: 2,
          retain: false,
          dup: false,
        }),
        generate({ cmd: 'pingreq' }),
      ]),
    );
    await authenticating;
    allow(true);
    const seen: string[] = [];
    for (;;) {
      const p = await c.next();
      if (p === null) break;
      seen.push(p.cmd === 'publish' ? `publish:${String(p.payload)}` : p.cmd);
      if (p.cmd === 'pingresp') break;
    }
    // Clients may send packets right after CONNECT (3.1.1 section 3.1.4): none is handled before
    // CONNACK, then all in the order sent.
    expect(seen[0]).toBe('connack');
    expect(seen).toEqual(expect.arrayContaining(['suback', 'puback', 'publish:after auth', 'pingresp']));
    expect(seen.indexOf('suback')).toBeLessThan(seen.indexOf('publish:after auth'));
  });

  it('a rejected CONNECT: nothing sent after it is processed [MQTT-3.1.4-5]', async () => {
    const { port, url, broker } = await startBroker({
      hooks: { authenticate: async (client) => client.clientId !== 'intruder' },
    });
    const watcher = await connect(url);
    await watcher.subscribeAsync('leak/#');
    const c = await RawClient.open(port, 4);
    c.write(
      Buffer.concat([
        generate(connectPacket(4, { clientId: 'intruder', username: 'intruder' })),
        generate({
          cmd: 'publish',
          topic: 'leak/t',
          payload: Buffer.from('x'),
          qos: 0,
          retain: true,
          dup: false,
        }),
      ]),
    );
    const ack = await c.next();
    expect(ack?.cmd).toBe('connack');
    expect((ack as { returnCode?: number }).returnCode).toBe(4);
    await c.closed;
    // A marker from the watcher arrives; the intruder's message never did, nor was it retained.
    const got = nextMessages(watcher, 1);
    await watcher.publishAsync('leak/marker', 'm');
    expect((await got)[0].topic).toBe('leak/marker');
    expect(broker.retained.size).toBe(0);
  });

  it('an authentication that never answers is bounded by connectTimeout too', async () => {
    const { port } = await startBroker({
      connectTimeout: 1,
      hooks: { authenticate: () => new Promise<boolean>(() => undefined) },
    });
    const c = await RawClient.open(port, 4);
    const started = Date.now();
    c.send(connectPacket(4));
    await c.closed;
    expect(Date.now() - started).toBeLessThan(3000);
  });
});
