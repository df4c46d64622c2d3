/**
 * The command line entry point, run as a child process from the built output (the test command
 * builds with `tsc` before vitest runs): flags, the pino JSON log on stdout, a real client
 * session, and a clean SIGTERM shutdown.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SignJWT } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import { DEFAULTS } from '../broker/options.js';
import { CLI, output, run } from './cli-helpers.js';
import { connect, connectPacket, nextMessages, onCleanup, once, QUIET_CLI, RawClient } from './helpers.js';

const SOURCE = fileURLToPath(new URL('../broker/cli/flags.ts', import.meta.url));

/** Every flag FLAGS declares in broker/cli.ts (its top-level keys). */
function declaredFlags(): string[] {
  const src = readFileSync(SOURCE, 'utf8');
  const block = src.slice(src.indexOf('const FLAGS = {'), src.indexOf('} as const;'));
  return [...block.matchAll(/^ {2}'?([a-z][a-z-]*)'?: \{/gm)].map((m) => m[1]);
}

beforeAll(() => {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: build first with "npx tsc -p tsconfig.json"`);
});

describe('heron CLI', () => {
  it('--port 0 binds a free port, logs it, serves clients and shuts down cleanly on SIGTERM', async () => {
    // --ws-port 0 disables the WebSocket listener, which otherwise takes the fixed port 8083.
    // The default backend is LevelDB: give it a directory of its own.
    const dataDir = mkdtempSync(join(tmpdir(), 'heron-cli-'));
    onCleanup(() => rmSync(dataDir, { recursive: true, force: true }));
    const r = run(['--port', '0', '--host', '127.0.0.1', '--ws-port', '0', '--data-dir', dataDir]);
    const listening = await r.line((l) => l.msg === 'listening' && l.transport === 'tcp');
    expect(listening).toMatchObject({ level: 30, name: 'heron', host: '127.0.0.1' });
    const port = listening.port as number;
    expect(Number.isInteger(port) && port > 0).toBe(true);
    expect(r.lines.filter((l) => l.msg === 'listening').map((l) => l.transport)).toEqual(['tcp']);

    const url = `mqtt://127.0.0.1:${port}`;
    const sub = await connect(url, { protocolVersion: 5, clientId: 'cli-sub' });
    const pub = await connect(url, { clientId: 'cli-pub' });
    await r.line((l) => l.msg === 'client connected' && l.clientId === 'cli-pub');
    await sub.subscribeAsync('cli/+', { qos: 1 });
    const got = nextMessages(sub, 1);
    await pub.publishAsync('cli/test', 'through the CLI', { qos: 1 });
    expect((await got)[0]).toMatchObject({ topic: 'cli/test', payload: 'through the CLI' });

    // The 5.0 client is told why it is disconnected: 0x8B Server shutting down.
    const told = new Promise<{ reasonCode?: number }>((resolve) => sub.once('disconnect', resolve));
    r.child.kill('SIGTERM');
    expect((await told).reasonCode).toBe(0x8b);
    const exit = await r.done;
    expect(exit).toEqual({ code: 0, signal: null });
    expect(r.lines.find((l) => l.msg === 'shutting down')).toMatchObject({ level: 30, signal: 'SIGTERM' });
    // Nothing at warn level or above, and nothing on stderr.
    expect(r.lines.filter((l) => l.level >= 40)).toEqual([]);
    expect(r.stderr()).toBe('');

    // The port is released.
    const probe = netConnect(port, '127.0.0.1');
    onCleanup(() => probe.destroy());
    const err = await once<NodeJS.ErrnoException>(probe, 'error');
    expect(err.code).toBe('ECONNREFUSED');
  });

  it('--plugin loads a module by path with JSON options (set up before listening); a bad one exits 2', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'heron-cli-plugin-'));
    onCleanup(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'deny.mjs');
    writeFileSync(
      file,
      `export default {
  name: 'deny',
  setup(api, options) {
    api.log.info({ topic: options.topic }, 'deny plugin ready');
    api.addHooks({ authorizeSubscribe: (client, filter) => (filter === options.topic ? 'deny' : 'pass') });
  },
};
`,
    );
    const r = run([...QUIET_CLI, '--plugin', `${file}:{"topic":"secret/#"}`]);
    const listening = await r.line((l) => l.msg === 'listening');
    const ready = r.lines.findIndex((l) => l.msg === 'deny plugin ready');
    expect(r.lines[ready]).toMatchObject({ plugin: 'deny', topic: 'secret/#' });
    expect(ready).toBeLessThan(r.lines.indexOf(listening));
    const c = await connect(`mqtt://127.0.0.1:${listening.port}`, { protocolVersion: 5 });
    // 5.0 SUBACK 0x87, which mqtt.js reports as an error.
    await expect(c.subscribeAsync('secret/#')).rejects.toThrow('Not authorized');
    expect((await c.subscribeAsync('open/#'))[0].qos).toBe(0);
    r.child.kill('SIGTERM');
    expect((await r.done).code).toBe(0);

    const bad = await output(['--port', '0', '--plugin', join(dir, 'missing.mjs')]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--plugin .*missing\.mjs: cannot load/);
  });

  it('--persistence <module> loads a backend factory with --data-dir and --sync; a wrong one exits 2 (#10)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'heron-cli-persist-'));
    onCleanup(() => rmSync(dir, { recursive: true, force: true }));
    const memory = new URL('../dist/persistence/memory.js', import.meta.url).href;
    const file = join(dir, 'store.mjs');
    writeFileSync(
      file,
      `import { MemoryPersistence } from ${JSON.stringify(memory)};
export default (options) => {
  console.log(JSON.stringify({ msg: 'store made', ...options }));
  return new MemoryPersistence();
};
`,
    );
    const r = run([
      '--port',
      '0',
      '--host',
      '127.0.0.1',
      '--ws-port',
      '0',
      '--persistence',
      file,
      '--data-dir',
      dir,
      '--sync',
    ]);
    const listening = await r.line((l) => l.msg === 'listening');
    expect(r.lines.find((l) => l.msg === 'store made')).toMatchObject({ dataDir: dir, sync: true });
    const c = await connect(`mqtt://127.0.0.1:${listening.port}`);
    await c.subscribeAsync('p/t', { qos: 1 });
    const got = nextMessages(c, 1);
    await c.publishAsync('p/t', 'stored', { qos: 1 });
    expect((await got)[0].payload).toBe('stored');
    r.child.kill('SIGTERM');
    expect((await r.done).code).toBe(0);

    writeFileSync(join(dir, 'bad.mjs'), 'export default () => ({ open() {} });\n');
    const bad = await output(['--port', '0', '--persistence', join(dir, 'bad.mjs')]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--persistence .*bad\.mjs: the factory's result lacks close/);
  });

  it('--jwt-secret loads the jwt plugin; a missing key file exits 1, a bad --http-auth-default 2', async () => {
    const r = run([...QUIET_CLI, '--jwt-secret', 'k']);
    const listening = await r.line((l) => l.msg === 'listening');
    const sign = (key: string) =>
      new SignJWT({ sub: 'u' }).setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode(key));
    const url = `mqtt://127.0.0.1:${listening.port}`;
    const ok = await connect(url, { protocolVersion: 5, username: 'u', password: await sign('k') });
    expect(ok.connected).toBe(true);
    await expect(
      connect(url, { protocolVersion: 5, username: 'u', password: await sign('not k') }),
    ).rejects.toThrow(/Bad User Name or Password/i);
    r.child.kill('SIGTERM');
    expect((await r.done).code).toBe(0);

    const missing = await output([
      '--port',
      '0',
      '--ws-port',
      '0',
      '--persistence',
      'memory',
      '--jwt-public-key',
      '/nonexistent.pem',
    ]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/plugin jwt: setup failed/);
    const bad = await output([
      '--port',
      '0',
      '--http-auth-url',
      'http://127.0.0.1:1/',
      '--http-auth-default',
      'allow',
    ]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--http-auth-default must be deny or ignore/);
  });

  it('a second broker on a data dir in use exits 1 with a clear message and leaves the data alone', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'heron-cli-'));
    onCleanup(() => rmSync(dataDir, { recursive: true, force: true }));
    const args = ['--port', '0', '--host', '127.0.0.1', '--ws-port', '0', '--data-dir', dataDir];
    const first = run(args);
    const listening = await first.line((l) => l.msg === 'listening');
    // Something stored by the first broker, to find again afterwards.
    const c = await connect(`mqtt://127.0.0.1:${listening.port}`);
    await c.publishAsync('kept/topic', 'still here', { qos: 1, retain: true });

    const second = run(args);
    const { code } = await second.done;
    expect(code).toBe(1);
    expect(second.stderr()).toMatch(/cannot start: data dir .* is locked/);

    // The first broker still serves, with its data.
    const fresh = await connect(`mqtt://127.0.0.1:${listening.port}`);
    const got = nextMessages(fresh, 1);
    await fresh.subscribeAsync('kept/#');
    expect((await got)[0].payload).toBe('still here');
  });

  it('--help prints every flag with its default and exits 0', async () => {
    const { code, stdout, stderr } = await output(['--help']);
    expect(code).toBe(0);
    expect(stderr).toBe('');
    expect(stdout).toMatch(/^Usage: heron \[options\]/);
    const printed = new Map<string, string>();
    for (const m of stdout.matchAll(/^ {2}--([a-z-]+) .*\(default: ([^)]*)\)$/gm)) printed.set(m[1], m[2]);
    const optionLines = stdout.split('\n').filter((l) => l.startsWith('  --'));
    // Every option line carries a default, and every declared flag is printed.
    expect(optionLines.length).toBe(printed.size);
    expect([...printed.keys()].sort()).toEqual(declaredFlags().sort());
    expect(Object.fromEntries(printed)).toMatchObject({
      port: String(DEFAULTS.port),
      host: 'none',
      'ws-port': String(DEFAULTS.wsPort),
      'ws-path': DEFAULTS.wsPath,
      'tls-port': String(DEFAULTS.tlsPort),
      'wss-port': String(DEFAULTS.wssPort),
      'log-level': DEFAULTS.logLevel,
      persistence: 'level',
      'data-dir': './data',
      sync: 'off',
      'max-inflight': String(DEFAULTS.maxInflight),
      'max-queued': String(DEFAULTS.maxQueued),
      'receive-maximum': String(DEFAULTS.receiveMaximum),
      'max-packet-size': String(DEFAULTS.maxPacketSize),
      'max-keepalive': String(DEFAULTS.maxKeepalive),
      'topic-alias-maximum': String(DEFAULTS.topicAliasMaximum),
      'share-strategy': 'round-robin',
      'share-group-strategy': 'none',
      'share-queue-max': String(DEFAULTS.shareQueueMax),
      'retry-base': String(DEFAULTS.retryBase),
      'retry-factor': String(DEFAULTS.retryFactor),
      'retry-max-attempts': String(DEFAULTS.retryMaxAttempts),
      'dedup-window': String(DEFAULTS.dedupWindow),
      help: 'off',
    });
  });

  it('an unknown flag exits 2 with a message and the usage, without starting', async () => {
    const { code, stdout, stderr } = await output(['--port', '0', '--ws-port', '0', '--no-such-flag']);
    expect(code).toBe(2);
    expect(stdout).toBe('');
    expect(stderr).toMatch(/^heron: .*'--no-such-flag'/);
    expect(stderr).toContain('Usage: heron [options]');
  });

  it('job distribution flags: a bad strategy or group=strategy spec exits 2 with a message', async () => {
    const bad = await output(['--port', '0', '--ws-port', '0', '--share-strategy', 'fifo']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--share-strategy must be one of round-robin, least-inflight');
    const spec = await output(['--port', '0', '--ws-port', '0', '--share-group-strategy', 'hash-key']);
    expect(spec.code).toBe(2);
    expect(spec.stderr).toContain('--share-group-strategy takes group=strategy, got "hash-key"');
    const factor = await output(['--port', '0', '--ws-port', '0', '--retry-factor', '0.5']);
    expect(factor.code).toBe(2);
    expect(factor.stderr).toContain('--retry-factor must be a number >= 1');
  });

  it('--allow-anonymous false refuses a client without a user name (CONNACK 0x87); a bad value exits 2', async () => {
    const r = run([...QUIET_CLI, '--allow-anonymous', 'false']);
    const { port } = await r.line((l) => l.msg === 'listening' && l.transport === 'tcp');
    const url = `mqtt://127.0.0.1:${port}`;
    await expect(connect(url, { protocolVersion: 5 })).rejects.toThrow(/Not authorized/i);
    const named = await connect(url, { protocolVersion: 5, username: 'someone' });
    expect(named.connected).toBe(true);
    const bad = await output(['--port', '0', '--ws-port', '0', '--allow-anonymous', 'yes']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--allow-anonymous must be true, false or auto, got "yes"');
  });

  it('a non-numeric port exits 2 with a message', async () => {
    const { code, stderr } = await output(['--port', 'abc', '--ws-port', '0']);
    expect(code).toBe(2);
    expect(stderr).toContain('--port must be a non-negative integer, got "abc"');
  });
  it('heron scram-passwd writes salted keys; --scram-file offers SCRAM-SHA-256 and refuses plain clients', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'heron-cli-scram-'));
    onCleanup(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'scram');
    const made = await output(['scram-passwd', file, 'alice', 'wonderland']);
    expect(made.code).toBe(0);
    const text = readFileSync(file, 'utf8');
    expect(text).toMatch(/^alice:scram-sha-256:4096:/);
    expect(text).not.toContain('wonderland');
    expect((await output(['scram-passwd', file])).code).toBe(2);

    const r = run([...QUIET_CLI, '--scram-file', file]);
    const listening = await r.line((l) => l.msg === 'listening');
    expect((await r.line((l) => l.msg === 'SCRAM credentials loaded')).users).toBe(1);
    const c = await RawClient.open(listening.port as number, 5);
    c.send(
      connectPacket(5, {
        properties: {
          authenticationMethod: 'SCRAM-SHA-256',
          authenticationData: Buffer.from('n,,n=alice,r=abc'),
        },
      }),
    );
    // The server-first-message: the method is on.
    const challenge = await c.next();
    expect([challenge?.cmd, (challenge as { reasonCode?: number })?.reasonCode]).toEqual(['auth', 0x18]);
    await expect(connect(`mqtt://127.0.0.1:${listening.port}`, { protocolVersion: 5 })).rejects.toThrow(
      /Not authorized/i,
    );
    r.child.kill('SIGTERM');
    expect((await r.done).code).toBe(0);
  });
});
