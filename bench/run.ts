/**
 * `npm run bench`: runs every scenario against heron, mosquitto and aedes (or one --url broker)
 * and prints a markdown table. See `node dist/bench/run.js --help`.
 */

import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { parseArgs } from 'node:util';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import {
  aedes,
  type BrokerHandle,
  type BrokerSpec,
  external,
  floor,
  heron,
  mosquitto,
  projectRoot,
} from './brokers.js';
import { HEADER_BYTES } from './payload.js';
import { markdownTable, type Outcome, progressLine } from './report.js';
import { type BenchOptions, type BrokerScenario, createContext, type LocalBench, sleep } from './scenario.js';
import { scenarios } from './scenarios/index.js';
import { issue11Targets } from './targets.js';

const HELP = `Usage: node dist/bench/run.js [options]

  --brokers <list>    brokers to compare, comma-separated (default heron,mosquitto,aedes;
                      also floor: a plain Node TCP server, the per-message floor;
                      <name>=<dir>: another heron build whose dist/ is in <dir>, for A/B)
  --url <mqtt://h:p>  benchmark only this already-running broker
  --pid <pid>         with --url: the broker's pid, for CPU and RSS figures
  --only <list>       scenario ids or prefixes, comma-separated: ${scenarios.map((s) => s.id).join(', ')}
  --quick             smaller counts and shorter runs (smoke test)
  --duration <s>      measured seconds per throughput scenario (default 5, quick 1.5)
  --payload <bytes>   PUBLISH payload size (default 64, min ${HEADER_BYTES})
  --json <file>       also write all results as JSON
  --help              this text
`;

const SCENARIO_TIMEOUT_MS = 120_000;

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      brokers: { type: 'string' },
      url: { type: 'string' },
      pid: { type: 'string' },
      only: { type: 'string' },
      quick: { type: 'boolean', default: false },
      duration: { type: 'string' },
      payload: { type: 'string' },
      json: { type: 'string' },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const quick = values.quick ?? false;
  const options: BenchOptions = {
    quick,
    payloadSize: Math.max(HEADER_BYTES, Number(values.payload ?? 64)),
    durationMs: Math.round(Number(values.duration ?? (quick ? 1.5 : 5)) * 1000),
    warmupMs: quick ? 300 : 1000,
  };

  const only = values.only
    ?.split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const selected = only
    ? scenarios.filter((s) => only.some((o) => s.id === o || s.id.startsWith(o)))
    : scenarios;
  if (selected.length === 0) {
    console.error(
      `no scenario matches --only ${values.only}; known: ${scenarios.map((s) => s.id).join(', ')}`,
    );
    return 2;
  }
  const brokerScenarios = selected.filter((s): s is BrokerScenario => s.kind === 'broker');
  const localBenches = selected.filter((s): s is LocalBench => s.kind === 'local');

  let specs: BrokerSpec[];
  if (values.url) {
    specs = [external(values.url, values.pid ? Number(values.pid) : null)];
  } else {
    const root = projectRoot();
    const known: Record<string, () => BrokerSpec> = {
      heron: () => heron(root),
      mosquitto: () => mosquitto(),
      aedes: () => aedes(root),
      floor: () => floor(root),
    };
    const names = (values.brokers ?? 'heron,mosquitto,aedes').split(',').map((s) => s.trim());
    // `<name>=<dir>`: another heron build (its dist/ in <dir>) as a column, for A/B runs of a change.
    for (const n of names) {
      const eq = n.indexOf('=');
      if (eq > 0) known[n] = () => heron(n.slice(eq + 1), n.slice(0, eq));
    }
    const unknown = names.filter((n) => !known[n]);
    if (unknown.length > 0) {
      console.error(`unknown broker(s): ${unknown.join(', ')}; known: ${Object.keys(known).join(', ')}`);
      return 2;
    }
    specs = names.map((n) => known[n]());
  }

  console.log(
    `heron bench: node ${process.version}, ${cpus().length} CPUs, payload ${options.payloadSize} B, ` +
      `${options.durationMs / 1000} s per throughput scenario after ${options.warmupMs / 1000} s warm-up${quick ? ' (quick)' : ''}`,
  );
  const began = performance.now();
  const outcomes: Outcome[] = [];
  const skipped: string[] = [];
  const ran: string[] = [];

  if (brokerScenarios.length > 0) {
    for (const spec of specs) {
      const why = await spec.unavailable();
      if (why) {
        skipped.push(`${spec.name}: skipped — ${why}`);
        console.log(`[${spec.name}] skipped: ${why}`);
        continue;
      }
      ran.push(spec.name);
      let shared: BrokerHandle | null = spec.restartable ? null : await spec.start();
      if (shared) console.log(`[${spec.name}] ${shared.command}`);
      for (const [index, scenario] of brokerScenarios.entries()) {
        const na = scenario.unsupported?.[spec.name];
        if (na) {
          const o: Outcome = {
            broker: spec.name,
            scenarioId: scenario.id,
            title: scenario.title,
            strict: false,
            na,
          };
          outcomes.push(o);
          console.log(progressLine(o));
          continue;
        }
        let broker: BrokerHandle | null = shared;
        // The generator's garbage from the last scenario (millions of messages) is collected now, not
        // by GC threads competing with the next scenario's broker for the machine's cores.
        collectGarbage();
        try {
          if (!broker) {
            broker = await spec.start();
            if (index === 0) console.log(`[${spec.name}] ${broker.command}`);
          }
          const ctx = createContext(broker, options, index, (line) => console.log(`[${spec.name}] ${line}`));
          let timer: NodeJS.Timeout | undefined;
          const budget = (scenario.kind === 'broker' ? scenario.timeoutMs : undefined) ?? SCENARIO_TIMEOUT_MS;
          const timeout = new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new Error(`timed out after ${budget / 1000} s`)), budget);
          });
          try {
            const result = await Promise.race([scenario.run(ctx), timeout]);
            if (!broker.alive())
              result.notes.push(`broker exited during the run: ${broker.outputTail().slice(-300)}`);
            outcomes.push({
              broker: spec.name,
              scenarioId: scenario.id,
              title: scenario.title,
              strict: scenario.strict,
              result,
            });
          } finally {
            clearTimeout(timer);
            await ctx.closeAll();
          }
        } catch (err) {
          let error = err instanceof Error ? err.message : String(err);
          if (broker && !broker.alive()) error += ` (broker exited: ${broker.outputTail().slice(-300)})`;
          outcomes.push({
            broker: spec.name,
            scenarioId: scenario.id,
            title: scenario.title,
            strict: scenario.strict,
            error,
          });
        } finally {
          if (spec.restartable && broker) await broker.stop();
        }
        console.log(progressLine(outcomes[outcomes.length - 1]));
        await sleep(200);
        if (shared && !shared.alive()) {
          console.log(`[${spec.name}] broker is gone; stopping this column`);
          break;
        }
      }
      if (shared) await shared.stop();
      shared = null;
    }
  }

  const localLines: string[] = [];
  let localFailed = false;
  for (const bench of localBenches) {
    const r = await bench.run(options);
    localFailed ||= !r.ok;
    localLines.push(`${bench.title}: ${r.summary}`);
    console.log(localLines[localLines.length - 1]);
  }

  console.log(`\n## Results (${((performance.now() - began) / 1000).toFixed(0)} s)\n`);
  if (ran.length > 0) {
    console.log(markdownTable(ran, brokerScenarios, outcomes));
    console.log(
      '\nper CPU-s = messages (or connections) per second of broker CPU (utime+stime); ratios compare those; ' +
        'lost/dup per broker (QoS 0 may lose; QoS 1/2 must be 0/0; idle connections: failed connects).',
    );
  }
  const notes = outcomes.flatMap((o) =>
    o.na
      ? [`${o.broker} ${o.title}: not run — ${o.na}`]
      : o.result
        ? o.result.notes.map((n) => `${o.broker} ${o.title}: ${n}`)
        : [`${o.broker} ${o.title}: ERROR ${o.error}`],
  );
  for (const line of [...skipped, ...notes]) console.log(`- ${line}`);
  for (const line of localLines) console.log(`\n${line}`);
  const targets = issue11Targets(outcomes);
  if (targets.length > 0) console.log(`\n${targets.join('\n')}`);

  if (values.json) {
    // What the numbers were measured on, so a table can be traced to its run.
    const machine = {
      date: new Date().toISOString(),
      node: process.version,
      cpus: cpus().length,
      cpuModel: cpus()[0]?.model,
      totalMemory: totalmem(),
      commit: gitCommit(),
      brokers: ran,
    };
    const table = markdownTable(ran, brokerScenarios, outcomes);
    writeFileSync(
      values.json,
      `${JSON.stringify({ machine, options, outcomes, local: localLines, skipped, table, targets }, null, 2)}\n`,
    );
  }

  const violations = outcomes.filter(
    (o) => (!o.result && !o.na) || (o.strict && ((o.result?.lost ?? 0) > 0 || (o.result?.dup ?? 0) > 0)),
  );
  return violations.length > 0 || localFailed ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

function collectGarbage(): void {
  gc();
}

function gitCommit(): string | null {
  try {
    return execFileSync('git', ['rev-parse', 'HEAD'], { encoding: 'utf8' }).trim();
  } catch {
    return null;
  }
}
