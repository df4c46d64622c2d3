import { describe, expect, it } from 'vitest';
import { connect, nextMessages, startBroker } from './helpers.js';

describe('QoS flows over TCP', () => {
  for (const protocolVersion of [4, 5] as const) {
    for (const qos of [0, 1, 2] as const) {
      it(`v${protocolVersion}: QoS ${qos} publish reaches a QoS 2 subscriber at QoS ${qos} [MQTT-3.3.1-1]`, async () => {
        const { url } = await startBroker();
        const sub = await connect(url, { protocolVersion });
        const pub = await connect(url, { protocolVersion });
        await sub.subscribeAsync('t/q', { qos: 2 });
        const got = nextMessages(sub, 1);
        await pub.publishAsync('t/q', `hello ${qos}`, { qos });
        const [m] = await got;
        expect(m.topic).toBe('t/q');
        expect(m.payload).toBe(`hello ${qos}`);
        expect(m.packet.qos).toBe(qos);
      });
    }
  }
});
