// An MQTT push worker for a declared queue (README "Job queues").
//   node examples/mqtt-worker.mjs
// Environment: HERON_MQTT (default mqtt://localhost:1883), QUEUE (jobs), FILTER (jobs/#),
// WORKER_ID (a client id: its persistent session keeps its place), MAX_JOBS (exit after that many).
//
// Receive Maximum 1: the broker sends the next job only once this one is acknowledged, so a
// worker is never handed more than it is working on (pull-style pacing over MQTT). A job whose
// payload starts with "fail" is answered with PUBACK 0x80: retried, then dead-lettered.
import mqtt from 'mqtt';

const url = process.env.HERON_MQTT ?? 'mqtt://localhost:1883';
const queue = process.env.QUEUE ?? 'jobs';
const filter = process.env.FILTER ?? 'jobs/#';
const maxJobs = Number(process.env.MAX_JOBS ?? Number.POSITIVE_INFINITY);
let handled = 0;

async function work(payload) {
  if (payload.startsWith('fail')) throw new Error(`cannot do ${payload}`);
  await new Promise((r) => setTimeout(r, 1)); // the job
}

const client = await mqtt.connectAsync(url, {
  protocolVersion: 5,
  clientId: process.env.WORKER_ID ?? `worker-${process.pid}`,
  clean: false,
  reconnectPeriod: 1000,
  properties: { sessionExpiryInterval: 3600, receiveMaximum: 1 },
  customHandleAcks(topic, payload, packet, done) {
    const text = payload.toString();
    work(text)
      .then(
        () => {
          console.log(JSON.stringify({ done: text, topic, dup: packet.dup }));
          done(0);
        },
        (err) => {
          console.log(JSON.stringify({ failed: text, topic, error: err.message }));
          done(0x80);
        },
      )
      .then(() => {
        if (++handled >= maxJobs) client.end(false, {}, () => process.exit(0));
      });
  },
});
await client.subscribeAsync(`$share/${queue}/${filter}`, { qos: 1 });
console.log(JSON.stringify({ ready: `$share/${queue}/${filter}` }));
