/**
 * TopicTree and the filter/topic validators, as units. Statement numbers are 3.1.1's unless marked
 * (5.0): there [MQTT-4.7.1-2] is the `#` rule and [MQTT-4.7.1-3] the `+` rule.
 */
import { describe, expect, it } from 'vitest';
import { seededRandom as prng } from '../bench/random.js';
import { TopicTree, validFilter, validTopic } from '../broker/topic-tree.js';

function matches<T>(tree: TopicTree<T>, topic: string): T[] {
  const out: T[] = [];
  tree.match(topic, (v) => out.push(v));
  return out;
}

/** Filters of a tree that match a topic, sorted (values are the filters themselves). */
function matching(filters: string[], topic: string): string[] {
  const tree = new TopicTree<string>();
  for (const f of filters) tree.add(f, f);
  return matches(tree, topic).sort();
}

/** Number of nodes below the root: what pruning must give back. */
function nodeCount(tree: TopicTree<unknown>): number {
  type Node = { children: Map<string, Node> };
  const count = (n: Node): number => {
    let c = 0;
    for (const child of n.children.values()) c += 1 + count(child);
    return c;
  };
  return count((tree as unknown as { root: Node }).root);
}

describe('TopicTree: add, get, remove, size', () => {
  it('stores values under exact filters and counts them', () => {
    const tree = new TopicTree<string>();
    expect(tree.size).toBe(0);
    tree.add('a/b', 'x');
    tree.add('a/b', 'y');
    tree.add('a/+', 'x');
    expect(tree.size).toBe(3);
    expect(tree.get('a/b')).toEqual(['x', 'y']);
    expect(tree.get('a/+')).toEqual(['x']);
    // get is exact: no wildcard matching, no prefix.
    expect(tree.get('a')).toEqual([]);
    expect(tree.get('a/c')).toEqual([]);
    expect(tree.get('a/b/c')).toEqual([]);
  });

  it('keeps the same value under one filter once', () => {
    const tree = new TopicTree<object>();
    const v = {};
    tree.add('a/#', v);
    tree.add('a/#', v);
    expect(tree.size).toBe(1);
    expect(tree.get('a/#')).toEqual([v]);
    expect(matches(tree, 'a/b')).toEqual([v]);
    // Equal but distinct values are distinct entries.
    tree.add('a/#', {});
    expect(tree.size).toBe(2);
  });

  it('remove reports whether the value was there and updates size', () => {
    const tree = new TopicTree<string>();
    tree.add('a/b', 'x');
    tree.add('a/b', 'y');
    expect(tree.remove('a/b', 'z')).toBe(false);
    expect(tree.remove('a/c', 'x')).toBe(false);
    expect(tree.remove('a', 'x')).toBe(false);
    expect(tree.remove('a/b/c', 'x')).toBe(false);
    expect(tree.size).toBe(2);
    expect(tree.remove('a/b', 'x')).toBe(true);
    expect(tree.remove('a/b', 'x')).toBe(false);
    expect(tree.size).toBe(1);
    expect(tree.get('a/b')).toEqual(['y']);
    expect(matches(tree, 'a/b')).toEqual(['y']);
  });

  it('prunes empty branches but keeps nodes that still hold values or children', () => {
    const tree = new TopicTree<string>();
    tree.add('a/b/c/d', 'deep');
    tree.add('a/b', 'mid');
    tree.add('x/+/#', 'wild');
    expect(nodeCount(tree)).toBe(7);
    expect(tree.remove('a/b/c/d', 'deep')).toBe(true);
    // c and d are gone; a/b holds a value so it stays.
    expect(nodeCount(tree)).toBe(5);
    expect(tree.get('a/b')).toEqual(['mid']);
    tree.remove('a/b', 'mid');
    tree.remove('x/+/#', 'wild');
    expect(nodeCount(tree)).toBe(0);
    expect(tree.size).toBe(0);
    expect([...tree.entries()]).toEqual([]);
    expect(matches(tree, 'a/b')).toEqual([]);
  });

  it('entries lists every (filter, value) pair', () => {
    const tree = new TopicTree<number>();
    const pairs: [string, number][] = [
      ['a', 1],
      ['a/b', 2],
      ['a/b', 3],
      ['+/#', 4],
      ['/', 5],
      ['$SYS/x', 6],
    ];
    for (const [f, v] of pairs) tree.add(f, v);
    expect([...tree.entries()].sort((x, y) => x[1] - y[1])).toEqual(pairs);
  });
});

describe('TopicTree: matching', () => {
  it('"a/#" matches "a" itself and everything below it (section 4.7.1.2)', () => {
    expect(matching(['a/#'], 'a')).toEqual(['a/#']);
    expect(matching(['a/#'], 'a/b')).toEqual(['a/#']);
    expect(matching(['a/#'], 'a/b/c')).toEqual(['a/#']);
    expect(matching(['a/#'], 'a/')).toEqual(['a/#']);
    expect(matching(['a/#'], 'ab')).toEqual([]);
    expect(matching(['a/#'], 'b/a')).toEqual([]);
  });

  it('"#" alone matches every topic not starting with "$" (section 4.7.1.2)', () => {
    for (const t of ['a', 'a/b', '/', '/a', 'a//b']) expect(matching(['#'], t)).toEqual(['#']);
  });

  it('"+" matches exactly one level, including an empty one (section 4.7.1.3)', () => {
    const filters = ['+', '+/+', '/+', 'a/+', 'a/+/c', '+/b/+'];
    expect(matching(filters, 'a')).toEqual(['+']);
    expect(matching(filters, 'a/b')).toEqual(['+/+', 'a/+']);
    expect(matching(filters, 'a/b/c')).toEqual(['+/b/+', 'a/+/c']);
    expect(matching(filters, 'a/')).toEqual(['+/+', 'a/+']);
    expect(matching(filters, '/finance')).toEqual(['+/+', '/+']);
    expect(matching(filters, 'a//c')).toEqual(['a/+/c']);
    expect(matching(filters, 'a/b/c/d')).toEqual([]);
  });

  it('"sport/tennis/+" does not match "sport/tennis/player1/ranking"; "sport/+" does not match "sport" (section 4.7.1.3)', () => {
    expect(matching(['sport/tennis/+'], 'sport/tennis/player1')).toEqual(['sport/tennis/+']);
    expect(matching(['sport/tennis/+'], 'sport/tennis/player1/ranking')).toEqual([]);
    expect(matching(['sport/+'], 'sport')).toEqual([]);
    expect(matching(['sport/+'], 'sport/')).toEqual(['sport/+']);
  });

  it('"+/#" and "+/+/#" combine both wildcards', () => {
    expect(matching(['+/#'], 'a')).toEqual(['+/#']);
    expect(matching(['+/+/#'], 'a')).toEqual([]);
    expect(matching(['+/+/#'], 'a/b')).toEqual(['+/+/#']);
    expect(matching(['+/+/#'], 'a/b/c/d')).toEqual(['+/+/#']);
  });

  it('levels are compared exactly: case, spaces, empty levels (section 4.7.3)', () => {
    const filters = ['ACCOUNTS', 'accounts', 'a b', 'a//b', 'a/b'];
    expect(matching(filters, 'accounts')).toEqual(['accounts']);
    expect(matching(filters, 'ACCOUNTS')).toEqual(['ACCOUNTS']);
    expect(matching(filters, 'a b')).toEqual(['a b']);
    expect(matching(filters, 'a//b')).toEqual(['a//b']);
    expect(matching(filters, 'a/b')).toEqual(['a/b']);
  });

  it('topics starting with "$" are not matched by a leading wildcard [MQTT-4.7.2-1]', () => {
    const filters = [
      '#',
      '+',
      '+/#',
      '+/monitor/Clients',
      '$SYS/#',
      '$SYS/+/Clients',
      '$SYS',
      '$SYS/monitor/+',
    ];
    expect(matching(filters, '$SYS')).toEqual(['$SYS', '$SYS/#']);
    expect(matching(filters, '$SYS/monitor/Clients')).toEqual(['$SYS/#', '$SYS/+/Clients', '$SYS/monitor/+']);
    // "$" only counts at the start of the topic.
    expect(matching(filters, 'a/$SYS')).toEqual(['#', '+/#']);
    expect(matching(['a/+', 'a/#'], 'a/$x')).toEqual(['a/#', 'a/+']);
  });

  it('a value under several matching filters is visited once per filter', () => {
    const tree = new TopicTree<string>();
    tree.add('a/+', 'v');
    tree.add('a/#', 'v');
    tree.add('a/b', 'v');
    expect(matches(tree, 'a/b')).toEqual(['v', 'v', 'v']);
    expect(matches(tree, 'a')).toEqual(['v']);
  });
});

describe('validFilter and validTopic', () => {
  it.each([
    '#',
    'a/#',
    '+',
    '+/+',
    'a/+/b',
    '+/#',
    '/',
    '//',
    'a//b',
    '/+',
    '$SYS/#',
    ' ',
    'sport/tennis/player1/#',
  ])('filter %j is valid', (f) => {
    expect(validFilter(f)).toBe(true);
  });

  it.each([
    ['a#', '[MQTT-4.7.1-2]'],
    ['a/#/b', '[MQTT-4.7.1-2]'],
    ['#/a', '[MQTT-4.7.1-2]'],
    ['sport/tennis#', '[MQTT-4.7.1-2]'],
    ['##', '[MQTT-4.7.1-2]'],
    ['a+', '[MQTT-4.7.1-3]'],
    ['a/b+', '[MQTT-4.7.1-3]'],
    ['+a/b', '[MQTT-4.7.1-3]'],
    ['++', '[MQTT-4.7.1-3]'],
    ['sport+', '[MQTT-4.7.1-3]'],
    ['', '[MQTT-4.7.3-1]'],
    ['a/\u0000', '[MQTT-4.7.3-2]'],
  ])('filter %j is invalid %s', (f) => {
    expect(validFilter(f)).toBe(false);
  });

  it.each(['a', '/', 'a/b', '//', '$SYS/x', 'a b', 'ünïcødé/ø'])('topic %j is valid', (t) => {
    expect(validTopic(t)).toBe(true);
  });

  it.each([
    ['', '[MQTT-4.7.3-1]'],
    ['a/+', '[MQTT-3.3.2-2]'],
    ['#', '[MQTT-3.3.2-2]'],
    ['a/b#', '[MQTT-3.3.2-2]'],
    ['a+b', '[MQTT-3.3.2-2]'],
    ['a\u0000b', '[MQTT-4.7.3-2]'],
  ])('topic %j is invalid %s', (t) => {
    expect(validTopic(t)).toBe(false);
  });
});

// --- property test against a naive matcher ------------------------------------------------

/** The matching rules of section 4.7, written the obvious way. */
function naiveMatch(filter: string, topic: string): boolean {
  const f = filter.split('/');
  const t = topic.split('/');
  if (topic.startsWith('$') && (f[0] === '+' || f[0] === '#')) return false;
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return true;
    if (i >= t.length) return false;
    if (f[i] !== '+' && f[i] !== t[i]) return false;
  }
  return f.length === t.length;
}

describe('TopicTree.match against a naive matcher', () => {
  const seed = Number(process.env.TOPIC_SEED ?? Date.now() % 2 ** 32);

  it('agrees on random filters and topics (the seed is printed; TOPIC_SEED replays it)', () => {
    console.log(`topic-tree seed ${seed} (TOPIC_SEED=${seed} to replay)`);
    const rnd = prng(seed);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)];
    const words = ['a', 'b', 'c', '', 'ab', '$s'];
    const randomTopic = () => {
      const n = 1 + Math.floor(rnd() * 4);
      return Array.from({ length: n }, () => pick(words)).join('/') || 'a';
    };
    const randomFilter = () => {
      const n = 1 + Math.floor(rnd() * 4);
      const levels = Array.from({ length: n }, () => (rnd() < 0.3 ? '+' : pick(words)));
      if (rnd() < 0.3) levels.push('#');
      return levels.join('/');
    };

    const filters = new Set<string>();
    while (filters.size < 400) {
      const f = randomFilter();
      if (validFilter(f)) filters.add(f);
    }
    const topics = Array.from({ length: 3000 }, randomTopic).filter(validTopic);
    const tree = new TopicTree<string>();
    for (const f of filters) tree.add(f, f);
    expect(tree.size).toBe(filters.size);

    const check = (live: Set<string>) => {
      for (const t of topics) {
        const want = [...live].filter((f) => naiveMatch(f, t)).sort();
        expect(matches(tree, t).sort(), `seed ${seed}, topic ${JSON.stringify(t)}`).toEqual(want);
      }
    };
    check(filters);

    // Remove a random half: matching still agrees and pruning leaves no stray nodes behind.
    const live = new Set(filters);
    for (const f of filters) {
      if (rnd() < 0.5) {
        expect(tree.remove(f, f)).toBe(true);
        live.delete(f);
      }
    }
    expect(tree.size).toBe(live.size);
    check(live);
    for (const f of live) tree.remove(f, f);
    expect(tree.size).toBe(0);
    expect(nodeCount(tree)).toBe(0);
  });
});
