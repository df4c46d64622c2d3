/**
 * The floor: a plain Node TCP server doing the least any broker must do on the bench's shapes, so
 * bench/README.md can show what of a broker's per-message cost is Node's own (a read, a wake-up,
 * a write) and what is left for parsing, routing and state. `--brokers floor` runs it.
 *
 * It is NOT an MQTT broker: it splits the byte stream into frames by their fixed header (type and
 * remaining length), answers CONNECT/SUBSCRIBE/PINGREQ with canned acks, acknowledges a QoS 1
 * PUBLISH with a 4-byte PUBACK and forwards the PUBLISH bytes unchanged to the connections whose
 * filter matches (the subscriber keeps the publisher's packet id; its acks are ignored). No
 * sessions, no QoS state, no retained messages, no validation. Framing by hand is acceptable here
 * only because this is a measuring stick in bench/; broker/ uses mqtt-packet.
 *
 * Usage: node dist/bench/floor-server.js <port> [host]
 */
import net from 'node:net';

const CONNACK = Buffer.from([0x20, 2, 0, 0]);
const PINGRESP = Buffer.from([0xd0, 0]);

interface Sub {
  levels: string[];
  socket: net.Socket;
}
/** Filters by first level would be faster still; the floor keeps to a flat list + exact topics. */
const exact = new Map<string, net.Socket[]>();
const wild: Sub[] = [];
const groups = new Map<string, { levels: string[]; members: net.Socket[]; next: number }>();

function matches(levels: string[], topic: string[]): boolean {
  for (let i = 0; i < levels.length; i++) {
    if (levels[i] === '#') return true;
    if (i >= topic.length) return false;
    if (levels[i] !== '+' && levels[i] !== topic[i]) return false;
  }
  return levels.length === topic.length;
}

function subscribe(socket: net.Socket, filter: string): void {
  if (filter.startsWith('$share/')) {
    const rest = filter.slice(7);
    const slash = rest.indexOf('/');
    const key = rest;
    const g = groups.get(key) ?? { levels: rest.slice(slash + 1).split('/'), members: [], next: 0 };
    g.members.push(socket);
    groups.set(key, g);
  } else if (filter.includes('+') || filter.includes('#')) {
    wild.push({ levels: filter.split('/'), socket });
  } else {
    const list = exact.get(filter) ?? [];
    list.push(socket);
    exact.set(filter, list);
  }
}

function unsubscribeAll(socket: net.Socket): void {
  for (const [k, list] of exact) {
    const rest = list.filter((s) => s !== socket);
    if (rest.length === 0) exact.delete(k);
    else exact.set(k, rest);
  }
  for (let i = wild.length - 1; i >= 0; i--) if (wild[i].socket === socket) wild.splice(i, 1);
  for (const g of groups.values()) g.members = g.members.filter((s) => s !== socket);
}

function route(topic: string, frame: Buffer): void {
  const list = exact.get(topic);
  if (list) for (const s of list) s.write(frame);
  if (wild.length === 0 && groups.size === 0) return;
  const levels = topic.split('/');
  for (const w of wild) if (matches(w.levels, levels)) w.socket.write(frame);
  for (const g of groups.values()) {
    if (g.members.length > 0 && matches(g.levels, levels)) {
      g.members[g.next++ % g.members.length].write(frame);
    }
  }
}

function onFrame(socket: net.Socket, frame: Buffer, body: number): void {
  const type = frame[0] >> 4;
  switch (type) {
    case 1: // CONNECT
      socket.write(CONNACK);
      return;
    case 3: {
      // PUBLISH: topic length, topic, [packet id], payload
      const qos = (frame[0] >> 1) & 3;
      const tlen = frame.readUInt16BE(body);
      const topic = frame.toString('utf8', body + 2, body + 2 + tlen);
      if (qos > 0) {
        const id = frame.readUInt16BE(body + 2 + tlen);
        socket.write(Buffer.from([qos === 1 ? 0x40 : 0x50, 2, id >> 8, id & 0xff]));
      }
      route(topic, frame);
      return;
    }
    case 8: {
      // SUBSCRIBE: packet id, then (filter, options)*
      const id = frame.readUInt16BE(body);
      const granted: number[] = [];
      let at = body + 2;
      while (at < frame.length) {
        const flen = frame.readUInt16BE(at);
        const filter = frame.toString('utf8', at + 2, at + 2 + flen);
        const qos = frame[at + 2 + flen] & 3;
        subscribe(socket, filter);
        granted.push(qos);
        at += 3 + flen;
      }
      socket.write(Buffer.from([0x90, 2 + granted.length, id >> 8, id & 0xff, ...granted]));
      return;
    }
    case 12: // PINGREQ
      socket.write(PINGRESP);
      return;
    case 14: // DISCONNECT
      socket.end();
      return;
    default: // PUBACK and the like from subscribers: nothing to do
  }
}

const server = net.createServer({ noDelay: true }, (socket) => {
  let pending: Buffer | null = null;
  socket.on('data', (chunk: Buffer) => {
    let buf = pending ? Buffer.concat([pending, chunk]) : chunk;
    pending = null;
    let at = 0;
    for (;;) {
      // fixed header: type byte, remaining length (1–4 bytes, 7 bits each)
      if (buf.length - at < 2) break;
      let len = 0;
      let mul = 1;
      let i = at + 1;
      let done = false;
      for (; i < buf.length && i < at + 5; i++) {
        len += (buf[i] & 0x7f) * mul;
        mul *= 128;
        if ((buf[i] & 0x80) === 0) {
          done = true;
          i++;
          break;
        }
      }
      if (!done) break;
      const end = i + len;
      if (end > buf.length) break;
      onFrame(socket, buf.subarray(at, end), i - at);
      at = end;
    }
    if (at < buf.length) pending = Buffer.from(buf.subarray(at));
    buf = Buffer.alloc(0);
  });
  socket.on('error', () => {});
  socket.on('close', () => unsubscribeAll(socket));
});

server.listen(Number(process.argv[2] ?? 1883), process.argv[3] ?? '127.0.0.1');
process.on('SIGTERM', () => process.exit(0));
