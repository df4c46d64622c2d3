import { createPublicKey, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import {
  createLocalJWKSet,
  errors,
  type JSONWebKeySet,
  type JWTPayload,
  type JWTVerifyGetKey,
  jwtVerify,
} from 'jose';
import { definePlugin, type PluginApi, type Verdict } from '../api.js';
import type { ClientInfo } from '../types.js';
import { covers, matches, readAcl, type TokenAcl, unshared } from './acl.js';

/**
 * The `jwt` plugin: the MQTT password is a JSON Web Token. Verified with an HMAC secret, a PEM
 * public key or a JWKS file; `exp`/`nbf` are honoured at CONNECT and a client is disconnected
 * (5.0 reason 0xA0 Maximum connect time) when its token expires. An optional claim carries the
 * topics the client may publish and subscribe to. A password that is not a JWT passes.
 */
export interface JwtOptions {
  /** HMAC secret (HS256/HS384/HS512). */
  secret?: string;
  /** Path of a file holding the HMAC secret (one line; a final newline is not part of it), re-read on reload. */
  secretFile?: string;
  /** Path of a PEM public key (RSA or EC, SPKI or PKCS#1) for RS*, PS* and ES* tokens. */
  publicKeyFile?: string;
  /** Path of a JWKS file (`{"keys": [...]}`), keys chosen by `kid` / `alg`. */
  jwksFile?: string;
  /** Claim the MQTT user name must equal when the token has it ('' = any user name). Default `sub`. */
  usernameClaim?: string;
  /** Claim holding `{ pub, sub, all }` topic lists. Default `acl`. */
  aclClaim?: string;
  /** Seconds of clock skew accepted on `exp` / `nbf`. Default 0. */
  clockTolerance?: number;
}

/** The 5.0 DISCONNECT reason sent when a connected client's token expires. */
export const TOKEN_EXPIRED_REASON = 0xa0;

const HMAC = ['HS256', 'HS384', 'HS512'];
const ASYMMETRIC = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'];
/** setTimeout's longest delay; later expiries re-arm. */
const MAX_DELAY = 2 ** 31 - 1;
/** An authenticated CONNECT whose connection never completes is forgotten after this. */
const PENDING_MS = 60_000;

interface Grant {
  acl: TokenAcl | undefined;
  exp: number | undefined;
  at: number;
  info?: ClientInfo;
  timer?: NodeJS.Timeout;
}

/** Three base64url parts with a JSON header naming an algorithm: anything else is not ours. */
function looksLikeJwt(token: string): boolean {
  if (!/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(token)) return false;
  try {
    const header = JSON.parse(Buffer.from(token.slice(0, token.indexOf('.')), 'base64url').toString());
    return typeof header === 'object' && header !== null && typeof header.alg === 'string';
  } catch {
    return false;
  }
}

/** One connection attempt: the same client id may be connecting twice at once. */
function attemptKey(c: ClientInfo): string {
  return `${c.clientId}\0${c.transport}\0${c.remoteAddress ?? ''}\0${c.remotePort ?? ''}`;
}

/** Reads the key files (at setup, and again at each reload); a missing or bad one throws, naming it. */
export async function loadKeys(o: JwtOptions): Promise<JWTVerifyGetKey> {
  let secret = o.secret ? new TextEncoder().encode(o.secret) : undefined;
  if (o.secretFile) {
    let text: string;
    try {
      text = (await readFile(o.secretFile, 'utf8')).replace(/\r?\n$/, '');
    } catch (err) {
      throw new Error(`${o.secretFile}: ${(err as Error).message}`, { cause: err });
    }
    if (text === '') throw new Error(`${o.secretFile}: the secret is empty`);
    // Both given: the file's secret, the one that can be rotated.
    secret = new TextEncoder().encode(text);
  }
  let publicKey: KeyObject | undefined;
  if (o.publicKeyFile) {
    try {
      publicKey = createPublicKey(await readFile(o.publicKeyFile));
    } catch (err) {
      throw new Error(`${o.publicKeyFile}: ${(err as Error).message}`, { cause: err });
    }
  }
  let jwks: JWTVerifyGetKey | undefined;
  if (o.jwksFile) {
    let set: JSONWebKeySet;
    try {
      set = JSON.parse(await readFile(o.jwksFile, 'utf8')) as JSONWebKeySet;
      if (!Array.isArray(set?.keys)) throw new Error('not a JWKS (no "keys" array)');
      jwks = createLocalJWKSet(set);
    } catch (err) {
      throw new Error(`${o.jwksFile}: ${(err as Error).message}`, { cause: err });
    }
  }
  if (!secret && !publicKey && !jwks) throw new Error('jwt: give a secret, a public key file or a JWKS file');
  // The key follows the header's algorithm, so an HMAC secret is never used for an RS/ES token
  // (nor a public key as an HMAC secret).
  return (header, token) => {
    if (HMAC.includes(header.alg)) {
      if (secret) return secret;
    } else if (ASYMMETRIC.includes(header.alg)) {
      if (jwks) return jwks(header, token);
      if (publicKey) return publicKey;
    }
    throw new errors.JOSEAlgNotAllowed(`no key for algorithm ${header.alg}`);
  };
}

/** The plugin's hooks over the keys `getKey` first holds; `setKeys` swaps them (reload). */
export function jwtHooks(api: PluginApi, o: JwtOptions, keys: JWTVerifyGetKey) {
  let getKey = keys;
  // jose calls this per token, so a reload applies to the next CONNECT at once.
  const currentKey: JWTVerifyGetKey = (header, token) => getKey(header, token);
  const usernameClaim = o.usernameClaim ?? 'sub';
  const aclClaim = o.aclClaim ?? 'acl';
  const algorithms = [...HMAC, ...ASYMMETRIC];
  /** Verified at authenticate, waiting for the connection to complete. */
  const pending = new Map<string, Grant>();
  /** By client id: kept after a disconnect, since an offline session is still delivered to. */
  const grants = new Map<string, Grant>();

  const sweep = (now: number) => {
    for (const [k, g] of pending) {
      if (now - g.at < PENDING_MS) break;
      pending.delete(k);
    }
  };

  const arm = (g: Grant, clientId: string) => {
    if (g.exp === undefined) return;
    const delay = g.exp * 1000 - Date.now();
    g.timer = setTimeout(
      () => {
        g.timer = undefined;
        if (g.exp !== undefined && g.exp * 1000 > Date.now()) return arm(g, clientId);
        if (grants.get(clientId) !== g) return;
        api.log.info({ clientId }, 'token expired; disconnecting');
        api.disconnect(clientId, TOKEN_EXPIRED_REASON);
      },
      Math.max(0, Math.min(delay, MAX_DELAY)),
    );
    g.timer.unref();
  };

  /** The client's token lists, or undefined when its connection carried none. */
  const aclOf = (client: ClientInfo): TokenAcl | undefined => grants.get(client.clientId)?.acl;

  return {
    async authenticate(client: ClientInfo, username: string | undefined, password: Buffer | undefined) {
      const key = attemptKey(client);
      const now = Date.now();
      sweep(now);
      pending.delete(key);
      const token = password?.toString('utf8');
      if (token === undefined || !looksLikeJwt(token)) return 'pass' as Verdict;
      let payload: JWTPayload;
      try {
        ({ payload } = await jwtVerify(token, currentKey, {
          algorithms,
          clockTolerance: o.clockTolerance ?? 0,
        }));
      } catch (err) {
        api.log.info({ clientId: client.clientId, reason: (err as Error).message }, 'token refused');
        return 'deny' as Verdict;
      }
      if (usernameClaim && payload[usernameClaim] !== undefined && payload[usernameClaim] !== username) {
        api.log.info(
          { clientId: client.clientId, username },
          `user name is not the token's ${usernameClaim}`,
        );
        return 'deny' as Verdict;
      }
      const acl = readAcl(payload[aclClaim], username, client.clientId);
      if (acl === null) {
        api.log.info({ clientId: client.clientId }, `malformed ${aclClaim} claim; token refused`);
        return 'deny' as Verdict;
      }
      pending.set(key, { acl, exp: payload.exp, at: now });
      return 'allow' as Verdict;
    },

    onConnect(client: ClientInfo) {
      const key = attemptKey(client);
      const g = pending.get(key);
      pending.delete(key);
      const old = grants.get(client.clientId);
      if (old?.timer) clearTimeout(old.timer);
      // Connected by another authenticator: a previous token's lists no longer apply.
      if (!g) {
        grants.delete(client.clientId);
        return;
      }
      g.info = client;
      grants.set(client.clientId, g);
      arm(g, client.clientId);
    },

    onDisconnect(client: ClientInfo) {
      const g = grants.get(client.clientId);
      if (g?.info !== client) return; // an older connection of a client id connected again
      if (g.timer) clearTimeout(g.timer);
      g.timer = undefined;
      // Lists stay for the offline session's deliveries; without lists nothing is left to keep.
      if (!g.acl) grants.delete(client.clientId);
    },

    authorizePublish(client: ClientInfo, topic: string): Verdict {
      const acl = aclOf(client);
      if (!acl) return 'pass';
      for (const f of acl.pub) if (matches(f, topic)) return 'allow';
      return 'deny';
    },

    authorizeSubscribe(client: ClientInfo, filter: string): Verdict {
      const acl = aclOf(client);
      if (!acl) return 'pass';
      const f = unshared(filter);
      for (const g of acl.sub) if (covers(g, f)) return 'allow';
      return 'deny';
    },

    authorizeDeliver(client: ClientInfo, topic: string): Verdict {
      const acl = aclOf(client);
      if (!acl) return 'pass';
      for (const f of acl.sub) if (matches(f, topic)) return 'allow';
      return 'deny';
    },

    setKeys(next: JWTVerifyGetKey) {
      getKey = next;
    },

    close() {
      for (const g of grants.values()) if (g.timer) clearTimeout(g.timer);
      grants.clear();
      pending.clear();
    },
  };
}

export default definePlugin<JwtOptions>({
  name: 'jwt',
  async setup(api, options) {
    const o = options ?? {};
    const { close, setKeys, ...hooks } = jwtHooks(api, o, await loadKeys(o));
    api.addHooks(hooks);
    api.onClose(close);
    // SIGHUP: the key files are read again; one that fails keeps the keys in force (tokens
    // already accepted stay valid either way: they were checked at CONNECT).
    api.onReload(async () => {
      try {
        setKeys(await loadKeys(o));
      } catch (err) {
        api.log.error({ err }, 'jwt keys not reloaded; keeping the previous ones');
        throw err;
      }
      api.log.info(
        { secretFile: o.secretFile, publicKeyFile: o.publicKeyFile, jwksFile: o.jwksFile },
        'jwt keys reloaded',
      );
    });
  },
});
