/**
 * Starting and stopping the brokers under test, and sampling their CPU time and RSS from /proc.
 *
 * Every broker runs as a direct child process (no npm or shell wrapper in between), so the child's
 * pid is the broker's pid and /proc/<pid> holds exactly the broker's CPU time.
 */
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import {
  accessSync,
  constants,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** A broker being benchmarked: where to connect and, when known, which process to measure. */
export interface BrokerHandle {
  readonly name: string;
  readonly host: string;
  readonly port: number;
  readonly url: string;
  /** The broker's pid, for CPU and RSS sampling; null for an external broker given without --pid. */
  readonly pid: number | null;
  /** How it was started, for the log. */
  readonly command: string;
  /** Whether the process is still running (always true for an external broker). */
  alive(): boolean;
  /** The last lines the broker wrote to stdout/stderr, to explain a failure. */
  outputTail(): string;
  stop(): Promise<void>;
}

/** How to start one kind of broker. `unavailable()` returns a reason to skip it, or null. */
export interface BrokerSpec {
  readonly name: string;
  /** False when every start() returns the same running broker (an external --url). */
  readonly restartable: boolean;
  unavailable(): Promise<string | null>;
  start(): Promise<BrokerHandle>;
}

// ---------------------------------------------------------------------------------------------
// /proc sampling

let clockTicks = 0;

/** Clock ticks per second for /proc/<pid>/stat times (CLK_TCK, 100 on Linux). */
export function clkTck(): number {
  if (clockTicks === 0) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

/**
 * CPU time of a process in seconds, or null when it cannot be read: the sum over its threads of
 * /proc/<pid>/task/<tid>/schedstat (nanoseconds on CPU), which, unlike utime+stime in 10 ms ticks,
 * stays precise for a scenario that uses a fraction of a second of CPU. Falls back to
 * /proc/<pid>/stat where schedstat is missing.
 */
export function cpuSeconds(pid: number | null): number | null {
  if (pid === null) return null;
  try {
    let ns = 0;
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
      } catch {
        // the thread ended between the listing and the read
      }
    }
    if (ns > 0) return ns / 1e9;
  } catch {
    // no schedstat on this kernel: fall through
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: fields resume after the last ')'.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // rest[0] is field 3 (state), so utime (field 14) is rest[11] and stime (field 15) is rest[12].
    return (Number(rest[11]) + Number(rest[12])) / clkTck();
  } catch {
    return null;
  }
}

/** Resident set size of a process in KiB (VmRSS), or null when it cannot be read. */
export function rssKiB(pid: number | null): number | null {
  if (pid === null) return null;
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------------
// helpers

/** A port that was free a moment ago: listen on port 0, read it back, close. */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, host, () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function canConnect(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** Keeps the last few KiB a child wrote, to show when it fails. */
class OutputTail {
  private text = '';
  attach(child: ChildProcess): void {
    const add = (chunk: Buffer) => {
      this.text = (this.text + chunk.toString('utf8')).slice(-4000);
    };
    child.stdout?.on('data', add);
    child.stderr?.on('data', add);
  }
  toString(): string {
    return this.text.trim();
  }
}

/** Spawns a broker, waits until its port accepts TCP connections, and wraps it in a handle. */
async function launch(
  name: string,
  command: string,
  args: string[],
  host: string,
  port: number,
  cwd?: string,
): Promise<BrokerHandle> {
  const child = spawn(command, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  const tail = new OutputTail();
  tail.attach(child);
  let exited = false;
  let spawnError: Error | null = null;
  const exitPromise = new Promise<void>((resolve) => {
    child.once('exit', () => {
      exited = true;
      resolve();
    });
    child.once('error', (err) => {
      spawnError = err;
      exited = true;
      resolve();
    });
  });

  const handle: BrokerHandle = {
    name,
    host,
    port,
    url: `mqtt://${host}:${port}`,
    pid: child.pid ?? null,
    command: [command, ...args].join(' '),
    alive: () => !exited,
    outputTail: () => tail.toString(),
    async stop() {
      if (exited) return;
      child.kill('SIGTERM');
      const killed = await Promise.race([exitPromise.then(() => true), sleep(3000).then(() => false)]);
      if (!killed) {
        child.kill('SIGKILL');
        await exitPromise;
      }
    },
  };

  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    if (exited) {
      const why = spawnError ? String(spawnError) : `exit code ${child.exitCode} signal ${child.signalCode}`;
      throw new Error(`${name} exited while starting (${why})\n${tail.toString()}`);
    }
    if (await canConnect(host, port)) return handle;
    await sleep(50);
  }
  await handle.stop();
  throw new Error(`${name} did not accept connections on ${host}:${port} within 15 s\n${tail.toString()}`);
}

/** The project root: the nearest parent folder holding package.json named "heron". */
export function projectRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        if (JSON.parse(readFileSync(pkg, 'utf8')).name === 'heron') return dir;
      } catch {
        // not ours; keep climbing
      }
    }
    const up = dirname(dir);
    if (up === dir) throw new Error('cannot find the heron project root above bench/');
    dir = up;
  }
}

/** Finds an executable on PATH, plus the sbin folders Debian puts daemons in. */
function findExecutable(name: string): string | null {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/usr/local/sbin', '/sbin'];
  for (const dir of dirs) {
    if (!dir) continue;
    const file = join(dir, name);
    try {
      accessSync(file, constants.X_OK);
      return file;
    } catch {
      // keep looking
    }
  }
  return null;
}

// ---------------------------------------------------------------------------------------------
// the brokers

const HOST = '127.0.0.1';

/**
 * Heron flags passed only when its --help lists them: in-memory persistence (the footing of
 * mosquitto's `persistence false`) and no WebSocket listener (its fixed default port could clash).
 * Every other setting is `npm start`'s default: queue and inflight bounds, overflow policy.
 */
const HERON_OPTIONAL_FLAGS: [string, string][] = [
  ['--persistence', 'memory'],
  ['--ws-port', '0'],
  // npm start serves the admin API and dashboard too: kept on, on a free port.
  ['--http-port', '0'],
];

/**
 * The node flags `npm start` gives heron (package.json `scripts.start`: `… node <flags>
 * dist/broker/cli.js`), so the bench runs it as it ships, V8 flags included.
 */
export function startNodeFlags(root: string): string[] {
  try {
    const start: string = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).scripts?.start ?? '';
    const m = /\bnode((?:\s+--?[\w-]+(?:=\S+)?)*)\s+dist\/broker\/cli\.js/.exec(start);
    return m ? m[1].trim().split(/\s+/).filter(Boolean) : [];
  } catch {
    return [];
  }
}

/** Heron, from the compiled dist/broker/cli.js, with the node flags of `npm start`. */
export function heron(root = projectRoot(), name = 'heron'): BrokerSpec {
  const cli = join(root, 'dist', 'broker', 'cli.js');
  let extraArgs: string[] | null = null;
  return {
    name,
    restartable: true,
    async unavailable() {
      if (!existsSync(cli)) return `${cli} not found (did the build succeed?)`;
      return null;
    },
    async start() {
      if (extraArgs === null) {
        // Flags may grow: pass each optional flag only when `--help` lists it.
        const help = spawnSync(process.execPath, [cli, '--help'], { encoding: 'utf8', timeout: 10_000 });
        const text = `${help.stdout}${help.stderr}`;
        extraArgs = [];
        for (const [flag, value] of HERON_OPTIONAL_FLAGS) {
          if (new RegExp(`${flag}(?![\\w-])`).test(text)) extraArgs.push(flag, value);
        }
      }
      const port = await freePort(HOST);
      const args = [
        ...startNodeFlags(root),
        // HERON_BENCH_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" profiles it (see bench/README.md).
        ...(process.env.HERON_BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean),
        cli,
        ...['--port', String(port), '--host', HOST, '--log-level', 'warn'],
        ...extraArgs,
      ];
      return launch(name, process.execPath, args, HOST, port, root);
    },
  };
}

/** Debian's mosquitto with a generated config: no persistence, no queue or inflight limits. */
export function mosquitto(): BrokerSpec {
  const bin = findExecutable('mosquitto');
  return {
    name: 'mosquitto',
    restartable: true,
    async unavailable() {
      return bin ? null : 'mosquitto binary not found (apt-get install -y mosquitto)';
    },
    async start() {
      const port = await freePort(HOST);
      const dir = mkdtempSync(join(tmpdir(), 'heron-bench-mosquitto-'));
      const conf = join(dir, 'mosquitto.conf');
      writeFileSync(
        conf,
        [
          `listener ${port} ${HOST}`,
          'allow_anonymous true',
          'persistence false',
          'max_inflight_messages 0',
          'max_queued_messages 1000000',
          'max_queued_bytes 0',
          'max_connections -1',
          // Nagle off, as in the Node brokers' servers here: the latency scenario measures the broker.
          'set_tcp_nodelay true',
          'log_dest stderr',
          'log_type error',
          'log_type warning',
          '',
        ].join('\n'),
      );
      const removeDir = () => rmSync(dir, { recursive: true, force: true });
      try {
        const handle = await launch('mosquitto', bin!, ['-c', conf], HOST, port);
        return {
          ...handle,
          async stop() {
            await handle.stop();
            removeDir();
          },
        };
      } catch (err) {
        removeDir();
        throw err;
      }
    },
  };
}

const AEDES_SERVER = `// Written by heron's bench/brokers.ts: a plain Aedes broker on a TCP port.
import net from 'node:net';
import { Aedes } from 'aedes';

const port = Number(process.argv[2]);
const host = process.argv[3] || '127.0.0.1';
const broker = await Aedes.createBroker();
broker.on('clientError', () => {});
broker.on('connectionError', () => {});
// noDelay: Nagle off, as for the other brokers in the bench.
const server = net.createServer({ noDelay: true }, broker.handle);
server.listen(port, host);
process.on('SIGTERM', () => {
  server.close();
  broker.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 1000).unref();
});
`;

/** Aedes (MQTT 3.1.1), installed on first use into .bench/aedes. */
export function aedes(root = projectRoot(), log: (line: string) => void = console.log): BrokerSpec {
  const dir = join(root, '.bench', 'aedes');
  const server = join(dir, 'server.mjs');
  let installError: string | null = null;
  let installed = false;
  const ensure = (): string | null => {
    if (installed || installError) return installError;
    if (!existsSync(join(dir, 'node_modules', 'aedes', 'package.json'))) {
      mkdirSync(dir, { recursive: true });
      if (!existsSync(join(dir, 'package.json'))) {
        writeFileSync(
          join(dir, 'package.json'),
          `${JSON.stringify({ name: 'heron-bench-aedes', private: true, type: 'module' }, null, 2)}\n`,
        );
      }
      log('installing aedes into .bench/aedes (first run only)…');
      const r = spawnSync('npm', ['install', '--no-audit', '--no-fund', '--silent', 'aedes@^1'], {
        cwd: dir,
        encoding: 'utf8',
        timeout: 180_000,
      });
      if (r.status !== 0 || !existsSync(join(dir, 'node_modules', 'aedes', 'package.json'))) {
        installError = `npm install aedes failed: ${(r.stderr || r.stdout || String(r.error)).trim().slice(-500)}`;
        return installError;
      }
    }
    writeFileSync(server, AEDES_SERVER);
    installed = true;
    return null;
  };
  return {
    name: 'aedes',
    restartable: true,
    async unavailable() {
      return ensure();
    },
    async start() {
      const err = ensure();
      if (err) throw new Error(err);
      const port = await freePort(HOST);
      return launch('aedes', process.execPath, [server, String(port), HOST], HOST, port, dir);
    },
  };
}

/** The floor reference (bench/floor-server.ts): a plain Node TCP server, not a broker. */
export function floor(root = projectRoot()): BrokerSpec {
  const script = join(root, 'dist', 'bench', 'floor-server.js');
  return {
    name: 'floor',
    restartable: true,
    async unavailable() {
      return existsSync(script) ? null : `${script} not found (did the build succeed?)`;
    },
    async start() {
      const port = await freePort(HOST);
      return launch('floor', process.execPath, [script, String(port), HOST], HOST, port, root);
    },
  };
}

/** An already-running broker at a URL; pid (optional) enables CPU and RSS columns. */
export function external(url: string, pid: number | null): BrokerSpec {
  const u = new URL(url);
  if (u.protocol !== 'mqtt:' && u.protocol !== 'tcp:')
    throw new Error(`only mqtt:// URLs are supported: ${url}`);
  const host = u.hostname || '127.0.0.1';
  const port = Number(u.port || 1883);
  return {
    name: u.host,
    restartable: false,
    async unavailable() {
      return (await canConnect(host, port)) ? null : `cannot connect to ${url}`;
    },
    async start() {
      return {
        name: u.host,
        host,
        port,
        url: `mqtt://${host}:${port}`,
        pid,
        command: `external broker at ${url}`,
        alive: () => pid === null || existsSync(`/proc/${pid}`),
        outputTail: () => '',
        async stop() {},
      };
    },
  };
}
