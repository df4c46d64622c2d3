/**
 * The jwt plugin over real connections: HS256 / ES256 (PEM) / RS256 (JWKS) tokens as the MQTT
 * password, exp / nbf at CONNECT and while connected, the acl claim for publish, subscribe and
 * delivery, a password that is not a JWT passing to the rest of the chain, and reloading the
 * secret / key files (a bad one keeps the keys in force).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportJWK, exportSPKI, generateKeyPair, type JWTPayload, SignJWT } from 'jose';
import type { IConnackPacket, IConnectPacket, IPubackPacket, ISubackPacket, Packet } from 'mqtt-packet';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { definePlugin, type PluginApi, type PluginEntry, type Verdict } from '../plugins/api.js';
import { covers, matches } from '../plugins/jwt/acl.js';
import jwtPlugin, { type JwtOptions, TOKEN_EXPIRED_REASON } from '../plugins/jwt/index.js';
import { run as runCli } from './cli-helpers.js';
import { onCleanup, QUIET_CLI, RawClient, startBroker } from './helpers.js';

const SECRET = 'correct horse battery staple';
const now = () => Math.floor(Date.now() / 1000);

function hs256(claims: JWTPayload, secret = SECRET): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode(secret));
}

function tmp(): string {
  const dir = mkdtempSync(join(tmpdir(), 'heron-jwt-'));
  onCleanup(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A broker with the jwt plugin and, after it, a recorder that answers `tail` to what reaches it. */
async function brokerWith(options: JwtOptions, tail: Verdict = 'allow') {
  const reached: string[] = [];
  const recorder = definePlugin({
    name: 'tail',
    setup(api: PluginApi) {
      api.addHooks({
        authenticate: (_c, _u, password) => {
          reached.push(password?.toString() ?? '');
          return tail;
        },
      });
    },
  });
  const plugins: PluginEntry[] = [[jwtPlugin, options], recorder];
  const b = await startBroker({ plugins });
  return { ...b, reached };
}

async function connack(
  port: number,
  version: 4 | 5,
  fields: Partial<IConnectPacket>,
): Promise<{ code: number | undefined; client: RawClient }> {
  const client = await RawClient.open(port, version);
  client.send({
    cmd: 'connect',
    protocolId: 'MQTT',
    protocolVersion: version,
    clientId: `jwt-${Math.random().toString(16).slice(2)}`,
    clean: true,
    keepalive: 0,
    ...fields,
  } as Packet);
  const ack = (await client.next()) as IConnackPacket | null;
  expect(ack?.cmd).toBe('connack');
  return { code: version === 5 ? ack?.reasonCode : ack?.returnCode, client };
}

describe('jwt authentication', () => {
  it('accepts a valid HS256 token whose sub is the user name, on 5.0 and 3.1.1', async () => {
    const { port, reached } = await brokerWith({ secret: SECRET }, 'deny');
    const token = await hs256({ sub: 'alice', exp: now() + 60 });
    expect((await connack(port, 5, { username: 'alice', password: Buffer.from(token) })).code).toBe(0);
    expect((await connack(port, 4, { username: 'alice', password: Buffer.from(token) })).code).toBe(0);
    // The token decided: the next authenticator (which would deny) was not asked.
    expect(reached).toEqual([]);
  });

  it('refuses a token whose sub is not the user name: 0x86 / 0x04', async () => {
    const { port } = await brokerWith({ secret: SECRET });
    const token = Buffer.from(await hs256({ sub: 'alice' }));
    expect((await connack(port, 5, { username: 'mallory', password: token })).code).toBe(0x86);
    expect((await connack(port, 4, { username: 'mallory', password: token })).code).toBe(4);
  });

  it("accepts any user name with --jwt-username-claim ''", async () => {
    const { port } = await brokerWith({ secret: SECRET, usernameClaim: '' });
    const token = Buffer.from(await hs256({ sub: 'alice' }));
    expect((await connack(port, 5, { username: 'anyone', password: token })).code).toBe(0);
  });

  it('verifies ES256 with a PEM public key file and RS256 with a JWKS file', async () => {
    const dir = tmp();
    const es = await generateKeyPair('ES256', { extractable: true });
    const rs = await generateKeyPair('RS256', { extractable: true });
    const pem = join(dir, 'es.pem');
    writeFileSync(pem, await exportSPKI(es.publicKey));
    const jwks = join(dir, 'jwks.json');
    writeFileSync(
      jwks,
      JSON.stringify({ keys: [{ ...(await exportJWK(rs.publicKey)), kid: 'k1', alg: 'RS256' }] }),
    );
    const { port } = await brokerWith({ publicKeyFile: pem, jwksFile: jwks }, 'deny');
    const esToken = await new SignJWT({ sub: 'dev' })
      .setProtectedHeader({ alg: 'ES256' })
      .sign(es.privateKey);
    const rsToken = await new SignJWT({ sub: 'dev' })
      .setProtectedHeader({ alg: 'RS256', kid: 'k1' })
      .sign(rs.privateKey);
    expect((await connack(port, 5, { username: 'dev', password: Buffer.from(rsToken) })).code).toBe(0);
    // With a JWKS configured, asymmetric tokens are checked against it: the PEM key is not in it.
    expect((await connack(port, 5, { username: 'dev', password: Buffer.from(esToken) })).code).toBe(0x86);

    const { port: port2 } = await brokerWith({ publicKeyFile: pem }, 'deny');
    expect((await connack(port2, 5, { username: 'dev', password: Buffer.from(esToken) })).code).toBe(0);
    // An HS256 token signed with the public key's bytes is not accepted (no secret configured).
    const forged = await hs256({ sub: 'dev' }, await exportSPKI(es.publicKey));
    expect((await connack(port2, 5, { username: 'dev', password: Buffer.from(forged) })).code).toBe(0x86);
  });

  it('refuses an expired token, a token not yet valid and a token signed with another key', async () => {
    const { port, reached } = await brokerWith({ secret: SECRET });
    const expired = Buffer.from(await hs256({ sub: 'u', exp: now() - 10 }));
    const early = Buffer.from(await hs256({ sub: 'u', nbf: now() + 600 }));
    const wrong = Buffer.from(await hs256({ sub: 'u' }, 'another secret'));
    for (const password of [expired, early, wrong]) {
      expect((await connack(port, 5, { username: 'u', password })).code).toBe(0x86);
      expect((await connack(port, 4, { username: 'u', password })).code).toBe(4);
    }
    expect(reached).toEqual([]);
  });

  it('passes a password that is not a JWT to the next authenticator', async () => {
    const allowed = await brokerWith({ secret: SECRET }, 'allow');
    expect((await connack(allowed.port, 5, { username: 'u', password: Buffer.from('hunter2') })).code).toBe(
      0,
    );
    expect((await connack(allowed.port, 5, { username: 'u', password: Buffer.from('a.b.c') })).code).toBe(0);
    expect(allowed.reached).toEqual(['hunter2', 'a.b.c']);
    const denied = await brokerWith({ secret: SECRET }, 'deny');
    expect((await connack(denied.port, 4, { username: 'u', password: Buffer.from('hunter2') })).code).toBe(4);
  });

  it('alone, a user name whose password is not a JWT (or is missing) is refused: no authenticator knows it', async () => {
    const { broker, port } = await startBroker({ plugins: [[jwtPlugin, { secret: SECRET }]] });
    for (const password of [Buffer.from('hunter2'), undefined]) {
      expect((await connack(port, 5, { username: 'u', password })).code).toBe(0x86);
      expect((await connack(port, 4, { username: 'u', password })).code).toBe(4);
    }
    // Anonymous clients follow allowAnonymous, off once authentication is configured: 0x87 / 0x05.
    expect((await connack(port, 5, { password: undefined })).code).toBe(0x87);
    expect((await connack(port, 4, { password: undefined })).code).toBe(5);
    const token = Buffer.from(await hs256({ sub: 'u' }, SECRET));
    expect((await connack(port, 5, { username: 'u', password: token })).code).toBe(0);
    expect(broker.stats.connections).toBeGreaterThan(0);
  });

  it('refuses a malformed acl claim', async () => {
    const { port } = await brokerWith({ secret: SECRET });
    const token = Buffer.from(await hs256({ sub: 'u', acl: { pub: 'not-a-list' } }));
    expect((await connack(port, 5, { username: 'u', password: token })).code).toBe(0x86);
  });

  it('fails the start on a missing key file', async () => {
    await expect(
      startBroker({ plugins: [[jwtPlugin, { publicKeyFile: '/nonexistent.pem' }]] }),
    ).rejects.toThrow(/plugin jwt/);
  });
});

describe('jwt acl claim', () => {
  it('matches and covers filters, $ topics excluded from leading wildcards [MQTT-4.7.2-1]', () => {
    expect(matches('a/+/c', 'a/b/c')).toBe(true);
    expect(matches('a/#', 'a')).toBe(true);
    expect(matches('#', '$SYS/x')).toBe(false);
    expect(matches('a/+', 'a/b/c')).toBe(false);
    expect(covers('a/#', 'a/+/c')).toBe(true);
    expect(covers('a/+', 'a/#')).toBe(false);
    expect(covers('a/+/c', 'a/b/c')).toBe(true);
    expect(covers('a/b', 'a/+')).toBe(false);
    expect(covers('#', '$SYS/#')).toBe(false);
  });

  it('allows publish and subscribe only where the lists say, with %u and %c [MQTT-3.3.5-2]', async () => {
    const { port } = await brokerWith({ secret: SECRET }, 'allow');
    const token = await hs256({
      sub: 'alice',
      acl: { pub: ['up/%u/#'], sub: ['down/%c/+', 'shared/#'], all: ['both'] },
    });
    const { code, client } = await connack(port, 5, {
      clientId: 'dev1',
      username: 'alice',
      password: Buffer.from(token),
    });
    expect(code).toBe(0);
    let id = 1;
    const pub = async (topic: string) => {
      client.send({
        cmd: 'publish',
        topic,
        payload: Buffer.from('x'),
        qos: 1,
        messageId: id++,
        retain: false,
        dup: false,
      });
      return ((await client.nextOf('puback')) as IPubackPacket).reasonCode;
    };
    expect(await pub('up/alice/t')).toBe(0x10); // no matching subscribers: accepted
    expect(await pub('both')).toBe(0x10);
    expect(await pub('up/bob/t')).toBe(0x87);
    expect(await pub('down/dev1/x')).toBe(0x87);
    client.send({
      cmd: 'subscribe',
      messageId: id++,
      subscriptions: [
        { topic: 'down/dev1/+', qos: 1 },
        { topic: 'down/dev1/cmd', qos: 1 },
        { topic: 'down/dev2/+', qos: 1 },
        { topic: 'down/#', qos: 1 },
        { topic: '$share/g/shared/x', qos: 1 },
        { topic: 'both', qos: 0 },
      ],
    } as Packet);
    const suback = (await client.nextOf('suback')) as ISubackPacket;
    expect(suback.granted).toEqual([1, 1, 0x87, 0x87, 1, 0]);

    // 3.1.1: a denied subscription is 0x80, a denied publish is acknowledged and dropped.
    const v4 = await connack(port, 4, { clientId: 'dev4', username: 'alice', password: Buffer.from(token) });
    expect(v4.code).toBe(0);
    v4.client.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'other', qos: 0 }] } as Packet);
    expect(((await v4.client.nextOf('suback')) as ISubackPacket).granted).toEqual([0x80]);
  });

  it('does not deliver what the token does not grant, even on a subscription kept from an earlier token', async () => {
    const { port } = await brokerWith({ secret: SECRET }, 'allow');
    const wide = Buffer.from(await hs256({ sub: 'r', acl: { sub: ['#'] } }));
    const narrow = Buffer.from(await hs256({ sub: 'r', acl: { sub: ['a/#'] } }));
    const props = { sessionExpiryInterval: 300 };
    const first = await connack(port, 5, {
      clientId: 'reader',
      clean: false,
      username: 'r',
      password: wide,
      properties: props,
    });
    first.client.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: '#', qos: 0 }] } as Packet);
    expect(((await first.client.nextOf('suback')) as ISubackPacket).granted).toEqual([0]);
    first.client.send({ cmd: 'disconnect' });
    await first.client.closed;

    const again = await connack(port, 5, {
      clientId: 'reader',
      clean: false,
      username: 'r',
      password: narrow,
      properties: props,
    });
    expect(again.code).toBe(0);
    const writer = await connack(port, 5, { username: 'w', password: Buffer.from('not a token') });
    for (const topic of ['b/secret', 'a/ok'])
      writer.client.send({
        cmd: 'publish',
        topic,
        payload: Buffer.from(topic),
        qos: 0,
        retain: false,
        dup: false,
      });
    const got = await again.client.nextOf('publish');
    expect(got && 'topic' in got ? got.topic : null).toBe('a/ok');
  });
});

describe('jwt expiry while connected', () => {
  it('disconnects a 5.0 client with 0xA0 and closes a 3.1.1 client when the token expires', async () => {
    const { port } = await brokerWith({ secret: SECRET });
    const token = Buffer.from(await hs256({ sub: 'u', exp: now() + 2 }));
    const lasting = Buffer.from(await hs256({ sub: 'u', exp: now() + 600 }));
    const v5 = await connack(port, 5, { username: 'u', password: token });
    const v4 = await connack(port, 4, { username: 'u', password: token });
    const stays = await connack(port, 5, { username: 'u', password: lasting });
    expect([v5.code, v4.code, stays.code]).toEqual([0, 0, 0]);
    const d = await v5.client.next();
    expect(d?.cmd).toBe('disconnect');
    expect(d && 'reasonCode' in d ? d.reasonCode : null).toBe(TOKEN_EXPIRED_REASON);
    expect(await v4.client.next()).toBeNull();
    // A client whose token still holds is not affected.
    stays.client.send({ cmd: 'pingreq' });
    expect((await stays.client.next())?.cmd).toBe('pingresp');
  });
});

describe('api.disconnect', () => {
  it('disconnects with a reason code, refuses codes a server may not send, false for unknown ids', async () => {
    let api: PluginApi | undefined;
    const grab = definePlugin({
      name: 'grab',
      setup(a: PluginApi) {
        api = a;
      },
    });
    const { port } = await startBroker({ plugins: [grab] });
    const { client } = await connack(port, 5, { clientId: 'victim' });
    expect(() => api?.disconnect('victim', 0x04)).toThrow(TypeError);
    expect(api?.disconnect('nobody')).toBe(false);
    expect(api?.disconnect('victim', 0x98)).toBe(true);
    const d = await client.next();
    expect(d && 'reasonCode' in d ? d.reasonCode : null).toBe(0x98);
  });
});

describe('jwt reload (SIGHUP, broker.reload())', () => {
  it('re-reads the secret file, the PEM key and the JWKS file; a bad file keeps the keys in force and is logged, on 5.0 and 3.1.1', async () => {
    const dir = tmp();
    const secretFile = join(dir, 'secret');
    const publicKeyFile = join(dir, 'es.pem');
    const jwksFile = join(dir, 'jwks.json');
    const es1 = await generateKeyPair('ES256', { extractable: true });
    const es2 = await generateKeyPair('ES256', { extractable: true });
    const rs1 = await generateKeyPair('RS256', { extractable: true });
    const rs2 = await generateKeyPair('RS256', { extractable: true });
    const jwks = async (k: CryptoKey, kid: string) =>
      JSON.stringify({ keys: [{ ...(await exportJWK(k)), kid, alg: 'RS256' }] });
    writeFileSync(secretFile, 'first secret\n');
    writeFileSync(publicKeyFile, await exportSPKI(es1.publicKey));
    writeFileSync(jwksFile, await jwks(rs1.publicKey, 'k1'));
    const errorsLogged: Record<string, unknown>[] = [];
    const logger = pino({ level: 'error' }, { write: (s: string) => errorsLogged.push(JSON.parse(s)) });
    const { broker, port } = await startBroker({
      plugins: [[jwtPlugin, { secretFile, jwksFile }]],
      logger,
    });
    const es = async (k: CryptoKey) =>
      Buffer.from(await new SignJWT({ sub: 'u' }).setProtectedHeader({ alg: 'ES256' }).sign(k));
    const rs = async (k: CryptoKey, kid: string) =>
      Buffer.from(await new SignJWT({ sub: 'u' }).setProtectedHeader({ alg: 'RS256', kid }).sign(k));
    const hsFirst = Buffer.from(await hs256({ sub: 'u' }, 'first secret'));
    const hsSecond = Buffer.from(await hs256({ sub: 'u' }, 'second secret'));
    const codes = async (password: Buffer) => [
      (await connack(port, 5, { username: 'u', password })).code,
      (await connack(port, 4, { username: 'u', password })).code,
    ];
    const OK = [0, 0];
    const REFUSED = [0x86, 4];
    expect(await codes(hsFirst)).toEqual(OK);
    expect(await codes(hsSecond)).toEqual(REFUSED);
    expect(await codes(await rs(rs1.privateKey, 'k1'))).toEqual(OK);

    // Rotated: the new secret and JWKS key apply to the next CONNECT, the old ones no longer.
    writeFileSync(secretFile, 'second secret\n');
    writeFileSync(jwksFile, await jwks(rs2.publicKey, 'k2'));
    await broker.reload();
    expect(await codes(hsSecond)).toEqual(OK);
    expect(await codes(hsFirst)).toEqual(REFUSED);
    expect(await codes(await rs(rs2.privateKey, 'k2'))).toEqual(OK);
    expect(await codes(await rs(rs1.privateKey, 'k1'))).toEqual(REFUSED);

    // A JWKS file that is not one: the reload fails, naming it, and nothing changes (the secret
    // file was rewritten too, and is not taken either: the keys are swapped all at once).
    writeFileSync(secretFile, 'third secret\n');
    writeFileSync(jwksFile, '{"nope": 1}');
    await expect(broker.reload()).rejects.toThrow(/jwks\.json: not a JWKS/);
    expect(errorsLogged.map((l) => l.msg)).toContain('jwt keys not reloaded; keeping the previous ones');
    expect(await codes(hsSecond)).toEqual(OK);
    expect(await codes(await rs(rs2.privateKey, 'k2'))).toEqual(OK);
    // A file gone missing: the same.
    rmSync(jwksFile);
    await expect(broker.reload()).rejects.toThrow(/jwks\.json/);
    expect(await codes(hsSecond)).toEqual(OK);

    // A PEM key file reloads the same way (a second broker: with a JWKS it would not be used).
    const pem = await startBroker({ plugins: [[jwtPlugin, { publicKeyFile }]], logger });
    const pemCode = async (password: Buffer) =>
      (await connack(pem.port, 5, { username: 'u', password })).code;
    expect(await pemCode(await es(es1.privateKey))).toBe(0);
    writeFileSync(publicKeyFile, await exportSPKI(es2.publicKey));
    await pem.broker.reload();
    expect(await pemCode(await es(es2.privateKey))).toBe(0);
    expect(await pemCode(await es(es1.privateKey))).toBe(0x86);
    writeFileSync(publicKeyFile, 'not a key');
    await expect(pem.broker.reload()).rejects.toThrow(/es\.pem/);
    expect(await pemCode(await es(es2.privateKey))).toBe(0);
  });
});

describe('jwt reload from the CLI', () => {
  it('SIGHUP re-reads --jwks-file: the new key is accepted, the old refused; a bad file keeps the keys and logs', async () => {
    const dir = tmp();
    const jwksFile = join(dir, 'jwks.json');
    const k1 = await generateKeyPair('RS256', { extractable: true });
    const k2 = await generateKeyPair('RS256', { extractable: true });
    const jwks = async (k: CryptoKey, kid: string) =>
      JSON.stringify({ keys: [{ ...(await exportJWK(k)), kid, alg: 'RS256' }] });
    const token = async (k: CryptoKey, kid: string) =>
      Buffer.from(await new SignJWT({ sub: 'u' }).setProtectedHeader({ alg: 'RS256', kid }).sign(k));
    writeFileSync(jwksFile, await jwks(k1.publicKey, 'k1'));
    const { child, line } = runCli([...QUIET_CLI, '--jwks-file', jwksFile]);
    const log = (msg: string, transport?: string) =>
      line((x) => x.msg === msg && (transport === undefined || x.transport === transport));
    const port = (await log('listening', 'tcp')).port as number;
    const code = async (password: Buffer) => {
      const { code, client } = await connack(port, 5, { username: 'u', password });
      client.socket.destroy();
      return code;
    };
    expect(await code(await token(k1.privateKey, 'k1'))).toBe(0);
    writeFileSync(jwksFile, await jwks(k2.publicKey, 'k2'));
    child.kill('SIGHUP');
    await log('jwt keys reloaded');
    expect(await code(await token(k2.privateKey, 'k2'))).toBe(0);
    expect(await code(await token(k1.privateKey, 'k1'))).toBe(0x86);
    writeFileSync(jwksFile, 'not json');
    child.kill('SIGHUP');
    const failed = await log('jwt keys not reloaded; keeping the previous ones');
    expect(JSON.stringify(failed.err)).toContain('jwks.json');
    expect(await code(await token(k2.privateKey, 'k2'))).toBe(0);
  });
});
