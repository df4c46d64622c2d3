/**
 * A/B comparisons on one machine: runs alternate base/variant, variant/base, … (a drift during the
 * rounds weighs on both sides alike), and the row shows the variant run of the round nearest the
 * median variant / base ratio of broker-CPU rates.
 */
import type { ScenarioResult } from './scenario.js';

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length === 0 ? Number.NaN : s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export interface Round {
  base: ScenarioResult;
  variant: ScenarioResult;
  /** variant / base per broker CPU-second, when both measured it. */
  ratio: number | null;
}

export interface Rounds {
  rounds: Round[];
  ratios: number[];
  /** Median of the ratios, null when no round measured one. */
  mid: number | null;
  /** The round whose ratio is nearest the median (the first when there is none). */
  shown: Round;
  /** Median of the base runs' rates per CPU-second. */
  baseMedian: number;
}

/**
 * Up to `count` rounds, at least two, then only as many as fit in `budgetMs` (each scenario has
 * the runner's time limit, on a slow or busy machine too). Round k runs base(k) and variant(k).
 */
export async function alternatingRounds(
  count: number,
  budgetMs: number,
  base: (k: number) => Promise<ScenarioResult>,
  variant: (k: number) => Promise<ScenarioResult>,
): Promise<Rounds> {
  const rounds: Round[] = [];
  const began = performance.now();
  let roundMs = 0;
  for (let k = 0; k < count; k++) {
    if (k >= 2 && performance.now() - began + roundMs > budgetMs) break;
    const roundStart = performance.now();
    let a: ScenarioResult;
    let b: ScenarioResult;
    if (k % 2 === 0) {
      a = await base(k);
      b = await variant(k);
    } else {
      b = await variant(k);
      a = await base(k);
    }
    const ratio = a.perCpuSecond !== null && b.perCpuSecond !== null ? b.perCpuSecond / a.perCpuSecond : null;
    rounds.push({ base: a, variant: b, ratio });
    roundMs = performance.now() - roundStart;
  }
  const ratios = rounds.flatMap((p) => (p.ratio === null ? [] : [p.ratio]));
  const mid = ratios.length > 0 ? median(ratios) : null;
  const shown =
    mid === null
      ? rounds[0]
      : rounds.reduce((best, p) =>
          p.ratio !== null && Math.abs(p.ratio - mid) < Math.abs((best.ratio ?? Infinity) - mid) ? p : best,
        );
  const bases = rounds.flatMap((p) => (p.base.perCpuSecond === null ? [] : [p.base.perCpuSecond]));
  return { rounds, ratios, mid, shown, baseMedian: median(bases) };
}
