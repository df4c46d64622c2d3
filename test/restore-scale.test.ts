/**
 * Startup over a large data dir: 20,000 retained messages and 2,000 offline persistent sessions,
 * each with a subscription and a few queued messages, written straight through LevelPersistence.
 * The broker must start with every retained message and every session's subscriptions indexed,
 * but without reading a single queued payload: those are read when their client returns
 * (bench/scenarios/startup.ts runs the full-size version: 100,000 retained, 10,000 sessions).
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { NEVER_EXPIRES } from '../broker/handlers/connect.js';
import { LevelPersistence } from '../persistence/level.js';
import type { StoredMessage } from '../persistence/types.js';
import { onCleanup, startBroker } from './helpers.js';
import { durable } from './persistence.conformance.js';
import { connectAck, Inbox } from './spec-helpers.js';

const RETAINED = 20_000;
const SESSIONS = 2_000;
const QUEUED = 3; // per session
const QUEUED_BYTES = 8192; // per queued payload: 2,000 × 3 × 8 KiB = 47 MiB that must stay on disk

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

/** Heap and Buffer memory after a full collection, bytes. */
function memory(): number {
  gc();
  gc();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

let ids = 0;
const msg = (topic: string, payload: Buffer, qos: 0 | 1 | 2, retain: boolean): StoredMessage => ({
  id: `scale-${ids++}`,
  topic,
  payload,
  qos,
  retain,
});

describe('startup over a large data dir', () => {
  it(`indexes ${RETAINED} retained messages and ${SESSIONS} sessions without loading any queued payload`, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'heron-scale-'));
    onCleanup(() => rm(dir, { recursive: true, force: true }));

    const writer = new LevelPersistence({ dir });
    await writer.open();
    const t0 = performance.now();
    const small = Buffer.alloc(64, 0x61);
    for (let i = 0; i < RETAINED; i++)
      writer.setRetained(`big/${i % 100}/${i}`, msg(`big/${i % 100}/${i}`, small, 1, true));
    await durable(writer);
    const disconnectedAt = Date.now();
    for (let s = 0; s < SESSIONS; s++) {
      const clientId = `scale-${s}`;
      const v5 = s % 2 === 1;
      writer.putSession({
        clientId,
        protocolVersion: v5 ? 5 : 4,
        expiryInterval: v5 ? 3600 : NEVER_EXPIRES,
        disconnectedAt,
      });
      writer.putSubscription(clientId, { filter: `q/${s}/#`, qos: 1 });
      for (let k = 0; k < QUEUED; k++) {
        const message = msg(`q/${s}/${k}`, randomBytes(QUEUED_BYTES), 1, false);
        writer.putOutgoing(clientId, { seq: k + 1, state: 'queued', qos: 1, retain: false, message });
      }
      if (s % 250 === 249) await durable(writer); // batches of a few MiB
    }
    await writer.close();
    const writeMs = performance.now() - t0;

    const before = memory();
    const store = new LevelPersistence({ dir });
    let reads = 0;
    const getOutgoing = store.getOutgoing.bind(store);
    store.getOutgoing = (clientId) => {
      reads++;
      return getOutgoing(clientId);
    };
    const t1 = performance.now();
    const { broker, url } = await startBroker({ persistence: store });
    const startMs = performance.now() - t1;
    const grown = memory() - before;

    expect(broker.stats).toMatchObject({ retained: RETAINED, sessions: SESSIONS, subscriptions: SESSIONS });
    expect([...broker.sessions.values()].every((s) => s.loaded === false)).toBe(true);
    expect(reads).toBe(0);
    // The references are counted at open (small records), the bodies are not read.
    expect(store.bodyStats()).toEqual({ bodies: SESSIONS * QUEUED, references: SESSIONS * QUEUED });
    // All the broker holds (retained messages, sessions, the topic tree) is less than half the
    // queued payloads it did not read.
    expect(grown).toBeLessThan((SESSIONS * QUEUED * QUEUED_BYTES) / 2);

    // A returning client gets its queue, read from the disk then.
    const c = await connectAck(url, { protocolVersion: 4, clientId: 'scale-42', clean: false });
    expect(c.connack.sessionPresent).toBe(true);
    const got = await c.inbox.take(QUEUED);
    expect(Inbox.brief(got).map((m) => m.split(':')[0])).toEqual(['q/42/0', 'q/42/1', 'q/42/2']);
    expect(got.every((m) => m.payload.length > 0)).toBe(true);
    expect(reads).toBe(1);
    expect(broker.sessions.get('scale-42')?.loaded).toBe(true);
    expect(broker.sessions.get('scale-43')?.loaded).toBe(false);

    console.log(
      `restore scale: wrote ${RETAINED} retained + ${SESSIONS} sessions × ${QUEUED} × ${QUEUED_BYTES} B in ${writeMs.toFixed(0)} ms; ` +
        `broker started in ${startMs.toFixed(0)} ms, heap+buffers grew ${(grown / 2 ** 20).toFixed(1)} MiB ` +
        `(queued payloads on disk: ${((SESSIONS * QUEUED * QUEUED_BYTES) / 2 ** 20).toFixed(0)} MiB)`,
    );
  });
});
