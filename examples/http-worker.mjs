// An HTTP pull worker for a declared queue (README "Job queues"), with fetch only.
//   node examples/http-worker.mjs
// Environment: HERON_HTTP (default http://localhost:18083), HERON_TOKEN (a bearer token allowed on
// the queue), QUEUE (jobs), MAX_JOBS (exit after that many).
//
// Long-polls up to 20 s for up to 10 jobs at a time, each leased for 30 s: acknowledged when done,
// nacked (retried after 5 s) when it fails; one not acknowledged in time is redelivered.
const base = process.env.HERON_HTTP ?? 'http://localhost:18083';
const queue = encodeURIComponent(process.env.QUEUE ?? 'jobs');
const maxJobs = Number(process.env.MAX_JOBS ?? Number.POSITIVE_INFINITY);
const headers = {
  'content-type': 'application/json',
  authorization: `Bearer ${process.env.HERON_TOKEN ?? ''}`,
};

async function call(route, body) {
  const res = await fetch(`${base}/api/v1/queues/${queue}/${route}`, {
    method: 'POST',
    headers,
    body: JSON.stringify(body),
  });
  if (!res.ok) throw new Error(`${route}: HTTP ${res.status} ${await res.text()}`);
  return res.json();
}

async function work(payload) {
  if (payload.startsWith('fail')) throw new Error(`cannot do ${payload}`);
}

console.log(JSON.stringify({ ready: queue }));
let handled = 0;
while (handled < maxJobs) {
  const { messages } = await call('pull', { max: 10, waitMs: 20000, visibilityMs: 30000 });
  const done = [];
  for (const m of messages) {
    const payload = Buffer.from(m.payload, m.encoding === 'utf8' ? 'utf8' : 'base64').toString();
    try {
      await work(payload);
      done.push(m.receipt);
      console.log(JSON.stringify({ done: payload, topic: m.topic, attempts: m.attempts }));
    } catch (err) {
      await call('nack', { receipts: [m.receipt], delayMs: 5000 });
      console.log(JSON.stringify({ failed: payload, topic: m.topic, error: err.message }));
    }
    handled++;
  }
  if (done.length > 0) await call('ack', { receipts: done });
}
