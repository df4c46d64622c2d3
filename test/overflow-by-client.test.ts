/**
 * BrokerOptions.queueOverflowByClient (#9, #12): each session takes the overflow policy of the
 * first rule matching its client id, resolved once when the session is made.
 */
import type { IPubackPacket, IPublishPacket } from 'mqtt-packet';
import { describe, expect, it } from 'vitest';
import { RawClient, startBroker } from './helpers.js';

/** One message in flight, one queued: the third QoS 1 message to a silent subscriber overflows. */
const tight = { maxInflight: 1, maxQueued: 1 };

async function silentSubscriber(port: number, clientId: string, topic: string): Promise<RawClient> {
  const c = await RawClient.connected(port, 5, { clientId });
  c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos: 1 }] });
  await c.nextOf('suback');
  return c;
}

async function publishAll(pub: RawClient, topic: string, count: number, firstId: number): Promise<number[]> {
  const codes: number[] = [];
  for (let i = 0; i < count; i++) {
    pub.send({
      cmd: 'publish',
      topic,
      payload: Buffer.from(`m${i}`),
      qos: 1,
      messageId: firstId + i,
      dup: false,
      retain: false,
    });
    const ack = (await pub.nextOf('puback')) as IPubackPacket;
    codes.push(ack.reasonCode ?? 0);
  }
  return codes;
}

describe('queueOverflowByClient', () => {
  it('a `reject` rule answers a 5.0 publisher 0x97 for its sessions only [MQTT-3.4.2.1]', async () => {
    const { port, broker } = await startBroker({
      ...tight,
      queueOverflow: 'drop-new',
      queueOverflowByClient: [
        { match: 'strict.*', policy: 'reject' },
        { match: '*', policy: 'drop-new' },
      ],
    });
    await silentSubscriber(port, 'strict.1', 's/t');
    await silentSubscriber(port, 'strictX1', 'x/t'); // the dot is literal: not a `reject` session
    const pub = await RawClient.connected(port, 5, { clientId: 'pub' });
    // Two fit (one in flight, one queued); the third is refused with 0x97 Quota exceeded.
    expect(await publishAll(pub, 's/t', 3, 1)).toEqual([0, 0, 0x97]);
    expect(broker.stats.publishesRejected).toBe(1);
    // The other session drops the new one instead: the publisher is not told.
    expect(await publishAll(pub, 'x/t', 3, 10)).toEqual([0, 0, 0]);
    expect(broker.stats.messagesDropped).toBe(1);
    expect(broker.sessions.get('strict.1')?.overflowPolicy).toBe('reject');
    expect(broker.sessions.get('strictX1')?.overflowPolicy).toBe('drop-new');
  });

  it('no match: the broker-wide queueOverflow; a bad policy fails createBroker', async () => {
    const { port, broker } = await startBroker({
      ...tight,
      queueOverflow: 'drop-oldest',
      queueOverflowByClient: [{ match: 'sensor-*', policy: 'drop-new' }],
    });
    const sub = await silentSubscriber(port, 'app', 'a/t');
    const pub = await RawClient.connected(port, 5, { clientId: 'pub' });
    expect(await publishAll(pub, 'a/t', 3, 1)).toEqual([0, 0, 0]);
    // drop-oldest: m1 was dropped from the queue for m2.
    const got: string[] = [];
    for (let i = 0; i < 2; i++) {
      const p = (await sub.nextOf('publish')) as IPublishPacket;
      got.push(p.payload.toString());
      sub.send({ cmd: 'puback', messageId: p.messageId });
    }
    expect(got).toEqual(['m0', 'm2']);
    expect(broker.sessions.get('app')?.overflowPolicy).toBe('drop-oldest');
    await expect(
      startBroker({ queueOverflowByClient: [{ match: 'a', policy: 'lose' as 'reject' }] }),
    ).rejects.toThrow('queueOverflowByClient[0].policy must be one of');
  });
});
