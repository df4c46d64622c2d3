/** The built `heron` command run as a child process, its pino JSON log read line by line. */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { onCleanup, once } from './helpers.js';

export const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const CLI = fileURLToPath(new URL('../dist/broker/cli.js', import.meta.url));

export interface SpawnOpts {
  /** Added to the environment (HERON_* variables of the parent are not passed on). */
  env?: Record<string, string>;
  cwd?: string;
}

function spawnCli(
  args: string[],
  opts: SpawnOpts,
): ChildProcess & { stdout: NodeJS.ReadableStream; stderr: NodeJS.ReadableStream } {
  assert.ok(existsSync(CLI), `${CLI} is built (npm test builds it first)`);
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('HERON_')) env[k] = v;
  return spawn(process.execPath, [CLI, ...args], {
    cwd: opts.cwd ?? ROOT,
    // No HTTP listener unless a test asks for one: parallel runs would all want port 18083.
    env: { ...env, HERON_HTTP_PORT: 'off', ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  }) as ChildProcess & { stdout: NodeJS.ReadableStream; stderr: NodeJS.ReadableStream };
}

export interface LogLine {
  level: number;
  msg: string;
  [k: string]: unknown;
}

export interface Run {
  child: ChildProcess;
  lines: LogLine[];
  stderr: () => string;
  /** Resolves with the first stdout JSON line matching, already seen or still to come. */
  line: (pred: (l: LogLine) => boolean) => Promise<LogLine>;
  /** Resolves once the process has exited and its output is fully read. */
  done: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export function run(args: string[], opts: SpawnOpts = {}): Run {
  const child = spawnCli(args, opts);
  onCleanup(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const lines: LogLine[] = [];
  const waiters: { pred: (l: LogLine) => boolean; resolve: (l: LogLine) => void }[] = [];
  let stdoutText = '';
  let stderrText = '';
  createInterface({ input: child.stdout! }).on('line', (text) => {
    stdoutText += `${text}\n`;
    let l: LogLine;
    try {
      l = JSON.parse(text);
    } catch {
      return; // --help and the like are plain text
    }
    lines.push(l);
    for (const w of [...waiters]) {
      if (w.pred(l)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(l);
      }
    }
  });
  child.stderr!.on('data', (d: Buffer) => {
    stderrText += d.toString();
  });
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('close', (code, signal) => resolve({ code, signal })),
  );
  return {
    child,
    lines,
    stderr: () => stderrText,
    line: (pred) => {
      const seen = lines.find(pred);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        waiters.push({ pred, resolve });
        void done.then(() =>
          reject(
            new Error(`exited before the expected log line; stdout:\n${stdoutText}\nstderr:\n${stderrText}`),
          ),
        );
      });
    },
    done,
  };
}

/** stdout of a run that ends by itself. */
export async function output(args: string[], opts: SpawnOpts = {}) {
  const child = spawnCli(args, opts);
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => {
    stdout += d.toString();
  });
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const code = await once<number | null>(child, 'close');
  return { code, stdout, stderr };
}
