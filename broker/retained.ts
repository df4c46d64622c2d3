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
 * The broker's own `$SYS/` values (plugins/sys): retained in memory only (a restart publishes them
 * afresh; stale ones must not come back from disk) and outside the bounds, which are the clients'.
 */
function isSys(topic: string): boolean {
  return topic.charCodeAt(0) === 36 && topic.startsWith('$SYS/');
}

/** What a retained message counts against --max-retained-bytes. */
function sizeOf(msg: Message): number {
  return Buffer.byteLength(msg.topic) + msg.payload.length;
}

/**
 * Retained messages, one per topic, in a trie keyed by topic level so that a subscribe walks only
 * the branches its filter can match. Writes go through to persistence. Bounded in count and in
 * bytes: a message that would exceed a bound is not stored (replacing one is, if its bytes fit).
 */
export class RetainedStore {
  private readonly root = new Node(null, '');
  private count = 0;
  private total = 0;
  /** Of count and total, the `$SYS/` messages' (not bounded). */
  private sysCount = 0;
  private sysTotal = 0;
  /** Some stored messages were not loaded at start (over the bounds): they are still on disk. */
  private partial = false;

  constructor(
    private readonly persistence: Persistence,
    /** Messages held at most; 0 = no limit. */
    private readonly maxCount = 0,
    /** Topic + payload bytes held at most; 0 = no limit. */
    private readonly maxBytes = 0,
  ) {}

  get size(): number {
    return this.count;
  }

  /** Topic and payload bytes held. */
  get bytes(): number {
    return this.total;
  }

  /**
   * Whether a retained message of this topic and payload size would be stored: within the bounds,
   * counting the one it replaces. An empty payload (a clear) always is.
   */
  admits(topic: string, payloadLength: number): boolean {
    if (payloadLength === 0 || (this.maxCount === 0 && this.maxBytes === 0) || isSys(topic)) return true;
    const old = this.find(topic)?.msg;
    if (this.maxCount > 0 && old === undefined && this.count - this.sysCount >= this.maxCount) return false;
    const bytes =
      this.total - this.sysTotal - (old ? sizeOf(old) : 0) + Buffer.byteLength(topic) + payloadLength;
    return this.maxBytes === 0 || bytes <= this.maxBytes;
  }

  /**
   * Stores or (empty payload) clears the retained message of msg.topic [MQTT-3.3.1-5] [MQTT-3.3.1-6].
   * Returns false when it was not stored for the bounds (the previous one stays).
   */
  set(msg: Message): boolean {
    if (msg.payload.length === 0) {
      // Deleted on disk even when not held if some were not loaded: a cleared one must not come back.
      if ((this.remove(msg.topic) || this.partial) && !isSys(msg.topic))
        this.persistence.setRetained(msg.topic, null);
      return true;
    }
    if (!this.put(msg)) return false;
    if (!isSys(msg.topic)) this.persistence.setRetained(msg.topic, msg);
    return true;
  }

  /** Adds a message restored from persistence, without writing it back; false when over the bounds. */
  load(msg: Message): boolean {
    if (isSys(msg.topic)) {
      // Stored by an older version: a stale value, dropped for good.
      this.persistence.setRetained(msg.topic, null);
      return true;
    }
    if (this.put(msg)) return true;
    this.partial = true;
    return false;
  }

  private put(msg: Message): boolean {
    if (!this.admits(msg.topic, msg.payload.length)) return false;
    let node = this.root;
    for (const word of msg.topic.split('/')) {
      let next = node.children.get(word);
      if (!next) {
        next = new Node(node, word);
        node.children.set(word, next);
      }
      node = next;
    }
    const sys = isSys(msg.topic);
    if (!node.msg) {
      this.count++;
      if (sys) this.sysCount++;
    } else {
      this.total -= sizeOf(node.msg);
      if (sys) this.sysTotal -= sizeOf(node.msg);
    }
    node.msg = msg;
    this.total += sizeOf(msg);
    if (sys) this.sysTotal += sizeOf(msg);
    return true;
  }

  private find(topic: string): Node | undefined {
    let node: Node | undefined = this.root;
    for (const word of topic.split('/')) {
      node = node.children.get(word);
      if (!node) return undefined;
    }
    return node;
  }

  private remove(topic: string): boolean {
    let node: Node | undefined = this.find(topic);
    if (!node?.msg) return false;
    this.total -= sizeOf(node.msg);
    if (isSys(topic)) {
      this.sysTotal -= sizeOf(node.msg);
      this.sysCount--;
    }
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
