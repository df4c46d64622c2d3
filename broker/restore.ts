import type { WillRecord } from '../persistence/types.js';
import type { Broker } from './broker.js';
import { NEVER_EXPIRES } from './handlers/connect.js';
import { reauthorizeSubscriptions } from './reauthorize.js';
import { Session } from './session.js';

/**
 * Opens persistence and loads the broker's state once, at start: retained messages, sessions with
 * their subscriptions (their messages stay on disk until the client returns), wills, shared group
 * messages and idempotency keys. A record beyond the topic limits (written by an earlier version,
 * or under higher limits) is skipped, logged and deleted: it never reaches a topic tree.
 */
export async function restoreState(broker: Broker): Promise<void> {
  const p = broker.persistence;
  await p.open();
  const limits = broker.limits;
  let overRetained = 0;
  for await (const msg of p.listRetained()) {
    if (!limits.restorable('retained', msg.topic, limits.topic(msg.topic))) p.setRetained(msg.topic, null);
    else if (!broker.retained.load(msg)) overRetained++;
  }
  if (overRetained > 0) {
    // Kept on disk: raising the bounds serves them again after a restart.
    broker.log.warn(
      { loaded: broker.retained.size, notLoaded: overRetained },
      'retained messages beyond --max-retained / --max-retained-bytes not loaded',
    );
  }
  const now = Date.now();
  const ended: string[] = [];
  const cap = broker.options.maxSessionExpiry;
  for await (const rec of p.listSessions()) {
    // A bound lowered since the session was stored applies to it too.
    if (cap > 0 && rec.expiryInterval > cap) rec.expiryInterval = cap;
    const left =
      rec.expiryInterval === NEVER_EXPIRES
        ? 1
        : rec.expiryInterval * 1000 - (now - (rec.disconnectedAt ?? now));
    if (left <= 0) {
      ended.push(rec.clientId);
      continue;
    }
    const session = new Session(broker, rec.clientId, rec.protocolVersion, rec.expiryInterval);
    session.loaded = false;
    // Who it was, for the hooks asked about it before it connects (delivery, re-authorization).
    if (rec.username !== undefined)
      session.lastClient = Object.freeze({
        clientId: rec.clientId,
        username: rec.username,
        protocolVersion: rec.protocolVersion,
        transport: 'none',
      });
    // Its byte bound counts what an earlier run stored for it.
    session.storedBytes = p.outgoingBytes(rec.clientId);
    broker.sessions.set(rec.clientId, session);
    broker.armExpiry(session, left);
  }
  for await (const { clientId, sub } of p.listSubscriptions()) {
    const session = broker.sessions.get(clientId);
    if (!session) continue;
    if (!limits.restorable('subscription', sub.filter, limits.filter(sub.filter), clientId)) {
      p.deleteSubscription(clientId, sub.filter);
      continue;
    }
    session.addSubscription(sub);
    broker.router.add(session, sub);
  }
  const connected: WillRecord[] = [];
  for await (const w of p.listWills()) {
    const topic = w.message.topic;
    if (!limits.restorable('will', topic, limits.topic(topic), w.clientId)) p.deleteWill(w.clientId);
    else if (w.fireAt === undefined) connected.push(w);
    else broker.wills.restore(w);
  }
  await broker.shares.restore();
  await broker.dedup.restore();
  // The rules may have changed while the broker was down: what is no longer granted goes.
  await reauthorizeSubscriptions(broker, 'restore');
  // Sessions that ended while the broker was down: a will still waiting is published now, late
  // (5.0 §3.1.2.5 lets a server defer wills to its restart), then their state is deleted.
  for (const clientId of ended) {
    broker.wills.fire(clientId);
    p.deleteSession(clientId);
  }
  // Clients connected when the broker stopped without seeing their connections end (a crash):
  // those connections ended without DISCONNECT, so their wills are published, now or after their
  // delay if the session lives on [MQTT-3.1.2-8].
  for (const w of connected)
    broker.wills.restoreConnected(w, broker.sessions.get(w.clientId)?.expiryInterval ?? 0);
  if (broker.sessions.size > 0 || broker.retained.size > 0) {
    broker.log.info({ sessions: broker.sessions.size, retained: broker.retained.size }, 'state restored');
  }
}
