import { parseArgs } from 'node:util';
import { DEFAULTS, QUEUE_OVERFLOW } from '../options.js';
import { SHARE_STRATEGIES } from '../shared/strategies.js';

/** Every flag, its default and its meaning: parsed from here and printed by --help. */
export const FLAGS = {
  port: { type: 'string', default: String(DEFAULTS.port), help: 'MQTT over TCP port (0 = any free port)' },
  host: { type: 'string', default: '', help: 'address to bind (none = all interfaces)' },
  'ws-port': {
    type: 'string',
    default: String(DEFAULTS.wsPort),
    help: 'MQTT over WebSocket port (0 = disabled)',
  },
  'ws-path': { type: 'string', default: DEFAULTS.wsPath, help: 'WebSocket upgrade path' },
  'ws-trust-proxy': {
    type: 'boolean',
    default: false,
    help: 'take WebSocket client addresses from X-Forwarded-For (the right-most entry not a trusted proxy)',
  },
  'ws-trusted-proxies': {
    type: 'string',
    default: DEFAULTS.wsTrustedProxies.join(','),
    help: 'comma-separated proxy addresses or CIDR ranges whose X-Forwarded-For is believed',
  },
  'ws-allowed-origins': {
    type: 'string',
    default: '',
    help: 'comma-separated origins browser pages may connect from, * = any (none = same host name only)',
  },
  'tls-cert': { type: 'string', default: '', help: 'PEM certificate file: enables MQTT over TLS and WSS' },
  'tls-key': { type: 'string', default: '', help: 'PEM private key file for --tls-cert' },
  'tls-ca': { type: 'string', default: '', help: 'PEM CA bundle client certificates are checked against' },
  'tls-require-client-cert': {
    type: 'boolean',
    default: false,
    help: 'refuse TLS clients without a certificate signed by --tls-ca',
  },
  'tls-identity-as-username': {
    type: 'boolean',
    default: false,
    help: "on TLS/WSS the verified client certificate's CN is the user name; no certificate = refused",
  },
  'tls-port': {
    type: 'string',
    default: String(DEFAULTS.tlsPort),
    help: 'MQTT over TLS port, with --tls-cert (0 = disabled)',
  },
  'wss-port': {
    type: 'string',
    default: String(DEFAULTS.wssPort),
    help: 'MQTT over WSS port, with --tls-cert (0 = disabled)',
  },
  persistence: {
    type: 'string',
    default: 'level',
    help: 'where state is kept: level (LevelDB in --data-dir), memory, or a module path/package exporting a factory',
  },
  'data-dir': { type: 'string', default: './data', help: 'LevelDB directory for --persistence level' },
  sync: {
    type: 'boolean',
    default: false,
    help: 'fsync each write batch before acknowledging (survives power loss, slower)',
  },
  'log-level': {
    type: 'string',
    default: DEFAULTS.logLevel,
    help: 'fatal|error|warn|info|debug|trace|silent',
  },
  'max-inflight': {
    type: 'string',
    default: String(DEFAULTS.maxInflight),
    help: 'outbound QoS 1/2 messages in flight per client',
  },
  'max-queued': {
    type: 'string',
    default: String(DEFAULTS.maxQueued),
    help: 'messages queued in memory per connected client beyond the inflight window',
  },
  'max-queued-bytes': {
    type: 'string',
    default: String(DEFAULTS.maxQueuedBytes),
    help: 'bytes queued per client: in memory while connected, in persistence while offline',
  },
  'max-memory': {
    type: 'string',
    default: 'auto',
    help: 'bytes of queued message bodies broker-wide (auto = 75% of the memory the process may use)',
  },
  'queue-overflow': {
    type: 'string',
    default: DEFAULTS.queueOverflow,
    help: `what a full queue does with a QoS 1/2 message: ${QUEUE_OVERFLOW.join('|')}`,
  },
  'queue-overflow-by-client': {
    type: 'string',
    multiple: true,
    default: [],
    help: 'pattern=policy: the --queue-overflow policy of client ids matching pattern (* = any characters; first match wins; repeat)',
  },
  'stuck-timeout': {
    type: 'string',
    default: String(DEFAULTS.stuckTimeout),
    help: 'seconds a subscriber holding publishers back may make no progress (0 = forever)',
  },
  'receive-maximum': {
    type: 'string',
    default: String(DEFAULTS.receiveMaximum),
    help: 'inbound unacknowledged QoS 1/2 publishes allowed per client',
  },
  'max-packet-size': {
    type: 'string',
    default: String(DEFAULTS.maxPacketSize),
    help: 'largest accepted packet, bytes',
  },
  'max-keepalive': {
    type: 'string',
    default: String(DEFAULTS.maxKeepalive),
    help: 'largest keep-alive a client may use, seconds (0 = no limit)',
  },
  'connect-timeout': {
    type: 'string',
    default: String(DEFAULTS.connectTimeout),
    help: 'seconds a new connection may take to send CONNECT',
  },
  'hook-timeout': {
    type: 'string',
    default: String(DEFAULTS.hookTimeout),
    help: 'milliseconds an asynchronous plugin hook may take; later, it counts as a denial',
  },
  plugin: {
    type: 'string',
    multiple: true,
    default: [],
    help: 'path-or-package[:json options]: load a plugin (repeat the flag for more, set up in order)',
  },
  'max-topic-levels': {
    type: 'string',
    default: String(DEFAULTS.maxTopicLevels),
    help: 'levels a topic name or filter may have (more: refused with 0x90/0x8F)',
  },
  'max-topic-length': {
    type: 'string',
    default: String(DEFAULTS.maxTopicLength),
    help: 'UTF-8 bytes a topic name or filter may have (at most 65535)',
  },
  'topic-alias-maximum': {
    type: 'string',
    default: String(DEFAULTS.topicAliasMaximum),
    help: 'topic aliases a 5.0 client may set',
  },
  'share-strategy': {
    type: 'string',
    default: DEFAULTS.shareStrategy,
    help: `how a shared subscription group picks a member: ${SHARE_STRATEGIES.join('|')}`,
  },
  'share-group-strategy': {
    type: 'string',
    multiple: true,
    default: [],
    help: 'group=strategy: the strategy of one share name (repeat the flag for more groups)',
  },
  'share-queue-max': {
    type: 'string',
    default: String(DEFAULTS.shareQueueMax),
    help: 'messages a shared group holds waiting for a member with room',
  },
  'retry-base': {
    type: 'string',
    default: String(DEFAULTS.retryBase),
    help: 'ms before the first retry of a shared message a 5.0 member answered with a reason code >= 0x80',
  },
  'retry-factor': {
    type: 'string',
    default: String(DEFAULTS.retryFactor),
    help: 'each further retry waits this many times longer (>= 1)',
  },
  'retry-max-attempts': {
    type: 'string',
    default: String(DEFAULTS.retryMaxAttempts),
    help: 'delivery attempts of a failed shared message before $DLQ/<group>/<topic> (0 = discard at once)',
  },
  'dedup-window': {
    type: 'string',
    default: String(DEFAULTS.dedupWindow),
    help: 'seconds an idempotency-key user property is remembered per publisher and topic (0 = off)',
  },
  'dedup-max-keys': {
    type: 'string',
    default: String(DEFAULTS.dedupMaxKeys),
    help: 'idempotency keys remembered at most; beyond it the oldest is forgotten (0 = no limit)',
  },
  'max-connections': {
    type: 'string',
    default: String(DEFAULTS.maxConnections),
    help: 'clients connected at once; more are refused with CONNACK 0x97 / 3.1.1 0x03 (0 = no limit)',
  },
  'connect-rate': {
    type: 'string',
    default: String(DEFAULTS.connectRate),
    help: 'CONNECTs a second per source address, beyond --connect-burst: CONNACK 0x9F / 0x03 (0 = no limit)',
  },
  'connect-burst': {
    type: 'string',
    default: String(DEFAULTS.connectBurst),
    help: 'CONNECTs a source address may make at once before --connect-rate applies',
  },
  'max-publish-rate': {
    type: 'string',
    default: String(DEFAULTS.maxPublishRate),
    help: 'inbound PUBLISH packets a second per client; over it its socket is not read for a while (0 = no limit)',
  },
  'max-publish-bytes-rate': {
    type: 'string',
    default: String(DEFAULTS.maxPublishBytesRate),
    help: 'inbound PUBLISH bytes a second per client; over it its socket is not read for a while (0 = no limit)',
  },
  'max-client-id-length': {
    type: 'string',
    default: String(DEFAULTS.maxClientIdLength),
    help: 'longest client id, UTF-8 bytes; longer: CONNACK 0x85 / 0x02 (0 = no limit)',
  },
  'flapping-max-connects': {
    type: 'string',
    default: String(DEFAULTS.flappingMaxConnects),
    help: 'connects of one client id within --flapping-window beyond which it is banned (0 = off)',
  },
  'flapping-window': {
    type: 'string',
    default: String(DEFAULTS.flappingWindow),
    help: 'seconds over which the connects of a client id are counted',
  },
  'flapping-ban': {
    type: 'string',
    default: String(DEFAULTS.flappingBan),
    help: 'seconds a flapping client id is refused with CONNACK 0x8A / 0x05',
  },
  'max-session-expiry': {
    type: 'string',
    default: String(DEFAULTS.maxSessionExpiry),
    help: 'largest session expiry interval, seconds; 3.1.1 persistent sessions expire after it too (0 = no limit)',
  },
  'max-retained': {
    type: 'string',
    default: String(DEFAULTS.maxRetained),
    help: 'retained messages held at most (0 = no limit)',
  },
  'max-retained-bytes': {
    type: 'string',
    default: String(DEFAULTS.maxRetainedBytes),
    help: 'bytes (topic + payload) of retained messages held at most (0 = no limit)',
  },
  'max-shared-groups': {
    type: 'string',
    default: String(DEFAULTS.maxSharedGroups),
    help: 'shared subscription groups at most; a SUBSCRIBE creating one more gets 0x97 / 0x80 (0 = no limit)',
  },
  'max-shared-groups-per-client': {
    type: 'string',
    default: String(DEFAULTS.maxSharedGroupsPerClient),
    help: 'shared subscription groups one client may create (0 = no limit)',
  },
  'max-connect-size': {
    type: 'string',
    default: String(DEFAULTS.maxConnectSize),
    help: 'largest CONNECT, bytes: what a connection may buffer before CONNECT is complete',
  },
  'password-file': {
    type: 'string',
    default: '',
    help: 'Mosquitto password file (heron passwd writes one): clients must log in; reloaded on SIGHUP',
  },
  'scram-file': {
    type: 'string',
    default: '',
    help: 'SCRAM-SHA-256 credentials (heron scram-passwd writes them): MQTT 5.0 enhanced authentication; reloaded on SIGHUP',
  },
  'allow-anonymous': {
    type: 'string',
    default: 'auto',
    help: 'clients without a user name may connect: true, false, or auto (true unless authentication is configured)',
  },
  'sys-interval': {
    type: 'string',
    default: '10',
    help: 'seconds between $SYS topic updates (retained, Mosquitto names; 0 = no $SYS)',
  },
  'acl-file': {
    type: 'string',
    default: '',
    help: 'Mosquitto acl_file: what clients may read and write (what no rule grants is denied); reloaded on SIGHUP',
  },
  'jwt-secret': {
    type: 'string',
    default: '',
    help: 'HMAC secret: the jwt plugin verifies HS256/384/512 tokens given as the MQTT password',
  },
  'jwt-public-key': {
    type: 'string',
    default: '',
    help: 'PEM public key file (RSA or EC): the jwt plugin verifies RS*/PS*/ES* tokens',
  },
  'jwks-file': { type: 'string', default: '', help: 'JWKS file: the jwt plugin picks keys by kid/alg' },
  'jwt-username-claim': {
    type: 'string',
    default: 'sub',
    help: "claim the MQTT user name must equal when the token has it ('' = any user name)",
  },
  'jwt-acl-claim': {
    type: 'string',
    default: 'acl',
    help: 'claim with {pub, sub, all} topic lists (%u, %c substituted); without it: pass',
  },
  'http-auth-url': {
    type: 'string',
    default: '',
    help: 'http-auth plugin: POST each CONNECT (and, without --http-acl-url, publish/subscribe) here',
  },
  'http-acl-url': {
    type: 'string',
    default: '',
    help: "http-auth plugin: POST publish/subscribe authorization here ('none' = not asked; none given = --http-auth-url)",
  },
  'http-auth-timeout': {
    type: 'string',
    default: '3000',
    help: 'milliseconds an http-auth request may take; later it gets --http-auth-default',
  },
  'http-auth-cache-ttl': {
    type: 'string',
    default: '60',
    help: 'seconds an http-auth answer is cached (0 = no cache)',
  },
  'http-auth-default': {
    type: 'string',
    default: 'deny',
    help: 'what http-auth answers on a timeout, a network error or a non-200: deny|ignore',
  },
  config: {
    type: 'string',
    default: '',
    help: 'YAML configuration file (also HERON_CONFIG): every flag has a key; HERON_<KEY> env vars override it, flags override both',
  },
  'print-config': {
    type: 'boolean',
    default: false,
    help: 'print the effective configuration, each value with where it came from (default/file/env/flag), and exit',
  },
  help: { type: 'boolean', default: false, help: 'show this help' },
} as const;

export type FlagName = keyof typeof FLAGS;
/** What parseArgs gives for the flags given on the command line (absent: not given). */
export type GivenFlags = Partial<Record<FlagName, string | boolean | string[]>>;

/** Flags about the command line itself, with no configuration key. */
export const META_FLAGS: readonly FlagName[] = ['config', 'print-config', 'help'];

/** The configuration key of a flag: its camelCase name, but for the repeatable ones. */
export function flagKey(name: FlagName): string {
  if (name === 'plugin') return 'plugins';
  if (name === 'share-group-strategy') return 'shareGroups';
  return name.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}

export function usage(): string {
  const lines = [
    'Usage: heron [options]',
    '       heron --config heron.yaml [options]     (see README "Configuration")',
    '       heron --print-config [--config FILE] [options]',
    '       heron check-config FILE',
    '       heron passwd [-c] [-b] [-D] FILE USER [PASSWORD]',
    '       heron scram-passwd FILE USER PASSWORD',
    '',
    'Options:',
  ];
  for (const [name, f] of Object.entries(FLAGS)) {
    const d = f.default as string | boolean | readonly string[];
    const def = ` (default: ${f.type === 'boolean' ? 'off' : d === '' || Array.isArray(d) ? 'none' : d})`;
    lines.push(`  --${name.padEnd(29)} ${f.help}${def}`);
  }
  return lines.join('\n');
}

/** The flags given (no defaults filled in: the configuration layers need to know what was given). Throws on a bad one. */
export function parseFlags(args: string[]): GivenFlags {
  const options = Object.fromEntries(
    Object.entries(FLAGS).map(([k, f]) => [
      k,
      'multiple' in f ? { type: f.type, multiple: true } : { type: f.type },
    ]),
  );
  return parseArgs({ args, options: options as never, strict: true }).values as GivenFlags;
}
