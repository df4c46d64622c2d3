import { isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Persistence } from '../persistence/types.js';

/** What `--persistence <module>` hands the module's factory. */
export interface PersistenceFactoryOptions {
  /** `--data-dir`. */
  dataDir: string;
  /** `--sync`. */
  sync: boolean;
}

/** The default export of a persistence module: a factory for the one contract (persistence/types.ts). */
export type PersistenceFactory = (options: PersistenceFactoryOptions) => Persistence | Promise<Persistence>;

const METHODS = ['open', 'close', 'whenDurable', 'putSession', 'putOutgoing', 'getOutgoing', 'setRetained'];

/**
 * Loads a persistence backend from a path (starting with `.` or `/`, resolved against cwd) or a
 * package; its default export is a PersistenceFactory. The result is checked for the contract's
 * methods, so a wrong module fails at start with its name rather than at the first write.
 */
export async function loadPersistence(
  spec: string,
  options: PersistenceFactoryOptions,
  cwd = process.cwd(),
): Promise<Persistence> {
  const isPath = spec.startsWith('.') || isAbsolute(spec);
  let mod: { default?: unknown };
  try {
    mod = (await import(isPath ? pathToFileURL(resolve(cwd, spec)).href : spec)) as { default?: unknown };
  } catch (err) {
    throw new Error(`--persistence ${spec}: cannot load: ${(err as Error).message}`, { cause: err });
  }
  if (typeof mod.default !== 'function')
    throw new Error(`--persistence ${spec}: the default export is not a factory (options) => Persistence`);
  const store = (await (mod.default as PersistenceFactory)(options)) as Partial<Persistence> | null;
  const missing = METHODS.filter((m) => typeof (store as Record<string, unknown> | null)?.[m] !== 'function');
  if (missing.length > 0)
    throw new Error(`--persistence ${spec}: the factory's result lacks ${missing.join(', ')}`);
  return store as Persistence;
}
