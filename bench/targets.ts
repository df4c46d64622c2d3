/**
 * Issue #11's targets, checked against one run's outcomes (heron against mosquitto in the same
 * run): the IoT rows and the paced latency rows ≥ 1.0× Mosquitto per broker CPU-second with 0
 * lost, RSS ≤ 3× Mosquitto's, latency p99 no worse, idle connections ≤ 4 kB each. A target not
 * met points at bench/README.md, where the profile and what was tried are written down.
 */
import type { Outcome } from './report.js';

const IOT = ['iot-ingest-2k', 'iot-ingest-2k-shared', 'iot-ingest-10k', 'iot-command-2k', 'paced-fan-out'];
const LATENCY = ['latency-qos0', 'latency-qos1'];
const WHERE = "bench/README.md, 'Where the time goes on the IoT shapes'";

const verdict = (ok: boolean) => (ok ? 'met' : 'NOT met');

export function issue11Targets(outcomes: readonly Outcome[]): string[] {
  const get = (broker: string, id: string) =>
    outcomes.find((o) => o.broker === broker && o.scenarioId === id)?.result;
  const lines: string[] = [];
  let missed = false;
  for (const id of [...IOT, ...LATENCY]) {
    const h = get('heron', id);
    const m = get('mosquitto', id);
    if (!h || !m || h.perCpuSecond === null || m.perCpuSecond === null) continue;
    const ratio = h.perCpuSecond / m.perCpuSecond;
    const parts = [`${ratio.toFixed(2)}× per CPU-s (≥ 1.0: ${verdict(ratio >= 1)})`];
    let ok = ratio >= 1 && (h.lost ?? 0) === 0;
    parts.push(`lost ${h.lost ?? '—'}`);
    if (h.rssMiB !== undefined && m.rssMiB !== undefined && m.rssMiB > 0) {
      const rss = h.rssMiB / m.rssMiB;
      parts.push(`RSS ${rss.toFixed(1)}× (≤ 3×: ${verdict(rss <= 3)})`);
      ok &&= rss <= 3;
    }
    if (LATENCY.includes(id) && h.latency && m.latency) {
      const p99 = h.latency.p99 <= m.latency.p99;
      parts.push(
        `p99 ${h.latency.p99.toFixed(2)} vs ${m.latency.p99.toFixed(2)} ms (no worse: ${verdict(p99)})`,
      );
      ok &&= p99;
    }
    missed ||= !ok;
    lines.push(`${id}: ${parts.join(', ')}`);
  }
  const idle = get('heron', 'idle-connections');
  if (idle?.kibPerConn !== undefined && idle.kibPerConn !== null) {
    const kb = (idle.kibPerConn * 1024) / 1000;
    missed ||= kb > 4;
    lines.push(`idle-connections: ${kb.toFixed(1)} kB each (≤ 4 kB: ${verdict(kb <= 4)})`);
  }
  if (lines.length === 0) return [];
  if (missed) lines.push(`where the time goes on the targets not met, and what was tried: ${WHERE}`);
  return ['issue #11 targets, heron against mosquitto in this run:', ...lines.map((l) => `  ${l}`)];
}
