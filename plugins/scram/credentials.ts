/**
 * SCRAM-SHA-256 credentials (RFC 5802 section 3, RFC 7677): per user the salt, the iteration count
 * and the two keys the server needs, StoredKey = H(ClientKey) and ServerKey; never the password
 * nor SaltedPassword. One user a line:
 *
 *   user:scram-sha-256:<iterations>:<salt base64>:<StoredKey base64>:<ServerKey base64>
 *
 * Blank lines and lines starting with `#` are comments. The user name is everything before the
 * last five fields (it may itself hold `:`).
 */
import { createHash, createHmac, pbkdf2, randomBytes } from 'node:crypto';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';

const pbkdf2Async = promisify(pbkdf2);

/** RFC 7677 section 4: at least 4096. */
export const DEFAULT_ITERATIONS = 4096;
const SALT_BYTES = 16;
const KEY_BYTES = 32;
const KIND = 'scram-sha-256';

export interface ScramCredential {
  iterations: number;
  salt: Buffer;
  storedKey: Buffer;
  serverKey: Buffer;
}

export const hmac = (key: Buffer, text: string | Buffer): Buffer =>
  createHmac('sha256', key).update(text).digest();
export const sha256 = (b: Buffer): Buffer => createHash('sha256').update(b).digest();

/** Derives a user's credential from the password (asynchronous PBKDF2-HMAC-SHA-256). */
export async function deriveCredential(
  password: string,
  iterations = DEFAULT_ITERATIONS,
  salt: Buffer = randomBytes(SALT_BYTES),
): Promise<ScramCredential> {
  // RFC 5802 asks for SASLprep of the password; it is used as its UTF-8 bytes here.
  const salted = await pbkdf2Async(Buffer.from(password, 'utf8'), salt, iterations, KEY_BYTES, 'sha256');
  return {
    iterations,
    salt,
    storedKey: sha256(hmac(salted, 'Client Key')),
    serverKey: hmac(salted, 'Server Key'),
  };
}

export function formatLine(user: string, c: ScramCredential): string {
  const b = (x: Buffer) => x.toString('base64');
  return `${user}:${KIND}:${c.iterations}:${b(c.salt)}:${b(c.storedKey)}:${b(c.serverKey)}`;
}

const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

function b64(s: string, bytes?: number): Buffer | undefined {
  if (!BASE64.test(s) || s.length % 4 !== 0) return undefined;
  const b = Buffer.from(s, 'base64');
  return b.length > 0 && (bytes === undefined || b.length === bytes) ? b : undefined;
}

/** Parses a credentials file; throws naming the first bad line. */
export function parseScramFile(text: string): Map<string, ScramCredential> {
  const users = new Map<string, ScramCredential>();
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (line === '' || line.startsWith('#')) continue;
    const f = line.split(':');
    const bad = (why: string) => new Error(`line ${i + 1}: ${why}`);
    if (f.length < 6) throw bad('expected user:scram-sha-256:iterations:salt:StoredKey:ServerKey');
    const [kind, it, salt, stored, server] = f.slice(-5);
    const user = f.slice(0, -5).join(':');
    if (user === '') throw bad('empty user name');
    if (kind !== KIND) throw bad(`unknown kind "${kind}"`);
    const iterations = Number(it);
    if (!/^[0-9]+$/.test(it) || !Number.isSafeInteger(iterations) || iterations < 1)
      throw bad(`bad iteration count "${it}"`);
    const s = b64(salt);
    const sk = b64(stored, KEY_BYTES);
    const vk = b64(server, KEY_BYTES);
    if (!s || !sk || !vk) throw bad('salt or keys are not base64 (keys: 32 bytes)');
    if (users.has(user)) throw bad(`user "${user}" appears twice`);
    users.set(user, { iterations, salt: s, storedKey: sk, serverKey: vk });
  }
  return users;
}

export async function readScramFile(file: string): Promise<Map<string, ScramCredential>> {
  const text = await readFile(file, 'utf8');
  try {
    return parseScramFile(text);
  } catch (err) {
    throw new Error(`${file}: ${(err as Error).message}`);
  }
}

/**
 * Adds or replaces USER in FILE (created when missing), keeping the other lines; written to a
 * temporary file with mode 0600, then renamed.
 */
export async function setScramUser(
  file: string,
  user: string,
  password: string,
  iterations?: number,
): Promise<void> {
  if (user === '' || /[\n\r]/.test(user)) throw new Error('bad user name');
  let text = '';
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  parseScramFile(text); // refuse to rewrite a file that does not parse
  const entry = formatLine(user, await deriveCredential(password, iterations));
  const out: string[] = [];
  let replaced = false;
  for (const line of text.split('\n')) {
    const t = line.trim();
    if (t !== '' && !t.startsWith('#') && t.split(':').slice(0, -5).join(':') === user) {
      if (!replaced) out.push(entry);
      replaced = true;
    } else out.push(line);
  }
  if (out.at(-1) === '') out.pop();
  if (!replaced) out.push(entry);
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, `${out.join('\n')}\n`, { mode: 0o600 });
  await rename(tmp, file);
}

/** `heron scram-passwd FILE USER PASSWORD`; resolves with the exit code. */
export async function scramPasswdMain(args: string[]): Promise<number> {
  if (args.length !== 3) {
    process.stderr.write('Usage: heron scram-passwd FILE USER PASSWORD\n');
    return 2;
  }
  try {
    await setScramUser(args[0], args[1], args[2]);
    return 0;
  } catch (err) {
    process.stderr.write(`heron scram-passwd: ${(err as Error).message}\n`);
    return 1;
  }
}
