import { describe, expect, it } from 'vitest';
import { definePlugin, type PluginApi } from '../broker/index.js';
import { connect, disconnected, nextMessages, startBroker } from './helpers.js';

/** A broker with a plugin that hands out its PluginApi, and denies user "bad". */
async function brokerWithApi() {
  let api!: PluginApi;
  const plugin = definePlugin({
    name: 'probe',
    setup(a) {
      api = a;
      a.addHooks({ authenticate: (_c, username) => (username === 'bad' ? 'deny' : 'allow') });
    },
  });
  const t = await startBroker({ plugins: [plugin] });
  return { ...t, api };
}

describe('PluginApi.stats', () => {
  it('counts clients by protocol, PUBLISH by QoS, bytes and auth failures', async () => {
    const { url, api } = await brokerWithApi();
    const before = api.stats();
    expect(before.ready).toBe(true);
    expect(before.version).toMatch(/^\d+\.\d+\.\d+/);
    expect(before.clients.connected).toBe(0);

    const sub = await connect(url, { protocolVersion: 5, clientId: 'st-sub' });
    await sub.subscribeAsync('st/#', { qos: 1 });
    const pub = await connect(url, { protocolVersion: 4, clientId: 'st-pub' });
    const got = nextMessages(sub, 3);
    for (let i = 0; i < 3; i++) await pub.publishAsync('st/x', 'hello', { qos: 1 });
    await pub.publishAsync('st/y', 'zero', { qos: 0 });
    await got;
    await expect(connect(url, { username: 'bad', clientId: 'st-bad' })).rejects.toThrow();

    const s = api.stats();
    expect(s.clients.connected).toBe(2);
    expect(s.clients.byProtocol).toEqual({ '3.1': 0, '3.1.1': 1, '5.0': 1 });
    expect(s.clients.byTransport.tcp).toBe(2);
    expect(s.clients.connectsTotal - before.clients.connectsTotal).toBe(2);
    expect(s.clients.maximum).toBe(2);
    expect(s.clients.authFailuresTotal - before.clients.authFailuresTotal).toBe(1);
    expect(s.messages.receivedByQos).toEqual([1, 3, 0]);
    expect(s.messages.sentByQos[1]).toBe(3);
    expect(s.publish.received).toBe(4);
    // CONNECT×3, SUBSCRIBE, PUBLISH×4, PUBACK×3 (the subscriber's) at least.
    expect(s.messages.received).toBeGreaterThanOrEqual(11);
    expect(s.bytes.received).toBeGreaterThan(4 * 'hello'.length);
    expect(s.bytes.sent).toBeGreaterThan(3 * 'hello'.length);
    expect(s.subscriptions.count).toBe(1);
    expect(s.uptime).toBeGreaterThanOrEqual(0);
  });

  it('topQueues lists an offline session with its queue; groups lists shared groups', async () => {
    const { url, broker, api } = await brokerWithApi();
    const off = await connect(url, {
      protocolVersion: 5,
      clientId: 'st-off',
      clean: false,
      properties: { sessionExpiryInterval: 60 },
    });
    await off.subscribeAsync('q/#', { qos: 1 });
    const member = await connect(url, { protocolVersion: 5, clientId: 'st-member' });
    await member.subscribeAsync('$share/g1/q/#', { qos: 1 });
    const gone = disconnected(broker, 'st-off');
    await off.endAsync();
    await gone;

    const pub = await connect(url, { clientId: 'st-pub2' });
    const got = nextMessages(member, 5);
    for (let i = 0; i < 5; i++) await pub.publishAsync('q/a', `m${i}`, { qos: 1 });
    await got;

    const top = api.topQueues(10);
    expect(top[0]).toMatchObject({ clientId: 'st-off', connected: false });
    expect(top[0].queuedBytes).toBeGreaterThan(0);
    expect(api.topQueues(0)).toEqual([]);
    const s = api.stats();
    expect(s.clients.disconnected).toBe(1);
    expect(s.clients.total).toBe(3);

    const groups = api.groups();
    expect(groups).toEqual([
      {
        group: 'g1',
        filter: 'q/#',
        strategy: expect.any(String),
        members: 1,
        depth: 0,
        inflight: expect.any(Number),
        retrying: 0,
        deadLetters: 0,
      },
    ]);
    expect(s.shared.groups).toBe(1);
  });
});
