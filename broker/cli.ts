#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { LevelPersistence } from '../persistence/level.js';
import { MemoryPersistence } from '../persistence/memory.js';
import type { Persistence } from '../persistence/types.js';
import aclFilePlugin from '../plugins/acl-file/index.js';
import type { PluginEntry } from '../plugins/api.js';
import { type HttpAuthOptions, default as httpAuthPlugin } from '../plugins/http-auth/index.js';
import { type JwtOptions, default as jwtPlugin } from '../plugins/jwt/index.js';
import { loadPlugin } from '../plugins/load.js';
import { loadPersistence } from '../plugins/load-persistence.js';
import passwordFilePlugin from '../plugins/password-file/index.js';
import { passwdMain } from '../plugins/password-file/passwd-cli.js';
import { scramPasswdMain } from '../plugins/scram/credentials.js';
import scramPlugin from '../plugins/scram/index.js';
import { createBroker } from './broker.js';
import { createLogger } from './logger.js';
import { type BrokerOptions, DEFAULTS, QUEUE_OVERFLOW, type QueueOverflow } from './options.js';
import { SHARE_STRATEGIES, type ShareStrategy } from './shared/strategies.js';
import { trustedProxies } from './transports/ws-checks.js';

/** Every flag, its default and its meaning: parsed from here and printed by --help. */
const FLAGS = {
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
  help: { type: 'boolean', default: false, help: 'show this help' },
} as const;

function usage(): string {
  const lines = [
    'Usage: heron [options]',
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

function int(name: string, value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) {
    process.stderr.write(`heron: --${name} must be a non-negative integer, got "${value}"\n`);
    process.exit(2);
  }
  return n;
}

async function main(): Promise<void> {
  let values: Record<string, string | boolean | string[] | undefined>;
  try {
    const options = Object.fromEntries(
      Object.entries(FLAGS).map(([k, f]) => [
        k,
        'multiple' in f
          ? { type: f.type, default: [...f.default], multiple: true }
          : { type: f.type, default: f.default },
      ]),
    );
    values = parseArgs({ options: options as never, strict: true }).values as typeof values;
  } catch (err) {
    process.stderr.write(`heron: ${(err as Error).message}\n\n${usage()}\n`);
    process.exit(2);
  }
  if (values.help) {
    process.stdout.write(`${usage()}\n`);
    return;
  }
  const s = (k: keyof typeof FLAGS) => String(values[k]);
  const log = createLogger(s('log-level'));
  if (Boolean(values['tls-cert']) !== Boolean(values['tls-key'])) {
    process.stderr.write('heron: --tls-cert and --tls-key go together\n');
    process.exit(2);
  }
  const orNull = (n: number) => (n === 0 ? null : n);
  const list = (v: string) =>
    v
      .split(',')
      .map((x) => x.trim())
      .filter(Boolean);
  const strategy = (flag: string, v: string): ShareStrategy => {
    if (!(SHARE_STRATEGIES as readonly string[]).includes(v)) {
      process.stderr.write(`heron: ${flag} must be one of ${SHARE_STRATEGIES.join(', ')}, got "${v}"\n`);
      process.exit(2);
    }
    return v as ShareStrategy;
  };
  const shareGroups: NonNullable<BrokerOptions['shareGroups']> = {};
  for (const spec of values['share-group-strategy'] as string[]) {
    const eq = spec.indexOf('=');
    if (eq <= 0) {
      process.stderr.write(`heron: --share-group-strategy takes group=strategy, got "${spec}"\n`);
      process.exit(2);
    }
    shareGroups[spec.slice(0, eq)] = { strategy: strategy('--share-group-strategy', spec.slice(eq + 1)) };
  }
  const retryFactor = Number(s('retry-factor'));
  if (!Number.isFinite(retryFactor) || retryFactor < 1) {
    process.stderr.write(`heron: --retry-factor must be a number >= 1, got "${s('retry-factor')}"\n`);
    process.exit(2);
  }
  const overflow = s('queue-overflow');
  if (!(QUEUE_OVERFLOW as readonly string[]).includes(overflow)) {
    process.stderr.write(
      `heron: --queue-overflow must be one of ${QUEUE_OVERFLOW.join(', ')}, got "${overflow}"\n`,
    );
    process.exit(2);
  }
  try {
    trustedProxies(list(s('ws-trusted-proxies')));
  } catch (err) {
    process.stderr.write(`heron: --ws-trusted-proxies: ${(err as Error).message}\n`);
    process.exit(2);
  }
  const kind = s('persistence');
  const anonymous = s('allow-anonymous');
  if (anonymous !== 'true' && anonymous !== 'false' && anonymous !== 'auto') {
    process.stderr.write(`heron: --allow-anonymous must be true, false or auto, got "${anonymous}"\n`);
    process.exit(2);
  }
  let persistence: Persistence;
  if (kind === 'level')
    persistence = new LevelPersistence({ dir: s('data-dir'), sync: values.sync === true });
  else if (kind === 'memory') persistence = new MemoryPersistence();
  else {
    try {
      persistence = await loadPersistence(kind, { dataDir: s('data-dir'), sync: values.sync === true });
    } catch (err) {
      process.stderr.write(`heron: ${(err as Error).message}\n`);
      process.exit(2);
    }
  }
  const plugins: PluginEntry[] = [];
  if (values['password-file']) plugins.push([passwordFilePlugin, { file: s('password-file') }]);
  if (values['scram-file']) plugins.push([scramPlugin, { file: s('scram-file') }]);
  for (const spec of values.plugin as string[]) {
    try {
      plugins.push(await loadPlugin(spec));
    } catch (err) {
      process.stderr.write(`heron: ${(err as Error).message}\n`);
      process.exit(2);
    }
  }
  if (values['jwt-secret'] || values['jwt-public-key'] || values['jwks-file']) {
    // Key files are read at setup: a missing or bad one fails the start.
    const options: JwtOptions = {
      secret: s('jwt-secret') || undefined,
      publicKeyFile: s('jwt-public-key') || undefined,
      jwksFile: s('jwks-file') || undefined,
      usernameClaim: s('jwt-username-claim'),
      aclClaim: s('jwt-acl-claim'),
    };
    plugins.push([jwtPlugin, options]);
  }
  if (values['http-auth-url']) {
    const fallback = s('http-auth-default');
    if (fallback !== 'deny' && fallback !== 'ignore') {
      process.stderr.write(`heron: --http-auth-default must be deny or ignore, got "${fallback}"\n`);
      process.exit(2);
    }
    const options: HttpAuthOptions = {
      url: s('http-auth-url'),
      aclUrl: s('http-acl-url') || undefined,
      timeout: int('http-auth-timeout', s('http-auth-timeout')),
      cacheTtl: int('http-auth-cache-ttl', s('http-auth-cache-ttl')),
      default: fallback,
    };
    plugins.push([httpAuthPlugin, options]);
  }
  // Last in the chains: the ACL file decides every check (what no rule grants is denied), so the
  // plugins before it (jwt's acl claim, http-auth) get their say first.
  if (values['acl-file']) plugins.push([aclFilePlugin, { file: s('acl-file') }]);
  const broker = createBroker({
    plugins,
    allowAnonymous: anonymous === 'auto' ? undefined : anonymous === 'true',
    hookTimeout: int('hook-timeout', s('hook-timeout')),
    port: int('port', s('port')),
    host: s('host') || undefined,
    wsPort: orNull(int('ws-port', s('ws-port'))),
    wsPath: s('ws-path'),
    wsTrustProxy: values['ws-trust-proxy'] === true,
    wsTrustedProxies: list(s('ws-trusted-proxies')),
    wsAllowedOrigins: s('ws-allowed-origins') ? list(s('ws-allowed-origins')) : undefined,
    tlsIdentityAsUsername: values['tls-identity-as-username'] === true,
    tls: values['tls-cert']
      ? {
          cert: s('tls-cert'),
          key: s('tls-key'),
          ca: s('tls-ca') || undefined,
          requireClientCert: values['tls-require-client-cert'] === true,
        }
      : undefined,
    tlsPort: orNull(int('tls-port', s('tls-port'))),
    wssPort: orNull(int('wss-port', s('wss-port'))),
    logger: log,
    persistence,
    maxInflight: int('max-inflight', s('max-inflight')),
    maxQueued: int('max-queued', s('max-queued')),
    maxQueuedBytes: int('max-queued-bytes', s('max-queued-bytes')),
    maxMemory: s('max-memory') === 'auto' ? undefined : int('max-memory', s('max-memory')),
    queueOverflow: overflow as QueueOverflow,
    stuckTimeout: int('stuck-timeout', s('stuck-timeout')),
    receiveMaximum: int('receive-maximum', s('receive-maximum')),
    maxPacketSize: int('max-packet-size', s('max-packet-size')),
    maxKeepalive: int('max-keepalive', s('max-keepalive')),
    connectTimeout: int('connect-timeout', s('connect-timeout')),
    topicAliasMaximum: int('topic-alias-maximum', s('topic-alias-maximum')),
    maxTopicLevels: int('max-topic-levels', s('max-topic-levels')),
    maxTopicLength: int('max-topic-length', s('max-topic-length')),
    shareStrategy: strategy('--share-strategy', s('share-strategy')),
    shareGroups,
    shareQueueMax: int('share-queue-max', s('share-queue-max')),
    retryBase: int('retry-base', s('retry-base')),
    retryFactor,
    retryMaxAttempts: int('retry-max-attempts', s('retry-max-attempts')),
    dedupWindow: int('dedup-window', s('dedup-window')),
    dedupMaxKeys: int('dedup-max-keys', s('dedup-max-keys')),
    maxConnections: int('max-connections', s('max-connections')),
    connectRate: int('connect-rate', s('connect-rate')),
    connectBurst: int('connect-burst', s('connect-burst')),
    maxPublishRate: int('max-publish-rate', s('max-publish-rate')),
    maxPublishBytesRate: int('max-publish-bytes-rate', s('max-publish-bytes-rate')),
    maxClientIdLength: int('max-client-id-length', s('max-client-id-length')),
    flappingMaxConnects: int('flapping-max-connects', s('flapping-max-connects')),
    flappingWindow: int('flapping-window', s('flapping-window')),
    flappingBan: int('flapping-ban', s('flapping-ban')),
    maxSessionExpiry: int('max-session-expiry', s('max-session-expiry')),
    maxRetained: int('max-retained', s('max-retained')),
    maxRetainedBytes: int('max-retained-bytes', s('max-retained-bytes')),
    maxSharedGroups: int('max-shared-groups', s('max-shared-groups')),
    maxSharedGroupsPerClient: int('max-shared-groups-per-client', s('max-shared-groups-per-client')),
    maxConnectSize: int('max-connect-size', s('max-connect-size')),
  });
  try {
    await broker.listen();
  } catch (err) {
    // A clear line on stderr too: a locked, corrupt or incompatible data dir is a user's problem.
    process.stderr.write(`heron: cannot start: ${(err as Error).message}\n`);
    log.fatal({ err }, 'cannot start');
    process.exitCode = 1;
    await broker.close().catch(() => undefined);
    return;
  }
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down');
    broker.close().then(
      () => process.exit(0),
      (err) => {
        log.error({ err }, 'error while shutting down');
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  // SIGHUP re-reads the plugins' files (password file, ACL); one that fails keeps its old content.
  process.on('SIGHUP', () => {
    broker.reload().then(
      () => log.info('reloaded'),
      (err) => log.error({ err }, 'reload incomplete; what failed keeps its previous configuration'),
    );
  });
}

if (process.argv[2] === 'passwd')
  passwdMain(process.argv.slice(3)).then((code) => {
    process.exitCode = code;
  });
else if (process.argv[2] === 'scram-passwd')
  scramPasswdMain(process.argv.slice(3)).then((code) => {
    process.exitCode = code;
  });
else void main();
