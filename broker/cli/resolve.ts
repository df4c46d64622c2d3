import { ConfigError, closest, keyPath } from './errors.js';
import { FLAGS, type FlagName, flagKey, type GivenFlags, META_FLAGS } from './flags.js';
import { type Config, type ConfigKey, envName, INT_KEYS, isKey, KEYS } from './schema.js';

/** Where a value came from: precedence default < file < env < flag. */
export type Source =
  | { kind: 'default' }
  | { kind: 'file'; path: string; line: number }
  | { kind: 'env'; name: string }
  | { kind: 'flag'; name: string };

export interface Effective {
  values: Config;
  sources: Record<ConfigKey, Source>;
  /** The configuration file, when there is one (SIGHUP reads it again). */
  file: string | undefined;
  /** Said on stderr at start: HERON_* variables that are no key. */
  warnings: string[];
}

/** The flag of each key (the meta flags have none). */
const FLAG_OF = new Map<ConfigKey, FlagName>();
for (const name of Object.keys(FLAGS) as FlagName[]) {
  if (META_FLAGS.includes(name)) continue;
  const key = flagKey(name);
  if (!isKey(key)) throw new Error(`flag --${name} needs its key ${key} in KEYS (broker/cli/schema.ts)`);
  FLAG_OF.set(key, name);
}
/** The configuration file's path may come from the environment too. */
export const CONFIG_ENV = 'HERON_CONFIG';
const ENV_OF = new Map<string, ConfigKey>((Object.keys(KEYS) as ConfigKey[]).map((k) => [envName(k), k]));

/**
 * yaml (and config-file.ts with it) is loaded only when a file or HERON_LISTENERS needs it: a
 * start from flags alone does not pay for its import.
 */
let parseYaml: ((text: string) => unknown) | undefined;

/** A flag or environment value that cannot be read: `phrase` follows the flag or variable name. */
class TextError extends Error {}

const list = (v: string) =>
  v
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);

/** pattern=value or group=value, from a repeatable flag. */
function pair(item: string, what: string): [string, string] {
  const eq = item.lastIndexOf('=');
  if (eq <= 0) throw new TextError(`takes ${what}, got "${item}"`);
  return [item.slice(0, eq), item.slice(eq + 1)];
}

/** A flag's or environment variable's text (one item per repetition, or per line) as the key's value. */
function fromText(key: ConfigKey, items: string[]): unknown {
  const raw = items[items.length - 1] ?? '';
  if (INT_KEYS.has(key) || key === 'retryFactor') {
    const n = Number(raw);
    if (raw.trim() === '' || !Number.isFinite(n) || (key !== 'retryFactor' && !Number.isInteger(n)))
      throw new TextError(
        `must be ${key === 'retryFactor' ? 'a number >= 1' : 'a non-negative integer'}, got "${raw}"`,
      );
    return n;
  }
  switch (key) {
    case 'allowAnonymous':
      if (raw === 'true' || raw === 'false') return raw === 'true';
      return raw;
    case 'wsTrustedProxies':
    case 'wsAllowedOrigins':
    case 'adminUsers':
      return list(raw);
    case 'plugins':
      return items.map((spec) => {
        // The options begin at the first `:` (paths and package names given to --plugin carry none).
        const colon = spec.indexOf(':');
        if (colon < 0) return { path: spec };
        try {
          return { path: spec.slice(0, colon), options: JSON.parse(spec.slice(colon + 1)) as unknown };
        } catch (err) {
          throw new TextError(`${spec.slice(0, colon)}: options are not JSON: ${(err as Error).message}`);
        }
      });
    case 'shareGroups':
      return Object.fromEntries(
        items.map((i) => {
          const [group, strategy] = pair(i, 'group=strategy');
          return [group, { strategy }];
        }),
      );
    case 'queues':
      return items.map((i) => {
        const eq = i.indexOf('=');
        if (eq <= 0) throw new TextError(`takes name=filter, got "${i}"`);
        return { name: i.slice(0, eq), filter: i.slice(eq + 1) };
      });
    case 'queueConsumers':
      return items.map((i) => {
        const [token, queues] = pair(i, 'token=queue[,queue...]');
        return { token, queues: list(queues) };
      });
    case 'queueOverflowByClient':
      return items.map((i) => {
        const [match, policy] = pair(i, 'pattern=policy');
        return { match, policy };
      });
    case 'listeners':
      // No flag: the environment variable holds YAML (or JSON).
      try {
        return (parseYaml as (text: string) => unknown)(raw);
      } catch (err) {
        throw new TextError(`is not YAML: ${(err as Error).message.split('\n')[0]}`);
      }
    default:
      if (KEYS[key].safeParse(true).success) {
        if (['true', '1', 'yes', 'on'].includes(raw)) return true;
        if (['false', '0', 'no', 'off', ''].includes(raw)) return false;
        throw new TextError(`must be true or false, got "${raw}"`);
      }
      // A number where the key takes one (maxMemory: a number or auto), else the text.
      if (raw.trim() !== '' && Number.isFinite(Number(raw)) && KEYS[key].safeParse(Number(raw)).success)
        return Number(raw);
      return raw;
  }
}

/** Parses and validates one text value; errors name the flag or variable. */
function textValue(key: ConfigKey, items: string[], name: string, exitCode: 1 | 2): unknown {
  let value: unknown;
  try {
    value = fromText(key, items);
  } catch (err) {
    if (err instanceof TextError) throw new ConfigError([`${name} ${err.message}`], exitCode);
    throw err;
  }
  const r = KEYS[key].safeParse(value);
  if (!r.success) {
    const issue = r.error.issues[0];
    const raw = items.length === 1 ? items[0] : items.join(' ');
    const sub = issue.path.length > 0 ? `: ${keyPath(issue.path)}` : '';
    throw new ConfigError([`${name}${sub} must be ${issue.message}, got "${raw}"`], exitCode);
  }
  return r.data;
}

/** Every key's default: its flag's default, read as the flag would be. */
export function defaults(): Config {
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(KEYS) as ConfigKey[]) {
    const name = FLAG_OF.get(key);
    if (name === undefined) {
      out[key] = []; // listeners: none beyond the shorthand ones
      continue;
    }
    const f = FLAGS[name];
    const d = f.default as string | boolean | readonly string[];
    out[key] =
      typeof d === 'boolean' ? d : textValue(key, typeof d === 'string' ? [d] : [...d], `--${name}`, 2);
  }
  return out as Config;
}

/**
 * The effective configuration: defaults, then the file, then HERON_<KEY> variables, then flags.
 * Throws a ConfigError (exit 2 for the command line, 1 for the file or environment).
 */
export async function resolveConfig(
  flags: GivenFlags,
  env: NodeJS.ProcessEnv,
  file?: string,
): Promise<Effective> {
  if (env[envName('listeners')] !== undefined) parseYaml ??= (await import('yaml')).parse;
  const values = defaults() as Record<ConfigKey, unknown>;
  const sources = {} as Record<ConfigKey, Source>;
  for (const k of Object.keys(KEYS) as ConfigKey[]) sources[k] = { kind: 'default' };
  if (file !== undefined) {
    const { readConfigFile } = await import('./config-file.js');
    const f = readConfigFile(file);
    for (const [k, v] of Object.entries(f.values) as [ConfigKey, unknown][]) {
      values[k] = v;
      sources[k] = { kind: 'file', path: file, line: f.lines[k] ?? 1 };
    }
  }
  const problems: string[] = [];
  const warnings: string[] = [];
  for (const [name, raw] of Object.entries(env)) {
    if (!name.startsWith('HERON_') || name === CONFIG_ENV || raw === undefined) continue;
    const key = ENV_OF.get(name);
    if (key === undefined) {
      // A warning, not an error: HERON_* may be meant for something else (a plugin, a script).
      const guess = closest(name, [...ENV_OF.keys(), CONFIG_ENV]);
      warnings.push(
        `warning: environment variable ${name} is no configuration key, ignored${guess ? ` (did you mean ${guess}?)` : ''}`,
      );
      continue;
    }
    try {
      values[key] = textValue(
        key,
        raw.split('\n').filter((l) => l.trim() !== ''),
        name,
        1,
      );
      sources[key] = { kind: 'env', name };
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      problems.push(...err.problems);
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
  for (const [key, name] of FLAG_OF) {
    const given = flags[name];
    if (given === undefined) continue;
    values[key] =
      typeof given === 'boolean'
        ? given
        : textValue(key, typeof given === 'string' ? [given] : given, `--${name}`, 2);
    sources[key] = { kind: 'flag', name: `--${name}` };
  }
  const eff: Effective = { values: values as Config, sources, file, warnings };
  settle(eff);
  return eff;
}

/**
 * Rules across keys. With a listeners list, the shorthand listeners (port, tlsPort, wsPort,
 * wssPort) are started only where set explicitly: their defaults become null (none).
 */
function settle(eff: Effective): void {
  const { values: v, sources: s } = eff;
  if (v.listeners.length > 0)
    for (const k of ['port', 'tlsPort', 'wsPort', 'wssPort'] as const)
      if (s[k].kind === 'default') v[k] = null;
  const where = (k: ConfigKey) => describeSource(s[k]);
  const problems: string[] = [];
  if ((v.tlsCert === '') !== (v.tlsKey === ''))
    problems.push(
      `tlsCert and tlsKey go together (--tls-cert and --tls-key); tlsCert from ${where('tlsCert')}, tlsKey from ${where('tlsKey')}`,
    );
  v.listeners.forEach((l, i) => {
    if ((l.type === 'tls' || l.type === 'wss') && !l.tls && v.tlsCert === '')
      problems.push(
        `${where('listeners')}: listeners[${i}] (${l.type}) needs tls: { cert, key } or a top-level tlsCert and tlsKey`,
      );
  });
  if (problems.length > 0) {
    const fromFlags = (['tlsCert', 'tlsKey'] as const).some((k) => s[k].kind === 'flag');
    throw new ConfigError(problems, fromFlags ? 2 : 1);
  }
}

export function describeSource(src: Source): string {
  switch (src.kind) {
    case 'default':
      return 'default';
    case 'file':
      return `file ${src.path}:${src.line}`;
    case 'env':
      return `env ${src.name}`;
    case 'flag':
      return `flag ${src.name}`;
  }
}
