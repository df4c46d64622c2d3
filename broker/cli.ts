#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { LevelPersistence } from '../persistence/level.js';
import { MemoryPersistence } from '../persistence/memory.js';
import aclFilePlugin from '../plugins/acl-file/index.js';
import type { PluginEntry } from '../plugins/api.js';
import { loadPlugin } from '../plugins/load.js';
import passwordFilePlugin from '../plugins/password-file/index.js';
import { passwdMain } from '../plugins/password-file/passwd-cli.js';
import { createBroker } from './broker.js';
import { createLogger } from './logger.js';
import { type BrokerOptions, DEFAULTS, QUEUE_OVERFLOW, type QueueOverflow } from './options.js';
import { SHARE_STRATEGIES, type ShareStrategy } from './shared/strategies.js';

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
    help: 'take WebSocket client addresses from X-Forwarded-For',
  },
  'tls-cert': { type: 'string', default: '', help: 'PEM certificate file: enables MQTT over TLS and WSS' },
  'tls-key': { type: 'string', default: '', help: 'PEM private key file for --tls-cert' },
  'tls-ca': { type: 'string', default: '', help: 'PEM CA bundle client certificates are checked against' },
  'tls-require-client-cert': {
    type: 'boolean',
    default: false,
    help: 'refuse TLS clients without a certificate signed by --tls-ca',
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
    help: 'where state is kept: level (LevelDB in --data-dir) or memory',
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
  help: { type: 'boolean', default: false, help: 'show this help' },
} as const;

function usage(): string {
  const lines = [
    'Usage: heron [options]',
    '       heron passwd [-c] [-b] [-D] FILE USER [PASSWORD]',
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
  const kind = s('persistence');
  if (kind !== 'level' && kind !== 'memory') {
    process.stderr.write(`heron: --persistence must be level or memory, got "${kind}"\n`);
    process.exit(2);
  }
  const anonymous = s('allow-anonymous');
  if (anonymous !== 'true' && anonymous !== 'false' && anonymous !== 'auto') {
    process.stderr.write(`heron: --allow-anonymous must be true, false or auto, got "${anonymous}"\n`);
    process.exit(2);
  }
  const persistence =
    kind === 'level'
      ? new LevelPersistence({ dir: s('data-dir'), sync: values.sync === true })
      : new MemoryPersistence();
  // The built-in plugins first: authentication and ACL apply before any --plugin's hooks.
  const plugins: PluginEntry[] = [];
  if (values['password-file']) plugins.push([passwordFilePlugin, { file: s('password-file') }]);
  if (values['acl-file']) plugins.push([aclFilePlugin, { file: s('acl-file') }]);
  for (const spec of values.plugin as string[]) {
    try {
      plugins.push(await loadPlugin(spec));
    } catch (err) {
      process.stderr.write(`heron: ${(err as Error).message}\n`);
      process.exit(2);
    }
  }
  const broker = createBroker({
    plugins,
    allowAnonymous: anonymous === 'auto' ? undefined : anonymous === 'true',
    hookTimeout: int('hook-timeout', s('hook-timeout')),
    port: int('port', s('port')),
    host: s('host') || undefined,
    wsPort: orNull(int('ws-port', s('ws-port'))),
    wsPath: s('ws-path'),
    wsTrustProxy: values['ws-trust-proxy'] === true,
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
else void main();
