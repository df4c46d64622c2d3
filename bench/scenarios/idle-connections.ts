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
    await pool(n, CONCURRENCY, async (i) => {
      try {
        await ctx.connect('c', i, KEEPALIVE_S);
      } catch (err) {
        failed++;
        firstError ||= String(err);
      }
    });
    const end = mark(ctx.broker);
    const connected = n - failed;
    await sleep(ctx.options.quick ? 500 : 1500); // hold them; let the broker settle
    const rssAfter = rssKiB(ctx.broker.pid);
    const stillOpen = ctx.broker.alive();
    const window = measure(start, end, connected);
    const kibPerConn =
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
      detail: `${connected} connections, RSS ${rssBefore ?? '?'} → ${rssAfter ?? '?'} KiB, generator ${(window.generatorLoad * 100).toFixed(0)}% CPU`,
    };
  },
};
