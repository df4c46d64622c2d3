/** Formatting of results: progress lines and the final markdown table. */
import type { ScenarioResult } from './scenario.js';

export interface Outcome {
  broker: string;
  scenarioId: string;
  title: string;
  strict: boolean;
  result?: ScenarioResult;
  error?: string;
  /** Not run: the broker lacks what the scenario needs (shown as `–`). */
  na?: string;
}

export function fmtCount(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return '—';
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e4) return `${(n / 1e3).toFixed(1)}k`;
  if (n >= 100) return n.toFixed(0);
  return n.toFixed(1);
}

const ms = (x: number) => (x < 10 ? x.toFixed(2) : x.toFixed(1));

/** The first cell for a broker: rate, latency or connection figures. */
function mainCell(r: ScenarioResult): string {
  if (r.cell) return r.cell;
  if (r.unit === 'conn') {
    const kib = r.kibPerConn === null || r.kibPerConn === undefined ? '—' : r.kibPerConn.toFixed(1);
    return `${fmtCount(r.rate)} conn/s, ${kib} KiB/conn`;
  }
  if (r.latency) return `p50 ${ms(r.latency.p50)} / p99 ${ms(r.latency.p99)} ms`;
  if (r.shares) {
    const pct = (x: number) => `${(x * 100).toFixed(1)}%`;
    return `${fmtCount(r.rate)} msg/s, share ${pct(r.shares.min)}–${pct(r.shares.max)}`;
  }
  return `${fmtCount(r.rate)} msg/s`;
}

function cpuCell(r: ScenarioResult): string {
  return r.perCpuSecond === null ? '—' : `${fmtCount(r.perCpuSecond)}/CPU-s`;
}

function lostDup(r: ScenarioResult): string {
  const lost = r.lost === null ? '–' : String(r.lost);
  const dup = r.dup === null ? '–' : String(r.dup);
  return `${lost}/${dup}`;
}

export function progressLine(o: Outcome): string {
  if (o.na) return `[${o.broker}] ${o.title}: – (${o.na})`;
  if (!o.result) return `[${o.broker}] ${o.title}: ERROR ${o.error}`;
  const r = o.result;
  const parts = [
    mainCell(r),
    `${r.unit === 'conn' ? 'conns' : 'msgs'} per broker CPU-s ${r.perCpuSecond === null ? '—' : Math.round(r.perCpuSecond).toLocaleString('en-US')}`,
    `broker CPU ${r.brokerCpu === null ? '—' : `${r.brokerCpu.toFixed(2)} s`} over ${r.seconds.toFixed(2)} s`,
    `lost/dup ${lostDup(r)}`,
  ];
  if (r.reordered) parts.push(`reordered ${r.reordered}`);
  let line = `[${o.broker}] ${o.title}: ${parts.join(', ')}`;
  if (r.detail) line += `\n    ${r.detail}`;
  for (const n of r.notes) line += `\n    note: ${n}`;
  return line;
}

function table(rows: string[][]): string {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  const line = (r: string[]) => `| ${r.map((cell, c) => cell.padEnd(widths[c])).join(' | ')} |`;
  return [
    line(rows[0]),
    `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`,
    ...rows.slice(1).map(line),
  ].join('\n');
}

/**
 * Rows = scenarios; per broker a result cell and a per-broker-CPU-second cell; heron/<other>
 * ratios of the per-CPU-second figures; lost/dup per broker.
 */
export function markdownTable(
  brokers: string[],
  scenarios: { id: string; title: string }[],
  outcomes: Outcome[],
) {
  const find = (b: string, id: string) => outcomes.find((o) => o.broker === b && o.scenarioId === id);
  const others = brokers.includes('heron') ? ['aedes', 'mosquitto'].filter((b) => brokers.includes(b)) : [];
  const header = ['scenario'];
  for (const b of brokers) header.push(b, `${b} per CPU-s`);
  for (const b of others) header.push(`heron/${b} (CPU-s)`);
  header.push('lost/dup');
  const rows = [header];
  for (const s of scenarios) {
    const row = [s.title];
    for (const b of brokers) {
      const o = find(b, s.id);
      if (!o) row.push('skipped', '—');
      else if (o.na) row.push('–', '–');
      else if (!o.result) row.push('error', '—');
      else row.push(mainCell(o.result), cpuCell(o.result));
    }
    const heronPer = find('heron', s.id)?.result?.perCpuSecond ?? null;
    for (const b of others) {
      const otherPer = find(b, s.id)?.result?.perCpuSecond ?? null;
      row.push(
        heronPer !== null && otherPer !== null && otherPer > 0 ? `${(heronPer / otherPer).toFixed(2)}×` : '—',
      );
    }
    row.push(
      brokers
        .map((b) => {
          const r = find(b, s.id)?.result;
          return r ? `${brokers.length > 1 ? `${b.slice(0, 1)} ` : ''}${lostDup(r)}` : null;
        })
        .filter((x) => x !== null)
        .join(', ') || '—',
    );
    rows.push(row);
  }
  return table(rows);
}
