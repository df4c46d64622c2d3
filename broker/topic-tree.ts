/**
 * A trie keyed by topic level. Matching walks at most (topic depth × 3) nodes per branch, so its
 * cost grows with depth and with the number of matches, not with the number of subscriptions.
 */
class TreeNode<T> {
  readonly children = new Map<string, TreeNode<T>>();
  values: T[] = [];
  constructor(
    readonly parent: TreeNode<T> | null,
    readonly word: string,
  ) {}
}

export class TopicTree<T> {
  private readonly root = new TreeNode<T>(null, '');
  private count = 0;
  // match()'s explicit stack, reused so that a match allocates nothing beyond split().
  private readonly stackNodes: TreeNode<T>[] = [];
  private readonly stackDepths: number[] = [];
  private matching = false;

  get size(): number {
    return this.count;
  }

  /** Adds a value under a filter; the same value twice under one filter is kept once. */
  add(filter: string, value: T): void {
    let node = this.root;
    for (const word of filter.split('/')) {
      let next = node.children.get(word);
      if (!next) {
        next = new TreeNode(node, word);
        node.children.set(word, next);
      }
      node = next;
    }
    if (!node.values.includes(value)) {
      node.values.push(value);
      this.count++;
    }
  }

  /** Removes a value; returns whether it was present. Empty branches are pruned. */
  remove(filter: string, value: T): boolean {
    let node: TreeNode<T> | undefined = this.root;
    for (const word of filter.split('/')) {
      node = node.children.get(word);
      if (!node) return false;
    }
    const i = node.values.indexOf(value);
    if (i < 0) return false;
    node.values.splice(i, 1);
    this.count--;
    while (node.parent && node.values.length === 0 && node.children.size === 0) {
      node.parent.children.delete(node.word);
      node = node.parent;
    }
    return true;
  }

  /** Values stored under exactly this filter. */
  get(filter: string): readonly T[] {
    let node: TreeNode<T> | undefined = this.root;
    for (const word of filter.split('/')) {
      node = node.children.get(word);
      if (!node) return [];
    }
    return node.values;
  }

  /**
   * Calls visit for every value whose filter matches the topic. Topics starting with `$` are not
   * matched by a leading `+` or `#` [MQTT-4.7.2-1].
   *
   * Iterative over an explicit stack of (node, depth), never a call frame per level: a topic of
   * any depth cannot overflow the call stack. Branches are visited in the order a depth-first
   * recursion would (exact word before `+`). The stack arrays are kept between calls; a match
   * started from inside visit (re-entrant) gets its own.
   */
  match(topic: string, visit: (value: T) => void): void {
    const levels = topic.split('/');
    const n = levels.length;
    const dollar = topic.charCodeAt(0) === 36;
    const nested = this.matching;
    const nodes = nested ? [] : this.stackNodes;
    const depths = nested ? [] : this.stackDepths;
    this.matching = true;
    try {
      nodes[0] = this.root;
      depths[0] = 0;
      let sp = 1;
      while (sp > 0) {
        sp--;
        const node = nodes[sp];
        const depth = depths[sp];
        const children = node.children;
        if (children.size === 0) continue;
        const wildOk = !(dollar && depth === 0);
        if (wildOk) {
          // `#` matches the parent level too: "a/#" matches "a" [MQTT-4.7.1-2].
          const hash = children.get('#');
          if (hash) for (const v of hash.values) visit(v);
        }
        if (depth === n) continue;
        const last = depth + 1 === n;
        // Pushed before the exact branch so that it is popped (walked) after it.
        const plus = wildOk ? children.get('+') : undefined;
        if (plus) {
          if (!last) {
            nodes[sp] = plus;
            depths[sp] = depth + 1;
            sp++;
          }
        }
        const exact = children.get(levels[depth]);
        if (exact) {
          if (last) {
            for (const v of exact.values) visit(v);
            const h = exact.children.get('#');
            if (h) for (const v of h.values) visit(v);
          } else {
            nodes[sp] = exact;
            depths[sp] = depth + 1;
            sp++;
          }
        }
        if (plus && last) {
          for (const v of plus.values) visit(v);
          const h = plus.children.get('#');
          if (h) for (const v of h.values) visit(v);
        }
      }
    } finally {
      this.matching = nested;
    }
  }

  /** Every (filter, value) pair, for persistence and introspection. */
  *entries(): Generator<[string, T]> {
    const stack: [TreeNode<T>, string][] = [[this.root, '']];
    while (stack.length > 0) {
      const [node, path] = stack.pop()!;
      for (const v of node.values) yield [path, v];
      for (const [word, child] of node.children)
        stack.push([child, node === this.root ? word : `${path}/${word}`]);
    }
  }
}

/** A topic filter is valid when `#` is last and alone in its level and `+` is alone in its level. */
export function validFilter(filter: string): boolean {
  if (filter.length === 0 || filter.includes('\u0000')) return false;
  const levels = filter.split('/');
  for (let i = 0; i < levels.length; i++) {
    const w = levels[i];
    if (w.includes('#') && (w !== '#' || i !== levels.length - 1)) return false; // [MQTT-4.7.1-2]
    if (w.includes('+') && w !== '+') return false; // [MQTT-4.7.1-3]
  }
  return true;
}

/** A PUBLISH topic name must be non-empty and free of wildcards [MQTT-3.3.2-2]. */
export function validTopic(topic: string): boolean {
  if (topic.length === 0) return false;
  for (let i = 0; i < topic.length; i++) {
    const c = topic.charCodeAt(i);
    if (c === 35 || c === 43 || c === 0) return false;
  }
  return true;
}

/**
 * Whether a topic name or filter has at most maxLevels levels and maxLength bytes of UTF-8.
 * Cheap enough for every PUBLISH: a UTF-16 unit is at most 3 UTF-8 bytes (a surrogate pair is 4
 * for 2 units), so the byte length is computed only when length × 3 could exceed the limit, and a
 * string shorter than maxLevels cannot have more levels than that.
 */
export function topicWithinLimits(topic: string, maxLevels: number, maxLength: number): boolean {
  const len = topic.length;
  if (len > maxLength) return false;
  if (len * 3 > maxLength && Buffer.byteLength(topic) > maxLength) return false;
  if (len < maxLevels) return true;
  let levels = 1;
  for (let i = 0; i < len; i++) {
    if (topic.charCodeAt(i) === 47 && ++levels > maxLevels) return false;
  }
  return true;
}

/** A topic short enough for a log line. */
export function clipTopic(topic: string): string {
  return topic.length > 100 ? `${topic.slice(0, 100)}…` : topic;
}

/**
 * False for a string holding U+0000 or U+FFFD: the parser decodes ill-formed UTF-8 to U+FFFD, and
 * either makes the packet malformed [MQTT-1.5.4-1] [MQTT-1.5.4-2]. (A well-formed U+FFFD sent on
 * purpose is refused too: the decoded string no longer tells the two apart.)
 */
export function wellFormed(s: string): boolean {
  return !s.includes('\uFFFD') && !s.includes('\u0000');
}
