/**
 * The input queue mqtt-packet's parser reads from (its `_list`): the part of bl's BufferList API
 * the parser uses (append, consume, length, readUInt8/16BE/32BE, slice, toString). bl allocates a
 * Buffer for every consume and every number it reads; this keeps an offset into the first chunk
 * instead, and reads within one chunk without allocating. Slices inside one chunk are views of
 * it, as with bl; a slice across chunks is a copy.
 */
export class ByteQueue {
  private bufs: Buffer[] = [];
  /** Bytes of bufs[0] already consumed. */
  private head = 0;
  length = 0;
  /**
   * Reads must end at or before this offset (the end of the packet being decoded, see
   * strict-parser.ts); a read past it throws like one past the end.
   */
  limit = Number.POSITIVE_INFINITY;

  append(buf: Buffer): this {
    if (buf.length > 0) {
      this.bufs.push(buf);
      this.length += buf.length;
    }
    return this;
  }

  consume(bytes: number): this {
    let n = Math.trunc(bytes);
    if (!(n > 0)) return this;
    const bufs = this.bufs;
    while (n > 0 && bufs.length > 0) {
      const avail = bufs[0].length - this.head;
      if (n < avail) {
        this.head += n;
        this.length -= n;
        return this;
      }
      n -= avail;
      this.length -= avail;
      bufs.shift();
      this.head = 0;
    }
    return this;
  }

  readUInt8(offset: number): number {
    this.check(offset, 1);
    const first = this.bufs[0];
    const at = this.head + offset;
    return at < first.length ? first[at] : this.byteAt(offset);
  }

  readUInt16BE(offset: number): number {
    this.check(offset, 2);
    const first = this.bufs[0];
    const at = this.head + offset;
    if (at + 2 <= first.length) return (first[at] << 8) | first[at + 1];
    return (this.byteAt(offset) << 8) | this.byteAt(offset + 1);
  }

  readUInt32BE(offset: number): number {
    this.check(offset, 4);
    const first = this.bufs[0];
    const at = this.head + offset;
    if (at + 4 <= first.length) return first.readUInt32BE(at);
    return (
      this.byteAt(offset) * 0x1000000 +
      ((this.byteAt(offset + 1) << 16) | (this.byteAt(offset + 2) << 8) | this.byteAt(offset + 3))
    );
  }

  /** Bytes [start, end) of the queue (clamped to its length, like bl). */
  slice(start = 0, end = this.length): Buffer {
    const s = Math.max(0, start);
    const e = Math.min(this.length, end);
    if (e <= s) return Buffer.alloc(0);
    const first = this.bufs[0];
    const from = this.head + s;
    if (this.head + e <= first.length) return first.subarray(from, this.head + e);
    const out = Buffer.allocUnsafe(e - s);
    let written = 0;
    let skip = from;
    for (const buf of this.bufs) {
      if (skip >= buf.length) {
        skip -= buf.length;
        continue;
      }
      const take = Math.min(buf.length - skip, out.length - written);
      buf.copy(out, written, skip, skip + take);
      written += take;
      skip = 0;
      if (written === out.length) break;
    }
    return out;
  }

  toString(encoding: BufferEncoding = 'utf8', start = 0, end = this.length): string {
    const first = this.bufs[0];
    if (first !== undefined && start >= 0 && this.head + end <= first.length && end <= this.length) {
      return first.toString(encoding, this.head + start, this.head + end);
    }
    return this.slice(start, end).toString(encoding);
  }

  private check(offset: number, size: number): void {
    // bl reads from an empty slice and throws; the parser's caller treats that as a malformed packet.
    if (!(offset >= 0) || offset + size > this.length || offset + size > this.limit) {
      throw new RangeError('Attempt to access memory outside buffer bounds');
    }
  }

  private byteAt(offset: number): number {
    let at = this.head + offset;
    for (const buf of this.bufs) {
      if (at < buf.length) return buf[at];
      at -= buf.length;
    }
    return 0;
  }
}
