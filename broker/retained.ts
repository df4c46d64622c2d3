import type { Persistence } from '../persistence/types.js';
import { isExpired, type Message } from './message.js';

class Node {
  readonly children = new Map<string, Node>();
  msg: Message | undefined;
  constructor(
    readonly parent: Node | null,
    readonly word: string,
  ) {}
}

/**
 * Retained messages, one per topic, in a trie keyed by topic level so that a subscribe walks only
 * the branches its filter can match. Writes go through to persistence.
 */
export class RetainedStore {
  private readonly root = new Node(null, '');
  private count = 0;

  constructor(private readonly persistence: Persistence) {}

  get size(): number {
    return this.count;
  }

  /** Stores or (empty payload) clears the retained message of msg.topic [MQTT-3.3.1-5] [MQTT-3.3.1-6]. */
  set(msg: Message): void {
    if (msg.payload.length === 0) {
      if (this.remove(msg.topic)) this.persistence.setRetained(msg.topic, null);
      return;
    }
    this.load(msg);
    this.persistence.setRetained(msg.topic, msg);
  }

  /** Adds a message restored from persistence, without writing it back. */
  load(msg: Message): void {
    let node = this.root;
    for (const word of msg.topic.split('/')) {
      let next = node.children.get(word);
      if (!next) {
        next = new Node(node, word);
        node.children.set(word, next);
      }
      node = next;
    }
    if (!node.msg) this.count++;
    node.msg = msg;
  }

  private remove(topic: string): boolean {
    let node: Node | undefined = this.root;
    for (const word of topic.split('/')) {
      node = node.children.get(word);
      if (!node) return false;
    }
    if (!node.msg) return false;
    node.msg = undefined;
    this.count--;
    while (node.parent && !node.msg && node.children.size === 0) {
      node.parent.children.delete(node.word);
      node = node.parent;
    }
    return true;
  }

  /**
   * Every unexpired retained message whose topic matches the filter. Expired ones are removed.
   * Iterative over an explicit stack of (node, depth), so no topic depth can overflow the call
   * stack; messages come in the order a depth-first recursion would give them.
   */
  match(filter: string): Message[] {
    const out: Message[] = [];
    const expired: string[] = [];
    const now = Date.now();
    const levels = filter.split('/');
    const n = levels.length;
    const visit = (node: Node) => {
      const msg = node.msg;
      if (!msg) return;
      if (isExpired(msg, now)) expired.push(msg.topic);
      else out.push(msg);
    };
    const nodes: Node[] = [this.root];
    const depths: number[] = [0];
    while (nodes.length > 0) {
      const node = nodes.pop()!;
      const depth = depths.pop()!;
      if (depth === n) {
        visit(node);
        continue;
      }
      const w = levels[depth];
      // A leading wildcard does not match topics starting with `$` [MQTT-4.7.2-1].
      const skipDollar = depth === 0;
      if (w === '#') {
        if (depth > 0) visit(node); // "a/#" matches "a" too [MQTT-4.7.1-2]
        // The whole subtree, on the stack above what is still pending (depth unused here).
        const base = nodes.length;
        for (const c of node.children.values()) if (!(skipDollar && c.word.startsWith('$'))) nodes.push(c);
        while (nodes.length > base) {
          const d = nodes.pop()!;
          visit(d);
          for (const c of d.children.values()) nodes.push(c);
        }
      } else if (w === '+') {
        // Pushed in reverse so that children are walked in insertion order.
        const base = nodes.length;
        for (const c of node.children.values()) {
          if (skipDollar && c.word.startsWith('$')) continue;
          nodes.push(c);
          depths.push(depth + 1);
        }
        reverseFrom(nodes, base);
      } else {
        const c = node.children.get(w);
        if (c) {
          nodes.push(c);
          depths.push(depth + 1);
        }
      }
    }
    for (const t of expired) if (this.remove(t)) this.persistence.setRetained(t, null);
    return out;
  }
}

/** Reverses a[from..] in place. */
function reverseFrom<T>(a: T[], from: number): void {
  for (let i = from, j = a.length - 1; i < j; i++, j--) {
    const t = a[i];
    a[i] = a[j];
    a[j] = t;
  }
}
