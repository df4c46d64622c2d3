import { isIP } from 'node:net';
import { z } from 'zod';
import { QUEUE_OVERFLOW } from '../options.js';
import { type ShareStrategy, SHARE_STRATEGIES as STRATEGY_LIST } from '../shared/strategies.js';
import { LISTENER_TYPES } from '../transports/listeners.js';

/*
 * The configuration file's shape (README "Configuration"). Keys are camelCase: a flag's name in
 * camelCase (--max-queued → maxQueued), which is the BrokerOptions name where there is one. Each
 * schema's error text says what is expected; ConfigError messages read "<key> must be <that>".
 */

const SHARE_STRATEGIES = STRATEGY_LIST as unknown as readonly [ShareStrategy, ...ShareStrategy[]];
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

const PORT = 'a port number (0-65535)';
const COUNT = 'a non-negative integer';
const port = z.int({ error: PORT }).min(0, { error: PORT }).max(65535, { error: PORT });
/** A shorthand listener's port; null (file only) = no such listener. */
const portOrNull = port.nullable();
const count = z.int({ error: COUNT }).min(0, { error: COUNT });
const str = z.string({ error: 'a string' });
const bool = z.boolean({ error: 'true or false' });
const oneOf = <T extends readonly [string, ...string[]]>(values: T, text = `one of ${values.join(', ')}`) =>
  z.enum(values, { error: text });

const proxy = str.refine(
  (s) => {
    const [address, bits] = s.trim().split('/');
    const family = isIP(address);
    if (family === 0) return false;
    if (bits === undefined) return true;
    const n = Number(bits);
    return Number.isInteger(n) && n >= 0 && n <= (family === 4 ? 32 : 128);
  },
  { error: 'an IP address or CIDR range' },
);

const tls = z.strictObject({
  cert: str.min(1, { error: 'a PEM certificate file' }),
  key: str.min(1, { error: 'a PEM private key file' }),
  ca: str.optional(),
  requireClientCert: bool.optional(),
});

const listener = z.strictObject({
  type: oneOf(LISTENER_TYPES),
  port,
  host: str.optional(),
  path: str.startsWith('/', { error: 'a path starting with /' }).optional(),
  tls: tls.optional(),
  allowAnonymous: bool.optional(),
  name: str.optional(),
});

const plugin = z.strictObject({
  path: str.min(1, { error: 'a module path or package name' }),
  options: z.unknown().optional(),
});

const overflowRule = z.strictObject({
  match: str.min(1, { error: 'a client id pattern (* = any characters)' }),
  policy: oneOf(QUEUE_OVERFLOW),
});

/** Every configuration key and its schema. */
export const KEYS = {
  port: portOrNull,
  host: str,
  wsPort: portOrNull,
  wsPath: str.startsWith('/', { error: 'a path starting with /' }),
  wsTrustProxy: bool,
  wsTrustedProxies: z.array(proxy, { error: 'a list of IP addresses or CIDR ranges' }),
  wsAllowedOrigins: z.array(str, { error: 'a list of origins' }),
  tlsCert: str,
  tlsKey: str,
  tlsCa: str,
  tlsRequireClientCert: bool,
  tlsIdentityAsUsername: bool,
  tlsPort: portOrNull,
  wssPort: portOrNull,
  listeners: z.array(listener, { error: 'a list of listeners' }),
  persistence: str.min(1, { error: 'level, memory, or a module path or package' }),
  dataDir: str.min(1, { error: 'a directory' }),
  sync: bool,
  logLevel: oneOf(LOG_LEVELS),
  maxInflight: count,
  maxQueued: count,
  maxQueuedBytes: count,
  maxMemory: z.union([z.literal('auto'), count], { error: `auto or ${COUNT}` }),
  queueOverflow: oneOf(QUEUE_OVERFLOW),
  queueOverflowByClient: z.array(overflowRule, { error: 'a list of { match, policy }' }),
  stuckTimeout: count,
  receiveMaximum: count,
  maxPacketSize: count,
  maxKeepalive: count,
  connectTimeout: count,
  hookTimeout: count,
  plugins: z.array(plugin, { error: 'a list of { path, options }' }),
  maxTopicLevels: count,
  maxTopicLength: count,
  topicAliasMaximum: count,
  shareStrategy: oneOf(SHARE_STRATEGIES),
  shareGroups: z.record(str, z.strictObject({ strategy: oneOf(SHARE_STRATEGIES) }), {
    error: 'a mapping of share names to { strategy }',
  }),
  shareQueueMax: count,
  retryBase: count,
  retryFactor: z.number({ error: 'a number >= 1' }).min(1, { error: 'a number >= 1' }),
  retryMaxAttempts: count,
  dedupWindow: count,
  dedupMaxKeys: count,
  maxConnections: count,
  connectRate: count,
  connectBurst: count,
  maxPublishRate: count,
  maxPublishBytesRate: count,
  maxClientIdLength: count,
  flappingMaxConnects: count,
  flappingWindow: count,
  flappingBan: count,
  maxSessionExpiry: count,
  maxRetained: count,
  maxRetainedBytes: count,
  maxSharedGroups: count,
  maxSharedGroupsPerClient: count,
  maxConnectSize: count,
  passwordFile: str,
  scramFile: str,
  allowAnonymous: z.union([bool, z.literal('auto')], { error: 'true, false or auto' }),
  aclFile: str,
  sysInterval: count,
  jwtSecret: str,
  jwtPublicKey: str,
  jwksFile: str,
  jwtUsernameClaim: str,
  jwtAclClaim: str,
  httpAuthUrl: str,
  httpAclUrl: str,
  httpAuthTimeout: count,
  httpAuthCacheTtl: count,
  httpAuthDefault: oneOf(['deny', 'ignore'] as const, 'deny or ignore'),
} as const;

export type ConfigKey = keyof typeof KEYS;

/** Keys whose flag and environment values are whole numbers. */
export const INT_KEYS: ReadonlySet<string> = new Set(
  Object.entries(KEYS)
    .filter(([, schema]) => schema === count || schema === portOrNull)
    .map(([k]) => k),
);
/** The effective configuration: every key has a value. */
export type Config = { -readonly [K in ConfigKey]: z.output<(typeof KEYS)[K]> };

/** A configuration file: any subset of the keys, nothing else. */
export const fileSchema = z.strictObject(KEYS).partial();

export function isKey(k: string): k is ConfigKey {
  return Object.hasOwn(KEYS, k);
}

/** HERON_<KEY>: the key in upper snake case (maxQueued → HERON_MAX_QUEUED). */
export function envName(key: ConfigKey): string {
  return `HERON_${key.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`;
}

// Where a schema above gives no text of its own, the issue says what was expected in these words.
z.config({
  customError: (issue) => {
    if (issue.code === 'invalid_value') return `one of ${issue.values.map((v) => String(v)).join(', ')}`;
    if (issue.code === 'invalid_type')
      return issue.expected === 'object' ? 'a mapping' : `a ${issue.expected}`;
    return undefined;
  },
});
