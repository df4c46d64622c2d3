import { randomBytes, timingSafeEqual } from 'node:crypto';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Logger } from 'pino';

/** A new admin token: 32 random bytes, URL-safe. */
export function newToken(): string {
  return randomBytes(32).toString('base64url');
}

/**
 * The generated admin token: read from `file` when an earlier start wrote it, else made and
 * written there (mode 0600, the directory created); without a file, made for this run only and
 * logged, since nowhere else would tell the operator.
 */
export async function generatedToken(file: string | undefined, log: Logger): Promise<string> {
  if (file === undefined) {
    const token = newToken();
    log.warn({ token }, 'no admin token or admin users configured: generated an admin token for this run');
    return token;
  }
  try {
    const text = (await readFile(file, 'utf8')).trim();
    if (text !== '') {
      log.info({ file }, 'admin token read from file');
      return text;
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const token = newToken();
  await mkdir(dirname(file), { recursive: true });
  await writeFile(file, `${token}\n`, { mode: 0o600 });
  await chmod(file, 0o600); // the umask may have narrowed it; never widened
  log.warn({ file }, `no admin token or admin users configured: generated one, stored in ${file}`);
  return token;
}

/** Compares secrets in time independent of where they differ. */
export function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}
