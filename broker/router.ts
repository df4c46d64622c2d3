import type { QoS, SubscriptionRecord } from '../persistence/types.js';
import type { ClientInfo } from '../plugins/types.js';
import type { EncodeCache } from './encode.js';
import type { Message } from './message.js';
import type { Session } from './session.js';
import type { ShareGroup } from './shared/group.js';
import type { SharedGroups } from './shared/groups.js';
import { TopicTree } from './topic-tree.js';

/** One session's subscription as stored in the topic tree. */
export interface Subscription {
  readonly kind: 'direct';
  readonly session: Session;
  readonly qos: QoS;
  readonly noLocal: boolean;
  readonly retainAsPublished: boolean;
  readonly subscriptionId: number | undefined;
  readonly filter: string;
  /**
   * The authorizeDeliver chain allows every topic this filter matches (coversDeliveries), as
   * answered for `coveredFor` (the session's connection then) in plugin generation `coveredGen`.
   */
  covered: boolean;
  coveredFor: ClientInfo | undefined;
  coveredGen: number;
}

type Entry = Subscription | ShareGroup;

/** Parses `$share/<group>/<filter>`; `$queue/<filter>` is the group `$queue`. */
export function parseShared(filter: string): { group: string; filter: string } | null {
  if (filter.startsWith('$share/')) {
    const slash = filter.indexOf('/', 7);
    if (slash < 0) return { group: filter.slice(7), filter: '' };
    return { group: filter.slice(7, slash), filter: filter.slice(slash + 1) };
  }
  if (filter.startsWith('$queue/')) return { group: '$queue', filter: filter.slice(7) };
  return null;
}

/**
 * Matches a published topic once against every subscription and hands each target session one
 * copy: the highest granted QoS and every matching subscription identifier [MQTT-3.3.4-2]
 * [MQTT-3.3.4-4]. A shared group hands the message to one member.
 */
export class Router {
  private readonly tree = new TopicTree<Entry>();
  private stamp = 0;

  constructor(readonly shares: SharedGroups) {}

  get size(): number {
    return this.tree.size;
  }

  add(session: Session, sub: SubscriptionRecord): void {
    const shared = parseShared(sub.filter);
    if (shared) {
      // A group is in the tree while it has members (one restored with messages may have none yet).
      const group = this.shares.group(shared.group, shared.filter);
      if (group.members.length === 0) this.tree.add(shared.filter, group);
      group.join(session, sub.qos, sub.subscriptionId);
      return;
    }
    this.removeDirect(session, sub.filter);
    this.tree.add(sub.filter, {
      kind: 'direct',
      session,
      qos: sub.qos,
      noLocal: sub.noLocal === true,
      retainAsPublished: sub.retainAsPublished === true,
      subscriptionId: sub.subscriptionId,
      filter: sub.filter,
      covered: false,
      coveredFor: undefined,
      coveredGen: -1,
    });
  }

  /**
   * Whether deliveries through this subscription need no authorizeDeliver check: asked once per
   * subscription, connection and reload, then two comparisons per match.
   */
  private covered(e: Subscription, s: Session): boolean {
    const plugins = this.shares.broker.plugins;
    const client = s.lastClient ?? s.offlineInfo();
    if (e.coveredFor === client && e.coveredGen === plugins.generation) return e.covered;
    e.covered = plugins.deliveriesCovered(client, e.filter);
    e.coveredFor = client;
    e.coveredGen = plugins.generation;
    return e.covered;
  }

  remove(session: Session, filter: string): void {
    const shared = parseShared(filter);
    if (!shared) {
      this.removeDirect(session, filter);
      return;
    }
    const group = this.shares.find(shared.group, shared.filter);
    if (!group?.leave(session)) return;
    if (group.members.length === 0) {
      this.tree.remove(shared.filter, group);
      this.shares.release(group);
    }
  }

  private removeDirect(session: Session, filter: string): void {
    for (const e of this.tree.get(filter)) {
      if (e.kind === 'direct' && e.session === session) {
        this.tree.remove(filter, e);
        return;
      }
    }
  }

  /**
   * Routes a message to every matching subscription; returns how many sessions it reached. With
   * `rejectFull`, a QoS 1/2 message that some matching queue cannot take goes to none of them and
   * -1 is returned (the `reject` overflow policy).
   */
  route(msg: Message, from: Session | null, rejectFull = false): number {
    const stamp = ++this.stamp;
    this.shares.broker.flow.overflowed.length = 0;
    const targets: Session[] = [];
    let groups: ShareGroup[] | undefined;
    const checked = this.shares.broker.plugins.authorizeDeliver.length > 0;
    this.tree.match(msg.topic, (e) => {
      if (e.kind === 'shared') {
        if (groups) groups.push(e);
        else groups = [e];
        return;
      }
      const s = e.session;
      // No Local: not back to the publishing session [MQTT-3.8.3-3].
      if (e.noLocal && s === from) return;
      // One subscription whose filter the ACL grants whole is enough to skip the per-delivery check.
      const covered = checked && this.covered(e, s);
      if (s.stamp !== stamp) {
        s.stamp = stamp;
        s.matchCovered = covered;
        s.matchQos = e.qos;
        s.matchRetain = e.retainAsPublished;
        s.matchSubIds = e.subscriptionId === undefined ? undefined : [e.subscriptionId];
        targets.push(s);
      } else {
        if (covered) s.matchCovered = true;
        if (e.qos > s.matchQos) s.matchQos = e.qos;
        if (e.retainAsPublished) s.matchRetain = true;
        if (e.subscriptionId !== undefined) {
          if (s.matchSubIds) s.matchSubIds.push(e.subscriptionId);
          else s.matchSubIds = [e.subscriptionId];
        }
      }
    });
    const cache: EncodeCache = [];
    const qos = msg.qos;
    if (rejectFull && qos > 0 && this.anyFull(targets, groups)) return -1;
    // Forwarded messages carry RETAIN 0 unless Retain As Published [MQTT-3.3.1-9] [MQTT-3.3.1-12].
    for (const s of targets) {
      s.deliver(
        msg,
        Math.min(s.matchQos, qos) as QoS,
        s.matchRetain && msg.retain,
        s.matchSubIds,
        cache,
        s.matchCovered,
      );
    }
    if (groups) for (const g of groups) this.deliverShared(g, msg, cache);
    return targets.length + (groups?.length ?? 0);
  }

  private anyFull(targets: Session[], groups: ShareGroup[] | undefined): boolean {
    for (const s of targets) if (s.overflowPolicy === 'reject' && s.matchQos > 0 && !s.canTake()) return true;
    // A group's policy is the broker-wide one (it has no client id).
    if (groups && this.shares.broker.options.queueOverflow === 'reject')
      for (const g of groups) if (g.full()) return true;
    return false;
  }

  /** One member of the group gets it, chosen by the group's strategy (broker/shared/). */
  private deliverShared(g: ShareGroup, msg: Message, cache: EncodeCache): void {
    g.deliver(msg, cache);
  }
}
