import type { QueueStats } from '../api.js';
import type { BrokerStatsSnapshot, GroupInfo } from '../stats-types.js';

/** At most this many groups in `$SYS/broker/heron/shared/groups` (its payload stays bounded). */
export const MAX_GROUPS_LISTED = 100;

/** A topic level from a free-form name (a drop reason): no wildcards, no separators. */
function level(s: string): string {
  return s.replace(/[+#/\0]/g, '_');
}

/**
 * Every `$SYS` topic and its payload from one snapshot: Mosquitto's names under `$SYS/broker/`,
 * Heron's own under `$SYS/broker/heron/`. The load averages are added by the caller.
 */
export function sysTopics(
  s: BrokerStatsSnapshot,
  groups: GroupInfo[],
  heapUsed: number,
  queues: readonly QueueStats[] = [],
): [string, string][] {
  const b = '$SYS/broker/';
  const h = '$SYS/broker/heron/';
  const storeCount = String(s.messages.stored.count);
  const out: [string, string][] = [
    [`${b}version`, `heron version ${s.version}`],
    [`${b}uptime`, `${Math.floor(s.uptime)} seconds`],
    [`${b}clients/connected`, String(s.clients.connected)],
    [`${b}clients/disconnected`, String(s.clients.disconnected)],
    [`${b}clients/total`, String(s.clients.total)],
    [`${b}clients/maximum`, String(s.clients.maximum)],
    [`${b}messages/received`, String(s.messages.received)],
    [`${b}messages/sent`, String(s.messages.sent)],
    [`${b}messages/stored`, storeCount],
    [`${b}publish/messages/dropped`, String(s.publish.dropped)],
    [`${b}publish/messages/received`, String(s.publish.received)],
    [`${b}publish/messages/sent`, String(s.publish.sent)],
    [`${b}bytes/received`, String(s.bytes.received)],
    [`${b}bytes/sent`, String(s.bytes.sent)],
    [`${b}subscriptions/count`, String(s.subscriptions.count)],
    [`${b}retained messages/count`, String(s.retained.count)],
    [`${b}store/messages/count`, storeCount],
    [`${b}store/messages/bytes`, String(s.messages.stored.bytes)],
    [`${b}heap/current`, String(heapUsed)],
    [`${h}queues/queued`, String(s.queues.queued)],
    [`${h}queues/inflight`, String(s.queues.inflight)],
    [`${h}queues/bytes`, String(s.queues.bytes)],
    [`${h}queues/overflows`, String(s.limits.queueOverflows)],
    [`${h}publish/rejected`, String(s.limits.publishesRejected)],
    [`${h}shared/count`, String(s.shared.groups)],
    [`${h}shared/depth`, String(s.shared.depth)],
    [`${h}shared/inflight`, String(s.shared.inflight)],
    [`${h}shared/retrying`, String(s.shared.retrying)],
    [`${h}shared/retries`, String(s.retries)],
    [`${h}shared/dead letters`, String(s.deadLetters)],
    [`${h}shared/groups`, JSON.stringify(groups.slice(0, MAX_GROUPS_LISTED))],
    [`${h}clients/auth failures`, String(s.clients.authFailuresTotal)],
  ];
  // Declared job queues, each under its name (a queue name is one topic level already).
  for (const q of queues.slice(0, MAX_GROUPS_LISTED)) {
    const j = `${h}job queues/${level(q.name)}/`;
    out.push(
      [`${j}waiting`, String(q.waiting)],
      [`${j}delayed`, String(q.delayed)],
      [`${j}inflight`, String(q.pulled)],
      [`${j}bytes`, String(q.bytes)],
      [`${j}members`, String(q.members)],
      [`${j}oldest age`, q.oldestAgeMs === null ? '0' : String(Math.round(q.oldestAgeMs / 1000))],
      [`${j}dead letters`, String(q.deadLettered)],
    );
  }
  for (const [reason, n] of Object.entries(s.messages.dropped))
    out.push([`${h}dropped/${level(reason)}`, String(n)]);
  return out;
}
