/**
 * The configuration file (issue #12): `heron --config FILE`, HERON_<KEY> environment variables and
 * flags over it, --print-config, check-config, validation errors with line numbers, listeners
 * with their own allowAnonymous, SIGHUP reloads and queueOverflowByClient — all through the built
 * CLI as a child process, with real clients.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { IConnackPacket, IPublishPacket } from 'mqtt-packet';
import { beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { type LogLine, output, ROOT, run } from './cli-helpers.js';
import { connect, nextMessages, QUIET_CLI, RawClient } from './helpers.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'heron-config-'));
  return () => rmSync(dir, { recursive: true, force: true });
});
let n = 0;
/** Writes a file in the test directory; returns its path. */
function file(text: string, name = `heron-${++n}.yaml`): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

const BASE = 'host: 127.0.0.1\npersistence: memory\n';
/** A start without flags (the file says everything): only its own listeners. */
const listeningOn = (l: LogLine) => l.msg === 'listening';

// Each test runs the CLI several times: a loaded machine (two cores, many suites) needs the room.
describe('heron --config', { timeout: 45000 }, () => {
  it('precedence is default < file < env < flag, in --print-config and in behaviour', async () => {
    const path = file(`${BASE}port: 0\nwsPort: 0\nmaxQueued: 7\nmaxClientIdLength: 5\nmaxKeepalive: 10\n`);
    const env = { HERON_MAX_CLIENT_ID_LENGTH: '8', HERON_MAX_KEEPALIVE: '20' };
    const printed = await output(['--config', path, '--max-keepalive', '30', '--print-config'], { env });
    expect(printed.code).toBe(0);
    const lines = printed.stdout.split('\n');
    expect(lines).toContain(`maxQueued: 7 # file ${path}:5`);
    expect(lines).toContain('maxClientIdLength: 8 # env HERON_MAX_CLIENT_ID_LENGTH');
    expect(lines).toContain('maxKeepalive: 30 # flag --max-keepalive');
    expect(lines).toContain('maxInflight: 1000 # default');
    // What it prints is a configuration file itself, with the same values.
    const values = parseYaml(printed.stdout) as Record<string, unknown>;
    expect(values).toMatchObject({ maxQueued: 7, maxClientIdLength: 8, maxKeepalive: 30, host: '127.0.0.1' });
    const again = file(printed.stdout);
    expect((await output(['check-config', again])).code).toBe(0);
    const reprinted = await output(['--config', again, '--print-config']);
    expect(parseYaml(reprinted.stdout)).toEqual(values);

    const r = run(['--config', path, '--max-keepalive', '30'], { env });
    const { port } = await r.line((l) => l.msg === 'listening' && l.transport === 'tcp');
    // The environment's maxClientIdLength (8) beat the file's (5): 8 bytes in, 9 refused with
    // 0x85 Client Identifier not valid [MQTT-3.1.3-8].
    const ok = await RawClient.open(port as number, 5);
    ok.send({
      cmd: 'connect',
      protocolId: 'MQTT',
      protocolVersion: 5,
      clientId: 'abcdefgh',
      clean: true,
      keepalive: 60,
    });
    const ack = (await ok.next()) as IConnackPacket;
    expect(ack.reasonCode).toBe(0);
    // The flag's maxKeepalive (30) beat the environment's and the file's: the client is told to
    // use 30 s instead of its 60 [MQTT-3.2.2-21].
    expect(ack.properties?.serverKeepAlive).toBe(30);
    const long = await RawClient.open(port as number, 5);
    long.send({
      cmd: 'connect',
      protocolId: 'MQTT',
      protocolVersion: 5,
      clientId: 'abcdefghi',
      clean: true,
      keepalive: 0,
    });
    expect(((await long.next()) as IConnackPacket).reasonCode).toBe(0x85);
    r.child.kill('SIGTERM');
    expect((await r.done).code).toBe(0);
  });

  it('a bad file exits 1 naming each key with its line and what was expected, no stack trace; check-config agrees', async () => {
    const path = file(
      [
        'persistence: memory', // 1
        'maxQueud: 10', // 2: unknown key
        'listeners:', // 3
        '  - type: tcp', // 4
        '    port: 70000', // 5: bad port
        'maxInflight: lots', // 6: wrong type
        'shareGroups:', // 7
        '  jobs: { strategy: fifo }', // 8: bad value
      ].join('\n'),
    );
    const started = await output(['--config', path]);
    expect(started.code).toBe(1);
    expect(started.stdout).toBe(''); // nothing started, nothing logged
    expect(started.stderr.split('\n').filter(Boolean)).toEqual([
      `heron: ${path}, line 2: unknown key maxQueud (did you mean maxQueued?); expected one of the keys in README "Configuration"`,
      `heron: ${path}, line 5: listeners[0].port must be a port number (0-65535), got 70000`,
      `heron: ${path}, line 6: maxInflight must be a non-negative integer, got "lots"`,
      `heron: ${path}, line 8: shareGroups.jobs.strategy must be one of round-robin, least-inflight, hash-topic, hash-key, random, got "fifo"`,
    ]);
    expect(started.stderr).not.toMatch(/^\s+at /m);

    const checked = await output(['check-config', path]);
    expect(checked.code).toBe(1);
    expect(checked.stderr).toBe(started.stderr);
    const valid = await output(['check-config', join(ROOT, 'heron.example.yaml')]);
    expect(valid).toMatchObject({ code: 0, stderr: '' });
    expect(valid.stdout).toContain('configuration is valid');
  });

  it('YAML syntax, a missing file, a bad variable (exit 1) and a bad flag (exit 2) are told in one line each', async () => {
    // YAML that does not parse: its line too.
    const broken = await output(['check-config', file('port: 1883\nlisteners: [\n  {type: tcp\n')]);
    expect(broken.code).toBe(1);
    expect(broken.stderr).toMatch(/, line \d+: YAML: /);
    // A missing file, a bad variable (1), a bad port flag (2, as every bad flag).
    expect((await output(['check-config', join(dir, 'none.yaml')])).stderr).toMatch(
      /cannot read config file/,
    );
    const env = await output(['--print-config'], { env: { HERON_WS_PORT: 'x' } });
    expect(env.code).toBe(1);
    expect(env.stderr).toBe('heron: HERON_WS_PORT must be a non-negative integer, got "x"\n');
    // A HERON_* variable that is no key may be meant for something else: a warning, with a guess.
    const typo = await output(['--print-config'], { env: { HERON_MAX_QUEUD: '1' } });
    expect(typo.code).toBe(0);
    expect(typo.stderr).toBe(
      'heron: warning: environment variable HERON_MAX_QUEUD is no configuration key, ignored (did you mean HERON_MAX_QUEUED?)\n',
    );
    expect(typo.stdout).toContain('maxQueued: 1000 # default');
    const flag = await output(['--port', '70000', '--print-config']);
    expect(flag.code).toBe(2);
    expect(flag.stderr).toBe('heron: --port must be a port number (0-65535), got "70000"\n');
  });

  it('two listeners serve MQTT, each with its own allowAnonymous (per-listener settings)', async () => {
    const path = file(
      `${BASE}allowAnonymous: false
listeners:
  - { type: tcp, port: 0, name: open, allowAnonymous: true }
  - { type: ws, port: 0, name: closed }
`,
    );
    const r = run(['--config', path]);
    const open = await r.line((l) => listeningOn(l) && l.listener === 'open');
    const closed = await r.line((l) => listeningOn(l) && l.listener === 'closed');
    // With a list, the shorthand listeners (port 1883, wsPort 8083) are not started.
    expect(r.lines.filter(listeningOn).map((l) => [l.transport, l.listener])).toEqual([
      ['tcp', 'open'],
      ['ws', 'closed'],
    ]);
    const wsUrl = `ws://127.0.0.1:${closed.port}/mqtt`;
    // No user name: in on `open`, refused on `closed` with 0x87 Not authorized.
    const sub = await connect(`mqtt://127.0.0.1:${open.port}`, { protocolVersion: 5 });
    await expect(connect(wsUrl, { protocolVersion: 5 })).rejects.toThrow(/Not authorized/i);
    const pub = await connect(wsUrl, { protocolVersion: 5, username: 'named' });
    // One broker behind both: a message crosses from one listener to the other.
    await sub.subscribeAsync('l/#', { qos: 1 });
    const got = nextMessages(sub, 1);
    await pub.publishAsync('l/x', 'across listeners', { qos: 1 });
    expect((await got)[0]).toMatchObject({ topic: 'l/x', payload: 'across listeners' });
    r.child.kill('SIGTERM');
    expect((await r.done).code).toBe(0);
  });

  it('SIGHUP re-reads the file: log level, another ACL file and limits apply, what needs a restart is logged', async () => {
    const aclA = file('topic readwrite a/#\n', 'a.acl');
    const aclB = file('topic readwrite b/#\n', 'b.acl');
    const config = (body: string) => `${BASE}port: 0\nwsPort: 0\n${body}`;
    const path = file(config(`logLevel: info\naclFile: ${aclA}\nmaxPacketSize: 1048576\n`));
    const r = run(['--config', path]);
    const { port } = await r.line((l) => l.msg === 'listening');
    const url = `mqtt://127.0.0.1:${port}`;
    const before = await connect(url, { protocolVersion: 5 });
    expect((await before.subscribeAsync('a/x'))[0].qos).toBe(0);
    await expect(before.subscribeAsync('b/x')).rejects.toThrow('Not authorized');
    expect(r.lines.some((l) => l.level === 20)).toBe(false);

    writeFileSync(path, config(`logLevel: debug\naclFile: ${aclB}\nmaxPacketSize: 2048\nmaxQueued: 5\n`));
    r.child.kill('SIGHUP');
    const reloaded = await r.line((l) => l.msg === 'reloaded');
    expect(reloaded.changed).toEqual(['logLevel', 'maxQueued', 'aclFile']);
    const restart = await r.line((l) => l.level === 40 && Array.isArray(l.keys));
    expect(restart.keys).toEqual(['maxPacketSize']);
    expect(await r.line((l) => l.msg === 'acl file reloaded')).toMatchObject({ plugin: 'acl-file' });

    // The new rules apply at once (a subscription is checked when it is made) and debug lines appear.
    const after = await connect(url, { protocolVersion: 5, clientId: 'after-reload' });
    expect((await after.subscribeAsync('b/x'))[0].qos).toBe(0);
    await expect(after.subscribeAsync('a/x')).rejects.toThrow('Not authorized');
    await r.line((l) => l.level === 20 && l.msg === 'packet in' && l.clientId === 'after-reload');

    // A file with errors is not applied: logged with its line, the broker keeps serving.
    writeFileSync(path, config('logLevel: loud\n'));
    r.child.kill('SIGHUP');
    const refused = await r.line((l) => l.msg === 'configuration file not reloaded: it has errors');
    expect(refused.problems).toEqual([
      `${path}, line 5: logLevel must be one of fatal, error, warn, info, debug, trace, silent, got "loud"`,
    ]);
    expect((await after.subscribeAsync('b/y'))[0].qos).toBe(0);
    r.child.kill('SIGTERM');
    expect((await r.done).code).toBe(0);
  });

  it('queueOverflowByClient: sensor-* drops its oldest queued messages while other clients hold the publisher back', async () => {
    const path = file(
      `${BASE}port: 0
wsPort: 0
maxInflight: 1
maxQueued: 2
queueOverflowByClient:
  - { match: "sensor-*", policy: drop-oldest }
`,
    );
    const r = run(['--config', path]);
    const { port } = await r.line((l) => l.msg === 'listening');
    const subscriber = async (clientId: string, topic: string) => {
      const c = await RawClient.connected(port as number, 4, { clientId });
      c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos: 1 }] });
      await c.nextOf('suback');
      return c;
    };
    /** Takes n publishes, acknowledging each after it arrives. */
    const take = async (c: RawClient, count: number) => {
      const got: string[] = [];
      while (got.length < count) {
        const p = (await c.nextOf('publish')) as IPublishPacket;
        got.push(p.payload.toString());
        c.send({ cmd: 'puback', messageId: p.messageId });
      }
      return got;
    };
    const sensor = await subscriber('sensor-1', 't/sensor');
    const app = await subscriber('app-1', 't/app');
    const pub = await connect(`mqtt://127.0.0.1:${port}`);
    const six = ['m1', 'm2', 'm3', 'm4', 'm5', 'm6'];

    // sensor-1 takes one in flight and two queued: each further message drops the oldest queued,
    // and every publish is acknowledged at once (nothing holds the publisher back).
    for (const m of six) await pub.publishAsync('t/sensor', m, { qos: 1 });
    expect(await take(sensor, 3)).toEqual(['m1', 'm5', 'm6']);

    // app-1 has the default policy, backpressure: nothing is dropped; the publisher waits for it.
    const published = Promise.all(six.map((m) => pub.publishAsync('t/app', m, { qos: 1 })));
    expect(await take(app, 6)).toEqual(six);
    await published;
    r.child.kill('SIGTERM');
    expect((await r.done).code).toBe(0);
  });

  it('heron.example.yaml starts a broker; --help names --config, --print-config and check-config', async () => {
    const r = run(['--config', join(ROOT, 'heron.example.yaml'), ...QUIET_CLI]);
    const listening = await r.line((l) => l.msg === 'listening' && l.transport === 'tcp');
    expect(r.lines.find((l) => l.msg === 'configuration file read')?.file).toMatch(/heron\.example\.yaml$/);
    const c = await connect(`mqtt://127.0.0.1:${listening.port}`);
    await c.subscribeAsync('ex/#');
    const got = nextMessages(c, 1);
    await c.publishAsync('ex/t', 'from the example');
    expect((await got)[0].payload).toBe('from the example');
    r.child.kill('SIGTERM');
    expect((await r.done).code).toBe(0);

    // A secret is not printed with the rest.
    const secret = await output(['--print-config', '--jwt-secret', 's3cret']);
    expect(secret.stdout).toContain('jwtSecret: (hidden) # flag --jwt-secret');
    expect(secret.stdout).not.toContain('s3cret');

    const help = await output(['--help']);
    expect(help.stdout).toMatch(/^ {2}--config {2,}.*\(default: none\)$/m);
    expect(help.stdout).toMatch(/^ {2}--print-config {2,}.*\(default: off\)$/m);
    expect(help.stdout).toContain('heron check-config FILE');
  });
});
