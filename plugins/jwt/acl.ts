/**
 * Topic lists carried in a token: `%u` / `%c` substitution, filter-against-topic matching and
 * filter-covers-filter (a SUBSCRIBE is granted only a filter that a listed one covers wholly).
 */

/** The lists a token grants, substituted for one client. */
export interface TokenAcl {
  pub: string[];
  sub: string[];
}

/** A value substituted into a pattern must not widen it: wildcards in it void the pattern. */
function substitute(pattern: string, username: string | undefined, clientId: string): string | null {
  if (!pattern.includes('%')) return pattern;
  if (pattern.includes('%u')) {
    if (username === undefined || /[+#]/.test(username)) return null;
  }
  if (pattern.includes('%c') && /[+#]/.test(clientId)) return null;
  return pattern.replaceAll('%u', username ?? '').replaceAll('%c', clientId);
}

function list(value: unknown): string[] | null {
  if (value === undefined) return [];
  if (!Array.isArray(value) || !value.every((v) => typeof v === 'string')) return null;
  return value as string[];
}

/**
 * Reads `claim` = `{ pub?: string[], sub?: string[], all?: string[] }` (all = both). Undefined when
 * the token carries no such claim; null when it is malformed (the token is refused).
 */
export function readAcl(
  claim: unknown,
  username: string | undefined,
  clientId: string,
): TokenAcl | null | undefined {
  if (claim === undefined) return undefined;
  if (typeof claim !== 'object' || claim === null || Array.isArray(claim)) return null;
  const c = claim as Record<string, unknown>;
  const pub = list(c.pub);
  const sub = list(c.sub);
  const all = list(c.all);
  if (!pub || !sub || !all) return null;
  const subst = (xs: string[]) =>
    xs.map((x) => substitute(x, username, clientId)).filter((x): x is string => x !== null);
  return { pub: subst([...pub, ...all]), sub: subst([...sub, ...all]) };
}

/** Whether `filter` matches the topic name `topic` (wildcards never match a leading `$` level). */
export function matches(filter: string, topic: string): boolean {
  const f = filter.split('/');
  const t = topic.split('/');
  if (t[0].startsWith('$') && (f[0] === '+' || f[0] === '#')) return false;
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return true;
    if (i >= t.length) return false;
    if (f[i] !== '+' && f[i] !== t[i]) return false;
  }
  return f.length === t.length;
}

/** Whether every topic `inner` matches is matched by `outer`. */
export function covers(outer: string, inner: string): boolean {
  const o = outer.split('/');
  const n = inner.split('/');
  if (n[0].startsWith('$') && (o[0] === '+' || o[0] === '#')) return false;
  for (let i = 0; i < o.length; i++) {
    if (o[i] === '#') return true;
    if (i >= n.length) return false;
    if (n[i] === '#') return false;
    if (o[i] === '+') continue;
    if (o[i] !== n[i]) return false;
  }
  return o.length === n.length;
}

/** A shared subscription is checked on its filter without `$share/<group>/`. */
export function unshared(filter: string): string {
  if (!filter.startsWith('$share/')) return filter;
  const slash = filter.indexOf('/', 7);
  return slash < 0 ? filter : filter.slice(slash + 1);
}
