/**
 * The server side of SCRAM-SHA-256 (RFC 5802 section 5, RFC 7677) as an enhanced-authentication
 * method: CONNECT carries client-first-message, AUTH 0x18 server-first-message, the client's AUTH
 * 0x18 client-final-message, and CONNACK (or AUTH 0x00) server-final-message. No channel binding:
 * only the gs2 header `n,,` is accepted.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { AuthMethod, AuthStep } from '../api.js';
import { DEFAULT_ITERATIONS, hmac, type ScramCredential, sha256 } from './credentials.js';

export const METHOD = 'SCRAM-SHA-256';

interface Exchange {
  user: string;
  known: boolean;
  cred: ScramCredential;
  clientFirstBare: string;
  serverFirst: string;
  nonce: string;
}

const FAILED: AuthStep<Exchange> = { result: 'failure', reasonCode: 0x86 };
const MALFORMED: AuthStep<Exchange> = { result: 'failure' };
/** base64("n,,"): the client-final's channel binding when none is used. */
const GS2_NONE = 'biws';
/** printable ASCII except ',' (RFC 5802 section 7, `printable`). */
const NONCE = /^[\x21-\x2b\x2d-\x7e]+$/;

/** `=2C` and `=3D` stand for ',' and '=' in a saslname; any other '=' is malformed. */
function saslname(s: string): string | undefined {
  if (s === '' || /=(?!2C|3D)/.test(s)) return undefined;
  return s.replace(/=2C/g, ',').replace(/=3D/g, '=');
}

/** The method, over users looked up by `lookup` (a file reload swaps what it answers). */
export function scramMethod(lookup: (user: string) => ScramCredential | undefined): AuthMethod<Exchange> {
  // An unknown user is led through the exchange with a stable made-up salt and fails at the
  // proof, so that the answers do not tell which users exist (RFC 5802 section 9).
  const secret = randomBytes(32);
  const decoy = (user: string): ScramCredential => ({
    iterations: DEFAULT_ITERATIONS,
    salt: hmac(secret, `salt:${user}`).subarray(0, 16),
    storedKey: hmac(secret, `stored:${user}`),
    serverKey: hmac(secret, `server:${user}`),
  });
  return {
    start(_client, data) {
      if (data === undefined) return MALFORMED;
      const text = data.toString('utf8');
      // gs2-header: cbind-flag "," [authzid] ","; no channel binding ('y', 'p=') nor authzid.
      if (!text.startsWith('n,,')) return MALFORMED;
      const bare = text.slice(3);
      const m = /^n=([^,]*),r=([^,]*)(,.*)?$/.exec(bare);
      if (!m) return MALFORMED;
      const user = saslname(m[1]);
      // Extensions are not supported; a mandatory one ('m=') must fail, others are ignored.
      if (user === undefined || !NONCE.test(m[2]) || m[3]?.startsWith(',m=')) return MALFORMED;
      const found = lookup(user);
      const cred = found ?? decoy(user);
      const nonce = m[2] + randomBytes(18).toString('base64');
      const serverFirst = `r=${nonce},s=${cred.salt.toString('base64')},i=${cred.iterations}`;
      return {
        result: 'continue',
        data: Buffer.from(serverFirst),
        state: { user, known: found !== undefined, cred, clientFirstBare: bare, serverFirst, nonce },
      };
    },
    continue(_client, x, data) {
      if (data === undefined) return MALFORMED;
      const text = data.toString('utf8');
      const at = text.lastIndexOf(',p=');
      if (at < 0) return MALFORMED;
      const withoutProof = text.slice(0, at);
      const m = /^c=([^,]*),r=([^,]*)(,.*)?$/.exec(withoutProof);
      if (!m || m[1] !== GS2_NONE || m[2] !== x.nonce) return MALFORMED;
      const proof = Buffer.from(text.slice(at + 3), 'base64');
      if (proof.length !== 32) return MALFORMED;
      const authMessage = `${x.clientFirstBare},${x.serverFirst},${withoutProof}`;
      // ClientKey = ClientProof XOR ClientSignature; it is right when H(ClientKey) = StoredKey.
      const signature = hmac(x.cred.storedKey, authMessage);
      for (let i = 0; i < 32; i++) proof[i] ^= signature[i];
      if (!timingSafeEqual(sha256(proof), x.cred.storedKey) || !x.known) return FAILED;
      const verifier = hmac(x.cred.serverKey, authMessage).toString('base64');
      return { result: 'success', data: Buffer.from(`v=${verifier}`), username: x.user };
    },
  };
}
