/**
 * `$SYS/…` and `$DLQ/…` carry what the broker says: a client cannot publish into them (#10).
 */
import { describe, expect, it } from 'vitest';
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
