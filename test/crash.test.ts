/**
 * kill -9 in the middle of a stream. A real broker process (dist/broker/cli.js on a LevelDB data
 * dir) carries numbered QoS 1 and QoS 2 streams from 3.1.1 and 5.0 publishers to persistent 3.1.1
 * and 5.0 subscribers, and is killed with SIGKILL several times while messages are in flight, then
 * restarted on the same dir (on a new port: every client is re-pointed by hand).
 *
 * The clients are raw mqtt-packet clients that keep their own session state across connections,
 * as the protocol asks: publishers re-send every unacknowledged PUBLISH with DUP=1 and its
 * original packet id, and every PUBREL still owed [MQTT-4.4.0-1]; QoS 2 subscribers hand a
 * message up when its PUBREL arrives (the spec's "method B", as mqtt.js and libmosquitto do) and
 * answer a PUBLISH re-sent before that with PUBREC only [MQTT-4.3.3-10] (5.0) / [MQTT-4.3.3-2]
 * (3.1.1).
 *
 * Checked: every message the broker acknowledged (PUBACK, or PUBREC for QoS 2) reaches every
 * matching subscriber — QoS 1 at least once, QoS 2 exactly once; each reconnect finds its session
 * (Session Present); and after a last kill at rest, the retained messages and the subscriptions of
 * two subscribers that stayed offline throughout (and their queues) are back.
 *
 * Two more runs: QoS 2 jobs from an mqtt.js publisher (reconnecting by itself through a proxy)
 * through a `$share` group of two persistent members, killed three times mid-stream: each job is
 * done exactly once, having reached one member only, and the publisher sees no error; and clients
 * connected with wills at a kill, whose wills the restarted broker publishes.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, connect as netConnect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import mqtt from 'mqtt';
import { generate, type IConnackPacket, parser as mqttParser, type Packet } from 'mqtt-packet';
import { beforeAll, describe, expect, it } from 'vitest';
import { connect, onCleanup, RawClient } from './helpers.js';
import { connectAck, Inbox } from './spec-helpers.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const CLI = fileURLToPath(new URL('../dist/broker/cli.js', import.meta.url));

const MESSAGES = 2000; // per publisher
const KILLS = 5; // during the stream, spread evenly over the acknowledged count
const WINDOW = 20; // unacknowledged publishes per publisher
const RETAINED = 50;
const SUB_WINDOW = 20; // the broker's outbound inflight window per subscriber (--max-inflight)

beforeAll(() => {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: build first with "npx tsc -p tsconfig.json"`);
});

// ---- the broker process ------------------------------------------------------------------------

interface BrokerProcess {
  child: ChildProcess;
  port: number;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Log lines at warn or above, from every broker run, for the final check. */
const problems: string[] = [];

async function startBrokerProcess(dir: string): Promise<BrokerProcess> {
  const args = [
    '--port',
    '0',
    '--ws-port',
    '0',
    '--host',
    '127.0.0.1',
    '--http-port',
    'off',
    '--data-dir',
    dir,
  ];
  // Room for everything the offline subscribers collect: the default 1,000 would drop (by design).
  args.push('--log-level', 'info', '--max-queued', '100000', '--max-inflight', String(SUB_WINDOW));
  const child = spawn(process.execPath, [CLI, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  onCleanup(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal })),
  );
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const port = await new Promise<number>((resolve, reject) => {
    // stdout is read to the end: a full pipe would block the broker.
    createInterface({ input: child.stdout! }).on('line', (text) => {
      let line: { level: number; msg: string; transport?: string; port?: number };
      try {
        line = JSON.parse(text);
      } catch {
        return;
      }
      if (line.level >= 40) problems.push(text);
      if (line.msg === 'listening' && line.transport === 'tcp') resolve(line.port!);
    });
    void exited.then(({ code, signal }) =>
      reject(new Error(`broker exited while starting (code ${code}, signal ${signal}): ${stderr}`)),
    );
  });
  return { child, port, exited };
}

// ---- clients -----------------------------------------------------------------------------------

/** One client id over successive connections; writes of one tick leave in one syscall. */
class Peer {
  socket: Socket | null = null;
  private out: Buffer[] = [];
  private flushQueued = false;

  constructor(
    readonly clientId: string,
    readonly version: 4 | 5,
    private readonly onPacket: (p: Packet) => void,
    private readonly clean = false,
  ) {}

  /** Connects (Clean Session 0 / Clean Start 0 with an hour of Session Expiry); resolves with Session Present. */
  connect(port: number): Promise<boolean> {
    const socket = netConnect(port, '127.0.0.1');
    socket.setNoDelay(true);
    const parser = mqttParser({ protocolVersion: this.version });
    return new Promise<boolean>((resolve, reject) => {
      parser.on('packet', (p: Packet) => {
        if (p.cmd !== 'connack') return this.onPacket(p);
        const ack = p as IConnackPacket;
        const code = this.version === 5 ? ack.reasonCode : ack.returnCode;
        if (code !== 0) return reject(new Error(`${this.clientId}: CONNACK ${code}`));
        // Set before the packets that follow CONNACK in the same chunk are handled.
        this.socket = socket;
        this.out = [];
        resolve(ack.sessionPresent);
      });
      parser.on('error', (err: Error) => socket.destroy(err));
      socket.on('data', (d: Buffer) => parser.parse(d));
      socket.on('error', () => undefined);
      socket.on('close', () => {
        if (this.socket === socket) this.socket = null;
        reject(new Error(`${this.clientId}: closed before CONNACK`));
      });
      socket.write(
        generate(
          {
            cmd: 'connect',
            protocolId: 'MQTT',
            protocolVersion: this.version,
            clientId: this.clientId,
            clean: this.clean,
            keepalive: 0,
            ...(this.version === 5 && !this.clean && { properties: { sessionExpiryInterval: 3600 } }),
          },
          { protocolVersion: this.version },
        ),
      );
    });
  }

  send(p: Packet): void {
    if (!this.socket) return;
    this.out.push(generate(p, { protocolVersion: this.version }));
    if (!this.flushQueued) {
      this.flushQueued = true;
      setImmediate(this.flush);
    }
  }

  private readonly flush = (): void => {
    this.flushQueued = false;
    if (this.socket && this.out.length) this.socket.write(Buffer.concat(this.out));
    this.out = [];
  };

  /** DISCONNECT (the session stays) and wait for the broker to close the connection. */
  async leave(): Promise<void> {
    const socket = this.socket!;
    this.send({ cmd: 'disconnect' });
    await new Promise((resolve) => socket.once('close', resolve));
  }
}

/** A numbered stream on one topic: seq 0..MESSAGES-1, at most WINDOW unacknowledged. */
class Publisher {
  readonly peer: Peer;
  /** seq → 1 once the broker acknowledged it (PUBACK, or PUBREC for QoS 2). */
  readonly acked = new Uint8Array(MESSAGES);
  ackedCount = 0;
  completed = 0;
  errors: string[] = [];
  paused = true;
  private next = 0;
  private nextId = 1;
  /** packet id → seq and whether PUBREL was sent; in the order the PUBLISHes were first sent. */
  readonly outstanding = new Map<number, { seq: number; released: boolean }>();

  constructor(
    readonly name: string,
    readonly version: 4 | 5,
    readonly qos: 1 | 2,
    readonly topic: string,
    private readonly progress: () => void,
  ) {
    this.peer = new Peer(name, version, (p) => this.onPacket(p));
  }

  get done(): boolean {
    return this.completed === MESSAGES;
  }

  private publish(id: number, seq: number, dup: boolean): void {
    const payload = Buffer.from(`${this.name}:${seq}`);
    this.peer.send({
      cmd: 'publish',
      topic: this.topic,
      payload,
      qos: this.qos,
      messageId: id,
      retain: false,
      dup,
    });
  }

  pump(): void {
    while (!this.paused && this.peer.socket && this.outstanding.size < WINDOW && this.next < MESSAGES) {
      while (this.outstanding.has(this.nextId)) this.nextId = (this.nextId % 65535) + 1;
      const id = this.nextId;
      this.nextId = (id % 65535) + 1;
      this.outstanding.set(id, { seq: this.next, released: false });
      this.publish(id, this.next++, false);
    }
  }

  /** After a reconnect: every PUBLISH not yet acknowledged (DUP=1, same id) and every PUBREL owed, in order. */
  resend(): void {
    for (const [id, o] of this.outstanding) {
      if (o.released) this.peer.send({ cmd: 'pubrel', messageId: id });
      else this.publish(id, o.seq, true);
    }
  }

  private ack(seq: number): void {
    if (this.acked[seq]) return;
    this.acked[seq] = 1;
    this.ackedCount++;
  }

  private onPacket(p: Packet): void {
    const id = p.messageId!;
    const o = this.outstanding.get(id);
    const code = (p as { reasonCode?: number }).reasonCode ?? 0;
    switch (p.cmd) {
      case 'puback':
        if (!o || this.qos !== 1 || code >= 0x80) return void this.errors.push(`PUBACK ${id} rc ${code}`);
        this.ack(o.seq);
        this.outstanding.delete(id);
        this.completed++;
        break;
      case 'pubrec':
        if (!o || this.qos !== 2 || code >= 0x80) return void this.errors.push(`PUBREC ${id} rc ${code}`);
        this.ack(o.seq);
        o.released = true;
        this.peer.send({ cmd: 'pubrel', messageId: id });
        break;
      case 'pubcomp':
        // Also a PUBREL re-sent after a restart whose release the broker had already stored and
        // completed gets 0x00 (a resumed session), not 0x92 Packet Identifier not found.
        if (!o?.released || code !== 0) return void this.errors.push(`PUBCOMP ${id} rc ${code}`);
        this.outstanding.delete(id);
        this.completed++;
        break;
      default:
        return void this.errors.push(`unexpected ${p.cmd}`);
    }
    this.pump();
    this.progress();
  }
}

/** Counts every delivery per publisher and seq; QoS 2 is handed up at PUBREL. */
class Subscriber {
  readonly peer: Peer;
  /** publisher name → seq → deliveries. */
  readonly got = new Map<string, Uint8Array>();
  unique = 0;
  duplicates = 0;
  /** QoS 2 counted the other way a receiver may ("method A"): handed up at the first PUBLISH of an id. */
  readonly gotAtPublish = new Map<string, number>();
  duplicatesAtPublish = 0;
  errors: string[] = [];
  /** QoS 2 PUBLISH received, awaiting PUBREL: kept across connections (session state). */
  private readonly pending = new Map<number, Buffer>();
  private suback: (() => void) | null = null;
  /** PUBACK/PUBREC held back to make this a slow consumer, with the connection they belong to. */
  private held: Packet[] = [];
  private heldOn: Socket | null = null;
  private heldTimer: NodeJS.Timeout | null = null;

  constructor(
    readonly name: string,
    readonly version: 4 | 5,
    readonly qos: 1 | 2,
    readonly filter: string,
    /** How many distinct messages this subscriber must end up with. */
    readonly expected: number,
    private readonly progress: () => void,
    clean = false,
    /** Acknowledge PUBLISH this long after receiving it: the broker's window fills and it queues. */
    private readonly ackDelayMs = 0,
  ) {
    this.peer = new Peer(name, version, (p) => this.onPacket(p), clean);
  }

  private ack(p: Packet): void {
    if (this.ackDelayMs === 0) return this.peer.send(p);
    if (this.heldOn !== this.peer.socket) this.held = []; // acks for a connection that is gone
    this.heldOn = this.peer.socket;
    this.held.push(p);
    this.heldTimer ??= setTimeout(() => {
      this.heldTimer = null;
      if (this.heldOn === this.peer.socket) for (const a of this.held) this.peer.send(a);
      this.held = [];
    }, this.ackDelayMs);
  }

  stop(): void {
    if (this.heldTimer) clearTimeout(this.heldTimer);
  }

  get complete(): boolean {
    return this.unique === this.expected;
  }

  /** Deliveries of one message, by its payload `<publisher>:<seq>`. */
  count(publisher: string, seq: number): number {
    return this.got.get(publisher)?.[seq] ?? 0;
  }

  subscribe(): Promise<void> {
    return new Promise((resolve) => {
      this.suback = resolve;
      this.peer.send({
        cmd: 'subscribe',
        messageId: 1,
        subscriptions: [{ topic: this.filter, qos: this.qos }],
      });
    });
  }

  private deliver(payload: Buffer): void {
    const text = payload.toString();
    const colon = text.lastIndexOf(':');
    const publisher = text.slice(0, colon);
    let counts = this.got.get(publisher);
    if (!counts) {
      counts = new Uint8Array(MESSAGES);
      this.got.set(publisher, counts);
    }
    const seq = Number(text.slice(colon + 1));
    if (counts[seq]++ === 0) this.unique++;
    else this.duplicates++;
    this.progress();
  }

  private onPacket(p: Packet): void {
    switch (p.cmd) {
      case 'publish':
        if (p.qos === 1) {
          this.ack({ cmd: 'puback', messageId: p.messageId });
          this.deliver(p.payload as Buffer);
        } else if (p.qos === 2) {
          // Method A hands a message up at its first PUBLISH; a re-sent one (same id, pending) is not new.
          if (!this.pending.has(p.messageId!)) {
            const key = (p.payload as Buffer).toString();
            const n = (this.gotAtPublish.get(key) ?? 0) + 1;
            this.gotAtPublish.set(key, n);
            if (n > 1) this.duplicatesAtPublish++;
          }
          // A later PUBLISH with an id still pending replaces it: one PUBREL, one delivery.
          this.pending.set(p.messageId!, p.payload as Buffer);
          this.ack({ cmd: 'pubrec', messageId: p.messageId });
        } else this.errors.push(`QoS 0 PUBLISH ${p.topic}`);
        return;
      case 'pubrel': {
        const id = p.messageId!;
        const payload = this.pending.get(id);
        this.pending.delete(id);
        this.peer.send({ cmd: 'pubcomp', messageId: id });
        if (payload) this.deliver(payload);
        return;
      }
      case 'suback':
        this.suback?.();
        return;
      default:
        this.errors.push(`unexpected ${p.cmd}`);
    }
  }
}

// ---- the test ----------------------------------------------------------------------------------

describe('kill -9 during a QoS 1/2 stream (LevelDB, real process)', () => {
  it(`loses nothing acknowledged and duplicates no QoS 2 message across ${KILLS} kills and restarts`, async () => {
    const started = performance.now();
    const dir = mkdtempSync(join(tmpdir(), 'heron-crash-'));
    onCleanup(() => rmSync(dir, { recursive: true, force: true }));
    const root = `crash/${Math.random().toString(16).slice(2, 8)}`;
    let broker = await startBrokerProcess(dir);

    let finish: (() => void) | null = null;
    const progress = () => finish?.();
    const pubs = [
      new Publisher('p4q1', 4, 1, `${root}/1/p4q1`, progress),
      new Publisher('p4q2', 4, 2, `${root}/2/p4q2`, progress),
      new Publisher('p5q1', 5, 1, `${root}/1/p5q1`, progress),
      new Publisher('p5q2', 5, 2, `${root}/2/p5q2`, progress),
    ];
    const all = pubs.length * MESSAGES;
    const ofQos2 = pubs.filter((p) => p.qos === 2).length * MESSAGES;
    // QoS 1 subscribers take every stream (QoS 2 ones arrive at QoS 1); QoS 2 subscribers the QoS 2 streams.
    // The 5.0 ones are slow consumers (acks 20 ms late, a window of 20): at each kill the broker
    // holds acknowledged messages for them in flight and in its queue.
    const subs = [
      new Subscriber('s4q1', 4, 1, `${root}/+/+`, all, progress),
      new Subscriber('s4q2', 4, 2, `${root}/2/+`, ofQos2, progress),
      new Subscriber('s5q1', 5, 1, `${root}/+/+`, all, progress, false, 20),
      new Subscriber('s5q2', 5, 2, `${root}/2/+`, ofQos2, progress, false, 20),
    ];
    onCleanup(() => {
      for (const s of subs) s.stop();
    });
    // Subscribed once, then offline until the end: their queues live only in the data dir.
    const sleepers = [
      new Subscriber('z4q1', 4, 1, `${root}/+/+`, all, progress),
      new Subscriber('z5q2', 5, 2, `${root}/2/+`, ofQos2, progress),
    ];

    for (const s of [...subs, ...sleepers]) {
      expect(await s.peer.connect(broker.port)).toBe(false);
      await s.subscribe();
    }
    for (const s of sleepers) await s.peer.leave();

    // Retained messages, acknowledged before the stream starts.
    const setup = new Peer('setup', 5, (p) => {
      if (p.cmd === 'puback') retainedAcks.push(p.messageId!);
      finish?.();
    });
    const retainedAcks: number[] = [];
    expect(await setup.connect(broker.port)).toBe(false);
    await new Promise<void>((resolve) => {
      finish = () => {
        if (retainedAcks.length === RETAINED) resolve();
      };
      for (let i = 1; i <= RETAINED; i++) {
        const payload = Buffer.from(`retained:${i}`);
        setup.send({
          cmd: 'publish',
          topic: `${root}-r/${i}`,
          payload,
          qos: 1,
          messageId: i,
          retain: true,
          dup: false,
        });
      }
    });
    for (const p of pubs) expect(await p.peer.connect(broker.port)).toBe(false);

    // The stream, with a kill each time another sixth of it has been acknowledged.
    const kills: { outstanding: number; undelivered: number; restartMs: number }[] = [];
    const ackedTotal = () => pubs.reduce((n, p) => n + p.ackedCount, 0);
    /** Messages the broker acknowledged that some active subscriber has not received yet. */
    const undelivered = () => {
      let n = 0;
      for (const p of pubs)
        for (const s of subs) {
          if (p.qos === 1 && s.qos === 2) continue;
          for (let seq = 0; seq < MESSAGES; seq++) if (p.acked[seq] && s.count(p.name, seq) === 0) n++;
        }
      return n;
    };
    let crashing: Promise<void> | null = null;
    let failure: Error | null = null;

    const crash = async () => {
      for (const p of pubs) p.paused = true;
      const outstanding = pubs.reduce((n, p) => n + p.outstanding.size, 0);
      const stillOwed = undelivered();
      broker.child.kill('SIGKILL');
      expect((await broker.exited).signal).toBe('SIGKILL');
      const t0 = performance.now();
      broker = await startBrokerProcess(dir);
      kills.push({ outstanding, undelivered: stillOwed, restartMs: performance.now() - t0 });
      // Every session is found again [MQTT-3.2.2-3] (5.0) / [MQTT-3.2.2-2] (3.1.1).
      for (const s of subs) expect(await s.peer.connect(broker.port), s.name).toBe(true);
      for (const p of pubs) {
        expect(await p.peer.connect(broker.port), p.name).toBe(true);
        p.paused = false;
        p.resend();
        p.pump();
      }
    };

    await new Promise<void>((resolve, reject) => {
      finish = () => {
        if (failure) return reject(failure);
        if (!crashing && kills.length < KILLS && ackedTotal() >= ((kills.length + 1) * all) / (KILLS + 1)) {
          crashing = crash().then(
            () => {
              crashing = null;
              finish?.();
            },
            (err: Error) => {
              failure = err;
              reject(err);
            },
          );
          return;
        }
        if (!crashing && kills.length === KILLS && pubs.every((p) => p.done) && subs.every((s) => s.complete))
          resolve();
      };
      // A stall is reported with the counters rather than as a bare timeout.
      let last = -1;
      const watchdog = setInterval(() => {
        const now = ackedTotal() + subs.reduce((n, s) => n + s.unique, 0);
        if (now === last && !crashing) {
          clearInterval(watchdog);
          reject(
            new Error(
              `stalled: kills ${kills.length}, acked ${pubs.map((p) => `${p.name} ${p.ackedCount}/${p.completed}`).join(' ')}, ` +
                `received ${subs.map((s) => `${s.name} ${s.unique}`).join(' ')}`,
            ),
          );
        }
        last = now;
      }, 10_000);
      onCleanup(() => clearInterval(watchdog));
      for (const p of pubs) p.paused = false;
      for (const p of pubs) p.pump();
    });

    // Every message was acknowledged in the end, and delivered: QoS 1 at least once, QoS 2 exactly once.
    for (const p of pubs) {
      expect(p.errors, p.name).toEqual([]);
      expect(p.ackedCount, p.name).toBe(MESSAGES);
    }
    for (const s of subs) {
      expect(s.errors, s.name).toEqual([]);
      expect(s.unique, s.name).toBe(s.expected);
      if (s.qos === 2) {
        expect(s.duplicates, `${s.name}: QoS 2 delivered twice`).toBe(0);
        // Exactly once also for a receiver that delivers at PUBLISH: the broker sends a stored
        // QoS 2 message only once its record is written, so no crash can make it send a second copy.
        expect(s.duplicatesAtPublish, `${s.name}: QoS 2 delivered twice at PUBLISH`).toBe(0);
      }
    }
    expect(kills).toHaveLength(KILLS);
    // The kills did land mid-stream: publishes in flight, acknowledged messages not yet delivered.
    expect(kills.reduce((n, k) => n + k.outstanding, 0)).toBeGreaterThan(0);
    expect(kills.reduce((n, k) => n + k.undelivered, 0)).toBeGreaterThan(0);

    // One more kill, at rest; then the retained messages and the sleepers' subscriptions and queues.
    broker.child.kill('SIGKILL');
    await broker.exited;
    broker = await startBrokerProcess(dir);
    const fresh = new Subscriber('fresh', 5, 1, `${root}-r/+`, RETAINED, progress, true);
    expect(await fresh.peer.connect(broker.port)).toBe(false);
    const sleepersBack = Promise.all(sleepers.map((s) => s.peer.connect(broker.port)));
    await new Promise<void>((resolve) => {
      finish = () => {
        if (fresh.complete && sleepers.every((s) => s.complete)) resolve();
      };
      void fresh.subscribe();
    });
    expect(await sleepersBack).toEqual([true, true]);
    expect([...fresh.got.keys()]).toEqual(['retained']);
    for (const s of sleepers) {
      expect(s.errors, s.name).toEqual([]);
      if (s.qos === 2) expect(s.duplicates, `${s.name}: QoS 2 delivered twice`).toBe(0);
    }
    expect(problems).toEqual([]);

    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    const dups = [...subs, ...sleepers].map((s) => `${s.name} ${s.duplicates}`).join(', ');
    console.log(
      `crash test: ${KILLS + 1} kills in ${seconds} s; at each kill ` +
        kills
          .map(
            (k) =>
              `${k.outstanding} in flight/${k.undelivered} acked-undelivered/${k.restartMs.toFixed(0)} ms restart`,
          )
          .join('; ') +
        `; duplicates (QoS 1 allowed): ${dups}`,
    );
  }, 60_000);
});

describe('kill -9 with clients connected that have wills (LevelDB, real process)', () => {
  it('their connections ended without DISCONNECT: the restarted broker publishes their wills, now or after the Will Delay Interval [MQTT-3.1.2-8]', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'heron-crash-will-'));
    onCleanup(() => rmSync(dir, { recursive: true, force: true }));
    const root = `crash-will/${Math.random().toString(16).slice(2, 8)}`;
    let broker = await startBrokerProcess(dir);
    let url = `mqtt://127.0.0.1:${broker.port}`;
    const persistent = {
      protocolVersion: 5 as const,
      clean: false,
      properties: { sessionExpiryInterval: 3600 },
    };
    const will = (name: string, over: { retain?: boolean; delay?: number } = {}) => ({
      topic: `${root}/${name}`,
      payload: Buffer.from(`${name} gone`),
      qos: 1 as const,
      retain: over.retain === true,
      ...(over.delay !== undefined && { properties: { willDelayInterval: over.delay } }),
    });
    const quiet = (c: { client: { on(e: 'error', f: () => void): unknown } }) => {
      c.client.on('error', () => undefined); // the kill resets their sockets
      return c;
    };
    // A persistent subscriber, offline at the kill: the restarted broker queues the wills for it.
    const watcher = await connectAck(url, { ...persistent, clientId: 'will-watcher' });
    await watcher.client.subscribeAsync(`${root}/#`, { qos: 1 });
    await watcher.client.endAsync();
    quiet(
      await connectAck(url, {
        protocolVersion: 5,
        clientId: 'will-clean',
        will: will('clean', { retain: true }),
      }),
    );
    quiet(await connectAck(url, { protocolVersion: 4, clientId: 'will-v4', clean: false, will: will('v4') }));
    quiet(
      await connectAck(url, { ...persistent, clientId: 'will-later', will: will('later', { delay: 1 }) }),
    );
    // A normal DISCONNECT: its will is never published. The broker closing the socket shows it
    // has handled the DISCONNECT.
    const left = await RawClient.connected(broker.port, 5, { clientId: 'will-left', will: will('left') });
    left.send({ cmd: 'disconnect' });
    await left.closed;
    // A QoS 1 round trip: PUBACK comes once everything before it is written (the wills too).
    const sync = await connect(url, { protocolVersion: 5 });
    sync.on('error', () => undefined);
    await sync.publishAsync(`${root}-sync`, 'x', { qos: 1 });

    broker.child.kill('SIGKILL');
    expect((await broker.exited).signal).toBe('SIGKILL');
    broker = await startBrokerProcess(dir);
    const restarted = performance.now();
    url = `mqtt://127.0.0.1:${broker.port}`;
    const back = await connectAck(url, { ...persistent, clientId: 'will-watcher' });
    expect(back.connack.sessionPresent).toBe(true);
    expect(Inbox.brief(await back.inbox.take(2)).sort()).toEqual([
      `${root}/clean:clean gone`,
      `${root}/v4:v4 gone`,
    ]);
    // Its session lives on: its will waits for the Will Delay Interval, counted from the restart.
    expect(Inbox.brief(await back.inbox.take(1))).toEqual([`${root}/later:later gone`]);
    expect(performance.now() - restarted).toBeGreaterThanOrEqual(900);
    const marker = await connect(url, { protocolVersion: 5 });
    await marker.publishAsync(`${root}/marker`, 'm', { qos: 1 });
    expect(Inbox.brief(await back.inbox.until(`${root}/marker`))).toEqual([`${root}/marker:m`]);
    // The retained will, for a new subscriber.
    const fresh = await connectAck(url, { protocolVersion: 5 });
    await fresh.client.subscribeAsync(`${root}/clean`, { qos: 1 });
    expect(Inbox.brief(await fresh.inbox.take(1))).toEqual([`${root}/clean:clean gone`]);
    expect(problems).toEqual([]);
  }, 30_000);
});

/**
 * A TCP proxy on a fixed port to whichever port the broker listens on now, so that an mqtt.js
 * client reconnects by itself across restarts. A connection ends when its broker side does.
 */
async function brokerProxy(target: number): Promise<{ port: number; target: number }> {
  const p = { port: 0, target };
  const open = new Set<Socket>();
  const server = createServer((down) => {
    const up = netConnect(p.target, '127.0.0.1');
    open.add(down).add(up);
    const drop = () => {
      up.destroy();
      down.destroy();
      open.delete(up);
      open.delete(down);
    };
    for (const s of [up, down]) {
      s.on('error', drop);
      s.on('close', drop);
    }
    down.pipe(up);
    up.pipe(down);
  });
  onCleanup(() => {
    for (const s of open) s.destroy();
    return new Promise((resolve) => server.close(resolve));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  p.port = (server.address() as { port: number }).port;
  return p;
}

const JOBS = 1500;
const SHARED_KILLS = 3;

describe('kill -9 during a QoS 2 job stream through a shared group (LevelDB, real process)', () => {
  it(`every job is done exactly once, by one member, across ${SHARED_KILLS} kills [MQTT-4.8.2-4]; the mqtt.js QoS 2 publisher sees no error`, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'heron-crash-shared-'));
    onCleanup(() => rmSync(dir, { recursive: true, force: true }));
    const root = `crash-shared/${Math.random().toString(16).slice(2, 8)}`;
    let broker = await startBrokerProcess(dir);
    const proxy = await brokerProxy(broker.port);

    let finish: (() => void) | null = null;
    const progress = () => finish?.();
    // Two persistent members, 3.1.1 and 5.0, slow (acks 20 ms late, a window of 20): at each kill
    // the broker has QoS 2 jobs in flight to both, and more waiting in the group queue. They count
    // a job at PUBREL (completions) and at its first PUBLISH (receptions), across connections.
    const filter = `$share/crashjobs/${root}/jobs`;
    const members = [
      new Subscriber('m4', 4, 2, filter, JOBS, progress, false, 20),
      new Subscriber('m5', 5, 2, filter, JOBS, progress, false, 20),
    ];
    onCleanup(() => {
      for (const m of members) m.stop();
    });
    for (const m of members) {
      expect(await m.peer.connect(broker.port)).toBe(false);
      await m.subscribe();
    }
    const key = (i: number) => `jobs:${i}`;
    const completions = (i: number) => members.reduce((n, m) => n + m.count('jobs', i), 0);
    const receptions = (i: number) => members.reduce((n, m) => n + (m.gotAtPublish.get(key(i)) ?? 0), 0);
    const completed = () => members.reduce((n, m) => n + m.unique, 0);

    // The producer: mqtt.js, QoS 2, a persistent session, reconnecting through the proxy by itself
    // and re-sending what it has in flight (PUBLISH, PUBREL) [MQTT-4.4.0-1].
    const producer = mqtt.connect(`mqtt://127.0.0.1:${proxy.port}`, {
      protocolVersion: 5,
      clientId: 'jobs-producer',
      clean: false,
      properties: { sessionExpiryInterval: 3600 },
      reconnectPeriod: 50,
      connectTimeout: 5000,
    });
    onCleanup(() => producer.endAsync(true));
    producer.on('error', () => undefined); // connections reset by the kills
    await new Promise<void>((resolve) => producer.once('connect', () => resolve()));
    const publishErrors: string[] = [];
    let sent = 0;
    let acked = 0;
    const pump = () => {
      while (sent < JOBS && sent - acked < WINDOW) {
        const i = sent++;
        producer.publish(`${root}/jobs`, key(i), { qos: 2 }, (err) => {
          if (err) publishErrors.push(`${key(i)}: ${err.message}`);
          acked++;
          pump();
          progress();
        });
      }
    };

    const kills: { inFlight: number }[] = [];
    let crashing: Promise<void> | null = null;
    const crash = async () => {
      let inFlight = 0;
      for (let i = 0; i < JOBS; i++) if (receptions(i) > 0 && completions(i) === 0) inFlight++;
      broker.child.kill('SIGKILL');
      expect((await broker.exited).signal).toBe('SIGKILL');
      broker = await startBrokerProcess(dir);
      proxy.target = broker.port;
      kills.push({ inFlight });
      for (const m of members) expect(await m.peer.connect(broker.port), m.name).toBe(true);
    };
    await new Promise<void>((resolve, reject) => {
      finish = () => {
        if (
          !crashing &&
          kills.length < SHARED_KILLS &&
          completed() >= ((kills.length + 1) * JOBS) / (SHARED_KILLS + 1)
        ) {
          crashing = crash().then(
            () => {
              crashing = null;
              finish?.();
            },
            (err: Error) => reject(err),
          );
          return;
        }
        if (!crashing && kills.length === SHARED_KILLS && acked === JOBS && completed() === JOBS) resolve();
      };
      let last = -1;
      const watchdog = setInterval(() => {
        const now = acked + completed();
        if (now === last && !crashing) {
          clearInterval(watchdog);
          reject(
            new Error(
              `stalled: kills ${kills.length}, acked ${acked}/${sent}, done ${members.map((m) => `${m.name} ${m.unique}`).join(' ')}`,
            ),
          );
        }
        last = now;
      }, 10_000);
      onCleanup(() => clearInterval(watchdog));
      pump();
    });

    expect(publishErrors).toEqual([]);
    for (const m of members) expect(m.errors, m.name).toEqual([]);
    const twice: string[] = [];
    for (let i = 0; i < JOBS; i++) {
      // Done once, and sent to one member as one packet: never handed to a second member (or again
      // as a new packet) after it had reached the first.
      if (completions(i) !== 1 || receptions(i) !== 1)
        twice.push(`${key(i)}: ${completions(i)}/${receptions(i)}`);
    }
    expect(twice).toEqual([]);
    expect(members.every((m) => m.unique > 0)).toBe(true);
    expect(kills).toHaveLength(SHARED_KILLS);
    // The kills did land while jobs were in flight to members.
    expect(kills.reduce((n, k) => n + k.inFlight, 0)).toBeGreaterThan(0);
    expect(problems).toEqual([]);
    console.log(
      `shared crash test: ${SHARED_KILLS} kills; jobs in flight to members at each: ${kills.map((k) => k.inFlight).join(', ')}; ` +
        `per member: ${members.map((m) => `${m.name} ${m.unique}`).join(', ')}`,
    );
  }, 60_000);
});
