/**
 * `$SYS/…` and `$DLQ/…` carry what the broker says: a client cannot publish into them (#10).
 */
import mqtt from 'mqtt';
import { describe, expect, it } from 'vitest';
import { definePlugin } from '../broker/index.js';
import { connect, startBroker } from './helpers.js';

describe("clients cannot publish into the broker's topics", () => {
  for (const topic of ['$SYS/broker/uptime', '$DLQ/workers/jobs/1']) {
    it(`${topic}: 5.0 PUBACK 0x87, 3.1.1 acknowledged and dropped [MQTT-3.3.5-2]; the broker itself still can`, async () => {
      const { url, broker } = await startBroker();
      const watcher = await connect(url);
      await watcher.subscribeAsync(`${topic.split('/')[0]}/#`, { qos: 1 });
      const got: string[] = [];
      watcher.on('message', (_t, p) => got.push(String(p)));
      const v5 = await connect(url, { protocolVersion: 5 });
      await expect(v5.publishAsync(topic, 'forged', { qos: 1 })).rejects.toMatchObject({ code: 0x87 });
      const v4 = await connect(url, { protocolVersion: 4 });
      await v4.publishAsync(topic, 'forged too', { qos: 1 });
      // The broker's own message arrives, and is the only one.
      const own = new Promise<void>((resolve) => watcher.once('message', () => resolve()));
      broker.publish({ topic, payload: 'from the broker', qos: 1 });
      await own;
      expect(got).toEqual(['from the broker']);
    });
  }
});

describe('the will topic is authorized for publish at CONNECT (#10)', () => {
  const will = (topic: string) => ({ topic, payload: Buffer.from('gone'), qos: 0 as const, retain: false });
  const refusal = (url: string, protocolVersion: 4 | 5, topic: string) =>
    mqtt
      .connectAsync(url, { protocolVersion, will: will(topic), reconnectPeriod: 0 })
      .then((c) => {
        void c.endAsync(true);
        return 0;
      })
      .catch((err: { code?: number }) => err.code ?? -1);

  it('a will into $SYS/… or $DLQ/… is refused: 5.0 CONNACK 0x87, 3.1.1 0x05', async () => {
    const { url } = await startBroker();
    expect(await refusal(url, 5, '$SYS/forged')).toBe(0x87);
    expect(await refusal(url, 4, '$DLQ/g/forged')).toBe(5);
    expect(await refusal(url, 5, 'fine/will')).toBe(0);
  });

  it('a will topic a plugin does not let the client publish to is refused; others connect', async () => {
    const { url } = await startBroker({
      plugins: [
        definePlugin({
          name: 'no-forbidden',
          setup(api) {
            api.addHooks({
              authorizePublish: (_c, topic) => (topic.startsWith('forbidden/') ? 'deny' : 'pass'),
            });
          },
        }),
      ],
    });
    expect(await refusal(url, 5, 'forbidden/x')).toBe(0x87);
    expect(await refusal(url, 4, 'forbidden/x')).toBe(5);
    expect(await refusal(url, 4, 'allowed/x')).toBe(0);
  });
});
