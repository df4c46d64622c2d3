/**
 * What LevelPersistence does when it opens a data dir: refuse a directory it did not write, check
 * the format version, and rebuild the outgoing index (level/outgoing-index.ts) from the o␀ records
 * and m␀ bodies, deleting bodies nobody references and references whose body is missing.
 */
import { readdir } from 'node:fs/promises';
import type { Level } from 'level';
import { decodeOutgoing, storedSize } from './codec.js';
import { END, prefixRange, SEP, SEQ_WIDTH, VERSION_KEY } from './keys.js';
import type { Op, OutgoingIndex } from './outgoing-index.js';

/**
 * The on-disk format this code writes. Format 2 added the short o␀ value; it reads format 1 too (whose
 * o␀ values are all JSON), and a format 1 directory is marked 2 when opened.
 */
export const FORMAT_VERSION = 2;
const READS = [1, 2];

export function errCode(e: unknown): string | undefined {
  return (e as { code?: string } | null)?.code;
}

/** Files Heron itself keeps in the data dir besides LevelDB's. */
const HERON_FILES: ReadonlySet<string> = new Set(['admin-token']);

/** Refuses a non-empty directory that holds no LevelDB database: never scribble into a wrong dir. */
export async function checkDir(dir: string): Promise<void> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (e) {
    if (errCode(e) === 'ENOENT') return;
    throw new Error(`cannot read data dir ${dir}: ${(e as Error).message}`, { cause: e });
  }
  // The HTTP plugin's generated admin token lives beside the database and may come first.
  names = names.filter((n) => !HERON_FILES.has(n));
  if (names.length > 0 && !names.includes('CURRENT')) {
    throw new Error(
      `data dir ${dir} is not empty and holds no LevelDB database (no CURRENT file, found ${names.slice(0, 5).join(', ')}); ` +
        'point Heron at an empty or Heron-owned directory',
    );
  }
}

export function openError(dir: string, e: unknown): Error {
  const cause = (e as { cause?: unknown }).cause ?? e;
  const code = errCode(cause);
  const detail = (cause as Error)?.message ?? String(cause);
  if (code === 'LEVEL_LOCKED') {
    return new Error(
      `data dir ${dir} is locked: another Heron process, or another LevelPersistence in this ` +
        `process, has it open (${detail})`,
      { cause: e },
    );
  }
  if (code === 'LEVEL_CORRUPTION') {
    return new Error(`data dir ${dir} is corrupt (${detail}); restore it from a backup or move it aside`, {
      cause: e,
    });
  }
  return new Error(`cannot open data dir ${dir}: ${detail}`, { cause: e });
}

function corrupt(dir: string, what: string, cause?: unknown): Error {
  return new Error(`data dir ${dir} is corrupt: ${what}; restore it from a backup or move it aside`, {
    cause,
  });
}

async function readForOpen<T>(dir: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (errCode(e) === 'LEVEL_CORRUPTION') throw corrupt(dir, (e as Error).message, e);
    throw e;
  }
}

/** The directory's format version (written as FORMAT_VERSION into an empty one); throws on one not read here. */
export async function checkVersion(db: Level<string, string>, dir: string): Promise<number> {
  const raw = await readForOpen(dir, () => db.get(VERSION_KEY));
  if (raw === undefined) {
    let empty = true;
    for await (const _ of db.keys({ limit: 1 })) empty = false;
    if (!empty) {
      throw new Error(
        `data dir ${dir} holds a LevelDB database that Heron did not write (no format version key)`,
      );
    }
    await db.put(VERSION_KEY, String(FORMAT_VERSION), { sync: true });
    return FORMAT_VERSION;
  }
  const version = Number(raw);
  if (!Number.isSafeInteger(version)) throw corrupt(dir, `format version is ${JSON.stringify(raw)}`);
  if (!READS.includes(version)) {
    throw new Error(
      `data dir ${dir} was written by format version ${version}; this Heron reads versions ${READS.join(' and ')}`,
    );
  }
  return version;
}

/** Rebuilds the index from the o␀ records; deletes orphan bodies and dangling references. */
export async function rebuild(
  db: Level<string, string>,
  dir: string,
  index: OutgoingIndex,
  sync: boolean,
): Promise<void> {
  const ops: Op[] = [];
  await readForOpen(dir, async () => {
    for await (const [key, value] of db.iterator(prefixRange('o'))) {
      const sep = key.length - SEQ_WIDTH - 1;
      const seq = Number(key.slice(sep + 1));
      if (key[sep] !== SEP || !Number.isSafeInteger(seq))
        throw corrupt(dir, `bad outgoing key ${JSON.stringify(key)}`);
      let id: unknown;
      try {
        id = decodeOutgoing(value).m;
      } catch (e) {
        throw corrupt(dir, `bad outgoing record ${JSON.stringify(key)}`, e);
      }
      if (typeof id !== 'string') throw corrupt(dir, `bad outgoing record ${JSON.stringify(key)}`);
      index.loaded(key.slice(2, sep), seq, id);
    }
    // Sizes of the referenced bodies only, for outgoingBytes; the map lives for the open only.
    const sizes = new Map<string, number>();
    for await (const [key, value] of db.iterator({ gte: `m${SEP}`, lt: `m${END}` })) {
      const id = key.slice(2);
      if (index.referenced(id)) sizes.set(id, storedSize(value));
      else ops.push({ type: 'del', key });
    }
    for (const key of index.sized(sizes)) ops.push({ type: 'del', key });
  });
  if (ops.length) await db.batch(ops, { sync });
}
