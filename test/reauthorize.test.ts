/**
 * Existing subscriptions asked about again through the authorizeSubscribe chain, 3.1.1 and 5.0:
 * at start for the sessions restored from LevelDB (the rules may have changed while the broker was
 * down), and after broker.reload() for every session, connected or offline. One no longer granted
 * is removed (router, session, disk), logged with its client id and filter, and receives nothing;
 * the granted ones keep receiving.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { IConnectPacket, IPublishPacket } from 'mqtt-packet';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { LevelPersistence } from '../persistence/level.js';
import aclFilePlugin from '../plugins/acl-file/index.js';
import { definePlugin, type Verdict } from '../plugins/api.js';
import { disconnected, onCleanup, RawClient, startBroker } from './helpers.js';
import { collect } from './persistence.conformance.js';
import { rawSubscribe, uid } from './spec-helpers.js';

const VERSIONS = [4, 5] as const;

function tmp(): string {
  const dir = mkdtempSync(join(tmpdir(), 'heron-reauth-'));
  onCleanup(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A pino logger keeping its warn lines for the test. */
function warnings() {
  const lines: Record<string, unknown>[] = [];
  const logger = pino({ level: 'warn' }, { write: (s: string) => lines.push(JSON.parse(s)) });
  const removed = () =>
    lines
      .filter((l) => l.msg === 'subscription no longer authorized; removed')
      .map((l) => `${l.clientId} ${l.filter}`)
      .sort();
  return { logger, removed };
}

/** CONNECT fields of a persistent session (3.1.1: Clean Session 0; 5.0: an expiry interval). */
function persistent(v: 4 | 5, clientId: string, username?: string): Partial<IConnectPacket> {
  return {
    clientId,
    clean: false,
    ...(username !== undefined && { username }),
    ...(v === 5 && { properties: { sessionExpiryInterval: 3600 } }),
  };
}

async function nextPublish(c: RawClient): Promise<IPublishPacket> {
  const p = await c.nextOf('publish');
  if (p === null) throw new Error('closed before PUBLISH');
  return p as IPublishPacket;
}

describe('subscriptions restored from disk are re-authorized at start', () => {
  for (const v of VERSIONS) {
    it(`v${v}: a restored subscription the ACL file no longer grants is removed and logged; the granted one still receives`, async () => {
      const dir = tmp();
      const id = uid(`restored${v}`);
      // First run: no ACL, alice's persistent session subscribes to both.
      const first = await startBroker({ persistence: new LevelPersistence({ dir: join(dir, 'data') }) });
      const c1 = await RawClient.connected(first.port, v, persistent(v, id, 'alice'));
      const ack = await rawSubscribe(c1, [
        { topic: 'secret/#', qos: 1 },
        { topic: 'public/#', qos: 1 },
      ]);
      expect(ack.granted).toEqual([1, 1]);
      await first.broker.close();

      // Second run: an ACL file granting alice public/# only [MQTT-3.8.4-3 is about new SUBSCRIBEs;
      // a restored one is judged by the same rules].
      const acl = join(dir, 'acl');
      writeFileSync(acl, 'user alice\ntopic read public/#\n');
      const log = warnings();
      const store = new LevelPersistence({ dir: join(dir, 'data') });
      const second = await startBroker({
        persistence: store,
        plugins: [[aclFilePlugin, { file: acl }]],
        logger: log.logger,
      });
      // Judged as alice (the user name is stored with the session), so public/# stays.
      expect(log.removed()).toEqual([`${id} secret/#`]);
      expect([...(second.broker.sessions.get(id)?.subscriptions.keys() ?? [])]).toEqual(['public/#']);
      expect((await collect(store.listSubscriptions())).map((s) => s.sub.filter)).toEqual(['public/#']);

      // Offline: only what it is still subscribed to is queued for it.
      second.broker.publish({ topic: 'secret/1', payload: 's', qos: 1 });
      second.broker.publish({ topic: 'public/1', payload: 'p', qos: 1 });
      const c2 = await RawClient.open(second.port, v);
      c2.send({
        cmd: 'connect',
        protocolId: 'MQTT',
        protocolVersion: v,
        keepalive: 0,
        ...persistent(v, id, 'alice'),
      } as IConnectPacket);
      const connack = await c2.next();
      expect(connack).toMatchObject({ cmd: 'connack', sessionPresent: true });
      expect((await nextPublish(c2)).topic).toBe('public/1');
      // Online: the same.
      second.broker.publish({ topic: 'secret/2', payload: 's', qos: 1 });
      second.broker.publish({ topic: 'public/2', payload: 'p', qos: 1 });
      expect((await nextPublish(c2)).topic).toBe('public/2');
    });
  }
});

/** A plugin granting the filters in a set, synchronously or through a promise. */
function grantsPlugin(granted: Set<string>, async: boolean) {
  return definePlugin({
    name: 'grants',
    setup(api) {
      const answer = (f: string): Verdict => (granted.has(f) ? 'allow' : 'deny');
      api.addHooks({
        authorizeSubscribe: async ? async (_c, f) => answer(f) : (_c, f) => answer(f),
      });
    },
  });
}

describe('broker.reload() re-checks existing subscriptions', () => {
  for (const v of VERSIONS) {
    for (const async of [false, true]) {
      it(`v${v}, ${async ? 'asynchronous' : 'synchronous'} hook: a subscription no longer granted, of a connected and of an offline session, is removed and stops receiving`, async () => {
        const granted = new Set(['a/#', 'b/#']);
        const log = warnings();
        const { broker, port } = await startBroker({
          plugins: [grantsPlugin(granted, async)],
          logger: log.logger,
        });
        const on = await RawClient.connected(port, v, { clientId: uid('on') });
        expect(
          (
            await rawSubscribe(on, [
              { topic: 'a/#', qos: 1 },
              { topic: 'b/#', qos: 1 },
            ])
          ).granted,
        ).toEqual([1, 1]);
        const offId = uid('off');
        const off = await RawClient.connected(port, v, persistent(v, offId));
        expect(
          (
            await rawSubscribe(off, [
              { topic: 'a/#', qos: 1 },
              { topic: 'b/#', qos: 1 },
            ])
          ).granted,
        ).toEqual([1, 1]);
        const gone = disconnected(broker, offId);
        off.socket.destroy();
        await gone;

        granted.delete('a/#');
        await broker.reload();
        const onId = [...broker.sessions.keys()].find((k) => k.startsWith('on-'));
        expect(log.removed()).toEqual([`${offId} a/#`, `${onId} a/#`].sort());
        expect(broker.stats.subscriptions).toBe(2);

        broker.publish({ topic: 'a/x', payload: '1', qos: 1 });
        broker.publish({ topic: 'b/x', payload: '2', qos: 1 });
        expect((await nextPublish(on)).topic).toBe('b/x');
        const back = await RawClient.open(port, v);
        back.send({
          cmd: 'connect',
          protocolId: 'MQTT',
          protocolVersion: v,
          keepalive: 0,
          ...persistent(v, offId),
        } as IConnectPacket);
        expect(await back.next()).toMatchObject({ cmd: 'connack', sessionPresent: true });
        expect((await nextPublish(back)).topic).toBe('b/x');

        // A reload that leaves the grants as they are removes nothing more.
        await broker.reload();
        expect(log.removed()).toHaveLength(2);
      });
    }
  }
});

describe('acl-file reload re-checks existing subscriptions', () => {
  for (const v of VERSIONS) {
    it(`v${v}: after the file is rewritten and reloaded, a subscription it no longer grants is removed; a granted one keeps receiving`, async () => {
      const file = join(tmp(), 'acl');
      writeFileSync(file, 'user alice\ntopic read a/#\ntopic read b/#\n');
      const log = warnings();
      const { broker, port } = await startBroker({
        plugins: [[aclFilePlugin, { file }]],
        logger: log.logger,
      });
      const id = uid('alice');
      const c = await RawClient.connected(port, v, { clientId: id, username: 'alice' });
      expect(
        (
          await rawSubscribe(c, [
            { topic: 'a/#', qos: 0 },
            { topic: 'b/#', qos: 0 },
          ])
        ).granted,
      ).toEqual([0, 0]);
      writeFileSync(file, 'user alice\ntopic read b/#\n');
      await broker.reload();
      expect(log.removed()).toEqual([`${id} a/#`]);
      expect([...(broker.sessions.get(id)?.subscriptions.keys() ?? [])]).toEqual(['b/#']);
      broker.publish({ topic: 'a/x', payload: '1' });
      broker.publish({ topic: 'b/x', payload: '2' });
      expect((await nextPublish(c)).topic).toBe('b/x');
    });
  }
});
