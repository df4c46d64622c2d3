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

  /** Every unexpired retained message whose topic matches the filter. Expired ones are removed. */
  match(filter: string): Message[] {
    const out: Message[] = [];
    const expired: string[] = [];
    const now = Date.now();
    const levels = filter.split('/');
    const visit = (n: Node) => {
      if (!n.msg) return;
      if (isExpired(n.msg, now)) expired.push(n.msg.topic);
      else out.push(n.msg);
    };
    const walk = (node: Node, depth: number) => {
      if (depth === levels.length) return visit(node);
      const w = levels[depth];
      // A leading wildcard does not match topics starting with `$` [MQTT-4.7.2-1].
      const skipDollar = depth === 0;
      if (w === '#') {
        if (depth > 0) visit(node); // "a/#" matches "a" too
        const stack = [...node.children.values()].filter((c) => !(skipDollar && c.word.startsWith('$')));
        while (stack.length > 0) {
          const n = stack.pop()!;
          visit(n);
          for (const c of n.children.values()) stack.push(c);
        }
      } else if (w === '+') {
        for (const c of node.children.values())
          if (!(skipDollar && c.word.startsWith('$'))) walk(c, depth + 1);
      } else {
        const c = node.children.get(w);
        if (c) walk(c, depth + 1);
      }
    };
    walk(this.root, 0);
    for (const t of expired) if (this.remove(t)) this.persistence.setRetained(t, null);
    return out;
  }
}
