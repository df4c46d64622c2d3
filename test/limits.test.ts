import { describe, expect, it } from 'vitest';
import { connect, nextMessages, RawClient, startBroker } from './helpers.js';

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
});
