import assert from 'node:assert/strict';
import { pbkdf2Sync, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { IAuthPacket, IConnackPacket, IDisconnectPacket, Packet } from 'mqtt-packet';
import { describe, expect, it } from 'vitest';
import { definePlugin } from '../plugins/api.js';
import { hmac, parseScramFile, setScramUser, sha256 } from '../plugins/scram/credentials.js';
import scramPlugin from '../plugins/scram/index.js';
import { connect, connectPacket, nextMessages, onCleanup, RawClient, startBroker } from './helpers.js';

const M = 'SCRAM-SHA-256';

async function credentialsFile(users: Record<string, string>): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'heron-scram-'));
  onCleanup(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'scram');
  for (const [u, p] of Object.entries(users)) await setScramUser(file, u, p);
  return file;
}

async function scramBroker(opts: Parameters<typeof startBroker>[0] = {}) {
  const file = await credentialsFile({ alice: 'wonderland', 'b,o=b': 'builder' });
  return startBroker({ plugins: [[scramPlugin, { file }]], ...opts });
}

/** The client side of SCRAM-SHA-256 (RFC 5802 section 3), written for the test. */
function scramClient(user: string, password: string) {
  const cnonce = randomBytes(18).toString('base64');
  const bare = `n=${user.replace(/=/g, '=3D').replace(/,/g, '=2C')},r=${cnonce}`;
  let authMessage = '';
  let salted = Buffer.alloc(0);
  return {
    first: () => Buffer.from(`n,,${bare}`),
    final(serverFirst: Buffer): Buffer {
      const sf = serverFirst.toString();
      const m = /^r=([^,]+),s=([^,]+),i=(\d+)$/.exec(sf);
      assert.ok(m, `server-first-message: ${sf}`);
      assert.ok(m[1].startsWith(cnonce) && m[1].length > cnonce.length, 'the server extends our nonce');
      salted = pbkdf2Sync(password, Buffer.from(m[2], 'base64'), Number(m[3]), 32, 'sha256');
      const withoutProof = `c=biws,r=${m[1]}`;
      authMessage = `${bare},${sf},${withoutProof}`;
      const clientKey = hmac(salted, 'Client Key');
      const signature = hmac(sha256(clientKey), authMessage);
      const proof = Buffer.alloc(32);
      for (let i = 0; i < 32; i++) proof[i] = clientKey[i] ^ signature[i];
      return Buffer.from(`${withoutProof},p=${proof.toString('base64')}`);
    },
    /** Checks server-final-message: the server knew ServerKey. */
    verify(serverFinal: Buffer | undefined): boolean {
      const expected = hmac(hmac(salted, 'Server Key'), authMessage).toString('base64');
      return serverFinal?.toString() === `v=${expected}`;
    },
  };
}

const auth = (reasonCode: number, data?: Buffer, method = M): Packet =>
  ({
    cmd: 'auth',
    reasonCode,
    properties: { authenticationMethod: method, ...(data && { authenticationData: data }) },
  }) as Packet;

function connectWith(method: string, data?: Buffer, fields = {}): Packet {
  return connectPacket(5, {
    properties: { authenticationMethod: method, ...(data && { authenticationData: data }) },
    ...fields,
  });
}

/** CONNECT with SCRAM through AUTH 0x18 to the final CONNACK; the client and the CONNACK. */
async function scramConnect(port: number, user: string, password: string, login = password) {
  const c = await RawClient.open(port, 5);
  const s = scramClient(user, login);
  c.send(connectWith(M, s.first()));
  const challenge = (await c.next()) as IAuthPacket;
  // The server asks to continue, naming the CONNECT's method [MQTT-4.12.0-2] [MQTT-4.12.0-5].
  expect(challenge?.cmd).toBe('auth');
  expect(challenge.reasonCode).toBe(0x18);
  expect(challenge.properties?.authenticationMethod).toBe(M);
  c.send(auth(0x18, s.final(challenge.properties?.authenticationData as Buffer)));
  const ack = (await c.next()) as IConnackPacket;
  expect(ack?.cmd).toBe('connack');
  return { c, ack, s };
}

/** Re-authentication with AUTH 0x19 [MQTT-4.12.1-1]; the server's last answer. */
async function reauth(c: RawClient, user: string, password: string) {
  const s = scramClient(user, password);
  c.send(auth(0x19, s.first()));
  const challenge = (await c.nextOf('auth')) as IAuthPacket;
  expect(challenge?.reasonCode).toBe(0x18);
  c.send(auth(0x18, s.final(challenge.properties?.authenticationData as Buffer)));
  let p = await c.next();
  while (p?.cmd === 'pingresp') p = await c.next();
  return { p, s };
}

describe('enhanced authentication: SCRAM-SHA-256 (RFC 5802 / RFC 7677, MQTT 5.0 section 4.12)', () => {
  it('a full exchange: CONNECT, AUTH 0x18 both ways, CONNACK 0x00 with the method and server-final', async () => {
    const { port, broker } = await scramBroker();
    const { c, ack, s } = await scramConnect(port, 'alice', 'wonderland');
    expect(ack.reasonCode).toBe(0x00);
    // A successful CONNACK carries the same method [MQTT-4.12.0-5]; server-final proves the server.
    expect(ack.properties?.authenticationMethod).toBe(M);
    expect(s.verify(ack.properties?.authenticationData)).toBe(true);
    // The SCRAM user is the client's user name.
    const conn = [...broker.connections].find((x) => x.state === 'connected');
    expect(conn?.username).toBe('alice');
    c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'a/#', qos: 0 }] });
    expect((await c.nextOf('suback'))?.cmd).toBe('suback');
  });

  it('a user name with "," and "=" (saslname escaping) logs in', async () => {
    const { port } = await scramBroker();
    const { ack } = await scramConnect(port, 'b,o=b', 'builder');
    expect(ack.reasonCode).toBe(0x00);
  });

  it('a wrong password: CONNACK 0x86, then closed [MQTT-4.12.0-4]', async () => {
    const { port } = await scramBroker();
    const { c, ack } = await scramConnect(port, 'alice', 'wonderland', 'looking-glass');
    expect(ack.reasonCode).toBe(0x86);
    expect(ack.properties?.authenticationData).toBeUndefined();
    expect(await c.next()).toBeNull();
  });

  it('an unknown user gets a challenge like any other, then CONNACK 0x86', async () => {
    const { port } = await scramBroker();
    const { c, ack } = await scramConnect(port, 'mallory', 'x');
    expect(ack.reasonCode).toBe(0x86);
    expect(await c.next()).toBeNull();
  });

  it('channel binding (gs2 "y" or "p=") and authzid are refused: CONNACK 0x87', async () => {
    const { port } = await scramBroker();
    for (const first of ['y,,n=alice,r=abc', 'p=tls-unique,,n=alice,r=abc', 'n,a=bob,n=alice,r=abc']) {
      const c = await RawClient.open(port, 5);
      c.send(connectWith(M, Buffer.from(first)));
      const ack = (await c.next()) as IConnackPacket;
      expect([first, ack?.cmd, ack?.reasonCode]).toEqual([first, 'connack', 0x87]);
    }
  });

  it('an unsupported Authentication Method: CONNACK 0x8C, then closed [MQTT-4.12.0-1]', async () => {
    const { port } = await scramBroker();
    const c = await RawClient.open(port, 5);
    c.send(connectWith('SCRAM-SHA-1', Buffer.from('n,,n=alice,r=abc')));
    const ack = (await c.next()) as IConnackPacket;
    expect([ack?.cmd, ack?.reasonCode]).toEqual(['connack', 0x8c]);
    expect(await c.next()).toBeNull();
  });

  it('with a method registered, a client using none is refused (0x87) unless allowAnonymous is true, and one with a user name then 0x86 / 0x04', async () => {
    const { port } = await scramBroker();
    const c = await RawClient.open(port, 5);
    c.send(connectPacket(5, { username: 'alice', password: Buffer.from('wonderland') }));
    expect(((await c.next()) as IConnackPacket)?.reasonCode).toBe(0x87);
    const open = await scramBroker({ allowAnonymous: true });
    const d = await RawClient.connected(open.port, 5);
    d.send({ cmd: 'pingreq' });
    expect((await d.next())?.cmd).toBe('pingresp');
    // allowAnonymous lets in clients without a user name, not one claiming a name nobody
    // verified: 0x86 (3.1.1: 0x04).
    for (const v of [5, 4] as const) {
      const e = await RawClient.open(open.port, v);
      e.send(connectPacket(v, { username: 'alice', password: Buffer.from('wonderland') }));
      const ack = (await e.next()) as IConnackPacket;
      expect(v === 5 ? ack?.reasonCode : ack?.returnCode).toBe(v === 5 ? 0x86 : 4);
    }
  });

  it('AUTH from a client that did not use enhanced authentication: DISCONNECT 0x82 [MQTT-4.12.0-7]', async () => {
    for (const opts of [{}, { allowAnonymous: true }]) {
      const { port } = opts.allowAnonymous ? await scramBroker(opts) : await startBroker();
      const c = await RawClient.connected(port, 5);
      c.send(auth(0x19, Buffer.from('n,,n=alice,r=abc')));
      const d = (await c.next()) as IDisconnectPacket;
      expect([d?.cmd, d?.reasonCode]).toEqual(['disconnect', 0x82]);
      expect(await c.next()).toBeNull();
    }
  });

  it("AUTH with another method than the CONNECT's: DISCONNECT 0x82 [MQTT-4.12.1-1]", async () => {
    const { port } = await scramBroker();
    const { c } = await scramConnect(port, 'alice', 'wonderland');
    c.send(auth(0x19, Buffer.from('n,,n=alice,r=abc'), 'OTHER'));
    const d = (await c.next()) as IDisconnectPacket;
    expect([d?.cmd, d?.reasonCode]).toEqual(['disconnect', 0x82]);
  });

  it('AUTH 0x18 with no re-authentication in progress: DISCONNECT 0x82', async () => {
    const { port } = await scramBroker();
    const { c } = await scramConnect(port, 'alice', 'wonderland');
    c.send(auth(0x18, Buffer.from('c=biws,r=x,p=AAAA')));
    const d = (await c.next()) as IDisconnectPacket;
    expect([d?.cmd, d?.reasonCode]).toEqual(['disconnect', 0x82]);
  });

  it('a packet other than AUTH during the exchange: CONNACK 0x82 [MQTT-3.1.2-30]', async () => {
    const { port } = await scramBroker();
    const c = await RawClient.open(port, 5);
    c.send(connectWith(M, scramClient('alice', 'wonderland').first()));
    expect((await c.next())?.cmd).toBe('auth');
    c.send({ cmd: 'pingreq' });
    const ack = (await c.next()) as IConnackPacket;
    expect([ack?.cmd, ack?.reasonCode]).toEqual(['connack', 0x82]);
    expect(await c.next()).toBeNull();
  });

  it('during the exchange: AUTH other than 0x18 or with another method gets CONNACK 0x82 [MQTT-4.12.0-3] [MQTT-4.12.0-5]; DISCONNECT just closes', async () => {
    const { port } = await scramBroker();
    for (const answer of [auth(0x00), auth(0x18, Buffer.from('x'), 'OTHER'), auth(0x19)]) {
      const c = await RawClient.open(port, 5);
      c.send(connectWith(M, scramClient('alice', 'wonderland').first()));
      expect((await c.next())?.cmd).toBe('auth');
      c.send(answer);
      const ack = (await c.next()) as IConnackPacket;
      expect([ack?.cmd, ack?.reasonCode]).toEqual(['connack', 0x82]);
    }
    const c = await RawClient.open(port, 5);
    c.send(connectWith(M, scramClient('alice', 'wonderland').first()));
    expect((await c.next())?.cmd).toBe('auth');
    c.send({ cmd: 'disconnect', reasonCode: 0 });
    expect(await c.next()).toBeNull();
  });

  it('re-authentication (AUTH 0x19) succeeds: AUTH 0x00 with server-final; the connection goes on', async () => {
    const { port } = await scramBroker();
    const { c } = await scramConnect(port, 'alice', 'wonderland');
    // Other packets keep flowing around a re-authentication.
    c.send({ cmd: 'pingreq' });
    const { p, s } = await reauth(c, 'alice', 'wonderland');
    const ok = p as IAuthPacket;
    expect([ok?.cmd, ok?.reasonCode, ok?.properties?.authenticationMethod]).toEqual(['auth', 0x00, M]);
    expect(s.verify(ok.properties?.authenticationData)).toBe(true);
    c.send({ cmd: 'pingreq' });
    expect((await c.next())?.cmd).toBe('pingresp');
    // And again.
    expect(((await reauth(c, 'alice', 'wonderland')).p as IAuthPacket)?.reasonCode).toBe(0x00);
  });

  it('a failed re-authentication: DISCONNECT 0x87 and closed [MQTT-4.12.1-2]', async () => {
    const { port } = await scramBroker();
    const { c } = await scramConnect(port, 'alice', 'wonderland');
    const { p } = await reauth(c, 'alice', 'wrong');
    expect([p?.cmd, (p as IDisconnectPacket)?.reasonCode]).toEqual(['disconnect', 0x87]);
    expect(await c.next()).toBeNull();
  });

  it('re-authenticating as another user fails: DISCONNECT 0x87', async () => {
    const { port } = await scramBroker();
    const { c } = await scramConnect(port, 'alice', 'wonderland');
    const { p } = await reauth(c, 'b,o=b', 'builder');
    expect([p?.cmd, (p as IDisconnectPacket)?.reasonCode]).toEqual(['disconnect', 0x87]);
  });

  it('the CONNECT timeout bounds a stalled exchange; another client is served meanwhile', async () => {
    const { port, url } = await scramBroker({ connectTimeout: 1, allowAnonymous: true });
    const stalled = await RawClient.open(port, 5);
    stalled.send(connectWith(M, scramClient('alice', 'wonderland').first()));
    expect((await stalled.next())?.cmd).toBe('auth');
    const other = await connect(url, { protocolVersion: 5 });
    await other.subscribeAsync('t');
    const got = nextMessages(other, 1);
    await other.publishAsync('t', 'still served', { qos: 1 });
    expect((await got)[0].payload).toBe('still served');
    // No answer to the challenge: closed without CONNACK once connectTimeout passes.
    expect(await stalled.next()).toBeNull();
  });
});

describe('enhanced authentication: a third-party method (api.addAuthMethod)', () => {
  // 'x-token': the token in CONNECT, or asked for with one AUTH round.
  const tokenPlugin = definePlugin({
    name: 'token',
    setup(api) {
      api.addAuthMethod<number>('x-token', {
        start(_client, data) {
          const t = data?.toString();
          if (t === 'secret') return { result: 'success', username: 'tok' };
          if (t === 'ask') return { result: 'continue', data: Buffer.from('token?'), state: 1 };
          if (t === 'throw') throw new Error('boom');
          if (t === 'hang') return new Promise(() => undefined);
          return { result: 'failure' };
        },
        async continue(_client, state, data) {
          expect(state).toBe(1);
          return data?.toString() === 'secret'
            ? { result: 'success', data: Buffer.from('welcome') }
            : { result: 'failure', reasonCode: 0x86 };
        },
      });
    },
  });

  const attempt = async (port: number, first: string, answer?: string) => {
    const c = await RawClient.open(port, 5);
    c.send(connectWith('x-token', Buffer.from(first)));
    let p = await c.next();
    if (answer !== undefined) {
      expect([p?.cmd, (p as IAuthPacket)?.properties?.authenticationData?.toString()]).toEqual([
        'auth',
        'token?',
      ]);
      c.send(auth(0x18, Buffer.from(answer), 'x-token'));
      p = await c.next();
    }
    return p as IConnackPacket;
  };

  it('one step, two steps, failure with the code the method chose', async () => {
    const { port, broker } = await startBroker({ plugins: [tokenPlugin], hookTimeout: 200 });
    expect((await attempt(port, 'secret'))?.reasonCode).toBe(0x00);
    expect([...broker.connections].some((x) => x.username === 'tok')).toBe(true);
    const two = await attempt(port, 'ask', 'secret');
    expect([two.reasonCode, two.properties?.authenticationData?.toString()]).toEqual([0x00, 'welcome']);
    expect((await attempt(port, 'nope'))?.reasonCode).toBe(0x87);
    expect((await attempt(port, 'ask', 'nope'))?.reasonCode).toBe(0x86);
  });

  it('a method that throws or does not answer within hookTimeout: CONNACK 0x80', async () => {
    const { port } = await startBroker({ plugins: [tokenPlugin], hookTimeout: 200 });
    expect((await attempt(port, 'throw'))?.reasonCode).toBe(0x80);
    expect((await attempt(port, 'hang'))?.reasonCode).toBe(0x80);
  });

  it('a method name registered twice fails the start, naming the plugin', async () => {
    const twice = definePlugin({ name: 'again', setup: (api) => tokenPlugin.setup(api, undefined) });
    await expect(startBroker({ plugins: [tokenPlugin, twice] })).rejects.toThrow(/again.*x-token.*token's/);
  });
});

describe('SCRAM credentials file', () => {
  it('holds salted keys, never the password; setScramUser replaces a user and keeps comments', async () => {
    const file = await credentialsFile({ alice: 'wonderland' });
    const { readFile, writeFile } = await import('node:fs/promises');
    await writeFile(file, `# users\n${await readFile(file, 'utf8')}`);
    await setScramUser(file, 'alice', 'new-secret');
    await setScramUser(file, 'carol', 'x');
    const text = await readFile(file, 'utf8');
    expect(text).not.toMatch(/wonderland|new-secret/);
    const lines = text.trim().split('\n');
    expect(lines[0]).toBe('# users');
    expect(lines.slice(1).map((l) => l.split(':').slice(0, 3).join(':'))).toEqual([
      'alice:scram-sha-256:4096',
      'carol:scram-sha-256:4096',
    ]);
    expect(parseScramFile(text).size).toBe(2);
    expect(() => parseScramFile('bob:scram-sha-256:0:AAAA:AAAA:AAAA\n')).toThrow(/line 1: bad iteration/);
    expect(() => parseScramFile('bob:plain:secret\n')).toThrow(/line 1/);
  });

  it('broker.reload() re-reads the file: a user added logs in', async () => {
    const file = await credentialsFile({ alice: 'wonderland' });
    const { port, broker } = await startBroker({ plugins: [[scramPlugin, { file }]] });
    expect((await scramConnect(port, 'dave', 'pw')).ack.reasonCode).toBe(0x86);
    await setScramUser(file, 'dave', 'pw');
    await broker.reload();
    expect((await scramConnect(port, 'dave', 'pw')).ack.reasonCode).toBe(0x00);
  });
});
