import type { Persistence } from '../persistence/types.js';
import type { Connection } from './connection.js';

/**
 * Bytes of spilled message bodies a write-behind persistence backend may hold in memory before
 * their write (Persistence.backlogBytes): beyond it the publishers feeding spilled queues wait for
 * the disk; they resume below half of it.
 */
export const STORE_BACKLOG = 16 * 1024 * 1024;

/** What a gate's owner is told: its publishers waited stuckTimeout without it making progress. */
export interface GateOwner {
  stuck(): void;
}

/**
 * Something publishers wait on under the `backpressure` policy: a session's full queue, a shared
 * group's full queue, or the broker's memory budget. A waiting publisher is not read from, and its
 * PUBACK / PUBREC wait (Connection.block), until every gate it waits on opens.
 */
export class Gate {
  private waiters: Connection[] | null = null;
  /** Clock ms since publishers have waited without the owner making progress. */
  since = 0;
  /** The owner made no progress for stuckTimeout: it no longer holds publishers back. */
  stuck = false;

  constructor(
    private readonly flow: Flow,
    readonly owner: GateOwner,
  ) {}

  get waiting(): boolean {
    return this.waiters !== null;
  }

  /** The publisher waits until this gate opens. */
  hold(conn: Connection): void {
    let w = this.waiters;
    if (w === null) {
      w = this.waiters = [];
      this.since = this.flow.clock;
      this.flow.congested.add(this);
    } else if (w.includes(conn)) return;
    w.push(conn);
    conn.block();
  }

  /** The owner acknowledged or drained something. */
  progress(): void {
    this.stuck = false;
    if (this.waiters !== null) this.since = this.flow.clock;
  }

  /** There is room again: every waiting publisher is released from this gate. */
  open(): void {
    const w = this.waiters;
    if (w === null) return;
    this.waiters = null;
    this.flow.congested.delete(this);
    for (const c of w) c.unblock();
  }
}

/**
 * The broker's flow control state: the gates publishers wait on, the memory budget of queued
 * bodies (each counted once, however many sessions hold it), and stuck-consumer detection.
 */
export class Flow implements GateOwner {
  /** Gates that queued a message beyond their bound during the current route(); see takeOverflowed. */
  readonly overflowed: Gate[] = [];
  readonly congested = new Set<Gate>();
  /** Coarse clock (ms), advanced by the broker's sweep: progress is stamped without a clock read. */
  clock = Date.now();
  /** Bytes of bodies held by in-memory session records. */
  memoryHeld = 0;
  readonly memoryGate: Gate;
  /** What publishers wait on while persistence's write backlog is over STORE_BACKLOG. */
  readonly storeGate: Gate;
  private watchingStore = false;
  overflows = 0;
  stuckConsumers = 0;

  constructor(
    readonly maxMemory: number,
    private readonly stuckMs: number,
  ) {
    this.memoryGate = new Gate(this, this);
    this.storeGate = new Gate(this, this);
  }

  /**
   * A message went to persistence only (a spilled or offline queue): with the backend's write
   * backlog over its bound, the publisher waits until the batches being written bring it below half.
   */
  spilled(p: Persistence): void {
    if (p.backlogBytes === undefined || p.backlogBytes() < STORE_BACKLOG) return;
    this.overflowed.push(this.storeGate);
    if (this.watchingStore) return;
    this.watchingStore = true;
    const check = () => {
      // Looked at again after the next batch (a timer between: a backend that calls back at
      // once cannot make this spin).
      if (p.backlogBytes!() > STORE_BACKLOG / 2) setTimeout(() => p.whenDurable(check), 5);
      else {
        this.watchingStore = false;
        this.storeGate.open();
      }
    };
    p.whenDurable(check);
  }

  get memoryFull(): boolean {
    return this.memoryHeld >= this.maxMemory;
  }

  hold(msg: { held?: number }, bytes: number): void {
    if (msg.held) msg.held++;
    else {
      msg.held = 1;
      this.memoryHeld += bytes;
    }
  }

  release(msg: { held?: number }, bytes: number): void {
    if (!msg.held || --msg.held > 0) return;
    this.memoryHeld -= bytes;
    // Memory released counts as progress for publishers waiting on the budget.
    if (this.memoryGate.waiting) this.memoryGate.since = this.clock;
    // Hysteresis: publishers waiting on the budget resume at 90% of it, not at every release.
    if (this.memoryHeld <= this.maxMemory * 0.9) {
      this.memoryGate.stuck = false;
      if (this.memoryGate.waiting) this.memoryGate.open();
    }
  }

  /**
   * Nothing was released for stuckTimeout while publishers waited on the budget: they resume, and
   * until memory is below 90% of it again, what no queue can take is dropped, counted and logged.
   */
  stuck(): void {}

  /** Called by the sweep: owners whose publishers waited stuckMs without progress are acted on. */
  tick(now: number): void {
    this.clock = now;
    if (this.stuckMs === 0 || this.congested.size === 0) return;
    for (const g of [...this.congested]) {
      if (now - g.since < this.stuckMs) continue;
      g.stuck = true;
      this.stuckConsumers++;
      g.open();
      g.owner.stuck();
    }
  }

  /** The publishing connection waits on every gate its message overflowed, except its own session's. */
  blockOn(conn: Connection): void {
    const list = this.overflowed;
    for (let i = 0; i < list.length; i++) {
      const g = list[i];
      // A client's own acknowledgements arrive on the socket we would stop reading: never wait on self.
      if (conn.session === g.owner) continue;
      g.hold(conn);
    }
    list.length = 0;
  }
}
