#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { createBroker } from './broker.js';
import { createLogger } from './logger.js';
import { DEFAULTS } from './options.js';

/** Every flag, its default and its meaning: parsed from here and printed by --help. */
const FLAGS = {
  port: { type: 'string', default: String(DEFAULTS.port), help: 'MQTT over TCP port (0 = any free port)' },
  host: { type: 'string', default: '', help: 'address to bind (default: all interfaces)' },
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
    help: 'messages queued per client beyond the inflight window',
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
  'topic-alias-maximum': {
    type: 'string',
    default: String(DEFAULTS.topicAliasMaximum),
    help: 'topic aliases a 5.0 client may set',
  },
  help: { type: 'boolean', default: false, help: 'show this help' },
} as const;

function usage(): string {
  const lines = ['Usage: heron [options]', '', 'Options:'];
  for (const [name, f] of Object.entries(FLAGS)) {
    const def = f.type === 'boolean' ? '' : ` (default: ${f.default === '' ? 'none' : f.default})`;
    lines.push(`  --${name.padEnd(22)} ${f.help}${def}`);
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
  let values: Record<string, string | boolean | undefined>;
  try {
    const options = Object.fromEntries(
      Object.entries(FLAGS).map(([k, f]) => [k, { type: f.type, default: f.default }]),
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
  const broker = createBroker({
    port: int('port', s('port')),
    host: s('host') || undefined,
    logger: log,
    maxInflight: int('max-inflight', s('max-inflight')),
    maxQueued: int('max-queued', s('max-queued')),
    receiveMaximum: int('receive-maximum', s('receive-maximum')),
    maxPacketSize: int('max-packet-size', s('max-packet-size')),
    maxKeepalive: int('max-keepalive', s('max-keepalive')),
    topicAliasMaximum: int('topic-alias-maximum', s('topic-alias-maximum')),
  });
  try {
    await broker.listen();
  } catch (err) {
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
}

void main();
