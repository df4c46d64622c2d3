/**
 * The process-level guard: an exception escaping code run for one connection (a hook, a handler, a
 * persistence callback, a timer) is logged with the client id and closes or refuses that connection
 * only. It never reaches uncaughtException or unhandledRejection, and other clients keep publishing
 * and receiving. A 5.0 client closed this way is told DISCONNECT 0x80 (Unspecified error), the
 * reason a server gives when it will not say more [MQTT-4.13.2-1].
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { MqttClient } from 'mqtt';
import type { Packet } from 'mqtt-packet';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { BrokerOptions } from '../broker/index.js';
import { RC } from '../broker/reason-codes.js';
import { LevelPersistence } from '../persistence/level.js';
import { MemoryPersistence } from '../persistence/memory.js';
import type { SubscriptionRecord } from '../persistence/types.js';
import { connect, onCleanup, RawClient, type Received, startBroker } from './helpers.js';

interface LogLine {
  level: number;
  msg: string;
  clientId?: string;
  where?: string;
  hook?: string;
  err?: { message: string };
}

/** A pino logger whose error lines are kept for the test. */
function capturedLog() {
  const lines: LogLine[] = [];
  const logger = pino({ level: 'error' }, { write: (s: string) => lines.push(JSON.parse(s)) });
  return { logger, lines };
}

const uncaught = vi.fn();
beforeEach(() => {
  uncaught.mockClear();
  process.on('uncaughtException', uncaught);
  process.on('unhandledRejection', uncaught);
});
afterEach(() => {
  process.off('uncaughtException', uncaught);
  process.off('unhandledRejection', uncaught);
});

/** A subscriber and a publisher on `g/#` that are no part of the fault. */
async function bystanders(url: string) {
  const sub = await connect(url, { clientId: 'bystander-sub', protocolVersion: 5 });
  const pub = await connect(url, { clientId: 'bystander-pub' });
  const got: Received[] = [];
  sub.on('message', (topic, payload, packet) => got.push({ topic, payload: payload.toString(), packet }));
  await sub.subscribeAsync('g/#', { qos: 1 });
  return { sub, pub, got };
}

/**
 * The bystanders still exchange a QoS 1 message; returns every topic the subscriber received up to
 * it (anything the fault let through would be there before the marker).
 */
async function stillFlowing(b: { pub: MqttClient; got: Received[] }, marker: string): Promise<string[]> {
  await b.pub.publishAsync(`g/${marker}`, 'ok', { qos: 1 });
  await vi.waitFor(() => expect(b.got.map((m) => m.topic)).toContain(`g/${marker}`));
  return b.got.map((m) => m.topic);
}

const publish = (topic: string, messageId: number, retain = false): Packet => ({
  cmd: 'publish',
  topic,
  payload: Buffer.from('x'),
  qos: 1,
  messageId,
  retain,
  dup: false,
});

async function brokerWith(opts: BrokerOptions) {
  const log = capturedLog();
  const b = await startBroker({ ...opts, logger: log.logger });
  return { ...b, lines: log.lines };
}

describe('hooks', () => {
  const throwsForVictim = (client: { clientId: string }) => {
    if (client.clientId === 'victim') throw new Error('policy bug');
    return true;
  };

  it('a throwing authorizePublish denies that publish (5.0 PUBACK 0x87), logged with the client id', async () => {
    const { url, port, lines } = await brokerWith({ hooks: { authorizePublish: throwsForVictim } });
    const b = await bystanders(url);
    const victim = await RawClient.connected(port, 5, { clientId: 'victim' });
    victim.send(publish('g/denied', 1));
    expect(await victim.next()).toMatchObject({ cmd: 'puback', messageId: 1, reasonCode: RC.NOT_AUTHORIZED });
    // Denied, not cut off: the victim's connection still answers.
    victim.send({ cmd: 'pingreq' });
    expect(await victim.next()).toMatchObject({ cmd: 'pingresp' });
    expect(await stillFlowing(b, 'marker')).toEqual(['g/marker']);
    expect(lines).toContainEqual(
      expect.objectContaining({ clientId: 'victim', hook: 'authorizePublish', err: expect.anything() }),
    );
    expect(uncaught).not.toHaveBeenCalled();
  });

  it('v4: a throwing authorizePublish drops the message, still acknowledged [MQTT-3.3.5-2]', async () => {
    const { url, port, lines } = await brokerWith({ hooks: { authorizePublish: throwsForVictim } });
    const b = await bystanders(url);
    const victim = await RawClient.connected(port, 4, { clientId: 'victim' });
    victim.send(publish('g/denied', 1));
    expect(await victim.next()).toMatchObject({ cmd: 'puback', messageId: 1 });
    expect(await stillFlowing(b, 'marker')).toEqual(['g/marker']);
    expect(lines.filter((l) => l.clientId === 'victim')).toHaveLength(1);
    expect(uncaught).not.toHaveBeenCalled();
  });

  it('a throwing authorizeSubscribe refuses that filter in SUBACK, others are granted', async () => {
    const { url, port, lines } = await brokerWith({
      hooks: {
        authorizeSubscribe: (client, filter) => {
          if (client.clientId === 'victim' && filter === 'g/bad') throw new Error('policy bug');
          return true;
        },
      },
    });
    const b = await bystanders(url);
    for (const v of [4, 5] as const) {
      const victim = await RawClient.connected(port, v, { clientId: 'victim' });
      victim.send({
        cmd: 'subscribe',
        messageId: 3,
        subscriptions: [
          { topic: 'g/bad', qos: 1 },
          { topic: 'g/good', qos: 1 },
        ],
      });
      const refused = v === 5 ? RC.NOT_AUTHORIZED : 0x80;
      expect(await victim.next()).toMatchObject({ cmd: 'suback', messageId: 3, granted: [refused, 1] });
      victim.socket.destroy();
      await victim.closed;
    }
    expect(lines.filter((l) => l.clientId === 'victim' && l.hook === 'authorizeSubscribe')).toHaveLength(2);
    await stillFlowing(b, 'marker');
    expect(uncaught).not.toHaveBeenCalled();
  });

  it('an authorizePublish that returns a rejecting promise denies, and the rejection is handled', async () => {
    const { url, port, lines } = await brokerWith({
      hooks: {
        authorizePublish: ((client: { clientId: string }) =>
          client.clientId === 'victim'
            ? Promise.reject(new Error('async policy'))
            : true) as unknown as () => boolean,
      },
    });
    const b = await bystanders(url);
    const victim = await RawClient.connected(port, 5, { clientId: 'victim' });
    victim.send(publish('g/denied', 1));
    expect(await victim.next()).toMatchObject({ cmd: 'puback', reasonCode: RC.NOT_AUTHORIZED });
    expect(await stillFlowing(b, 'marker')).toEqual(['g/marker']);
    await vi.waitFor(() =>
      expect(lines.filter((l) => l.clientId === 'victim').map((l) => l.msg)).toContain('hook rejected'),
    );
    expect(uncaught).not.toHaveBeenCalled();
  });

  for (const v of [4, 5] as const) {
    it(`v${v}: a rejecting authenticate refuses that client (CONNACK ${v === 5 ? '0x80' : '3'}) and closes it`, async () => {
      const { url, port, lines, broker } = await brokerWith({
        hooks: {
          authenticate: async (client) => {
            if (client.clientId === 'victim') throw new Error('directory down');
            return true;
          },
        },
      });
      const b = await bystanders(url);
      const victim = await RawClient.open(port, v);
      victim.send({
        cmd: 'connect',
        protocolId: 'MQTT',
        protocolVersion: v,
        clientId: 'victim',
        clean: true,
        keepalive: 0,
      });
      expect(await victim.next()).toMatchObject(
        v === 5 ? { cmd: 'connack', reasonCode: RC.UNSPECIFIED_ERROR } : { cmd: 'connack', returnCode: 3 },
      );
      expect(await victim.next()).toBeNull();
      expect(broker.sessions.has('victim')).toBe(false);
      expect(lines).toContainEqual(
        expect.objectContaining({ clientId: 'victim', msg: 'authenticate hook failed' }),
      );
      await stillFlowing(b, 'marker');
      expect(uncaught).not.toHaveBeenCalled();
    });
  }
});

describe('persistence', () => {
  /** Memory persistence that fails every subscription write for one client. */
  class FailsForVictim extends MemoryPersistence {
    override putSubscription(clientId: string, sub: SubscriptionRecord): void {
      if (clientId === 'victim') throw new Error('disk on fire');
      super.putSubscription(clientId, sub);
    }
  }

  /** Memory persistence whose callbacks throw after calling back, while `armed`. */
  class ThrowsAfterCallback extends MemoryPersistence {
    armed = false;
    override whenDurable(cb: (err?: Error) => void): void {
      super.whenDurable((err) => {
        cb(err);
        if (this.armed) {
          this.armed = false;
          throw new Error('backend bug');
        }
      });
    }
  }

  for (const v of [4, 5] as const) {
    it(`v${v}: a backend throwing for one client closes that client only${v === 5 ? ' (DISCONNECT 0x80)' : ''}`, async () => {
      const { url, port, lines, broker } = await brokerWith({ persistence: new FailsForVictim() });
      const b = await bystanders(url);
      const victim = await RawClient.connected(port, v, {
        clientId: 'victim',
        clean: false,
        ...(v === 5 && { properties: { sessionExpiryInterval: 60 } }),
      });
      victim.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'g/x', qos: 1 }] });
      if (v === 5)
        expect(await victim.next()).toMatchObject({ cmd: 'disconnect', reasonCode: RC.UNSPECIFIED_ERROR });
      expect(await victim.next()).toBeNull();
      expect(lines).toContainEqual(
        expect.objectContaining({ clientId: 'victim', where: 'subscribe handler', err: expect.anything() }),
      );
      await vi.waitFor(() => expect(broker.connections.size).toBe(2));
      expect(await stillFlowing(b, 'marker')).toEqual(['g/marker']);
      expect(uncaught).not.toHaveBeenCalled();
    });
  }

  it('a whenDurable callback that throws after calling back closes the connection it ran for', async () => {
    const persistence = new ThrowsAfterCallback();
    const { url, port, lines } = await brokerWith({ persistence });
    const b = await bystanders(url);
    const victim = await RawClient.connected(port, 5, { clientId: 'victim' });
    persistence.armed = true;
    victim.send(publish('g/from-victim', 1));
    // Called back before the throw: the message was routed and acknowledged, then the connection closed.
    expect(await victim.next()).toMatchObject({ cmd: 'puback', messageId: 1 });
    expect(await victim.next()).toMatchObject({ cmd: 'disconnect', reasonCode: RC.UNSPECIFIED_ERROR });
    expect(await victim.next()).toBeNull();
    expect(lines).toContainEqual(expect.objectContaining({ clientId: 'victim', where: 'publish handler' }));
    expect(await stillFlowing(b, 'marker')).toEqual(['g/from-victim', 'g/marker']);
    expect(uncaught).not.toHaveBeenCalled();
  });

  it('LevelDB: a callback of a batch that throws closes its connection; the batch goes on', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'heron-guard-'));
    onCleanup(() => rm(dir, { recursive: true, force: true }));
    const persistence = new LevelPersistence({ dir });
    const { url, port, lines, broker } = await brokerWith({ persistence });
    const b = await bystanders(url);
    const victim = await RawClient.connected(port, 5, { clientId: 'victim' });
    const conn = broker.sessions.get('victim')!.conn!;
    conn.sendAck = () => {
      throw new Error('socket bug');
    };
    // Retained: a write, so the PUBACK waits for the batch.
    victim.send(publish('g/retained', 1, true));
    expect(await victim.next()).toMatchObject({ cmd: 'disconnect', reasonCode: RC.UNSPECIFIED_ERROR });
    expect(await victim.next()).toBeNull();
    expect(lines).toContainEqual(
      expect.objectContaining({ clientId: 'victim', where: 'puback after store' }),
    );
    expect(await stillFlowing(b, 'marker')).toEqual(['g/retained', 'g/marker']);
    expect(uncaught).not.toHaveBeenCalled();
  });

  it('LevelDB: an exception from a callback bound to no connection is logged', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'heron-guard-'));
    onCleanup(() => rm(dir, { recursive: true, force: true }));
    const persistence = new LevelPersistence({ dir });
    const { url, lines } = await brokerWith({ persistence });
    const b = await bystanders(url);
    const ran: string[] = [];
    persistence.putSession({ clientId: 'other', protocolVersion: 4, expiryInterval: 1 });
    persistence.whenDurable(() => {
      ran.push('first');
      throw new Error('stray callback');
    });
    persistence.whenDurable(() => ran.push('second'));
    await vi.waitFor(() => expect(ran).toEqual(['first', 'second']));
    expect(lines).toContainEqual(
      expect.objectContaining({ msg: 'exception in a persistence callback', err: expect.anything() }),
    );
    await stillFlowing(b, 'marker');
    expect(uncaught).not.toHaveBeenCalled();
  });
});

describe('timers', () => {
  it('an exception in a will timer is logged with the client id, never uncaught', async () => {
    const { broker, url, port, lines } = await brokerWith({});
    const b = await bystanders(url);
    // Whatever runs for the will's publication throws: here a listener of the broker's own event.
    broker.on('publish', (msg) => {
      if (msg.topic === 'g/will') throw new Error('listener bug');
    });
    const victim = await RawClient.connected(port, 5, {
      clientId: 'victim',
      properties: { sessionExpiryInterval: 60 },
      will: {
        topic: 'g/will',
        payload: Buffer.from('bye'),
        qos: 0,
        retain: false,
        properties: { willDelayInterval: 1 },
      },
    });
    victim.socket.destroy();
    await vi.waitFor(
      () =>
        expect(lines).toContainEqual(
          expect.objectContaining({ clientId: 'victim', msg: 'exception in a will timer' }),
        ),
      { timeout: 3000 },
    );
    expect(broker.wills.size).toBe(0);
    await stillFlowing(b, 'marker');
    expect(uncaught).not.toHaveBeenCalled();
  });
});
