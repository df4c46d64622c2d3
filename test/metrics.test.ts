/**
 * Prometheus metrics (plugins/metrics): scraped over HTTP before and after a known workload, the
 * counters move by exactly that workload: PUBLISH by QoS, packets and bytes both ways,
 * connections, authentication failures. Also the top-sessions and shared-group series and the
 * persistence batch histogram.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { definePlugin, type PluginApi } from '../broker/index.js';
import { LevelPersistence } from '../persistence/level.js';
import { createPrometheus, type Prometheus } from '../plugins/metrics/index.js';
import { connect, disconnected, nextMessages, onCleanup, startBroker } from './helpers.js';

async function metricsBroker(extra = {}) {
  let api!: PluginApi;
  const probe = definePlugin({
    name: 'probe',
    setup(a) {
      api = a;
      a.addHooks({ authenticate: (_c, username) => (username === 'bad' ? 'deny' : 'allow') });
    },
  });
  const t = await startBroker({ plugins: [probe], ...extra });
  const prom = createPrometheus(api);
  const url = await serve(prom);
  return { ...t, api, prom, scrape: () => scrape(url) };
}

/** A tiny HTTP server answering GET /metrics, as the admin HTTP server mounts it. */
async function serve(prom: Prometheus): Promise<string> {
  const server = createServer((req, res) => {
    if (req.url !== '/metrics') {
      res.statusCode = 404;
      res.end();
      return;
    }
    prom.metrics().then((text) => {
      res.setHeader('content-type', prom.contentType);
      res.end(text);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  onCleanup(() => new Promise((resolve) => server.close(resolve)));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/metrics`;
}

type Samples = Map<string, number>;

async function scrape(url: string): Promise<Samples> {
  const res = await fetch(url);
  expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
  const out: Samples = new Map();
  for (const line of (await res.text()).split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}

const delta = (a: Samples, b: Samples, key: string) => (b.get(key) ?? 0) - (a.get(key) ?? 0);

describe('Prometheus metrics', () => {
  it('counters move by exactly a known workload', async () => {
    const { url, scrape } = await metricsBroker();
    const sub = await connect(url, { clientId: 'm-sub', protocolVersion: 4 });
    await sub.subscribeAsync('m/t', { qos: 1 });
    const pub = await connect(url, { clientId: 'm-pub', protocolVersion: 4 });
    const before = await scrape();
    expect(before.get('heron_connections{transport="tcp"}')).toBe(2);
    expect(before.get('heron_connections_by_protocol{protocol="3.1.1"}')).toBe(2);
    expect(before.get('heron_subscriptions')).toBe(1);

    // 7 at QoS 0 and 3 at QoS 1, topic m/t (3 bytes), payload 10 bytes.
    const got = nextMessages(sub, 10);
    const payload = 'x'.repeat(10);
    for (let i = 0; i < 7; i++) await pub.publishAsync('m/t', payload, { qos: 0 });
    for (let i = 0; i < 3; i++) await pub.publishAsync('m/t', payload, { qos: 1 });
    await got;
    // An UNSUBSCRIBE round trip: once its UNSUBACK is back, the broker has read the PUBACKs before it.
    await sub.unsubscribeAsync('none');
    const after = await scrape();

    expect(delta(before, after, 'heron_messages_received_total{qos="0"}')).toBe(7);
    expect(delta(before, after, 'heron_messages_received_total{qos="1"}')).toBe(3);
    expect(delta(before, after, 'heron_messages_sent_total{qos="0"}')).toBe(7);
    expect(delta(before, after, 'heron_messages_sent_total{qos="1"}')).toBe(3);
    expect(delta(before, after, 'heron_messages_received_total{qos="2"}')).toBe(0);
    // In: 10 PUBLISH, 3 PUBACK from the subscriber, 1 UNSUBSCRIBE. Out: 10 PUBLISH, 3 PUBACK, 1 UNSUBACK.
    expect(delta(before, after, 'heron_packets_received_total')).toBe(14);
    expect(delta(before, after, 'heron_packets_sent_total')).toBe(14);
    // QoS 0 PUBLISH: 2 + 2 + 3 + 10 = 17 bytes, QoS 1: 19; PUBACK 4; UNSUBSCRIBE 10, UNSUBACK 4.
    expect(delta(before, after, 'heron_received_bytes_total')).toBe(7 * 17 + 3 * 19 + 3 * 4 + 10);
    expect(delta(before, after, 'heron_sent_bytes_total')).toBe(7 * 17 + 3 * 19 + 3 * 4 + 4);
    // PUBLISH bytes by QoS: received counted after the 2-byte fixed header, sent whole.
    expect(delta(before, after, 'heron_messages_received_bytes_total{qos="0"}')).toBe(7 * 15);
    expect(delta(before, after, 'heron_messages_received_bytes_total{qos="1"}')).toBe(3 * 17);
    expect(delta(before, after, 'heron_messages_sent_bytes_total{qos="0"}')).toBe(7 * 17);
    expect(delta(before, after, 'heron_messages_sent_bytes_total{qos="1"}')).toBe(3 * 19);
    expect(before.get('heron_connections_total{transport="tcp",protocol="3.1.1"}')).toBe(2);
    expect(delta(before, after, 'heron_connections_total{transport="tcp",protocol="3.1.1"}')).toBe(0);

    await expect(connect(url, { clientId: 'm-bad', username: 'bad' })).rejects.toThrow();
    await connect(url, { clientId: 'm-v5', protocolVersion: 5 });
    const later = await scrape();
    expect(delta(after, later, 'heron_connections_total{transport="tcp",protocol="3.1.1"}')).toBe(0);
    expect(later.get('heron_connections_total{transport="tcp",protocol="5.0"}')).toBe(1);
    expect(delta(after, later, 'heron_auth_failures_total')).toBe(1);
    expect(later.get('heron_connections_by_protocol{protocol="5.0"}')).toBe(1);
    expect(later.get('heron_connections_max')).toBe(3);
    // Process metrics on the same registry, prefixed.
    expect(later.get('heron_process_cpu_user_seconds_total')).toBeGreaterThan(0);
    expect(later.has('heron_ready')).toBe(true);
  });

  it('lists the largest session queues and shared groups; one registry per broker', async () => {
    const a = await metricsBroker();
    const off = await connect(a.url, {
      clientId: 'm-off',
      protocolVersion: 5,
      clean: false,
      properties: { sessionExpiryInterval: 60 },
    });
    await off.subscribeAsync('q/#', { qos: 1 });
    const member = await connect(a.url, { clientId: 'm-member' });
    await member.subscribeAsync('$share/g/q/#', { qos: 1 });
    const gone = disconnected(a.broker, 'm-off');
    await off.endAsync();
    await gone;
    const pub = await connect(a.url, { clientId: 'm-pub2' });
    for (let i = 0; i < 4; i++) await pub.publishAsync('q/x', 'abcd', { qos: 1 });
    const s = await a.scrape();
    expect(s.get('heron_session_queue_bytes{client_id="m-off"}')).toBeGreaterThan(0);
    expect(s.get('heron_shared_group_members{group="g",filter="q/#"}')).toBe(1);
    expect(s.has('heron_shared_group_depth{group="g",filter="q/#"}')).toBe(true);
    expect(s.get('heron_shared_group_dead_letters_total{group="g",filter="q/#"}')).toBe(0);

    // A second broker in the same process has its own registry: no clash, its own figures.
    const b = await metricsBroker();
    const sb = await b.scrape();
    expect(sb.get('heron_connections{transport="tcp"}')).toBe(0);
    expect(a.prom.registry).not.toBe(b.prom.registry);
  });

  it('reports each declared queue: messages by state, bytes, oldest age, members', async () => {
    const a = await metricsBroker({ queues: [{ name: 'mjobs', filter: 'mjobs/#' }] });
    const pub = await connect(a.url, { clientId: 'mq-pub' });
    for (let i = 0; i < 3; i++) await pub.publishAsync('mjobs/x', 'job', { qos: 1 });
    const [pulled] = await a.api.queues.pull('mjobs', { max: 1, visibilityMs: 60_000 });
    expect(pulled).toBeDefined();
    const s = await a.scrape();
    expect(s.get('heron_queue_messages{queue="mjobs",state="waiting"}')).toBe(2);
    expect(s.get('heron_queue_messages{queue="mjobs",state="pulled"}')).toBe(1);
    expect(s.get('heron_queue_bytes{queue="mjobs"}')).toBeGreaterThanOrEqual(3 * 'mjobs/xjob'.length);
    expect(s.get('heron_queue_oldest_age_seconds{queue="mjobs"}')).toBeGreaterThanOrEqual(0);
    expect(s.get('heron_queue_members{queue="mjobs"}')).toBe(0);
    expect(s.get('heron_queue_dead_letters_total{queue="mjobs"}')).toBe(0);
  });

  it('fills the persistence batch latency histogram', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'heron-metrics-'));
    onCleanup(() => rmSync(dir, { recursive: true, force: true }));
    const { url, broker, scrape } = await metricsBroker({ persistence: new LevelPersistence({ dir }) });
    const c = await connect(url, {
      clientId: 'm-p',
      clean: false,
      protocolVersion: 5,
      properties: { sessionExpiryInterval: 60 },
    });
    await c.subscribeAsync('p/#', { qos: 1 });
    for (let i = 0; i < 3; i++) await c.publishAsync('p/x', 'durable', { qos: 1, retain: true });
    await new Promise((resolve) => broker.persistence.whenDurable(resolve));
    const s = await scrape();
    const count = s.get('heron_persistence_batch_duration_seconds_count') ?? 0;
    expect(count).toBeGreaterThan(0);
    expect(s.get('heron_persistence_batch_duration_seconds_bucket{le="+Inf"}')).toBe(count);
    expect(s.get('heron_persistence_batch_duration_seconds_sum')).toBeGreaterThan(0);
    const buckets = [...s.entries()].filter(([k]) =>
      k.startsWith('heron_persistence_batch_duration_seconds_bucket'),
    );
    for (let i = 1; i < buckets.length; i++) expect(buckets[i][1]).toBeGreaterThanOrEqual(buckets[i - 1][1]);
  });
});
