import type { GroupMessageRecord, OutgoingRecord, QoS } from '../../persistence/types.js';
import type { EncodeCache } from '../encode.js';
import { Gate, type GateOwner } from '../flow.js';
import { type Message, nextSeq, outgoingRecord } from '../message.js';
import type { Session } from '../session.js';
import type { SharedGroups } from './groups.js';
import { PriorityQueue, priorityOf, type Waiting } from './queue.js';
import { type Candidate, isPartitioning, partitionOf, pick, type ShareStrategy } from './strategies.js';

/** One session's membership of a group, seen by the strategies through its getters. */
export class SharedMember implements Candidate {
  constructor(
    readonly session: Session,
    public qos: QoS,
    public subscriptionId: number | undefined,
  ) {}

  get online(): boolean {
    return this.session.conn !== null && !this.session.resuming;
  }

  get ready(): boolean {
    return this.session.canSendNow();
  }

  get accepting(): boolean {
    const s = this.session;
    return s.conn !== null && !s.resuming && s.queued < s.broker.options.maxQueued;
  }

  get inflight(): number {
    return this.session.inflight.size;
  }
}

/**
 * The members of `$share/<name>/<filter>` (or `$queue/<filter>`, the group `$queue`): each matching
 * message goes to one of them, picked by the group's strategy. When no member can take a QoS 1/2
 * message it waits in the group queue (bounded by shareQueueMax, highest `priority` first) and
 * goes to the first member that has room; a message whose delivery failed waits in `delayed`
 * until its backoff has passed.
 *
 * A QoS 1/2 message is stored (persistence `putGroupMessage`) from the moment the group takes it
 * until a member acknowledges it, so a restart redelivers what was waiting, in backoff or in flight.
 */
export class ShareGroup implements GateOwner {
  readonly kind = 'shared' as const;
  /** `<name>/<filter>`: the key of its stored messages. */
  readonly id: string;
  readonly members: SharedMember[] = [];
  /** Round-robin cursor for the strategies. */
  next = 0;
  /** Messages of this group dead-lettered since start (stats). */
  deadLetters = 0;
  readonly waiting = new PriorityQueue();
  /** In backoff after a failed attempt, by due time. */
  readonly delayed: Waiting[] = [];
  private timer: unknown;
  private timerDue = Number.POSITIVE_INFINITY;
  private pumping = false;
  /** What publishers wait on while the group queue is full (backpressure). */
  private gate: Gate | undefined;

  constructor(
    readonly name: string,
    readonly filter: string,
    readonly strategy: ShareStrategy,
    private readonly host: SharedGroups,
  ) {
    this.id = `${name}/${filter}`;
  }

  /** Messages held (waiting or in backoff), against shareQueueMax. */
  get held(): number {
    return this.waiting.size + this.delayed.length;
  }

  /** Adds a session or updates its QoS and subscription identifier (a repeated SUBSCRIBE). */
  join(session: Session, qos: QoS, subscriptionId: number | undefined): void {
    const existing = this.members.find((m) => m.session === session);
    if (existing) {
      existing.qos = qos;
      existing.subscriptionId = subscriptionId;
      return;
    }
    this.members.push(new SharedMember(session, qos, subscriptionId));
    if (session.shareGroups === undefined) session.shareGroups = [this];
    else if (!session.shareGroups.includes(this)) session.shareGroups.push(this);
  }

  /** Removes a session; returns whether it was a member. */
  leave(session: Session): boolean {
    const i = this.members.findIndex((m) => m.session === session);
    if (i < 0) return false;
    this.members.splice(i, 1);
    if (this.next > i) this.next--;
    if (this.next >= this.members.length) this.next = 0;
    const groups = session.shareGroups;
    if (groups) {
      const k = groups.indexOf(this);
      if (k >= 0) groups.splice(k, 1);
      if (groups.length === 0) session.shareGroups = undefined;
    }
    return true;
  }

  /** A routed message: to a member now, or into the group queue. */
  deliver(msg: Message, cache: EncodeCache | undefined): void {
    if (this.waiting.size === 0) {
      const i = pick(this.strategy, this.members, msg, this);
      if (i >= 0) return this.handOut(this.members[i], msg, cache);
    }
    if (msg.qos === 0) return this.deliverQos0(msg, cache);
    const host = this.host;
    if (this.held >= host.broker.options.shareQueueMax && !this.overflow(msg)) return;
    const e: Waiting = { seq: nextSeq(), message: msg, priority: priorityOf(msg), attempts: 0, dup: false };
    host.store(this.id, e);
    this.waiting.push(e);
    if (this.waiting.size > 1) this.pump();
  }

  /** The group queue is at shareQueueMax and no member is ready (Router's `reject` check). */
  full(): boolean {
    return this.held >= this.host.broker.options.shareQueueMax && this.waiting.size > 0;
  }

  /**
   * The group queue is full: under `backpressure` (and `reject` for publishers that cannot be
   * told) the message is held beyond the bound and its publisher waits for room; under the drop
   * policies the new message is dropped, counted and logged (the oldest of a job queue stays).
   */
  private overflow(msg: Message): boolean {
    const broker = this.host.broker;
    broker.flow.overflows++;
    const policy = broker.options.queueOverflow;
    this.gate ??= new Gate(broker.flow, this);
    if (policy === 'drop-new' || policy === 'drop-oldest' || this.gate.stuck) {
      broker.dropped(null, msg, 'share queue full');
      return false;
    }
    broker.flow.overflowed.push(this.gate);
    return true;
  }

  /** Its publishers waited stuckTimeout without a member taking a message: no longer held back. */
  stuck(): void {
    this.host.broker.log.warn({ group: this.id, held: this.held }, 'shared group stuck: queue full');
  }

  /** A fresh message to a chosen member. */
  private handOut(m: SharedMember, msg: Message, cache: EncodeCache | undefined): void {
    const qos = Math.min(m.qos, msg.qos) as QoS;
    const ids = m.subscriptionId === undefined ? undefined : [m.subscriptionId];
    if (qos === 0) {
      m.session.place(msg, 0, false, ids, cache);
      return;
    }
    const seq = nextSeq();
    // Sent at once at QoS 2, it is stored by the send, with its member and packet id: one write.
    if (qos === 1 || !m.session.canSendNow()) {
      const stored: GroupMessageRecord = { seq, message: msg, priority: priorityOf(msg), attempts: 0 };
      this.host.broker.persistence.putGroupMessage(this.id, stored);
    }
    m.session.deliverGroup(this.job(seq, qos, msg, ids, 0, false), cache);
  }

  /** A member's copy of a group message: the record its session sends and tracks. */
  private job(
    seq: number,
    qos: QoS,
    msg: Message,
    ids: number[] | undefined,
    attempts: number,
    dup: boolean,
  ): OutgoingRecord {
    return outgoingRecord({
      seq,
      state: 'queued',
      qos,
      retain: false,
      message: msg,
      group: this.id,
      subscriptionIds: ids,
      attempts: attempts > 0 ? attempts : undefined,
      dup: dup ? true : undefined,
    });
  }

  /**
   * QoS 0 is never queued: with no member ready it goes to an online member anyway (QoS 0 does not
   * count against the inflight window), or nowhere.
   */
  private deliverQos0(msg: Message, cache: EncodeCache | undefined): void {
    const n = this.members.length;
    let i = -1;
    if (isPartitioning(this.strategy)) i = partitionOf(this.strategy, this.members, msg);
    else {
      for (let k = 0; k < n; k++) {
        const j = (this.next + k) % n;
        if (this.members[j].online) {
          this.next = (j + 1) % n;
          i = j;
          break;
        }
      }
    }
    if (i < 0) return;
    const m = this.members[i];
    m.session.place(msg, 0, false, m.subscriptionId === undefined ? undefined : [m.subscriptionId], cache);
  }

  /** Hands waiting messages, highest priority first, to members with room, until none has. */
  pump(): void {
    if (!this.pumping && this.waiting.size > 0) this.pumpWaiting();
    const gate = this.gate;
    if (gate?.waiting && this.held <= this.host.broker.options.shareQueueMax * 0.75) gate.open();
  }

  private pumpWaiting(): void {
    this.pumping = true;
    try {
      for (;;) {
        const e = this.waiting.peek();
        if (e === undefined) break;
        const i =
          e.lastMember !== undefined
            ? this.pickRetry(e.lastMember)
            : pick(this.strategy, this.members, e.message, this);
        if (i < 0) break;
        this.waiting.shift();
        this.resend(this.members[i], e);
        this.gate?.progress();
      }
    } finally {
      this.pumping = false;
    }
  }

  /** A retry goes to a ready member other than the one that failed it, or to that one if it alone is ready. */
  private pickRetry(avoid: string): number {
    const n = this.members.length;
    let fallback = -1;
    for (let k = 0; k < n; k++) {
      const j = (this.next + k) % n;
      const m = this.members[j];
      if (!m.ready) continue;
      if (m.session.clientId === avoid) {
        fallback = j;
        continue;
      }
      this.next = (j + 1) % n;
      return j;
    }
    return fallback;
  }

  /** A held message (already stored) to a member. */
  private resend(m: SharedMember, e: Waiting): void {
    const msg = e.message;
    const qos = Math.min(m.qos, msg.qos) as QoS;
    const ids = m.subscriptionId === undefined ? undefined : [m.subscriptionId];
    if (qos === 0) {
      // Granted QoS 0: delivered at most once, so the group's copy is done with.
      this.host.broker.persistence.deleteGroupMessage(this.id, e.seq);
      m.session.place(msg, 0, false, ids);
      return;
    }
    m.session.deliverGroup(this.job(e.seq, qos, msg, ids, e.attempts, e.dup));
  }

  /**
   * Takes back a message a member held but will not complete (it went offline, or its session
   * ended): it waits again, in seq order within its priority, and carries DUP if it had been sent.
   * Its stored record stays as it is (a restart redelivers every group message with DUP).
   * Call pump() after a batch of these.
   */
  requeue(rec: OutgoingRecord): void {
    const e: Waiting = {
      seq: rec.seq,
      message: rec.message,
      priority: priorityOf(rec.message),
      attempts: rec.attempts ?? 0,
      dup: rec.state !== 'queued' || rec.dup === true,
    };
    this.waiting.insert(e);
  }

  /** A message whose attempt failed waits until e.dueAt, then goes to a member again. */
  delay(e: Waiting): void {
    const due = e.dueAt ?? 0;
    let i = this.delayed.length;
    while (i > 0 && (this.delayed[i - 1].dueAt ?? 0) > due) i--;
    this.delayed.splice(i, 0, e);
    if (due < this.timerDue) this.arm();
  }

  /** A message restored from persistence: waiting, or in backoff until its due time. */
  restore(e: Waiting, now: number): void {
    if (e.dueAt !== undefined && e.dueAt > now) this.delay(e);
    else this.waiting.insert(e);
  }

  private arm(): void {
    const clock = this.host.clock;
    if (this.timer !== undefined) clock.clearTimeout(this.timer);
    this.timer = undefined;
    this.timerDue = Number.POSITIVE_INFINITY;
    if (this.delayed.length === 0) return;
    const due = this.delayed[0].dueAt ?? 0;
    this.timerDue = due;
    this.timer = clock.setTimeout(this.onTimer, due - clock.now());
  }

  private readonly onTimer = (): void => {
    this.timer = undefined;
    this.timerDue = Number.POSITIVE_INFINITY;
    try {
      const now = this.host.clock.now();
      let moved = 0;
      while (this.delayed.length > 0 && (this.delayed[0].dueAt ?? 0) <= now) {
        this.waiting.insert(this.delayed.shift()!);
        moved++;
      }
      this.arm();
      if (moved > 0) this.pump();
    } catch (err) {
      // A timer callback: logged, never thrown on into the event loop.
      this.host.broker.log.error({ err, group: this.id }, 'exception in a shared group retry timer');
    }
  };

  /** Cancels the backoff timer (broker closing). */
  stop(): void {
    if (this.timer !== undefined) this.host.clock.clearTimeout(this.timer);
    this.timer = undefined;
    this.timerDue = Number.POSITIVE_INFINITY;
  }
}
