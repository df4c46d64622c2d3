/**
 * The compact columns LevelPersistence keeps per client for its written outgoing records
 * (persistence/level/columns.ts), against a plain map: growth, repacking, shrinking, inserts
 * before the front and in the middle, tombstones reused.
 */
import { describe, expect, it } from 'vitest';
import { Columns } from '../persistence/level/columns.js';

function seeded(seed: number) {
  let x = seed;
  return (n: number) => {
    x = (x * 1103515245 + 12345) % 2147483648;
    return x % n;
  };
}

function expectSame(cols: Columns, model: Map<number, [string, number]>): void {
  const want = [...model.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([seq, [id, size]]) => ({ seq, id, size }));
  expect([...cols.entries()]).toEqual(want);
  expect(cols.live).toBe(model.size);
}

describe('level columns', () => {
  it('hold what a map holds under a queue-like walk: appends at the back, removals mostly at the front', () => {
    const rand = seeded(1);
    const cols = new Columns();
    const model = new Map<number, [string, number]>();
    let next = 1;
    for (let step = 0; step < 40_000; step++) {
      // Grows to thousands of records, then drains to empty, twice.
      const phase = Math.floor(step / 10_000) % 2 === 0;
      if (rand(10) < (phase ? 7 : 2)) {
        const seq = next++;
        cols.insert(seq, `m${seq}`, seq % 97);
        model.set(seq, [`m${seq}`, seq % 97]);
      } else if (model.size > 0) {
        // Appended in seq order, so the map's first key is the front.
        const seq =
          rand(4) === 0 ? [...model.keys()][rand(model.size)] : (model.keys().next().value as number);
        const i = cols.find(seq);
        expect(i).toBeGreaterThanOrEqual(0);
        cols.remove(i);
        model.delete(seq);
      }
      if (step % 2000 === 0) expectSame(cols, model);
    }
    expectSame(cols, model);
  });

  it('insert anywhere: before the front, into tombstones, in the middle; find and set by slot', () => {
    const rand = seeded(2);
    const cols = new Columns();
    const model = new Map<number, [string, number]>();
    for (let step = 0; step < 6000; step++) {
      const seq = rand(3000);
      const i = cols.find(seq);
      if (i >= 0) {
        expect(cols.seq(i)).toBe(seq);
        expect(cols.id(i)).toBe(model.get(seq)![0]);
        if (rand(2) === 0) {
          cols.remove(i);
          model.delete(seq);
        } else {
          cols.set(i, `r${step}`, step);
          model.set(seq, [`r${step}`, step]);
        }
      } else {
        expect(model.has(seq)).toBe(false);
        cols.insert(seq, `i${step}`, step);
        model.set(seq, [`i${step}`, step]);
      }
    }
    expectSame(cols, model);
    for (const seq of [...model.keys()]) cols.remove(cols.find(seq));
    expect(cols.live).toBe(0);
    expect([...cols.entries()]).toEqual([]);
  });
});
