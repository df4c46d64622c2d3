import { readFileSync } from 'node:fs';
import { type Document, isMap, isScalar, isSeq, LineCounter, type Node, parseDocument } from 'yaml';
import type { z } from 'zod';
import { ConfigError, closest, keyPath, shown } from './errors.js';
import { type Config, type ConfigKey, fileSchema, KEYS } from './schema.js';

/** A configuration file, read and validated. */
export interface ConfigFile {
  path: string;
  values: Partial<Config>;
  /** The line (1-based) each top-level key is on. */
  lines: Partial<Record<ConfigKey, number>>;
}

/**
 * Reads and validates a YAML configuration file. Throws a ConfigError listing every problem, each
 * with its line: YAML syntax, an unknown key (with the likely key meant), a wrong type or a bad value.
 */
export function readConfigFile(path: string): ConfigFile {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError([`cannot read config file ${path}: ${(err as Error).message}`]);
  }
  const counter = new LineCounter();
  const doc = parseDocument(text, { lineCounter: counter, prettyErrors: false });
  const at = (line: number) => `${path}, line ${line}:`;
  if (doc.errors.length > 0)
    throw new ConfigError(
      doc.errors.map((e) => `${at(counter.linePos(e.pos[0]).line)} YAML: ${e.message.split('\n')[0]}`),
    );
  const data: unknown = doc.toJS() ?? {};
  if (typeof data !== 'object' || Array.isArray(data) || data === null)
    throw new ConfigError([`${at(1)} the file must be a mapping of keys (README "Configuration")`]);
  const lineOf = (p: readonly PropertyKey[]) => counter.linePos(offsetOf(doc, p)).line;
  const result = fileSchema.safeParse(data);
  if (!result.success)
    throw new ConfigError(
      result.error.issues
        .flatMap((issue) => describe(issue, data, lineOf))
        .sort((a, b) => a.line - b.line)
        .map((m) => `${at(m.line)} ${m.text}`),
    );
  const lines: Partial<Record<ConfigKey, number>> = {};
  for (const k of Object.keys(result.data) as ConfigKey[]) lines[k] = lineOf([k]);
  return { path, values: result.data as Partial<Config>, lines };
}

/** One issue as sentences, each with the line of what it is about. */
function describe(
  issue: z.core.$ZodIssue,
  data: unknown,
  lineOf: (p: readonly PropertyKey[]) => number,
): { line: number; text: string }[] {
  if (issue.code === 'unrecognized_keys') {
    const known = issue.path.length === 0 ? Object.keys(KEYS) : knownKeysAt(issue.path);
    return issue.keys.map((k) => {
      const guess = closest(k, known);
      const where = keyPath([...issue.path, k]);
      return {
        line: lineOf([...issue.path, k]),
        text: `unknown key ${where}${guess ? ` (did you mean ${guess}?)` : ''}; expected one of the keys in README "Configuration"`,
      };
    });
  }
  const value = valueAt(data, issue.path);
  const name = keyPath(issue.path);
  const text =
    value === undefined
      ? `${name} is missing: expected ${issue.message}`
      : `${name} must be ${issue.message}, got ${shown(value)}`;
  return [{ line: lineOf(issue.path), text }];
}

/** Keys that nested objects know, for a suggestion. */
function knownKeysAt(path: readonly PropertyKey[]): string[] {
  const top = String(path[0]);
  if (top === 'listeners')
    return path.length > 2
      ? ['cert', 'key', 'ca', 'requireClientCert']
      : ['type', 'port', 'host', 'path', 'tls', 'allowAnonymous', 'name'];
  if (top === 'plugins') return ['path', 'options'];
  if (top === 'queueOverflowByClient') return ['match', 'policy'];
  if (top === 'shareGroups') return ['strategy'];
  if (top === 'queueConsumers') return ['token', 'queues'];
  if (top === 'queues')
    return [
      'name',
      'filter',
      'maxMessages',
      'maxBytes',
      'overflow',
      'maxAttempts',
      'visibilityMs',
      'strategy',
    ];
  return [];
}

function valueAt(data: unknown, path: readonly PropertyKey[]): unknown {
  let v: unknown = data;
  for (const p of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<PropertyKey, unknown>)[p];
  }
  return v;
}

/**
 * The offset in the file of what a path points to: the key of the deepest mapping entry it
 * reaches (or the sequence item), so a missing key points to the entry that should hold it.
 */
function offsetOf(doc: Document, path: readonly PropertyKey[]): number {
  let node: Node | null | undefined = doc.contents as Node | null;
  let offset = node?.range?.[0] ?? 0;
  for (const p of path) {
    if (isMap(node)) {
      const pair = node.items.find((it) => isScalar(it.key) && String(it.key.value) === String(p));
      if (!pair) break;
      offset = (pair.key as Node).range?.[0] ?? offset;
      node = pair.value as Node | null;
    } else if (isSeq(node) && typeof p === 'number') {
      node = node.items[p] as Node | undefined;
      if (!node) break;
      offset = node.range?.[0] ?? offset;
    } else break;
  }
  return offset;
}
