import type { LogEntry } from '../plugins/admin-types.js';

const LEVELS: Record<number, LogEntry['level']> = { 40: 'warn', 50: 'error', 60: 'fatal' };

/**
 * The last warnings and errors of the broker's log, kept in memory for the admin API. Fed by the
 * pino logger's streamWrite hook (createLogger): each line is a string there, and only lines of
 * level 40 and up (pino puts `{"level":N` first) are parsed, so info lines cost one comparison.
 */
export class LogRing {
  private readonly entries: LogEntry[] = [];
  private head = 0;

  constructor(readonly capacity = 200) {}

  /** A serialized pino line; returns it unchanged (it is the streamWrite hook's contract). */
  line(s: string): string {
    // `{"level":` is 9 characters; the next digit is 4, 5 or 6 for warn, error, fatal.
    const d = s.charCodeAt(9);
    if (d >= 52 && d <= 54 && s.startsWith('{"level":')) this.add(s);
    return s;
  }

  private add(s: string): void {
    let parsed: Record<string, unknown>;
    try {
      parsed = JSON.parse(s) as Record<string, unknown>;
    } catch {
      return;
    }
    const { level, time, msg, pid: _pid, hostname: _host, name: _name, ...fields } = parsed;
    const entry: LogEntry = {
      time: typeof time === 'number' ? time : Date.now(),
      level: LEVELS[level as number] ?? 'warn',
      msg: typeof msg === 'string' ? msg : '',
      fields,
    };
    if (this.entries.length < this.capacity) this.entries.push(entry);
    else {
      this.entries[this.head] = entry;
      this.head = (this.head + 1) % this.capacity;
    }
  }

  /** The most recent entries first, at most `limit`. */
  recent(limit = this.capacity): LogEntry[] {
    const n = this.entries.length;
    const out: LogEntry[] = [];
    for (let i = 1; i <= Math.min(limit, n); i++) out.push(this.entries[(this.head - i + n) % n]);
    return out;
  }
}
