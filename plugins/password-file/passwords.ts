/**
 * Mosquitto's password file format, read and written so that a file made by `mosquitto_passwd`
 * works unchanged and one written here works in Mosquitto:
 *
 *   user:$7$<iterations>$<salt base64>$<hash base64>   PBKDF2-HMAC-SHA512 (Mosquitto 2.0's default)
 *   user:$6$<salt base64>$<hash base64>                SHA-512 of password bytes then salt (1.6's)
 *
 * Lines starting with `#` and blank lines are comments, kept when the file is rewritten.
 */
import { createHash, pbkdf2, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { promisify } from 'node:util';

const pbkdf2Async = promisify(pbkdf2);

/** What `mosquitto_passwd` 2.0 writes: 101 iterations, a 12-byte salt, a 64-byte key. */
export const DEFAULT_ITERATIONS = 101;
export const SALT_BYTES = 12;
const KEY_BYTES = 64;

export type Hash =
  | { kind: 'pbkdf2-sha512'; iterations: number; salt: Buffer; hash: Buffer }
  | { kind: 'sha512'; salt: Buffer; hash: Buffer };

/** One line of a file: a user's entry, or text (comment, blank) kept as it was. */
export type Line = { user: string; hash: Hash } | { text: string };

export interface ParseError {
  line: number;
  message: string;
}

export interface Parsed {
  lines: Line[];
  /** Users in file order; a user appears once. */
  users: Map<string, Hash>;
  errors: ParseError[];
}

const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

function b64(s: string): Buffer | undefined {
  if (!BASE64.test(s) || s.length % 4 !== 0) return undefined;
  const b = Buffer.from(s, 'base64');
  return b.length > 0 ? b : undefined;
}

/** Parses the `$7$…` / `$6$…` part of an entry; a string saying what is wrong otherwise. */
export function parseHash(field: string): Hash | string {
  const parts = field.split('$');
  // A leading '$' makes parts[0] empty.
  if (parts[0] !== '' || parts.length < 2)
    return 'not a hashed password (plain text? use mosquitto_passwd -U)';
  if (parts[1] === '7') {
    if (parts.length !== 5) return 'a $7$ entry has $7$<iterations>$<salt>$<hash>';
    const iterations = Number(parts[2]);
    if (!/^[0-9]+$/.test(parts[2]) || !Number.isSafeInteger(iterations) || iterations < 1)
      return `bad iteration count "${parts[2]}"`;
    const salt = b64(parts[3]);
    const hash = b64(parts[4]);
    if (!salt || !hash) return 'salt or hash is not base64';
    return { kind: 'pbkdf2-sha512', iterations, salt, hash };
  }
  if (parts[1] === '6') {
    if (parts.length !== 4) return 'a $6$ entry has $6$<salt>$<hash>';
    const salt = b64(parts[2]);
    const hash = b64(parts[3]);
    if (!salt || !hash) return 'salt or hash is not base64';
    if (hash.length !== KEY_BYTES) return 'a $6$ hash is 64 bytes';
    return { kind: 'sha512', salt, hash };
  }
  return `unknown hash type "$${parts[1]}$"`;
}

export function parsePasswordFile(text: string): Parsed {
  const lines: Line[] = [];
  const users = new Map<string, Hash>();
  const errors: ParseError[] = [];
  const raw = text.split('\n');
  if (raw.at(-1) === '') raw.pop(); // the final newline ends the last line, it does not start one
  raw.forEach((rawLine, i) => {
    const l = rawLine.endsWith('\r') ? rawLine.slice(0, -1) : rawLine;
    if (l.trim() === '' || l.startsWith('#')) {
      lines.push({ text: l });
      return;
    }
    const colon = l.indexOf(':');
    if (colon <= 0) {
      errors.push({ line: i + 1, message: 'expected user:hash' });
      lines.push({ text: l });
      return;
    }
    const user = l.slice(0, colon);
    const hash = parseHash(l.slice(colon + 1).trimEnd());
    if (typeof hash === 'string') {
      errors.push({ line: i + 1, message: `user "${user}": ${hash}` });
      lines.push({ text: l });
    } else if (users.has(user)) {
      errors.push({ line: i + 1, message: `user "${user}" appears twice` });
      lines.push({ text: l });
    } else {
      users.set(user, hash);
      lines.push({ user, hash });
    }
  });
  return { lines, users, errors };
}

export function formatHash(h: Hash): string {
  return h.kind === 'pbkdf2-sha512'
    ? `$7$${h.iterations}$${h.salt.toString('base64')}$${h.hash.toString('base64')}`
    : `$6$${h.salt.toString('base64')}$${h.hash.toString('base64')}`;
}

export function formatPasswordFile(lines: readonly Line[]): string {
  return (
    lines.map((l) => ('text' in l ? l.text : `${l.user}:${formatHash(l.hash)}`)).join('\n') +
    (lines.length ? '\n' : '')
  );
}

/** A new `$7$` entry as Mosquitto 2.0 writes it. PBKDF2 runs on the libuv thread pool. */
export async function hashPassword(
  password: string | Buffer,
  iterations = DEFAULT_ITERATIONS,
): Promise<Hash> {
  const salt = randomBytes(SALT_BYTES);
  const hash = await pbkdf2Async(password, salt, iterations, KEY_BYTES, 'sha512');
  return { kind: 'pbkdf2-sha512', iterations, salt, hash };
}

/** Whether a password matches a hash, compared in constant time. */
export async function verifyHash(h: Hash, password: string | Buffer): Promise<boolean> {
  const got =
    h.kind === 'pbkdf2-sha512'
      ? await pbkdf2Async(password, h.salt, h.iterations, h.hash.length, 'sha512')
      : createHash('sha512').update(password).update(h.salt).digest();
  return got.length === h.hash.length && timingSafeEqual(got, h.hash);
}

/** A user name Mosquitto's format can hold: not empty, no ':' and no line break. */
export function validUser(user: string): boolean {
  return user.length > 0 && !/[:\r\n]/.test(user);
}

// Checked against for unknown users, so that their refusal takes as long as a wrong password's.
const DUMMY: Hash = {
  kind: 'pbkdf2-sha512',
  iterations: DEFAULT_ITERATIONS,
  salt: randomBytes(SALT_BYTES),
  hash: randomBytes(KEY_BYTES),
};

export class PasswordFileParseError extends Error {
  constructor(
    readonly path: string,
    readonly errors: ParseError[],
  ) {
    super(`${path}: ${errors.map((e) => `line ${e.line}: ${e.message}`).join('; ')}`);
  }
}

/**
 * The users of a password file, for checking CONNECT credentials. `load` may be called again
 * (e.g. on SIGHUP): a file that cannot be read or parsed throws and keeps the entries loaded
 * before, so a typo never locks every client out.
 */
export class PasswordFile {
  private users = new Map<string, Hash>();
  path: string | undefined;

  static async open(path: string): Promise<PasswordFile> {
    const pf = new PasswordFile();
    await pf.load(path);
    return pf;
  }

  async load(path: string): Promise<void> {
    const parsed = parsePasswordFile(await readFile(path, 'utf8'));
    if (parsed.errors.length > 0) throw new PasswordFileParseError(path, parsed.errors);
    this.users = parsed.users;
    this.path = path;
  }

  /** Reloads the file last loaded. */
  reload(): Promise<void> {
    if (this.path === undefined) return Promise.reject(new Error('no password file loaded'));
    return this.load(this.path);
  }

  get size(): number {
    return this.users.size;
  }

  has(user: string): boolean {
    return this.users.has(user);
  }

  async check(user: string, password: string | Buffer): Promise<boolean> {
    const h = this.users.get(user);
    const ok = await verifyHash(h ?? DUMMY, password);
    return h !== undefined && ok;
  }
}
