import { type Logger, pino } from 'pino';

/** JSON lines on stdout; the level is the only knob the broker needs. */
export function createLogger(level: string): Logger {
  return pino({ level, base: { name: 'heron' } });
}
