import type { SubscriptionRecord } from '../persistence/types.js';
import type { Broker } from './broker.js';
import { ALLOW, type Outcome } from './hooks.js';
import type { Session } from './session.js';

/** Asynchronous answers awaited at once (an HTTP service, say), so a restart cannot flood it. */
const MAX_PENDING = 64;

/**
 * Asks the authorizeSubscribe chain again about every subscription every session holds,
 * connected or offline: at start for what was restored from disk, and after broker.reload().
 * A subscription no longer granted (denied, or its hook failed) is removed from the router, the
 * session and persistence, and logged with its client id and filter: it stops receiving at once.
 * Returns how many were removed. Synchronous hooks are answered in one pass, without promises.
 */
export async function reauthorizeSubscriptions(broker: Broker, when: 'restore' | 'reload'): Promise<number> {
  const plugins = broker.plugins;
  if (plugins.authorizeSubscribe.length === 0) return 0;
  let removed = 0;
  const judge = (session: Session, rec: SubscriptionRecord, outcome: Outcome) => {
    if (outcome === ALLOW) return;
    // Unsubscribed, replaced or ended while an answer was awaited: nothing of this one is left.
    if (broker.sessions.get(session.clientId) !== session) return;
    if (session.subscriptions.get(rec.filter) !== rec) return;
    session.removeSubscription(rec.filter);
    broker.router.remove(session, rec.filter);
    if (session.persistent) broker.persistence.deleteSubscription(session.clientId, rec.filter);
    removed++;
    broker.log.warn(
      { clientId: session.clientId, filter: rec.filter, when },
      'subscription no longer authorized; removed',
    );
  };
  let pending: Promise<void>[] = [];
  for (const session of [...broker.sessions.values()]) {
    if (session.subscriptions.size === 0) continue;
    const client = session.conn?.clientInfo ?? session.lastClient ?? session.offlineInfo();
    for (const rec of [...session.subscriptions.values()]) {
      const outcome = plugins.decide('authorizeSubscribe', client, rec.filter);
      if (typeof outcome === 'number') {
        judge(session, rec, outcome);
        continue;
      }
      pending.push(outcome.then((o) => judge(session, rec, o)));
      if (pending.length >= MAX_PENDING) {
        await Promise.all(pending);
        pending = [];
      }
    }
  }
  await Promise.all(pending);
  if (removed > 0) broker.log.info({ removed, when }, 'subscriptions re-authorized');
  return removed;
}
