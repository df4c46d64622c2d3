/**
 * `heron passwd [-c] [-b] [-D] FILE USER [PASSWORD]`: manages a password file the way
 * `mosquitto_passwd` does, writing `$7$` entries Mosquitto reads as well.
 */
import { chmod, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { formatPasswordFile, hashPassword, type Line, parsePasswordFile, validUser } from './passwords.js';

export const PASSWD_USAGE = `Usage: heron passwd [-c | -D] FILE USER
       heron passwd [-c] -b FILE USER PASSWORD

  -c  create FILE, overwriting it if it exists
  -b  batch: take the password from the command line
  -D  delete USER from FILE
Without -b the password is asked twice (not echoed); when stdin is not a terminal, its first two
lines are read. FILE is written with mode 0600.`;

class UsageError extends Error {}

/** Runs the command; resolves with the process exit code. Messages go to stderr. */
export async function passwdMain(args: string[]): Promise<number> {
  try {
    await run(args);
    return 0;
  } catch (err) {
    const msg = (err as Error).message;
    process.stderr.write(
      err instanceof UsageError ? `heron passwd: ${msg}\n\n${PASSWD_USAGE}\n` : `heron passwd: ${msg}\n`,
    );
    return err instanceof UsageError ? 2 : 1;
  }
}

async function run(args: string[]): Promise<void> {
  let create = false;
  let batch = false;
  let del = false;
  const pos: string[] = [];
  for (const a of args) {
    if (pos.length === 0 && /^-[cbDh]+$/.test(a)) {
      for (const f of a.slice(1)) {
        if (f === 'c') create = true;
        else if (f === 'b') batch = true;
        else if (f === 'D') del = true;
        else {
          process.stdout.write(`${PASSWD_USAGE}\n`);
          return;
        }
      }
    } else if (a === '--help') {
      process.stdout.write(`${PASSWD_USAGE}\n`);
      return;
    } else if (pos.length === 0 && a.startsWith('-') && a !== '-') {
      throw new UsageError(`unknown option ${a}`);
    } else pos.push(a);
  }
  if (create && del) throw new UsageError('-c and -D cannot be used together');
  if (del && batch) throw new UsageError('-D takes no password');
  if (pos.length !== (batch ? 3 : 2))
    throw new UsageError(batch ? 'expected FILE USER PASSWORD' : 'expected FILE USER');
  const [file, user, given] = pos;
  if (!validUser(user)) throw new UsageError('a user name must be non-empty without ":" or line breaks');

  let lines: Line[] = [];
  if (!create) {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT')
        throw new Error(`${file} does not exist (use -c to create it)`);
      throw err;
    }
    const parsed = parsePasswordFile(text);
    // Malformed lines are kept as they are: this command only touches USER's line.
    for (const e of parsed.errors)
      process.stderr.write(`heron passwd: warning: ${file}: line ${e.line}: ${e.message}\n`);
    lines = parsed.lines;
  }
  const at = lines.findIndex((l) => 'user' in l && l.user === user);
  if (del) {
    if (at < 0) throw new Error(`user ${user} not in ${file}`);
    lines.splice(at, 1);
  } else {
    const password = given ?? (await askTwice());
    if (password === '') throw new Error('empty password');
    const entry: Line = { user, hash: await hashPassword(password) };
    if (at < 0) lines.push(entry);
    else lines[at] = entry;
  }
  await writeAtomic(file, formatPasswordFile(lines));
}

/** Writes through a temporary file then renames, so a crash never leaves half a file. */
async function writeAtomic(file: string, text: string): Promise<void> {
  const tmp = join(dirname(file), `.${process.pid}.${Date.now()}.heron-passwd.tmp`);
  try {
    await writeFile(tmp, text, { mode: 0o600 });
    await chmod(tmp, 0o600); // the umask may have narrowed it; never widened
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

async function askTwice(): Promise<string> {
  if (process.stdin.isTTY) {
    const a = await promptHidden('Password: ');
    const b = await promptHidden('Reenter password: ');
    if (a !== b) throw new Error('passwords do not match');
    return a;
  }
  const rl = createInterface({ input: process.stdin, crlfDelay: Number.POSITIVE_INFINITY });
  const got: string[] = [];
  for await (const line of rl) {
    got.push(line);
    if (got.length === 2) break;
  }
  rl.close();
  if (got.length < 2) throw new Error('expected the password twice on stdin (two lines)');
  if (got[0] !== got[1]) throw new Error('passwords do not match');
  return got[0];
}

/** Reads one line from the terminal in raw mode, echoing nothing. */
function promptHidden(prompt: string): Promise<string> {
  const stdin = process.stdin;
  process.stderr.write(prompt);
  return new Promise((resolve, reject) => {
    let value = '';
    const done = (err?: Error) => {
      stdin.off('data', onData);
      stdin.setRawMode(false);
      stdin.pause();
      process.stderr.write('\n');
      if (err) reject(err);
      else resolve(value);
    };
    const onData = (chunk: Buffer) => {
      for (const ch of chunk.toString('utf8')) {
        if (ch === '\r' || ch === '\n') return done();
        if (ch === '\u0003' || ch === '\u0004') return done(new Error('cancelled'));
        if (ch === '\u007f' || ch === '\b') value = [...value].slice(0, -1).join('');
        else if (ch >= ' ') value += ch;
      }
    };
    stdin.setRawMode(true);
    stdin.resume();
    stdin.on('data', onData);
  });
}
