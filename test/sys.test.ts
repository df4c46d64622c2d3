/**
 * `$SYS` topics over real connections: Mosquitto's names, values that follow clients and
 * messages, retained for late subscribers, readable only where the ACL grants it, never writable
 * by a client. Every wait is for the next update's message (interval 1 s), never a sleep.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { MqttClient } from 'mqtt';
import { describe, expect, it } from 'vitest';
import type { BrokerOptions } from '../broker/index.js';
import aclFilePlugin from '../plugins/acl-file/index.js';
import sysPlugin from '../plugins/sys/index.js';
import { run } from './cli-helpers.js';
import { connect, onCleanup, QUIET_CLI, startBroker } from './helpers.js';

function sysBroker(extra: BrokerOptions['plugins'] = []) {
  return startBroker({ plugins: [[sysPlugin, { interval: 1 }], ...extra] });
}

/** Every `$SYS` value a client has seen, latest first, and a wait for one to satisfy a test. */
function watch(client: MqttClient) {
  const values = new Map<string, string>();
  const waiters: { test: () => boolean; resolve: () => void }[] = [];
  client.on('message', (topic, payload) => {
    values.set(topic, payload.toString());
    for (let i = waiters.length - 1; i >= 0; i--)
      if (waiters[i].test()) {
        waiters[i].resolve();
        waiters.splice(i, 1);
      }
  });
  return {
    values,
    until(test: (v: Map<string, string>) => boolean): Promise<void> {
      if (test(values)) return Promise.resolve();
      return new Promise((resolve) => waiters.push({ test: () => test(values), resolve }));
    },
  };
}

const num = (v: Map<string, string>, t: string) => Number(v.get(`$SYS/broker/${t}`) ?? Number.NaN);

describe('$SYS', () => {
  it('lists each declared job queue under $SYS/broker/heron/job queues/<name>/', async () => {
    const { url } = await startBroker({
      plugins: [[sysPlugin, { interval: 1 }]],
      queues: [{ name: 'sjobs', filter: 'sjobs/#' }],
    });
    const pub = await connect(url, { clientId: 'sys-qpub' });
    for (let i = 0; i < 2; i++) await pub.publishAsync('sjobs/a', 'job', { qos: 1 });
    const mon = await connect(url, { clientId: 'sys-qmon' });
    const w = watch(mon);
    await mon.subscribeAsync('$SYS/broker/heron/job queues/#');
    const q = '$SYS/broker/heron/job queues/sjobs/';
    await w.until((v) => v.get(`${q}waiting`) === '2');
    for (const t of ['delayed', 'inflight', 'members', 'dead letters']) expect(w.values.get(q + t)).toBe('0');
    expect(Number(w.values.get(`${q}bytes`))).toBeGreaterThan(0);
  });

  it('publishes Mosquitto names whose values follow connections and messages', async () => {
    const { url } = await sysBroker();
    const mon = await connect(url, { clientId: 'sys-mon' });
    const w = watch(mon);
    await mon.subscribeAsync('$SYS/#');
    await w.until(
      (v) => num(v, 'clients/connected') === 1 && v.has('$SYS/broker/load/messages/received/1min'),
    );
    const v = w.values;
    expect(v.get('$SYS/broker/version')).toMatch(/^heron version \d+\.\d+\.\d+/);
    expect(v.get('$SYS/broker/uptime')).toMatch(/^\d+ seconds$/);
    for (const t of [
      'clients/disconnected',
      'clients/total',
      'clients/maximum',
      'messages/received',
      'messages/sent',
      'messages/stored',
      'publish/messages/dropped',
      'publish/messages/received',
      'publish/messages/sent',
      'bytes/received',
      'bytes/sent',
      'subscriptions/count',
      'retained messages/count',
      'store/messages/count',
      'store/messages/bytes',
      'heap/current',
      'heron/shared/depth',
      'heron/shared/dead letters',
      'heron/queues/overflows',
    ])
      expect(Number.isFinite(num(v, t)), t).toBe(true);
    for (const m of ['messages/received', 'messages/sent', 'bytes/received', 'bytes/sent', 'connections'])
      for (const p of ['1min', '5min', '15min']) expect(v.has(`$SYS/broker/load/${m}/${p}`)).toBe(true);
    const received0 = num(v, 'publish/messages/received');
    const subs0 = num(v, 'subscriptions/count');

    const pub = await connect(url, { clientId: 'sys-pub' });
    await pub.subscribeAsync('app/in');
    for (let i = 0; i < 5; i++) await pub.publishAsync('app/t', `m${i}`, { qos: 1 });
    await w.until(
      (x) =>
        num(x, 'clients/connected') === 2 &&
        num(x, 'publish/messages/received') === received0 + 5 &&
        num(x, 'subscriptions/count') === subs0 + 1,
    );
    expect(num(v, 'clients/maximum')).toBe(2);
    expect(num(v, 'bytes/received')).toBeGreaterThan(5 * 'm0'.length);

    await pub.endAsync();
    await w.until((x) => num(x, 'clients/connected') === 1);
    // Rates decay toward what happens now: connections were made, so its load is above 0.
    await w.until((x) => num(x, 'load/connections/1min') > 0);
  });

  it('is retained for a subscriber that comes later, and refused from clients', async () => {
    const { url } = await sysBroker();
    const first = await connect(url, { clientId: 'sys-first' });
    const w1 = watch(first);
    await first.subscribeAsync('$SYS/broker/version');
    await w1.until((v) => v.has('$SYS/broker/version'));

    const late = await connect(url, { clientId: 'sys-late', protocolVersion: 5 });
    const w2 = watch(late);
    await late.subscribeAsync('$SYS/broker/version');
    await w2.until((v) => v.has('$SYS/broker/version'));
    // A client may not publish under $SYS (5.0: 0x87 Not authorized), and the value stays.
    await expect(late.publishAsync('$SYS/broker/version', 'fake', { qos: 1, retain: true })).rejects.toThrow(
      /Not authorized/,
    );
    const again = await connect(url, { clientId: 'sys-again' });
    const w3 = watch(again);
    await again.subscribeAsync('$SYS/broker/version');
    await w3.until((v) => v.has('$SYS/broker/version'));
    expect(w3.values.get('$SYS/broker/version')).toMatch(/^heron version /);
  });

  it('is retained in memory only, outside --max-retained', async () => {
    const { url, broker } = await startBroker({ plugins: [[sysPlugin, { interval: 1 }]], maxRetained: 1 });
    const c = await connect(url, { clientId: 'sys-ret' });
    const w = watch(c);
    await c.subscribeAsync('$SYS/broker/retained messages/count');
    // The client's one retained message still fits, though $SYS holds dozens.
    await c.publishAsync('app/state', 'on', { qos: 1, retain: true });
    await w.until(
      (v) => v.has('$SYS/broker/retained messages/count') && num(v, 'retained messages/count') > 1,
    );
    expect(broker.stats.retainedRefused).toBe(0);
    await new Promise((resolve) => broker.persistence.whenDurable(resolve));
    const stored: string[] = [];
    for await (const m of broker.persistence.listRetained()) stored.push(m.topic);
    expect(stored).toEqual(['app/state']);
  });

  it('is delivered only where the ACL grants it (authorizeDeliver)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'heron-sys-'));
    onCleanup(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'acl');
    writeFileSync(
      file,
      'user ops\ntopic read $SYS/#\n\nuser part\ntopic read $SYS/#\ntopic deny $SYS/broker/heron/#\n\nuser guest\ntopic read #\n',
    );
    const { url } = await sysBroker([[aclFilePlugin, { file }]]);
    const ops = await connect(url, { clientId: 'sys-ops', username: 'ops' });
    const part = await connect(url, { clientId: 'sys-part', username: 'part' });
    const guest = await connect(url, { clientId: 'sys-guest', username: 'guest', protocolVersion: 5 });
    const wo = watch(ops);
    const wp = watch(part);
    const wg = watch(guest);
    await ops.subscribeAsync('$SYS/#');
    // Granted but for a denied branch: the subscription stands, the denied topics never arrive.
    await part.subscribeAsync('$SYS/#');
    await guest.subscribeAsync('#');
    // Not granted at all: SUBACK 0x87.
    await expect(guest.subscribeAsync('$SYS/broker/uptime')).rejects.toThrow(/Not authorized/);

    await wo.until((v) => v.has('$SYS/broker/uptime'));
    const seen = wo.values.get('$SYS/broker/uptime');
    // The update after the one ops saw first: every subscriber has been offered two rounds.
    await wo.until((v) => v.get('$SYS/broker/uptime') !== seen);
    expect(wp.values.size).toBeGreaterThan(0);
    expect(wp.values.has('$SYS/broker/uptime')).toBe(true);
    expect(wo.values.has('$SYS/broker/heron/shared/depth')).toBe(true);
    expect([...wp.values.keys()].filter((t) => t.startsWith('$SYS/broker/heron/'))).toEqual([]);
    // `#` does not match topics starting with $ [MQTT-4.7.2-1].
    expect([...wg.values.keys()].filter((t) => t.startsWith('$'))).toEqual([]);
  });

  it('the CLI publishes $SYS by default (--sys-interval 10) and not with --sys-interval 0', async () => {
    const on = run([...QUIET_CLI]);
    const a = await connect(`mqtt://127.0.0.1:${(await on.line((l) => l.msg === 'listening')).port}`);
    const w = watch(a);
    await a.subscribeAsync('$SYS/broker/version');
    // The first update comes as soon as the broker is restored, not after the interval.
    await w.until((v) => v.has('$SYS/broker/version'));
    on.child.kill('SIGTERM');
    expect((await on.done).code).toBe(0);

    const off = run([...QUIET_CLI, '--sys-interval', '0']);
    const b = await connect(`mqtt://127.0.0.1:${(await off.line((l) => l.msg === 'listening')).port}`);
    const seen: string[] = [];
    b.on('message', (t) => seen.push(t));
    await b.subscribeAsync('$SYS/#');
    await b.publishAsync('probe', 'x', { qos: 1 });
    // A later SUBACK comes after any retained message of the first subscription.
    await b.subscribeAsync('probe2');
    expect(seen).toEqual([]);
    off.child.kill('SIGTERM');
    expect((await off.done).code).toBe(0);
  });
});
