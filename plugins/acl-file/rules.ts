/**
 * Mosquitto's acl_file syntax, parsed and compiled for fast checks:
 *
 *   # comment
 *   topic [read|write|readwrite|deny] <filter>     rules before any `user` line: anonymous clients
 *   user <name>                                    the rules after it: that user's
 *   pattern [read|write|readwrite|deny] <filter>   every client, anywhere in the file; %u and %c
 *                                                  become the client's user name and client id
 *
 * No access word means readwrite. What no rule grants is denied, and a matching `deny` rule wins
 * over any grant. Matching is iterative over the topic string (no recursion, no split per check).
 */

export const READ = 1;
export const WRITE = 2;
const DENY = 4;

/** A rule as written: access bits and its filter (a pattern's still holding %u / %c). */
export interface RuleText {
  access: number;
  filter: string;
}

export interface AclRules {
  /** Rules before any `user` line. */
  anonymous: RuleText[];
  /** Each user's `topic` rules. */
  users: Map<string, RuleText[]>;
  /** `pattern` rules, for every client. */
  patterns: RuleText[];
  /** Number of rules. */
  size: number;
}

export interface AclParseError {
  line: number;
  message: string;
}

const ACCESS: Record<string, number> = { read: READ, write: WRITE, readwrite: READ | WRITE, deny: DENY };

/** Parses a file's text: the rules, or the errors with their line numbers. */
export function parseAcl(text: string): { rules: AclRules; errors: AclParseError[] } {
  const rules: AclRules = { anonymous: [], users: new Map(), patterns: [], size: 0 };
  const errors: AclParseError[] = [];
  let section = rules.anonymous;
  const patternSeen = new Set<string>();
  const lines = text.split('\n');
  for (let n = 0; n < lines.length; n++) {
    const line = lines[n].trim();
    if (line === '' || line.startsWith('#')) continue;
    const err = (message: string) => errors.push({ line: n + 1, message });
    const sp = line.search(/\s/);
    const keyword = sp < 0 ? line : line.slice(0, sp);
    const rest = sp < 0 ? '' : line.slice(sp).trim();
    if (keyword === 'user') {
      if (rest === '') {
        err('`user` needs a user name');
        continue;
      }
      let list = rules.users.get(rest);
      if (!list) {
        list = [];
        rules.users.set(rest, list);
      }
      section = list;
      continue;
    }
    if (keyword !== 'topic' && keyword !== 'pattern') {
      err(`unknown keyword "${keyword}" (expected topic, pattern or user)`);
      continue;
    }
    // An access word, then the filter (the rest of the line, which may hold spaces).
    const sp2 = rest.search(/\s/);
    const first = sp2 < 0 ? rest : rest.slice(0, sp2);
    const hasWord = sp2 >= 0 && Object.hasOwn(ACCESS, first);
    const access = hasWord ? ACCESS[first] : READ | WRITE;
    const filter = hasWord ? rest.slice(sp2).trim() : rest;
    if (filter === '') {
      err(`\`${keyword}\` needs a topic filter`);
      continue;
    }
    if (!validFilter(filter)) {
      err(`"${filter}" is not a valid topic filter`);
      continue;
    }
    rules.size++;
    if (keyword === 'pattern') {
      // Patterns apply to every client wherever they stand: one repeated in each user section
      // (as files often do) is substituted and compiled once per client, not once per section.
      const key = `${access} ${filter}`;
      if (patternSeen.has(key)) continue;
      patternSeen.add(key);
      rules.patterns.push({ access, filter });
    } else section.push({ access, filter });
  }
  return { rules, errors };
}

/** `+` and `#` stand alone in their level, `#` only last (the file's filters, %u / %c included). */
function validFilter(filter: string): boolean {
  const levels = filter.split('/');
  for (let i = 0; i < levels.length; i++) {
    const l = levels[i];
    if (l === '#' ? i !== levels.length - 1 : l !== '+' && (l.includes('+') || l.includes('#'))) return false;
  }
  return true;
}

/** Topic answers a ClientAcl keeps per action (bounded per client: a few KiB at most). */
const MEMO_TOPICS = 64;
/** Fewer wildcard and deny rules than this are matched directly: as cheap as a memo lookup. */
const MEMO_ABOVE_RULES = 2;

/** One rule's filter split into levels once. */
interface Compiled {
  levels: string[];
  /** The first level is a wildcard: it does not match topics starting with `$` [MQTT-4.7.2-1]. */
  wildFirst: boolean;
}

/** A rule ready for ClientAcl: its filter split, and whether it holds a wildcard. */
export interface CompiledRule {
  access: number;
  filter: string;
  wildcard: boolean;
  compiled: Compiled;
}

export function compileRules(rules: readonly RuleText[]): CompiledRule[] {
  return rules.map((r) => ({
    access: r.access,
    filter: r.filter,
    wildcard: r.filter.includes('+') || r.filter.includes('#'),
    compiled: compile(r.filter),
  }));
}

/**
 * The rules of one action (read or write) for one client: literal topics in a set, wildcard and
 * deny rules in lists. The last answer is kept, and recent ones per topic where a check scans
 * more rules than a lookup costs: a client mostly publishes to, and receives, the same topics
 * again and again. Its rules never change (a reload makes a new ClientAcl), so nothing kept here
 * outlives the rules it was answered by.
 */
export class ActionAcl {
  readonly exact = new Set<string>();
  readonly wild: Compiled[] = [];
  readonly denied: Compiled[] = [];
  private lastTopic: string | undefined;
  private lastAnswer = false;
  private memo: Map<string, boolean> | undefined;

  /** Called once the lists are filled. */
  seal(): void {
    if (this.wild.length + this.denied.length > MEMO_ABOVE_RULES) this.memo = new Map();
  }

  /** May the client do this action on this topic name? Synchronous, allocation-free on a hit. */
  allows(topic: string): boolean {
    if (this.lastTopic === topic) return this.lastAnswer;
    let answer: boolean | undefined;
    const memo = this.memo;
    if (memo === undefined) answer = this.check(topic);
    else {
      // A subscriber of many publishers' topics (fan-in) alternates between them: each answer is
      // kept, up to MEMO_TOPICS (then forgotten all at once, so the bound is cheap to keep).
      answer = memo.get(topic);
      if (answer === undefined) {
        answer = this.check(topic);
        if (memo.size >= MEMO_TOPICS) memo.clear();
        memo.set(topic, answer);
      }
    }
    this.lastTopic = topic;
    this.lastAnswer = answer;
    return answer;
  }

  private check(topic: string): boolean {
    const denied = this.denied;
    for (let k = 0; k < denied.length; k++) if (matches(denied[k], topic)) return false;
    if (this.exact.has(topic)) return true;
    const wild = this.wild;
    for (let k = 0; k < wild.length; k++) if (matches(wild[k], topic)) return true;
    return false;
  }
}

/**
 * What one client may do: its user's rules (compiled once per user and rule set) and its
 * substituted patterns (compiled once per connection), sorted by action.
 */
export class ClientAcl {
  readonly read = new ActionAcl();
  readonly write = new ActionAcl();

  constructor(...lists: readonly (readonly CompiledRule[])[]) {
    // The same rule twice (a pattern repeated per user section, as files often do) is kept once:
    // checks scan the wildcard and deny rules, so their count is what a check costs.
    const seen = new Set<string>();
    for (const list of lists) {
      for (const r of list) {
        const key = `${r.access} ${r.filter}`;
        if (seen.has(key)) continue;
        seen.add(key);
        for (const [acl, bit] of [
          [this.read, READ],
          [this.write, WRITE],
        ] as const) {
          if (r.access & DENY) acl.denied.push(r.compiled);
          else if (r.access & bit) {
            if (r.wildcard) acl.wild.push(r.compiled);
            else acl.exact.add(r.filter);
          }
        }
      }
    }
    this.read.seal();
    this.write.seal();
  }

  /** May the client publish to (WRITE) or receive from (READ) this topic name? */
  topic(action: typeof READ | typeof WRITE, topic: string): boolean {
    return (action === READ ? this.read : this.write).allows(topic);
  }

  /**
   * May the client subscribe to this filter (`$share/<group>/` already removed)? Allowed when a
   * read rule covers it (every topic the filter can match, the rule matches too) and no deny rule
   * covers it. A filter reaching partly into what a deny rule (or no rule) grants is allowed when
   * a grant covers it, and what it may not read is filtered per delivery.
   */
  subscription(filter: string): boolean {
    const levels = filter.split('/');
    const read = this.read;
    for (const d of read.denied) if (covers(d, levels)) return false;
    if (read.exact.has(filter)) return true;
    for (const w of read.wild) if (covers(w, levels)) return true;
    return false;
  }

  /**
   * Is every topic this (direct) subscription filter can match readable? A read grant covers it
   * and no deny rule matches any topic it matches: then deliveries through it need no check.
   */
  readsAll(filter: string): boolean {
    const levels = filter.split('/');
    const read = this.read;
    for (const d of read.denied) if (intersects(d, levels)) return false;
    if (!filter.includes('+') && !filter.includes('#') && read.exact.has(filter)) return true;
    for (const w of read.wild) if (covers(w, levels)) return true;
    return false;
  }
}

function compile(filter: string): Compiled {
  const levels = filter.split('/');
  return { levels, wildFirst: levels[0] === '+' || levels[0] === '#' };
}

/** Does a rule's filter match a topic name? Walks the topic string in place. */
export function matches(rule: Compiled, topic: string): boolean {
  if (rule.wildFirst && topic.charCodeAt(0) === 36 /* $ */) return false;
  const levels = rule.levels;
  const end = topic.length;
  let pos = 0;
  for (let i = 0; i < levels.length; i++) {
    const level = levels[i];
    // `#` matches the rest, including the parent level itself (`a/#` matches `a`).
    if (level === '#') return true;
    if (pos > end) return false; // the topic has fewer levels
    let slash = topic.indexOf('/', pos);
    if (slash < 0) slash = end;
    if (level !== '+' && (slash - pos !== level.length || !topic.startsWith(level, pos))) return false;
    pos = slash + 1;
  }
  return pos === end + 1;
}

/** Does a rule's filter match every topic a subscription filter (split into levels) can match? */
export function covers(rule: Compiled, sub: readonly string[]): boolean {
  if (rule.wildFirst && sub[0].charCodeAt(0) === 36 /* $ */) return false;
  const levels = rule.levels;
  for (let i = 0; i < levels.length; i++) {
    const level = levels[i];
    if (level === '#') return true;
    if (i >= sub.length) return false;
    const s = sub[i];
    if (s === '#') return false; // the subscription reaches deeper than the rule at this level
    if (level === '+') continue;
    if (s !== level) return false; // a literal differs, or the subscription's `+` is wider
  }
  return sub.length === levels.length;
}

/** Is there a topic name that both a rule's filter and a subscription filter (split) match? */
export function intersects(rule: Compiled, sub: readonly string[]): boolean {
  // A filter starting with a wildcard matches no `$` topic [MQTT-4.7.2-1].
  if (rule.wildFirst && sub[0].charCodeAt(0) === 36 /* $ */) return false;
  if ((sub[0] === '+' || sub[0] === '#') && rule.levels[0].charCodeAt(0) === 36) return false;
  const levels = rule.levels;
  for (let i = 0; ; i++) {
    const a = levels[i];
    const b = sub[i] as string | undefined;
    // `#` matches the rest, the parent level included (`a/#` matches `a`).
    if (a === '#' || b === '#') return true;
    if (a === undefined || b === undefined) return a === b;
    if (a !== '+' && b !== '+' && a !== b) return false;
  }
}

/** A user's own `topic` rules (the anonymous ones for undefined). */
export function userRules(rules: AclRules, username: string | undefined): RuleText[] {
  return username === undefined ? rules.anonymous : (rules.users.get(username) ?? []);
}

/**
 * The patterns for one client, %u / %c substituted. A pattern is skipped where the value it needs
 * is missing (%u for an anonymous client) or holds a wildcard, which would widen the rule.
 */
export function patternsFor(rules: AclRules, clientId: string, username: string | undefined): RuleText[] {
  const out: RuleText[] = [];
  for (const p of rules.patterns) {
    const needsUser = p.filter.includes('%u');
    const needsId = p.filter.includes('%c');
    if (needsUser && (username === undefined || /[+#]/.test(username))) continue;
    if (needsId && /[+#]/.test(clientId)) continue;
    let filter = p.filter;
    if (needsUser) filter = filter.replaceAll('%u', username as string);
    if (needsId) filter = filter.replaceAll('%c', clientId);
    out.push({ access: p.access, filter });
  }
  return out;
}
