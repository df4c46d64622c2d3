/**
 * Mosquitto-compatible password files: files written by Debian's `mosquitto_passwd` are read by
 * Heron over real connections, files written by `heron passwd` (the built CLI) are read by a real
 * Mosquitto broker, and the command itself (-c, -b, -D, the prompt via stdin).
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import mqtt, { type IClientOptions } from 'mqtt';
import type { IConnackPacket } from 'mqtt-packet';
import { beforeAll, describe, expect, it } from 'vitest';
import passwordFilePlugin from '../plugins/password-file/index.js';
import {
  formatPasswordFile,
  PasswordFile,
  PasswordFileParseError,
  parsePasswordFile,
} from '../plugins/password-file/passwords.js';
import { connectPacket, onCleanup, QUIET_CLI, RawClient, startBroker } from './helpers.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const CLI = fileURLToPath(new URL('../dist/broker/cli.js', import.meta.url));

const haveMosquitto =
  spawnSync('sh', ['-c', 'command -v mosquitto && command -v mosquitto_passwd']).status === 0;
if (!haveMosquitto) {
  console.warn(
    'password-file.test.ts: mosquitto / mosquitto_passwd not installed (apt-get install mosquitto); ' +
      'the Mosquitto interoperability tests are skipped',
  );
}
const withMosquitto = haveMosquitto ? describe : describe.skip;

function tmp(): string {
  const dir = mkdtempSync(join(tmpdir(), 'heron-passwd-'));
  onCleanup(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function mosquittoPasswd(...args: string[]): void {
  const r = spawnSync('mosquitto_passwd', args, { encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
}

/** Runs `heron passwd ...` from the built CLI, with `input` on stdin (a pipe, not a TTY). */
function heronPasswd(args: string[], input = ''): Promise<{ code: number | null; stderr: string }> {
  const child = spawn(process.execPath, [CLI, 'passwd', ...args], {
    cwd: ROOT,
    stdio: ['pipe', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  child.stdin.end(input);
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stderr })));
}

/** The CONNACK a raw CONNECT gets. */
async function connack(port: number, version: 4 | 5, username?: string, password?: string): Promise<number> {
  const c = await RawClient.open(port, version);
  c.send(
    connectPacket(version, {
      clientId: `c-${version}`,
      username,
      password: password === undefined ? undefined : Buffer.from(password),
    }),
  );
  const ack = (await c.next()) as IConnackPacket;
  expect(ack.cmd).toBe('connack');
  return (version === 5 ? ack.reasonCode : ack.returnCode) as number;
}

const OK = { 4: 0, 5: 0 };
const BAD_CREDENTIALS = { 4: 0x04, 5: 0x86 };
const ANONYMOUS = { 4: 0x05, 5: 0x87 };

withMosquitto("files written by Debian's mosquitto_passwd are accepted by Heron", () => {
  let file: string;
  beforeAll(() => {
    const dir = mkdtempSync(join(tmpdir(), 'heron-mosq-'));
    file = join(dir, 'passwords');
    mosquittoPasswd('-c', '-b', file, 'alice', 'secret'); // $7$, Mosquitto 2.0's default
    mosquittoPasswd('-H', 'sha512', '-b', file, 'bob', 'hunter2'); // $6$, Mosquitto 1.6's
    return () => rmSync(dir, { recursive: true, force: true });
  });

  it('the file holds a $7$ entry with 101 iterations and a 12-byte salt, and a $6$ entry', () => {
    const parsed = parsePasswordFile(readFileSync(file, 'utf8'));
    expect(parsed.errors).toEqual([]);
    const alice = parsed.users.get('alice');
    expect(alice).toMatchObject({ kind: 'pbkdf2-sha512', iterations: 101 });
    expect(alice?.salt.length).toBe(12);
    expect(parsed.users.get('bob')?.kind).toBe('sha512');
    // Rewriting an untouched file gives it back byte for byte.
    expect(formatPasswordFile(parsed.lines)).toBe(readFileSync(file, 'utf8'));
  });

  for (const v of [4, 5] as const) {
    it(`v${v}: right passwords connect; wrong password and unknown user get ${BAD_CREDENTIALS[v]}, anonymous ${ANONYMOUS[v]}`, async () => {
      const { port } = await startBroker({ plugins: [[passwordFilePlugin, { file }]] });
      expect(await connack(port, v, 'alice', 'secret')).toBe(OK[v]);
      expect(await connack(port, v, 'bob', 'hunter2')).toBe(OK[v]);
      expect(await connack(port, v, 'alice', 'hunter2')).toBe(BAD_CREDENTIALS[v]);
      expect(await connack(port, v, 'bob', 'secret')).toBe(BAD_CREDENTIALS[v]);
      expect(await connack(port, v, 'mallory', 'secret')).toBe(BAD_CREDENTIALS[v]);
      expect(await connack(port, v, 'alice')).toBe(BAD_CREDENTIALS[v]); // user name, no password
      expect(await connack(port, v)).toBe(ANONYMOUS[v]);
    });
  }

  it('the CLI with --password-file: mqtt.js logs in; a wrong password and anonymous are refused', async () => {
    const child = spawn(process.execPath, [CLI, ...QUIET_CLI, '--password-file', file], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    onCleanup(() => child.kill('SIGKILL'));
    const port = await listeningPort(child);
    const url = `mqtt://127.0.0.1:${port}`;
    const ok = await mqttConnect(url, { username: 'alice', password: 'secret', protocolVersion: 5 });
    expect(ok).toBe('connected');
    expect(await mqttConnect(url, { username: 'alice', password: 'nope', protocolVersion: 5 })).toBe(0x86);
    expect(await mqttConnect(url, { protocolVersion: 4 })).toBe(0x05);
  });

  it('SIGHUP reloads --password-file; a file that fails to parse keeps the previous users', async () => {
    const dir = tmp();
    const pw = join(dir, 'passwords');
    writeFileSync(pw, readFileSync(file));
    const child = spawn(process.execPath, [CLI, ...QUIET_CLI, '--password-file', pw], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    onCleanup(() => child.kill('SIGKILL'));
    const logs = logLines(child);
    const url = `mqtt://127.0.0.1:${(await logs('listening')).port}`;
    expect(await mqttConnect(url, { username: 'carol', password: 'c', protocolVersion: 5 })).toBe(0x86);
    mosquittoPasswd('-b', pw, 'carol', 'c');
    child.kill('SIGHUP');
    expect((await logs('password file reloaded')).users).toBe(3);
    expect(await mqttConnect(url, { username: 'carol', password: 'c', protocolVersion: 5 })).toBe(
      'connected',
    );
    writeFileSync(pw, 'carol\n');
    child.kill('SIGHUP');
    const failed = await logs('password file not reloaded; keeping the previous one');
    expect(JSON.stringify(failed.err)).toContain('line 1');
    expect(await mqttConnect(url, { username: 'carol', password: 'c', protocolVersion: 4 })).toBe(
      'connected',
    );
  });
});

/** Waits for log lines by message, each awaited message seen once, in order. */
function logLines(child: ChildProcess): (msg: string) => Promise<Record<string, unknown>> {
  const seen: Record<string, unknown>[] = [];
  const waiters: (() => void)[] = [];
  createInterface({ input: child.stdout! }).on('line', (text) => {
    try {
      seen.push(JSON.parse(text));
    } catch {
      return;
    }
    for (const w of waiters.splice(0)) w();
  });
  let from = 0;
  return async (msg) => {
    for (;;) {
      const i = seen.findIndex((l, k) => k >= from && l.msg === msg);
      if (i >= 0) {
        from = i + 1;
        return seen[i];
      }
      await new Promise<void>((r) => waiters.push(r));
    }
  };
}

function listeningPort(child: ChildProcess): Promise<number> {
  return new Promise((resolve, reject) => {
    let err = '';
    child.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
    });
    createInterface({ input: child.stdout! }).on('line', (text) => {
      try {
        const l = JSON.parse(text);
        if (l.msg === 'listening' && l.transport === 'tcp') resolve(l.port);
      } catch {
        // not a log line
      }
    });
    child.on('exit', (code) => reject(new Error(`exited ${code}: ${err}`)));
  });
}

/** 'connected', or the CONNACK code of the refusal. */
async function mqttConnect(url: string, opts: IClientOptions): Promise<'connected' | number> {
  try {
    const c = await mqtt.connectAsync(url, { reconnectPeriod: 0, connectTimeout: 5000, ...opts });
    await c.endAsync();
    return 'connected';
  } catch (err) {
    const code = (err as { code?: number }).code;
    if (typeof code !== 'number') throw err;
    return code;
  }
}

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as { port: number };
  await new Promise((r) => srv.close(r));
  return port;
}

/** A real Mosquitto on 127.0.0.1 requiring the password file; resolves with its URL once running. */
async function startMosquitto(passwordFile: string): Promise<string> {
  const dir = tmp();
  const port = await freePort();
  const conf = join(dir, 'mosquitto.conf');
  writeFileSync(
    conf,
    [
      `listener ${port} 127.0.0.1`,
      'allow_anonymous false',
      `password_file ${passwordFile}`,
      // Run as root, Mosquitto switches to this user: keep ours, which can read the 0600 file.
      `user ${userInfo().username}`,
      'log_dest stderr',
      '',
    ].join('\n'),
  );
  const child = spawn('mosquitto', ['-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
  onCleanup(() => {
    child.kill('SIGTERM');
    return new Promise((r) => child.once('close', r));
  });
  await new Promise<void>((resolve, reject) => {
    let err = '';
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString();
      if (/mosquitto version \S+ running/.test(err)) resolve();
    });
    child.on('exit', (code) => reject(new Error(`mosquitto exited ${code}: ${err}`)));
  });
  return `mqtt://127.0.0.1:${port}`;
}

withMosquitto('files written by heron passwd are accepted by a real Mosquitto', () => {
  it('-c -b and the stdin prompt write $7$ entries Mosquitto accepts over 3.1.1 and 5.0; wrong passwords refused', async () => {
    const file = join(tmp(), 'passwords');
    expect((await heronPasswd(['-c', '-b', file, 'alice', 'secret'])).code).toBe(0);
    expect((await heronPasswd([file, 'carol'], 'pa ss:wörd\npa ss:wörd\n')).code).toBe(0);
    const text = readFileSync(file, 'utf8');
    expect(text).toMatch(/^alice:\$7\$101\$[A-Za-z0-9+/]{16}\$[A-Za-z0-9+/]{86}==\ncarol:\$7\$101\$/);
    const url = await startMosquitto(file);
    for (const protocolVersion of [4, 5] as const) {
      expect(await mqttConnect(url, { username: 'alice', password: 'secret', protocolVersion })).toBe(
        'connected',
      );
      expect(await mqttConnect(url, { username: 'carol', password: 'pa ss:wörd', protocolVersion })).toBe(
        'connected',
      );
      // Mosquitto 2.0 refuses a wrong password as "not authorized": 0x87 (5.0) / 0x05 (3.1.1).
      expect(await mqttConnect(url, { username: 'alice', password: 'secreT', protocolVersion })).toBe(
        protocolVersion === 5 ? 0x87 : 0x05,
      );
    }
  });
});

describe('heron passwd', () => {
  it('-c creates the file with mode 0600 (overwriting one that exists); -b adds and replaces users', async () => {
    const file = join(tmp(), 'passwords');
    writeFileSync(file, 'old:$6$AAAA$BBBB\n', { mode: 0o644 });
    expect((await heronPasswd(['-c', '-b', file, 'alice', 'secret'])).code).toBe(0);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect((await heronPasswd(['-b', file, 'bob', 'b0b'])).code).toBe(0);
    const before = parsePasswordFile(readFileSync(file, 'utf8')).users;
    expect([...before.keys()]).toEqual(['alice', 'bob']);
    expect((await heronPasswd(['-b', file, 'alice', 'changed'])).code).toBe(0);
    const pf = await PasswordFile.open(file);
    expect(await pf.check('alice', 'changed')).toBe(true);
    expect(await pf.check('alice', 'secret')).toBe(false);
    expect(await pf.check('bob', Buffer.from('b0b'))).toBe(true);
  });

  it('keeps comments and blank lines, and sets mode 0600 on an existing file', async () => {
    const file = join(tmp(), 'passwords');
    const first = await heronPasswd(['-c', '-b', file, 'alice', 'secret']);
    expect(first.code).toBe(0);
    const alice = readFileSync(file, 'utf8');
    writeFileSync(file, `# devices\n\n${alice}# end\n`);
    chmodSync(file, 0o644);
    expect((await heronPasswd(['-b', file, 'bob', 'x'])).code).toBe(0);
    const lines = readFileSync(file, 'utf8').split('\n');
    expect(lines.slice(0, 3)).toEqual(['# devices', '', alice.trimEnd()]);
    expect(lines[3]).toBe('# end');
    expect(lines[4]).toMatch(/^bob:\$7\$/);
    expect(statSync(file).mode & 0o777).toBe(0o600);
  });

  it('-D deletes a user and only that user; an unknown user is an error', async () => {
    const file = join(tmp(), 'passwords');
    await heronPasswd(['-c', '-b', file, 'alice', 'a']);
    await heronPasswd(['-b', file, 'bob', 'b']);
    expect((await heronPasswd(['-D', file, 'alice'])).code).toBe(0);
    const pf = await PasswordFile.open(file);
    expect(pf.has('alice')).toBe(false);
    expect(await pf.check('bob', 'b')).toBe(true);
    const again = await heronPasswd(['-D', file, 'alice']);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain('user alice not in');
  });

  it('the prompt via stdin: two equal lines set the password; two different lines are refused', async () => {
    const file = join(tmp(), 'passwords');
    await heronPasswd(['-c', '-b', file, 'alice', 'a']);
    expect((await heronPasswd([file, 'bob'], 'typed\ntyped\n')).code).toBe(0);
    expect(await (await PasswordFile.open(file)).check('bob', 'typed')).toBe(true);
    const before = readFileSync(file, 'utf8');
    const mismatch = await heronPasswd([file, 'bob'], 'one\ntwo\n');
    expect(mismatch.code).toBe(1);
    expect(mismatch.stderr).toContain('passwords do not match');
    const short = await heronPasswd([file, 'carol'], 'only one\n');
    expect(short.code).toBe(1);
    expect(readFileSync(file, 'utf8')).toBe(before);
  });

  it('usage errors exit 2: no -c on a missing file exits 1; bad user names, -c with -D, missing password', async () => {
    const dir = tmp();
    const missing = await heronPasswd(['-b', join(dir, 'nope'), 'a', 'b']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('use -c');
    for (const args of [
      ['-c', '-D', join(dir, 'f'), 'a'],
      ['-b', join(dir, 'f'), 'a'],
      ['-c', '-b', join(dir, 'f'), 'a:b', 'p'],
      ['-x', join(dir, 'f'), 'a'],
    ]) {
      const r = await heronPasswd(args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr).toContain('Usage: heron passwd');
    }
  });
});

describe('PasswordFile', () => {
  it('reports malformed lines with their line number', () => {
    const { errors, users } = parsePasswordFile(
      ['# ok', 'plain:secret', 'nocolon', 'x:$7$0$AAAA$AAAA', 'y:$5$AAAA$AAAA', 'z:$7$101$!!$AAAA'].join(
        '\n',
      ),
    );
    expect(users.size).toBe(0);
    expect(errors.map((e) => e.line)).toEqual([2, 3, 4, 5, 6]);
    expect(errors[0].message).toContain('plain');
  });

  it('a reload that fails to parse throws with the line and keeps the users loaded before', async () => {
    const file = join(tmp(), 'passwords');
    await heronPasswd(['-c', '-b', file, 'alice', 'secret']);
    const pf = await PasswordFile.open(file);
    writeFileSync(file, `${readFileSync(file, 'utf8')}\nbroken line\n`);
    const err = await pf.reload().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PasswordFileParseError);
    expect((err as PasswordFileParseError).errors).toEqual([{ line: 3, message: 'expected user:hash' }]);
    expect(await pf.check('alice', 'secret')).toBe(true);
    // Fixed again, the reload takes the new contents.
    await heronPasswd(['-c', '-b', file, 'bob', 'b']);
    await pf.reload();
    expect(pf.has('alice')).toBe(false);
    expect(await pf.check('bob', 'b')).toBe(true);
  });
});
