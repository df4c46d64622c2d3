/**
 * One client's written outgoing records as LevelPersistence remembers them: seq, body id and body
 * size, in seq order, in typed columns. About 20 bytes a record (the id string is the message's own,
 * shared with the body count), where an object and a map entry per record cost ~375: an offline or
 * spilled queue of 100,000 messages costs ~2 MB of index, not ~37 MB.
 *
 * Records arrive in seq order (the broker's sequence only increases) and leave mostly from the
 * front, so appends and removals are O(1) and a removed slot is a tombstone until the front passes
 * it or the columns are repacked; an insert in the middle (a seq from a clock set back) is O(n).
 */
const MIN = 16;

export class Columns {
  private seqs = new Float64Array(MIN);
  private sizes = new Int32Array(MIN);
  /** undefined: a tombstone. */
  private ids: (string | undefined)[] = [];
  private head = 0;
  private tail = 0;
  /** Records held (tail - head minus tombstones). */
  live = 0;

  /** The slot holding this seq, or -1. */
  find(seq: number): number {
    const i = this.lowerBound(seq);
    return i < this.tail && this.seqs[i] === seq && this.ids[i] !== undefined ? i : -1;
  }

  id(i: number): string {
    return this.ids[i] as string;
  }

  size(i: number): number {
    return this.sizes[i];
  }

  seq(i: number): number {
    return this.seqs[i];
  }

  /** Replaces the body of a held slot. */
  set(i: number, id: string, size: number): void {
    this.ids[i] = id;
    this.sizes[i] = size;
  }

  /** Adds a seq not held yet. */
  insert(seq: number, id: string, size: number): void {
    if (this.tail === this.head || seq > this.seqs[this.tail - 1]) {
      if (this.tail === this.seqs.length) this.makeRoom();
      this.put(this.tail++, seq, id, size);
      return;
    }
    let i = this.lowerBound(seq);
    if (i < this.tail && this.seqs[i] === seq) {
      this.put(i, seq, id, size); // its tombstone
      return;
    }
    if (i > 0 && this.ids[i - 1] === undefined && (i - 1 >= this.head || i === this.head)) {
      // A tombstone (or the free slot before the front) just before it takes it: no shift.
      if (i === this.head) this.head--;
      this.put(i - 1, seq, id, size);
      return;
    }
    if (this.tail === this.seqs.length) {
      this.makeRoom();
      i = this.lowerBound(seq);
    }
    this.seqs.copyWithin(i + 1, i, this.tail);
    this.sizes.copyWithin(i + 1, i, this.tail);
    this.ids.splice(i, 0, undefined);
    this.tail++;
    this.put(i, seq, id, size);
  }

  remove(i: number): void {
    this.ids[i] = undefined;
    this.live--;
    if (this.live === 0) {
      this.head = this.tail = 0;
      this.ids = [];
      if (this.seqs.length > MIN) this.resize(MIN);
      return;
    }
    while (this.ids[this.head] === undefined) this.head++;
    while (this.ids[this.tail - 1] === undefined) this.tail--;
    // Give memory back once the columns are mostly empty.
    if (this.seqs.length > 1024 && this.live * 4 < this.seqs.length) this.resize(this.seqs.length >> 1);
  }

  /** Every held record, in seq order. */
  *entries(): IterableIterator<{ seq: number; id: string; size: number }> {
    for (let i = this.head; i < this.tail; i++) {
      const id = this.ids[i];
      if (id !== undefined) yield { seq: this.seqs[i], id, size: this.sizes[i] };
    }
  }

  private put(i: number, seq: number, id: string, size: number): void {
    if (this.ids[i] === undefined) this.live++;
    this.seqs[i] = seq;
    this.ids[i] = id;
    this.sizes[i] = size;
  }

  /** First slot in [head, tail) whose seq is >= seq. */
  private lowerBound(seq: number): number {
    let lo = this.head;
    let hi = this.tail;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.seqs[mid] < seq) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Full at the end: repack (dropping tombstones) if that frees a quarter, else grow. */
  private makeRoom(): void {
    const cap = this.seqs.length;
    this.resize(this.live * 4 <= cap * 3 ? cap : cap * 2);
  }

  /** Repacks the held records to the front of columns of this capacity (>= live). */
  private resize(cap: number): void {
    const seqs = cap === this.seqs.length ? this.seqs : new Float64Array(cap);
    const sizes = cap === this.sizes.length ? this.sizes : new Int32Array(cap);
    const ids: (string | undefined)[] = [];
    let j = 0;
    for (let i = this.head; i < this.tail; i++) {
      const id = this.ids[i];
      if (id === undefined) continue;
      seqs[j] = this.seqs[i];
      sizes[j] = this.sizes[i];
      ids.push(id);
      j++;
    }
    this.seqs = seqs;
    this.sizes = sizes;
    this.ids = ids;
    this.head = 0;
    this.tail = j;
  }
}
