/**
 * Authentication through a password file: heron started with `--password-file` (100 users, each a
 * `$7$` PBKDF2-SHA512 entry as `mosquitto_passwd` writes them), then 2,000 clients connect with a
 * user name and password, at most 100 handshakes at a time, and stay connected (closed after). The same connects
 * without authentication run first on a heron of their own, for the cost of it. Reported: connects
 * per second (target ≥ 2,000/s: PBKDF2 runs on the libuv thread pool, not the event loop) and per
 * broker CPU-second. mosquitto/aedes: `–`.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatPasswordFile, hashPassword, type Line } from '../../plugins/password-file/passwords.js';
import { BenchClient } from '../client.js';
import { type BrokerScenario, mark, measure, pool } from '../scenario.js';
import { spawnHeron } from './persistence.js';

const USERS = 100;
const CONCURRENCY = 100;

/** n clients connect (with credentials when `auth`), 100 at a time, on a heron of its own; closed after. */
async function connects(args: string[], n: number, auth: boolean) {
  const { handle } = await spawnHeron(args);
  try {
    let failed = 0;
    let firstError = '';
    const open: BenchClient[] = [];
    const start = mark(handle);
    await pool(n, CONCURRENCY, async (i) => {
      try {
        const c = await BenchClient.connect({
          host: handle.host,
          port: handle.port,
          clientId: `ha${i}`,
          ...(auth && { username: `user${i % USERS}`, password: `secret${i % USERS}` }),
        });
        open.push(c);
      } catch (err) {
        failed++;
        firstError ||= String(err);
      }
    });
    const end = mark(handle);
    for (const c of open) c.destroy();
    return { window: measure(start, end, n - failed), failed, firstError, command: handle.command };
  } finally {
    await handle.stop();
  }
}

const fmt = (v: number | null) => (v === null ? '–' : v.toFixed(0));

export const passwordConnects: BrokerScenario = {
  kind: 'broker',
  id: 'connect-password-file',
  title: 'connects with a password file (PBKDF2, 100 users)',
  strict: true,
  unsupported: { mosquitto: 'a heron configuration', aedes: 'a heron configuration' },
  async run(ctx) {
    const n = ctx.options.quick ? 500 : 2000;
    const dir = mkdtempSync(join(tmpdir(), 'heron-bench-auth-'));
    const file = join(dir, 'passwords');
    const lines: Line[] = [];
    for (let u = 0; u < USERS; u++) lines.push({ user: `user${u}`, hash: await hashPassword(`secret${u}`) });
    writeFileSync(file, formatPasswordFile(lines), { mode: 0o600 });
    try {
      const plain = await connects(['--persistence', 'memory'], n, false);
      const r = await connects(['--persistence', 'memory', '--password-file', file], n, true);
      ctx.log(`auth: ${r.command}`);
      const notes = [
        `${r.window.rate.toFixed(0)} connects/s with the password file (${r.window.rate >= 2000 ? 'meets' : 'misses'} the 2,000/s target), ` +
          `${plain.window.rate.toFixed(0)}/s without; per CPU-s ${fmt(r.window.perCpuSecond)} vs ${fmt(plain.window.perCpuSecond)}`,
      ];
      if (r.failed + plain.failed > 0)
        notes.push(`${r.failed + plain.failed} connects failed: ${r.firstError || plain.firstError}`);
      return {
        unit: 'conn',
        ...r.window,
        lost: r.failed,
        dup: null,
        notes,
        detail: `${n - r.failed} of ${n} authenticated; without authentication ${plain.window.rate.toFixed(0)} connects/s`,
      };
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
};
