/**
 * The LevelDB key layout (see persistence/level.ts for the table): prefixes, separators and the
 * checks that keep every key unambiguous.
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
