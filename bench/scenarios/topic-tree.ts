/**
 * In-process micro-benchmark of broker/topic-tree.ts: 100,000 subscriptions in a realistic mix,
 * then mean µs per match() over topics drawn from the same space (most match something, some
 * nothing). Target: under 20 µs per match.
 */
import { TopicTree } from '../../broker/topic-tree.js';
import { seededRandom as rng } from '../random.js';
import type { BenchOptions, LocalBench, LocalResult } from '../scenario.js';

const SUBSCRIPTIONS = 100_000;
const SITES = 1000;
const DEVICES = 50;
const METRICS = ['temp', 'humidity', 'pressure', 'power', 'status'];
const TARGET_US = 20;

/** The filter mix: mostly exact topics, some single-level and multi-level wildcards. */
export function makeFilters(count: number, random: () => number): string[] {
  const pick = (n: number) => Math.floor(random() * n);
  const filters: string[] = [];
  for (let i = 0; i < count; i++) {
    const site = pick(SITES);
    const dev = pick(DEVICES);
    const metric = METRICS[pick(METRICS.length)];
    const r = random();
    if (r < 0.85) filters.push(`site/${site}/dev/${dev}/${metric}`);
    else if (r < 0.93) filters.push(`site/${site}/dev/${dev}/+`);
    else if (r < 0.97) filters.push(`site/${site}/dev/+/${metric}`);
    else if (r < 0.99) filters.push(`site/${site}/#`);
    else if (r < 0.995) filters.push(`+/${site}/dev/${dev}/${metric}`);
    else filters.push(`site/+/dev/${dev}/#`);
  }
  return filters;
}

export const topicTree: LocalBench = {
  kind: 'local',
  id: 'topic-tree',
  title: 'topic-tree match()',
  async run(options: BenchOptions): Promise<LocalResult> {
    const random = rng(0x4e52);
    const tree = new TopicTree<number>();
    const filters = makeFilters(SUBSCRIPTIONS, random);
    const t0 = performance.now();
    for (let i = 0; i < filters.length; i++) tree.add(filters[i], i);
    const insertMs = performance.now() - t0;

    // 10,000 topics: 90% inside the subscribed space, 10% on sites/devices nobody subscribed to.
    const topics: string[] = [];
    for (let i = 0; i < 10_000; i++) {
      const metric = METRICS[Math.floor(random() * METRICS.length)];
      if (random() < 0.9) {
        topics.push(`site/${Math.floor(random() * SITES)}/dev/${Math.floor(random() * DEVICES)}/${metric}`);
      } else topics.push(`site/${SITES + Math.floor(random() * SITES)}/dev/${DEVICES + i}/${metric}`);
    }

    let hits = 0;
    const visit = (_v: number) => {
      hits++;
    };
    // Warm-up, then timed passes until the budget or the count is reached.
    for (let i = 0; i < 50_000; i++) tree.match(topics[i % topics.length], visit);
    hits = 0;
    const budgetMs = options.quick ? 300 : 1500;
    const maxCalls = 5_000_000;
    let calls = 0;
    const start = performance.now();
    let now = start;
    while (calls < maxCalls && now - start < budgetMs) {
      for (let i = 0; i < topics.length; i++) tree.match(topics[i], visit);
      calls += topics.length;
      now = performance.now();
    }
    const meanUs = ((now - start) * 1000) / calls;
    const ok = meanUs < TARGET_US;
    return {
      ok,
      summary:
        `${tree.size.toLocaleString('en-US')} subscriptions (inserted in ${insertMs.toFixed(0)} ms), ` +
        `${calls.toLocaleString('en-US')} matches: mean ${meanUs.toFixed(2)} µs/match, ` +
        `${(hits / calls).toFixed(1)} subscribers matched per topic — target < ${TARGET_US} µs: ${ok ? 'PASS' : 'FAIL'}`,
    };
  },
};
