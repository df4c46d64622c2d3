/**
 * The one contract through which the broker keeps its state. Mutations are synchronous calls that
 * queue a write (a backend may batch them per tick); `whenDurable` reports when everything queued
 * before it is stored. Reads are asynchronous and observe every mutation issued before them.
 * Records handed to a backend are never mutated afterwards by the broker: it puts a new record.
 */
import type { UserProperties } from 'mqtt-packet';

export type QoS = 0 | 1 | 2;

/** MQTT 5 properties that travel with an application message unchanged. */
export interface MessageProperties {
  payloadFormatIndicator?: boolean;
  contentType?: string;
  responseTopic?: string;
  correlationData?: Buffer;
  userProperties?: UserProperties;
}

export interface StoredMessage {
  /** Unique across restarts, so a backend can store one body for many recipients. */
  id: string;
  topic: string;
  payload: Buffer;
  qos: QoS;
  retain: boolean;
  properties?: MessageProperties;
  /** Epoch ms after which the message must not be delivered (5.0 Message Expiry Interval). */
  expiresAt?: number;
  /**
   * The broker's count of in-memory session records holding this body (its memory budget counts a
   * body once however many sessions hold it). Never stored: backends ignore it.
   */
  held?: number;
}

export interface SessionRecord {
  clientId: string;
  protocolVersion: 3 | 4 | 5;
  /** Seconds the session outlives its connection; 0xFFFFFFFF never expires. */
  expiryInterval: number;
  /** Epoch ms of the last disconnect; absent while connected. */
  disconnectedAt?: number;
  /** The user name of its last connection: restored subscriptions are re-authorized as that user. */
  username?: string;
}

export interface SubscriptionRecord {
  /** The filter as subscribed, including a `$share/<group>/` prefix. */
  filter: string;
  qos: QoS;
  noLocal?: boolean;
  retainAsPublished?: boolean;
  retainHandling?: 0 | 1 | 2;
  subscriptionId?: number;
}

export type OutgoingState = 'queued' | 'inflight' | 'pubrel';

/** One message on its way to one session, ordered by `seq`. */
export interface OutgoingRecord {
  seq: number;
  state: OutgoingState;
  /** Set once the message has been sent (inflight or pubrel). */
  packetId?: number;
  /** The QoS it is delivered at: min(published, granted). */
  qos: QoS;
  retain: boolean;
  subscriptionIds?: number[];
  message: StoredMessage;
  /**
   * Set when the message came through a shared subscription: the group's id (`<share name>/<filter>`).
   * Such a record is owned by the group's store (GroupMessageRecord) until the member acknowledges it.
   */
  group?: string;
  /** Failed delivery attempts before this one (negative PUBACK/PUBREC from group members). */
  attempts?: number;
  /** Sent before, to this session or another member: the PUBLISH carries DUP. */
  dup?: boolean;
}

/**
 * A client's will, one per client id. While the client is connected it is stored as given in
 * CONNECT (`fireAt` absent), so that a crash does not lose it: after a restart that connection has
 * evidently ended without DISCONNECT. Once the connection ended, a will waiting for its delay (5.0
 * Will Delay Interval) or its session's end has `fireAt`.
 */
export interface WillRecord {
  clientId: string;
  message: StoredMessage;
  /** Epoch ms at which it is published unless the client returns; absent while it is connected. */
  fireAt?: number;
  /** While connected: the Will Delay Interval, seconds (0 or absent: none). */
  delay?: number;
  /** While connected: the will's Message Expiry Interval, seconds, counted from its publication. */
  expiryInterval?: number;
}

/**
 * A message held by a shared subscription group (`$share/<name>/<filter>`, `$queue/<filter>`) from
 * the moment it is routed until a member acknowledges it: waiting in the group queue, in backoff
 * after a failed attempt, or in flight to a member.
 */
export interface GroupMessageRecord {
  /** Order within the group (the broker-wide increasing sequence). */
  seq: number;
  message: StoredMessage;
  /** 0–9, from the `priority` user property (default 4): higher is served first. */
  priority: number;
  /** Failed delivery attempts so far. */
  attempts: number;
  /** Epoch ms before which it is not delivered again (retry backoff). */
  dueAt?: number;
  /** Reason code of the last failed attempt. */
  lastReason?: number;
  /** Client id of the member that failed it last: a retry prefers another member. */
  lastMember?: string;
  /** Sent at least once: a redelivery carries DUP. */
  dup?: boolean;
  /**
   * In flight at QoS 2: the client id of the member it was sent to, written before it is sent.
   * Only that member may get it [MQTT-4.8.2-4]: after a restart it is put back in flight in that
   * member's session, with the same packet id.
   */
  member?: string;
  /** In flight at QoS 2: the packet id it was sent to `member` with. */
  packetId?: number;
}

/**
 * An idempotency key (user property `idempotency-key`) a publisher used on a topic, remembered until
 * it expires. Identified by (publisher, topic, key).
 */
export interface DedupRecord {
  topic: string;
  key: string;
  /** Epoch ms after which a publish with this key is delivered again. */
  expiresAt: number;
  /**
   * The publisher's client id; '' for the broker's own `publish()`. Absent on a record stored
   * before keys were scoped per publisher: it holds for every publisher until it expires.
   */
  publisher?: string;
}

export interface Persistence {
  open(): Promise<void>;
  close(): Promise<void>;
  /**
   * Calls back once every mutation issued before this call is stored (with an error if not). A
   * callback that throws never keeps the others from being called: one called from the backend's
   * own batch is caught and reported to onCallbackError (without a handler it surfaces as an
   * uncaught exception); one called synchronously, within whenDurable, throws to its caller.
   */
  whenDurable(cb: (err?: Error) => void): void;
  /** Where a backend reports an exception thrown by a whenDurable callback; the broker sets it. */
  onCallbackError?: (err: unknown) => void;
  /** Optional observer a batching backend calls after each batch it wrote, with its duration in ms; the broker sets it (stats). */
  onBatch?: (ms: number) => void;

  putSession(rec: SessionRecord): void;
  /** Removes the session and everything it owns: subscriptions, outgoing, inbound QoS 2 ids, will. */
  deleteSession(clientId: string): void;
  listSessions(): AsyncIterable<SessionRecord>;

  putSubscription(clientId: string, sub: SubscriptionRecord): void;
  deleteSubscription(clientId: string, filter: string): void;
  listSubscriptions(): AsyncIterable<{ clientId: string; sub: SubscriptionRecord }>;

  /** Inserts or replaces the record with this seq. */
  putOutgoing(clientId: string, rec: OutgoingRecord): void;
  deleteOutgoing(clientId: string, seq: number): void;
  /**
   * The session's outgoing records in seq order: all of them, or the first `limit`, of those with
   * a seq above `after` when given (reading a queue a page at a time).
   */
  getOutgoing(clientId: string, limit?: number, after?: number): Promise<OutgoingRecord[]>;
  /**
   * Bytes of the session's outgoing records (payload and topic of each, or their stored size),
   * known without reading them: the broker bounds an offline session's queue with it across restarts.
   */
  outgoingBytes(clientId: string): number;
  /**
   * Optional, for a backend that writes behind: payload and topic bytes of the message bodies it
   * was handed and has not yet taken for writing, which it holds in memory meanwhile (each body
   * once); 0 once whenDurable has called back with nothing issued since. While it is over its
   * bound the broker stops reading the publishers whose messages went only to persistence (a
   * spilled or offline queue), so a slow disk cannot fill memory.
   */
  backlogBytes?(): number;

  /** Inbound QoS 2 packet ids received and not yet released by PUBREL. */
  addIncoming(clientId: string, packetId: number): void;
  deleteIncoming(clientId: string, packetId: number): void;
  getIncoming(clientId: string): Promise<number[]>;

  /** Sets the retained message of a topic; null clears it. */
  setRetained(topic: string, msg: StoredMessage | null): void;
  listRetained(): AsyncIterable<StoredMessage>;

  putWill(rec: WillRecord): void;
  deleteWill(clientId: string): void;
  listWills(): AsyncIterable<WillRecord>;

  /** Inserts or replaces the group's record with this seq; `group` is `<share name>/<filter>`. */
  putGroupMessage(group: string, rec: GroupMessageRecord): void;
  deleteGroupMessage(group: string, seq: number): void;
  /** Every group's records, in seq order within a group. */
  listGroupMessages(): AsyncIterable<{ group: string; rec: GroupMessageRecord }>;

  /** Inserts or replaces the record of (publisher, topic, key). */
  putDedup(rec: DedupRecord): void;
  /** Deletes the record of (publisher, topic, key); no publisher: the unscoped record of (topic, key). */
  deleteDedup(topic: string, key: string, publisher?: string): void;
  listDedup(): AsyncIterable<DedupRecord>;
}
