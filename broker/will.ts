import type { WillRecord } from '../persistence/types.js';
import type { Broker } from './broker.js';
import type { PendingWill } from './connection.js';
import { isExpired, type Message } from './message.js';
import { type LongTimer, longTimeout } from './timers.js';

/**
 * Wills: stored from CONNECT on, so that a crash does not lose them; published when the connection
 * ends without a normal DISCONNECT, or after the Will Delay Interval or when the session ends,
 * whichever is first, and cancelled when the client returns within the delay [MQTT-3.1.3-9].
 */
export class WillScheduler {
  private readonly pending = new Map<string, { rec: WillRecord; timer: LongTimer }>();

  constructor(private readonly broker: Broker) {}

  get size(): number {
    return this.pending.size;
  }

  /**
   * A client connected with a will (its session attached): stored as given, one put per CONNECT
   * with a will. Should the broker stop without seeing the connection end, the next start
   * publishes it (see restoreConnected).
   */
  connected(clientId: string, will: PendingWill): void {
    const rec: WillRecord = { clientId, message: will.message };
    if (will.delay > 0) rec.delay = will.delay;
    if (will.expiryInterval !== undefined) rec.expiryInterval = will.expiryInterval;
    this.broker.persistence.putWill(rec);
  }

  /** The connection ended without its will: normal DISCONNECT [MQTT-3.1.2-10], or broker shutdown. */
  discard(clientId: string): void {
    this.broker.persistence.deleteWill(clientId);
  }

  /** The connection ended without a normal DISCONNECT: its stored will is published or delayed. */
  connectionLost(clientId: string, will: PendingWill, sessionExpiry: number): void {
    const wait = Math.min(will.delay, sessionExpiry);
    const fireAt = Date.now() + Math.max(0, wait) * 1000;
    // Its Message Expiry Interval counts from publication, not from CONNECT.
    const message: Message = { ...will.message };
    if (will.expiryInterval !== undefined) message.expiresAt = fireAt + will.expiryInterval * 1000;
    if (wait <= 0) {
      this.broker.persistence.deleteWill(clientId);
      return this.publish(message);
    }
    const rec: WillRecord = { clientId, message, fireAt };
    this.broker.persistence.putWill(rec); // replaces the one stored at CONNECT
    this.arm(rec);
  }

  /** A delayed will restored from persistence at start. */
  restore(rec: WillRecord): void {
    this.arm(rec);
  }

  /**
   * At start, the will of a client that was connected when the broker stopped without seeing its
   * connection end (a crash): that connection ended without DISCONNECT, so the will is published
   * now, or after its delay when the client's session survived the restart.
   */
  restoreConnected(rec: WillRecord, sessionExpiry: number): void {
    const will: PendingWill = { message: rec.message, delay: rec.delay ?? 0 };
    if (rec.expiryInterval !== undefined) will.expiryInterval = rec.expiryInterval;
    this.connectionLost(rec.clientId, will, sessionExpiry);
  }

  private arm(rec: WillRecord): void {
    this.pending.get(rec.clientId)?.timer.cancel();
    const timer = longTimeout(
      () => this.fire(rec.clientId),
      (rec.fireAt ?? 0) - Date.now(),
      (err) => this.broker.log.error({ err, clientId: rec.clientId }, 'exception in a will timer'),
    );
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
