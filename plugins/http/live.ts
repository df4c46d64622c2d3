import type { ServerResponse } from 'node:http';
import type { PluginApi } from '../api.js';

/** Distinct topics counted per second at most; past that, publishes count under OTHER. */
const MAX_TOPICS = 10_000;
/** Top topics are estimated from every SAMPLE_EVERY-th publish (rates in steps of this many/s). */
const SAMPLE_EVERY = 8;
const OTHER = '(other topics)';

export interface TopicRate {
  topic: string;
  /** Messages per second over the last second. */
  rate: number;
}

/** What the dashboard gets every second (GET /api/v1/live, and the SSE stream). */
export interface LiveSample {
  time: number;
  ready: boolean;
  uptime: number;
  connections: number;
  sessions: number;
  subscriptions: number;
  retained: number;
  /** PUBLISH messages per second received from clients / sent to them. */
  messagesInRate: number;
  messagesOutRate: number;
  bytesInRate: number;
  bytesOutRate: number;
  droppedRate: number;
  topTopics: TopicRate[];
  topQueues: ReturnType<PluginApi['topQueues']>;
  groups: ReturnType<PluginApi['groups']>;
  /** Declared job queues (README "Job queues"). */
  queues: ReturnType<PluginApi['queues']['list']>;
  warnings: ReturnType<PluginApi['warnings']>;
}

/**
 * Samples the broker once a second for the dashboard: rates as differences of api.stats()
 * counters, and top topics from an onPublish counter. Both run only while a dashboard listens
 * (an SSE stream is open): the hook is added then and removed after, so a broker nobody watches
 * pays nothing per publish.
 */
export class LiveStats {
  private readonly streams = new Set<ServerResponse>();
  private counts = new Map<string, number>();
  private seen = 0;
  private timer: NodeJS.Timeout | undefined;
  private last:
    | { time: number; in: number; out: number; bin: number; bout: number; drop: number }
    | undefined;
  private latest: LiveSample | undefined;

  private unhook: (() => void) | undefined;

  constructor(private readonly api: PluginApi) {}

  /** Counts topics while a dashboard listens; removed after, so unwatched publishes pay nothing. */
  private count(): void {
    this.unhook ??= this.api.addHooks({
      onPublish: (message) => {
        // One publish in SAMPLE_EVERY is counted (as that many): a dashboard open during a flood
        // costs a counter increment per message, not a map update.
        if (++this.seen < SAMPLE_EVERY) return;
        this.seen = 0;
        const n = this.counts.get(message.topic);
        if (n !== undefined) this.counts.set(message.topic, n + SAMPLE_EVERY);
        else if (this.counts.size < MAX_TOPICS) this.counts.set(message.topic, SAMPLE_EVERY);
        else this.counts.set(OTHER, (this.counts.get(OTHER) ?? 0) + SAMPLE_EVERY);
      },
    });
  }

  /** The last sample, or one taken now (no rates yet) when nobody watches. */
  sample(): LiveSample {
    return this.timer !== undefined && this.latest ? this.latest : this.take();
  }

  /** Streams samples to an SSE response until it closes. */
  attach(res: ServerResponse): void {
    res.writeHead(200, {
      'content-type': 'text/event-stream',
      'cache-control': 'no-store',
      connection: 'keep-alive',
    });
    this.streams.add(res);
    res.on('close', () => {
      this.streams.delete(res);
      if (this.streams.size === 0) this.stop();
    });
    if (this.timer === undefined) {
      this.count();
      this.take();
      this.timer = setInterval(() => this.tick(), 1000);
      this.timer.unref();
    }
    res.write(`data: ${JSON.stringify(this.latest)}\n\n`);
  }

  private tick(): void {
    let data: string;
    try {
      data = `data: ${JSON.stringify(this.take())}\n\n`;
    } catch (err) {
      this.api.log.error({ err }, 'dashboard sample failed');
      return;
    }
    for (const res of this.streams) res.write(data);
  }

  private take(): LiveSample {
    const s = this.api.stats();
    const now = Date.now();
    const cur = {
      time: now,
      in: s.publish.received,
      out: s.publish.sent,
      bin: s.bytes.received,
      bout: s.bytes.sent,
      drop: s.publish.dropped,
    };
    const prev = this.last;
    const secs = prev ? Math.max(0.001, (now - prev.time) / 1000) : 1;
    const rate = (k: 'in' | 'out' | 'bin' | 'bout' | 'drop') => (prev ? (cur[k] - prev[k]) / secs : 0);
    this.last = cur;
    const topTopics: TopicRate[] = [];
    for (const [topic, n] of this.counts) {
      if (topTopics.length === 10 && n <= topTopics[9].rate) continue;
      let i = topTopics.length;
      while (i > 0 && topTopics[i - 1].rate < n) i--;
      topTopics.splice(i, 0, { topic, rate: n });
      if (topTopics.length > 10) topTopics.pop();
    }
    for (const t of topTopics) t.rate /= secs;
    this.counts = new Map();
    this.latest = {
      time: now,
      ready: s.ready,
      uptime: s.uptime,
      connections: s.clients.connected,
      sessions: s.clients.total,
      subscriptions: s.subscriptions.count,
      retained: s.retained.count,
      messagesInRate: rate('in'),
      messagesOutRate: rate('out'),
      bytesInRate: rate('bin'),
      bytesOutRate: rate('bout'),
      droppedRate: rate('drop'),
      topTopics,
      topQueues: this.api.topQueues(10),
      groups: this.api.groups().slice(0, 50),
      queues: this.api.queues.list().slice(0, 50),
      warnings: this.api.warnings(20),
    };
    return this.latest;
  }

  private stop(): void {
    this.unhook?.();
    this.unhook = undefined;
    clearInterval(this.timer);
    this.timer = undefined;
    this.last = undefined;
    this.counts = new Map();
  }

  /** Ends every stream (the server is closing). */
  close(): void {
    for (const res of this.streams) res.end();
    this.streams.clear();
    this.stop();
  }
}
