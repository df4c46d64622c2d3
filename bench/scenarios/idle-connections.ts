/**
 * Idle connections: open N connections (CONNECT, wait for CONNACK, at most 100 handshakes at a
 * time), hold them, and report the connection rate and the broker's RSS growth per connection
 * (VmRSS before the first connect and after a short settle with all of them open).
 */
import { rssKiB } from '../brokers.js';
import { type BrokerScenario, mark, measure, pool, sleep } from '../scenario.js';

const CONCURRENCY = 100;
const KEEPALIVE_S = 60; // longer than the scenario: no PINGREQ needed

export const idleConnections: BrokerScenario = {
  kind: 'broker',
  id: 'idle-connections',
  title: 'idle connections',
  strict: true,
  async run(ctx) {
    const n = ctx.options.quick ? 1000 : 5000;
    const notes: string[] = [];
    const rssBefore = rssKiB(ctx.broker.pid);
    const start = mark(ctx.broker);
    let failed = 0;
    let firstError = '';
    const open = (from: number, count: number) =>
      pool(count, CONCURRENCY, async (i) => {
        try {
          await ctx.connect('c', from + i, KEEPALIVE_S);
        } catch (err) {
          failed++;
          firstError ||= String(err);
        }
      });
    const half = Math.floor(n / 2);
    await open(0, half);
    const end1 = mark(ctx.broker);
    await sleep(ctx.options.quick ? 250 : 750);
    const rssHalf = rssKiB(ctx.broker.pid);
    const failedHalf = failed;
    const start2 = mark(ctx.broker);
    await open(half, n - half);
    const end = mark(ctx.broker);
    const connected = n - failed;
    await sleep(ctx.options.quick ? 500 : 1500); // hold them; let the broker settle
    const rssAfter = rssKiB(ctx.broker.pid);
    const stillOpen = ctx.broker.alive();
    // Rate over both halves' connect phases, not the settle pause between them.
    const w1 = measure(start, end1, half - failedHalf);
    const w2 = measure(start2, end, n - half - (failed - failedHalf));
    const seconds = w1.seconds + w2.seconds;
    const brokerCpu = w1.brokerCpu !== null && w2.brokerCpu !== null ? w1.brokerCpu + w2.brokerCpu : null;
    const window = {
      count: connected,
      seconds,
      rate: connected / seconds,
      brokerCpu,
      perCpuSecond: brokerCpu !== null && brokerCpu >= 0.02 ? connected / brokerCpu : null,
      generatorLoad: (w1.generatorLoad * w1.seconds + w2.generatorLoad * w2.seconds) / seconds,
    };
    const secondHalf = n - half - (failed - failedHalf);
    const kibPerConn =
      rssHalf !== null && rssAfter !== null && secondHalf > 0 ? (rssAfter - rssHalf) / secondHalf : null;
    const avg =
      rssBefore !== null && rssAfter !== null && connected > 0 ? (rssAfter - rssBefore) / connected : null;
    if (failed > 0) notes.push(`${failed} of ${n} connections failed: ${firstError}`);
    if (!stillOpen) notes.push('broker exited while holding connections');
    await ctx.closeAll();
    return {
      unit: 'conn',
      ...window,
      lost: failed,
      dup: null,
      kibPerConn,
      notes,
      detail: `${connected} connections, RSS ${rssBefore ?? '?'} → ${rssHalf ?? '?'} → ${rssAfter ?? '?'} KiB (average ${avg === null ? '?' : avg.toFixed(1)} KiB/conn incl. one-time growth), generator ${(window.generatorLoad * 100).toFixed(0)}% CPU`,
    };
  },
};
