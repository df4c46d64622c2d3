/**
 * The generic shape of a benchmark scenario. A broker scenario gets a context (the broker under
 * test, options, a way to open tracked client connections) and returns a ScenarioResult; run.ts
 * runs each one against each broker and builds the table. A local benchmark runs in-process once.
 *
 * To add a scenario: write bench/scenarios/<name>.ts exporting a BrokerScenario (or LocalBench)
 * and list it in bench/scenarios/index.ts.
 */
import { randomBytes } from 'node:crypto';
import { type BrokerHandle, cpuSeconds } from './brokers.js';
import { BenchClient } from './client.js';

export interface BenchOptions {
  /** Smaller counts and shorter runs, for a smoke test. */
  quick: boolean;
  /** PUBLISH payload size in bytes (at least the 14-byte bench header). */
  payloadSize: number;
  /** Measured duration of each throughput scenario, ms (after its warm-up). */
  durationMs: number;
  /** Warm-up before measuring, ms: lets JIT-compiled brokers settle. */
  warmupMs: number;
}

export interface ScenarioContext {
  readonly broker: BrokerHandle;
  readonly options: BenchOptions;
  /** Unique per scenario run, for topics: `${topicRoot}/…`. */
  readonly topicRoot: string;
  log(line: string): void;
  /** Opens an MQTT connection (clean session); closed by the runner after the scenario if still open. */
  connect(role: string, index: number, keepalive?: number): Promise<BenchClient>;
  /** Closes every connection opened through connect() (DISCONNECT, then bounded wait). */
  closeAll(): Promise<void>;
}

export interface LatencySummary {
  samples: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

export interface ScenarioResult {
  /** What `count` counts: delivered messages, or established connections. */
  unit: 'msg' | 'conn';
  /** Units counted inside the measured window. */
  count: number;
  /** Length of the measured window, s. */
  seconds: number;
  /** count / seconds. */
  rate: number;
  /** Broker CPU (utime + stime) over the measured window, s; null when the pid is unknown. */
  brokerCpu: number | null;
  /** count / brokerCpu. */
  perCpuSecond: number | null;
  /** Generator (this process) CPU over the window, as a fraction of one core. */
  generatorLoad: number;
  /** Expected but never delivered / delivered more than once; null when not applicable. */
  lost: number | null;
  dup: number | null;
  reordered?: number;
  latency?: LatencySummary;
  /** Broker RSS at the end of the run, MiB, where a scenario samples it (the IoT rows). */
  rssMiB?: number;
  /** Idle connections: broker RSS growth per connection, KiB. */
  kibPerConn?: number | null;
  /** Shared subscriptions: the smallest and largest fraction of deliveries one member got. */
  shares?: { min: number; max: number };
  /** Overrides the table's result cell, for a scenario that measures no rate (e.g. startup). */
  cell?: string;
  /** Free-form remarks shown under the table (stalls, protocol errors, …). */
  notes: string[];
  /** Human-readable one-line detail for the progress log. */
  detail?: string;
}

export interface BrokerScenario {
  readonly kind: 'broker';
  /** Short id for --only, e.g. "fan-in-qos1". */
  readonly id: string;
  /** Row label in the table. */
  readonly title: string;
  /** Lost and duplicated must be 0 (QoS 1/2); a non-zero count fails the run. */
  readonly strict: boolean;
  /** Brokers that lack what the scenario needs, with why: not run, shown as `–`. */
  readonly unsupported?: Readonly<Record<string, string>>;
  /** Longer than the default 120 s run budget, for scenarios made of several runs. */
  readonly timeoutMs?: number;
  run(ctx: ScenarioContext): Promise<ScenarioResult>;
}

export interface LocalResult {
  ok: boolean;
  summary: string;
}

export interface LocalBench {
  readonly kind: 'local';
  readonly id: string;
  readonly title: string;
  run(options: BenchOptions): Promise<LocalResult>;
}

export type Scenario = BrokerScenario | LocalBench;

// ---------------------------------------------------------------------------------------------

/** A point in time with the broker's and the generator's CPU counters. */
export interface Mark {
  at: number;
  brokerCpu: number | null;
  genCpu: NodeJS.CpuUsage;
}

export function mark(broker: BrokerHandle): Mark {
  return { at: performance.now(), brokerCpu: cpuSeconds(broker.pid), genCpu: process.cpuUsage() };
}

/** Window metrics between two marks; `endAt` overrides the end time (e.g. last delivery). */
export function measure(
  start: Mark,
  end: Mark,
  count: number,
  endAt = end.at,
): Pick<ScenarioResult, 'count' | 'seconds' | 'rate' | 'brokerCpu' | 'perCpuSecond' | 'generatorLoad'> {
  const seconds = Math.max(1e-6, (endAt - start.at) / 1000);
  const brokerCpu =
    start.brokerCpu !== null && end.brokerCpu !== null ? Math.max(0, end.brokerCpu - start.brokerCpu) : null;
  const genSeconds = (end.at - start.at) / 1000;
  const genUsed = (end.genCpu.user - start.genCpu.user + end.genCpu.system - start.genCpu.system) / 1e6;
  return {
    count,
    seconds,
    rate: count / seconds,
    brokerCpu,
    // Under 20 ms of broker CPU the ratio is noise.
    perCpuSecond: brokerCpu !== null && brokerCpu >= 0.02 ? count / brokerCpu : null,
    generatorLoad: genSeconds > 0 ? genUsed / genSeconds : 0,
  };
}

/** Nearest-rank percentiles of latency samples in ms. */
export function summarizeLatency(samples: Float64Array | number[]): LatencySummary | undefined {
  const n = samples.length;
  if (n === 0) return undefined;
  const sorted = Float64Array.from(samples).sort();
  const at = (q: number) => sorted[Math.min(n - 1, Math.max(0, Math.ceil(q * n) - 1))];
  return { samples: n, p50: at(0.5), p90: at(0.9), p99: at(0.99), max: sorted[n - 1] };
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Runs async jobs with at most `limit` in flight; resolves with results in order. */
export async function pool<T>(count: number, limit: number, job: (i: number) => Promise<T>): Promise<T[]> {
  const results = new Array<T>(count);
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const i = next++;
      results[i] = await job(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, count) }, worker));
  return results;
}

/** A context for one scenario run; client ids stay ≤ 23 chars (the 3.1.1 guarantee). */
export function createContext(
  broker: BrokerHandle,
  options: BenchOptions,
  scenarioIndex: number,
  log: (line: string) => void,
): ScenarioContext {
  const tag = randomBytes(3).toString('hex');
  const clients = new Set<BenchClient>();
  return {
    broker,
    options,
    topicRoot: `hb/${tag}`,
    log,
    async connect(role, index, keepalive = 0) {
      const client = await BenchClient.connect({
        host: broker.host,
        port: broker.port,
        clientId: `hb${tag}${scenarioIndex.toString(36)}${role.slice(0, 1)}${index}`,
        keepalive,
      });
      clients.add(client);
      return client;
    },
    async closeAll() {
      const all = [...clients];
      clients.clear();
      await pool(all.length, 500, (i) => all[i].disconnect());
    },
  };
}
