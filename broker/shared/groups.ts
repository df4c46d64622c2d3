import type { UserProperties } from 'mqtt-packet';
import type { GroupMessageRecord, OutgoingRecord } from '../../persistence/types.js';
import type { Broker } from '../broker.js';
import { createMessage, type Message, outgoingRecord } from '../message.js';
import type { Session } from '../session.js';
import { ShareGroup } from './group.js';
import { priorityOf, type Waiting } from './queue.js';
import { backoff, type Clock, systemClock } from './retry.js';

/** Dead-lettered messages go to `$DLQ/<share name>/<original topic>`. */
export const DLQ_PREFIX = '$DLQ/';
/** User properties a dead-lettered message carries, besides the original ones. */
export const DLQ_PROPERTIES = {
  topic: 'original-topic',
  attempts: 'attempts',
  reasonCode: 'reason-code',
} as const;

/**
 * Every shared subscription group, by id (`<share name>/<filter>`), and what crosses groups and
 * sessions: storage of held messages, a member going offline or ending, failed deliveries (retry
 * with backoff, then dead-letter), restore at start.
 *
 * A group lives while it has members. When its last member leaves, the group leaves the topic tree
 * (so new messages no longer match it) but keeps what it already held, waiting for the next session
 * that subscribes to the same shared filter. (MQTT 5.0 section 4.8.2 lets a shared subscription end
 * with its last session and discard its messages; a job queue keeps accepted jobs instead.)
 */
export class SharedGroups {
  private readonly groups = new Map<string, ShareGroup>();
  /** Who created each group created by a SUBSCRIBE, and how many of those each client has. */
  private readonly creators = new Map<ShareGroup, string>();
  private readonly created = new Map<string, number>();

  constructor(
    readonly broker: Broker,
    readonly clock: Clock = systemClock,
  ) {}

  /** The group of `$share/<name>/<filter>`, created if needed. */
  group(name: string, filter: string): ShareGroup {
    const id = `${name}/${filter}`;
    let g = this.groups.get(id);
    if (!g) {
      const o = this.broker.options;
      g = new ShareGroup(name, filter, o.shareGroups[name]?.strategy ?? o.shareStrategy, this);
      this.groups.set(id, g);
    }
    return g;
  }

  find(name: string, filter: string): ShareGroup | undefined {
    return this.groups.get(`${name}/${filter}`);
  }

  /** A group by id; a share name holds no `/`, so the id splits at its first one. */
  private byId(id: string): ShareGroup {
    const g = this.groups.get(id);
    if (g) return g;
    const slash = id.indexOf('/');
    return this.group(id.slice(0, slash), id.slice(slash + 1));
  }

  /** Whether this client may create another group (--max-shared-groups, --max-shared-groups-per-client). */
  mayCreate(clientId: string): boolean {
    const o = this.broker.options;
    if (o.maxSharedGroups > 0 && this.groups.size >= o.maxSharedGroups) return false;
    return o.maxSharedGroupsPerClient === 0 || (this.created.get(clientId) ?? 0) < o.maxSharedGroupsPerClient;
  }

  /** Counts a group just created by this client's SUBSCRIBE against it, until the group goes. */
  createdBy(name: string, filter: string, clientId: string): void {
    const g = this.find(name, filter);
    if (g === undefined || this.creators.has(g)) return;
    this.creators.set(g, clientId);
    this.created.set(clientId, (this.created.get(clientId) ?? 0) + 1);
  }

  /** Forgets a group without members once it holds nothing. */
  release(g: ShareGroup): void {
    if (g.members.length === 0 && g.held === 0 && this.groups.get(g.id) === g) {
      g.stop();
      this.groups.delete(g.id);
      const creator = this.creators.get(g);
      if (creator !== undefined) {
        this.creators.delete(g);
        const n = (this.created.get(creator) ?? 1) - 1;
        if (n > 0) this.created.set(creator, n);
        else this.created.delete(creator);
      }
    }
  }

  get size(): number {
    return this.groups.size;
  }

  /** Every group (introspection and tests). */
  all(): IterableIterator<ShareGroup> {
    return this.groups.values();
  }

  /** Writes a held message's record. */
  store(groupId: string, e: Waiting): void {
    const rec: GroupMessageRecord = {
      seq: e.seq,
      message: e.message,
      priority: e.priority,
      attempts: e.attempts,
    };
    if (e.dueAt !== undefined) rec.dueAt = e.dueAt;
    if (e.lastReason !== undefined) rec.lastReason = e.lastReason;
    if (e.lastMember !== undefined) rec.lastMember = e.lastMember;
    if (e.dup) rec.dup = true;
    this.broker.persistence.putGroupMessage(groupId, rec);
  }

  /**
   * A QoS 2 group message goes in flight to a member: its record now names the member and the
   * packet id, so that a restart completes the delivery with that member only [MQTT-4.8.2-4]
   * instead of handing the message to the group again (as a new packet, perhaps to another member,
   * while the first may have it already).
   */
  inFlight(session: Session, rec: OutgoingRecord): void {
    const stored: GroupMessageRecord = {
      seq: rec.seq,
      message: rec.message,
      priority: priorityOf(rec.message),
      attempts: rec.attempts ?? 0,
      dup: true,
      member: session.clientId,
      packetId: rec.packetId,
    };
    this.broker.persistence.putGroupMessage(rec.group!, stored);
  }

  /** A member completed (or a discard ended) a group message: the group's copy goes. */
  settle(rec: OutgoingRecord): void {
    this.broker.persistence.deleteGroupMessage(rec.group!, rec.seq);
  }

  /**
   * A 5.0 member answered PUBACK or PUBREC with a reason code >= 0x80. MQTT 5.0 [MQTT-4.8.2-6]
   * would have the message discarded; Heron retries it after a backoff, on another member when
   * there is one, and after retryMaxAttempts attempts publishes it to `$DLQ/<group>/<topic>`.
   * retryMaxAttempts 0 restores the discard.
   */
  failed(session: Session, rec: OutgoingRecord, reasonCode: number): void {
    const o = this.broker.options;
    const g = this.byId(rec.group!);
    const attempts = (rec.attempts ?? 0) + 1;
    const hex = `0x${reasonCode.toString(16).padStart(2, '0')}`;
    if (o.retryMaxAttempts === 0) {
      this.settle(rec);
      this.broker.dropped(session, rec.message, `shared delivery failed with ${hex}`);
      return;
    }
    if (attempts >= o.retryMaxAttempts) {
      this.settle(rec);
      this.deadLetter(g, rec.message, attempts, reasonCode);
      return;
    }
    const e: Waiting = {
      seq: rec.seq,
      message: rec.message,
      priority: priorityOf(rec.message),
      attempts,
      dup: true,
      dueAt: this.clock.now() + backoff(attempts, o.retryBase, o.retryFactor),
      lastReason: reasonCode,
      lastMember: session.clientId,
    };
    this.store(g.id, e);
    g.delay(e);
    this.broker.counters.retries++;
    this.broker.log.debug(
      { group: g.id, topic: rec.message.topic, attempts, reasonCode: hex, dueAt: e.dueAt },
      'shared delivery failed; retrying',
    );
    this.release(g);
  }

  /** Publishes a message whose attempts are used up to `$DLQ/<share name>/<original topic>`. */
  private deadLetter(g: ShareGroup, msg: Message, attempts: number, reasonCode: number): void {
    const props = msg.properties;
    const user: UserProperties = { ...props?.userProperties };
    user[DLQ_PROPERTIES.topic] = msg.topic;
    user[DLQ_PROPERTIES.attempts] = String(attempts);
    user[DLQ_PROPERTIES.reasonCode] = `0x${reasonCode.toString(16).padStart(2, '0')}`;
    const topic = `${DLQ_PREFIX}${g.name}/${msg.topic}`;
    this.broker.log.info({ group: g.id, topic: msg.topic, attempts, deadLetter: topic }, 'dead-lettered');
    g.deadLetters++;
    this.broker.counters.deadLetters++;
    this.broker.publishMessage(
      createMessage(topic, msg.payload, msg.qos, false, { ...props, userProperties: user }),
      null,
    );
  }

  /**
   * A member's connection ended while its session lives on: its QoS 1 group messages (in flight or
   * queued) and queued QoS 2 ones go back to the group for another member, with DUP if they had
   * been sent (5.0 section 4.8.2 allows this for QoS 1 as soon as the connection is lost). QoS 2
   * messages already sent stay: their delivery is completed with this member when it reconnects
   * [MQTT-4.8.2-4].
   */
  memberOffline(session: Session): void {
    this.takeBack(session.takeGroupRecords(false), session);
  }

  /**
   * A member's session ended: what it held goes back to its groups, except QoS 2 messages already
   * sent to it, which no other member may get [MQTT-4.8.2-5]: they are discarded.
   */
  sessionEnded(session: Session): void {
    this.takeBack(session.takeGroupRecords(true), session);
  }

  private takeBack(recs: OutgoingRecord[], session: Session): void {
    if (recs.length === 0) return;
    const touched = new Set<ShareGroup>();
    for (const rec of recs) {
      if (rec.qos === 2 && rec.state !== 'queued') {
        this.settle(rec);
        this.broker.dropped(session, rec.message, 'session ended during a shared QoS 2 delivery');
        continue;
      }
      const g = this.byId(rec.group!);
      g.requeue(rec);
      touched.add(g);
    }
    for (const g of touched) g.pump();
  }

  /** A member's window has room again: its groups may hand it waiting messages. */
  roomFor(session: Session): void {
    const groups = session.shareGroups;
    if (groups === undefined) return;
    for (let i = 0; i < groups.length; i++) if (groups[i].waiting.size > 0) groups[i].pump();
  }

  /**
   * Loads held messages (waiting, in backoff, in flight at the last stop) into their groups, but
   * a QoS 2 message in flight to a member, which goes back in flight in that member's session.
   * Every one carries DUP from here on: sends are not written (but at QoS 2), so any of them may
   * have been in flight when the broker stopped.
   */
  async restore(): Promise<void> {
    const now = this.clock.now();
    let n = 0;
    const { limits, persistence } = this.broker;
    for await (const { group, rec } of persistence.listGroupMessages()) {
      // The id is `<share name>/<filter>`: its filter and the message's topic within the limits.
      const filter = group.slice(group.indexOf('/') + 1);
      const topic = rec.message.topic;
      const filterOk = limits.topic(filter);
      if (!limits.restorable('group message', filterOk ? topic : group, filterOk && limits.topic(topic))) {
        persistence.deleteGroupMessage(group, rec.seq);
        continue;
      }
      n++;
      if (rec.member !== undefined && rec.packetId !== undefined && this.resumeInFlight(group, rec)) continue;
      const e: Waiting = {
        seq: rec.seq,
        message: rec.message,
        priority: rec.priority,
        attempts: rec.attempts,
        dup: true,
      };
      if (rec.dueAt !== undefined) e.dueAt = rec.dueAt;
      if (rec.lastReason !== undefined) e.lastReason = rec.lastReason;
      if (rec.lastMember !== undefined) e.lastMember = rec.lastMember;
      this.byId(group).restore(e, now);
    }
    if (n > 0)
      this.broker.log.info({ messages: n, groups: this.groups.size }, 'shared group messages restored');
  }

  /**
   * A QoS 2 message that was in flight to `rec.member` at the last stop: back in flight in that
   * member's session, with its packet id, re-sent with DUP when the member resumes it. If that
   * session did not survive the downtime, no other member may get it [MQTT-4.8.2-5]: discarded
   * (reported as dropped), as when a member's session ends while the broker runs. False if the
   * session cannot take it back (its packet id is in use): it then waits in the group.
   */
  private resumeInFlight(group: string, rec: GroupMessageRecord): boolean {
    const session = this.broker.sessions.get(rec.member!);
    if (session === undefined) {
      this.broker.persistence.deleteGroupMessage(group, rec.seq);
      this.broker.dropped(null, rec.message, 'session ended during a shared QoS 2 delivery');
      return true;
    }
    const member = this.groups.get(group)?.members.find((m) => m.session === session);
    const subId = member?.subscriptionId;
    return session.adoptGroupRecord(
      outgoingRecord({
        seq: rec.seq,
        state: 'inflight',
        packetId: rec.packetId,
        qos: 2,
        retain: false,
        message: rec.message,
        group,
        subscriptionIds: subId === undefined ? undefined : [subId],
        attempts: rec.attempts > 0 ? rec.attempts : undefined,
        dup: true,
      }),
    );
  }

  stop(): void {
    for (const g of this.groups.values()) g.stop();
  }
}
