/**
 * The bench payload and the per-stream bookkeeping that turns it into lost / duplicated / reordered
 * counts. Every PUBLISH carries, at the start of its payload:
 *
 *   offset 0  u16 BE  publisher id
 *   offset 2  u32 BE  sequence number (0, 1, 2, … per publisher)
 *   offset 6  f64 LE  send time, performance.now() in ms (publisher and subscriber share the process)
 *
 * and is padded with zeros to the configured payload size.
 */
export const HEADER_BYTES = 14;

export function writeHeader(buf: Buffer, offset: number, pubId: number, seq: number, sentAt: number): void {
  buf.writeUInt16BE(pubId, offset);
  buf.writeUInt32BE(seq, offset + 2);
  buf.writeDoubleLE(sentAt, offset + 6);
}

export const readPubId = (payload: Buffer): number => payload.readUInt16BE(0);
export const readSeq = (payload: Buffer): number => payload.readUInt32BE(2);
export const readSentAt = (payload: Buffer): number => payload.readDoubleLE(6);

/**
 * What one subscriber received from one publisher: a byte per sequence number, so duplicates are
 * exact, plus the highest sequence seen (`next` = highest + 1), which drives the publishers'
 * end-to-end window even when QoS 0 messages are dropped.
 */
export class StreamTracker {
  private seen: Uint8Array;
  unique = 0;
  dup = 0;
  reordered = 0;
  next = 0;

  constructor(expected: number) {
    this.seen = new Uint8Array(Math.max(16, expected));
  }

  record(seq: number): void {
    if (seq >= this.seen.length) {
      const bigger = new Uint8Array(Math.max(seq + 1, this.seen.length * 2));
      bigger.set(this.seen);
      this.seen = bigger;
    }
    if (this.seen[seq] !== 0) {
      this.dup++;
      return;
    }
    this.seen[seq] = 1;
    this.unique++;
    if (seq < this.next) this.reordered++;
    else this.next = seq + 1;
  }
}
