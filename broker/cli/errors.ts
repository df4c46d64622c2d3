/**
 * A configuration problem, told in one line per problem on stderr: never a stack trace. Exit 2
 * for a bad command line (as before the config file existed), 1 for a bad file or environment.
 */
export class ConfigError extends Error {
  constructor(
    readonly problems: string[],
    readonly exitCode: 1 | 2 = 1,
  ) {
    super(problems.join('\n'));
  }
}

/** A JSON-ish rendering of a bad value for a message. */
export function shown(v: unknown): string {
  if (v === undefined) return 'nothing';
  const text = JSON.stringify(v);
  if (text === undefined) return String(v);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

/** listeners[1].port */
export function keyPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out === '' ? String(p) : `.${String(p)}`;
  return out;
}

/** The known name closest to a misspelt one, when it is close enough to be a likely typo. */
export function closest(name: string, known: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = Math.max(2, Math.floor(name.length / 3)) + 1;
  for (const k of known) {
    const d = distance(name.toLowerCase(), k.toLowerCase());
    if (d < bestD) {
      bestD = d;
      best = k;
    }
  }
  return best;
}

function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++)
      row[j] = Math.min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = row;
  }
  return prev[b.length];
}
