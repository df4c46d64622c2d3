import { type Logger, pino } from 'pino';
import type { LogRing } from './log-ring.js';

/**
 * JSON lines on stdout; the level is the only knob the broker needs. With a ring, warnings and
 * errors are also kept there (the admin API's recent warnings).
 */
export function createLogger(level: string, ring?: LogRing): Logger {
  if (!ring) return pino({ level, base: { name: 'heron' } });
  return pino({ level, base: { name: 'heron' }, hooks: { streamWrite: (s) => ring.line(s) } });
}
