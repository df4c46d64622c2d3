/**
 * LevelPersistence's key layout: prefixes, separators and the checks that keep every key
 * unambiguous.
 *
 * Key layout. Keys and values are UTF-8 strings; `␀` below is the byte 0x00, which MQTT forbids in
 * client ids, topics and filters ([MQTT-1.5.4-2] in 5.0, [MQTT-1.5.3-2] in 3.1.1; the mutations throw
 * a TypeError on one), so a prefix scan of `u␀abc␀` never reaches client `abcd`. Values are JSON
 * (but for the short o␀ form); Buffers (payload, correlationData) are base64 strings.
 *
 *   meta␀version               2 (the format version, written on first open)
 *   s␀<clientId>               session: {clientId, protocolVersion, expiryInterval, disconnectedAt?}
 *   u␀<clientId>␀<filter>      subscription: {filter, qos, noLocal?, retainAsPublished?, retainHandling?,
 *                              subscriptionId?}
 *   o␀<clientId>␀<seq>         outgoing reference, <seq> zero-padded to 16 digits so that key order is
 *                              seq order: `<messageId>|<state q/i/r><qos><retain 0/1><packetId?>`, or
 *                              when it has more: {m: messageId, s: state, q: qos, r: retain,
 *                              p?: packetId, i?: subscriptionIds, g?: group, a?: attempts, u?: dup}
 *                              (small: the body is not in it)
 *   m␀<messageId>              message body, stored once for every o␀ record that references it:
 *                              {id, topic, payload: base64, qos, retain, properties?, expiresAt?},
 *                              properties.correlationData as base64
 *   i␀<clientId>␀<packetId>    inbound QoS 2 packet id awaiting PUBREL, <packetId> zero-padded to 5
 *                              digits; empty value
 *   r␀<topic>                  retained message, body inline (same JSON as m␀)
 *   w␀<clientId>               will: {message (as in m␀), fireAt?, delay?, expiryInterval?}; fireAt
 *                              once its connection ended, delay and expiryInterval (seconds) while
 *                              its client is connected
 *   g␀<group>␀<seq>            message held by a shared subscription group, <group> being
 *                              `<share name>/<filter>` and <seq> zero-padded to 16 digits (key order is
 *                              seq order within a group): {m: message (as in m␀, body inline: one group
 *                              holds one copy), p: priority, a: attempts, d?: dueAt, c?: lastReason,
 *                              l?: lastMember, u?: dup, t?: member and n?: packetId (in flight at
 *                              QoS 2 to that member), r?: receipt and v?: visibleUntil (pulled from
 *                              a declared queue)}
 *   k␀<publisher>␀<topic>␀<key>
 *                              idempotency key a publisher used on a topic: {e: expiresAt};
 *                              <publisher> is its client id, empty for the broker's own publish() (a
 *                              key is a user property value: a UTF-8 string, which cannot hold U+0000
 *                              either)
 *   d␀<topic>␀<key>            idempotency key stored before keys were scoped per publisher:
 *                              {e: expiresAt}, still read (it holds for every publisher until it
 *                              expires); the broker writes every new key with its publisher
 *
 * The g␀, d␀ and k␀ prefixes were added without touching existing keys (a data dir written before
 * them simply holds none; an older Heron ignores k␀ keys). Format 2 added the short o␀ form; format
 * 1 dirs are read and marked 2.
 */

export const SEP = '\x00';
/** The byte after SEP: `<prefix>␀` … `<prefix>\x01` bounds a prefix scan. */
export const END = '\x01';
export const VERSION_KEY = `meta${SEP}version`;
export const SEQ_WIDTH = 16;
export const PID_WIDTH = 5;

export function checkName(what: string, s: string): void {
  if (s.includes(SEP)) throw new TypeError(`${what} must not contain U+0000: ${JSON.stringify(s)}`);
}

export function checkSeq(seq: number): void {
  if (!Number.isSafeInteger(seq) || seq < 0)
    throw new RangeError(`outgoing seq must be a safe integer >= 0: ${seq}`);
}

export const sessionKey = (clientId: string) => `s${SEP}${clientId}`;
export const willKey = (clientId: string) => `w${SEP}${clientId}`;
export const subKey = (clientId: string, filter: string) => `u${SEP}${clientId}${SEP}${filter}`;
export const outKey = (clientId: string, seq: number) =>
  `o${SEP}${clientId}${SEP}${String(seq).padStart(SEQ_WIDTH, '0')}`;
export const inKey = (clientId: string, packetId: number) =>
  `i${SEP}${clientId}${SEP}${String(packetId).padStart(PID_WIDTH, '0')}`;
export const bodyKey = (id: string) => `m${SEP}${id}`;
export const retainedKey = (topic: string) => `r${SEP}${topic}`;
export const groupKey = (group: string, seq: number) =>
  `g${SEP}${group}${SEP}${String(seq).padStart(SEQ_WIDTH, '0')}`;
/** A key stored before keys were scoped per publisher (read, and deleted, never written). */
export const unscopedDedupKey = (topic: string, key: string) => `d${SEP}${topic}${SEP}${key}`;
export const dedupKey = (publisher: string, topic: string, key: string) =>
  `k${SEP}${publisher}${SEP}${topic}${SEP}${key}`;
/** Bounds of every key under `<parts joined by SEP>␀`. */
export const range = (...parts: string[]) => {
  const p = parts.join(SEP);
  return { gte: p + SEP, lt: p + END };
};
/** Bounds of every key with this one-letter prefix. */
export const prefixRange = (prefix: string) => ({ gte: prefix + SEP, lt: prefix + END });
