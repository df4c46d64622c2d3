import type { WillRecord } from '../persistence/types.js';
import type { Broker } from './broker.js';
import type { PendingWill } from './connection.js';
import { isExpired, type Message } from './message.js';
import { type LongTimer, longTimeout } from './timers.js';

/**
 * Wills waiting for their Will Delay Interval: published when the delay or the session ends,
 * whichever is first, and cancelled when the client returns [MQTT-3.1.3-9].
 */
export class WillScheduler {
  private readonly pending = new Map<string, { rec: WillRecord; timer: LongTimer }>();

  constructor(private readonly broker: Broker) {}

  get size(): number {
    return this.pending.size;
  }

  /** The connection ended without a normal DISCONNECT. */
  connectionLost(clientId: string, will: PendingWill, sessionExpiry: number): void {
    const wait = Math.min(will.delay, sessionExpiry);
    const fireAt = Date.now() + Math.max(0, wait) * 1000;
    // Its Message Expiry Interval counts from publication, not from CONNECT.
    const message: Message = { ...will.message };
    if (will.expiryInterval !== undefined) message.expiresAt = fireAt + will.expiryInterval * 1000;
    if (wait <= 0) return this.publish(message);
    const rec: WillRecord = { clientId, message, fireAt };
    this.broker.persistence.putWill(rec);
    this.arm(rec);
  }

  /** A will restored from persistence at start. */
  restore(rec: WillRecord): void {
    this.arm(rec);
  }

  private arm(rec: WillRecord): void {
    this.pending.get(rec.clientId)?.timer.cancel();
    const timer = longTimeout(() => this.fire(rec.clientId), rec.fireAt - Date.now());
    this.pending.set(rec.clientId, { rec, timer });
  }

  /** The client reconnected: its delayed will is not published. */
  cancel(clientId: string): void {
    const p = this.pending.get(clientId);
    if (!p) return;
    p.timer.cancel();
    this.pending.delete(clientId);
    this.broker.persistence.deleteWill(clientId);
  }

  /** Publishes the pending will now (its delay passed or its session ended). */
  fire(clientId: string): void {
    const p = this.pending.get(clientId);
    if (!p) return;
    p.timer.cancel();
    this.pending.delete(clientId);
    this.broker.persistence.deleteWill(clientId);
    this.publish(p.rec.message);
  }

  private publish(msg: Message): void {
    if (isExpired(msg, Date.now())) return;
    this.broker.publishMessage(msg, null);
  }

  stop(): void {
    for (const p of this.pending.values()) p.timer.cancel();
    this.pending.clear();
  }
}
