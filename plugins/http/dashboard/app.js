// Heron's dashboard: plain script, no build step. Data comes from the admin API: a sample every
// second over SSE (/api/v1/events), the clients table from /api/v1/clients. The Authorization
// value (Bearer token, or Basic user:password) is kept in localStorage; EventSource cannot send
// headers, so the stream takes it as the `auth` query parameter.

const KEY = 'heron-admin-auth';
const POINTS = 60;
const $ = (id) => document.getElementById(id);
let auth = localStorage.getItem(KEY);
let source = null;
let chart = null;
const series = [[], [], []];
let clientsTimer = null;

function authFrom(text) {
  const t = text.trim();
  // user:password is Basic; a generated token never holds a colon.
  return t.includes(':') ? `Basic ${btoa(unescape(encodeURIComponent(t)))}` : `Bearer ${t}`;
}

async function api(path, init = {}) {
  const res = await fetch(path, { ...init, headers: { ...(init.headers || {}), authorization: auth } });
  if (res.status === 401) {
    showLogin(true);
    throw new Error('unauthorized');
  }
  return res;
}

function showLogin(failed) {
  if (source) source.close();
  source = null;
  clearInterval(clientsTimer);
  $('app').hidden = true;
  $('login').hidden = false;
  $('login-error').hidden = !failed;
  $('status').textContent = 'not signed in';
  $('token').focus();
}

function cell(text, cls) {
  const td = document.createElement('td');
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function fill(tbody, rows, empty) {
  tbody.replaceChildren(...rows);
  if (rows.length === 0) {
    const tr = document.createElement('tr');
    const td = cell(empty, 'muted');
    td.colSpan = 9;
    tr.append(td);
    tbody.append(tr);
  }
}

const fmt = (n) => (n >= 100 || Number.isInteger(n) ? Math.round(n).toLocaleString() : n.toFixed(1));

function render(s) {
  $('connections').textContent = s.connections.toLocaleString();
  $('sessions').textContent = s.sessions.toLocaleString();
  $('rate-in').textContent = fmt(s.messagesInRate);
  $('rate-out').textContent = fmt(s.messagesOutRate);
  $('subscriptions').textContent = s.subscriptions.toLocaleString();
  $('retained').textContent = s.retained.toLocaleString();
  $('status').textContent = `${s.ready ? 'ready' : 'restoring…'} · up ${Math.floor(s.uptime)} s`;

  series[0].push(s.time / 1000);
  series[1].push(s.messagesInRate);
  series[2].push(s.messagesOutRate);
  if (series[0].length > POINTS) for (const a of series) a.shift();
  if (chart) chart.setData(series);

  fill(
    $('top-topics'),
    s.topTopics.map((t) => {
      const tr = document.createElement('tr');
      tr.append(cell(t.topic), cell(fmt(t.rate), 'num'));
      return tr;
    }),
    'no messages in the last second',
  );
  fill(
    $('top-queues'),
    s.topQueues.map((q) => {
      const tr = document.createElement('tr');
      tr.append(
        cell(q.clientId),
        cell(fmt(q.queued), 'num'),
        cell(fmt(q.inflight), 'num'),
        cell(fmt(q.queuedBytes), 'num'),
      );
      return tr;
    }),
    'no queued messages',
  );
  fill(
    $('groups'),
    s.groups.map((g) => {
      const tr = document.createElement('tr');
      tr.append(
        cell(g.group),
        cell(g.filter),
        cell(fmt(g.members), 'num'),
        cell(fmt(g.depth), 'num'),
        cell(fmt(g.deadLetters), 'num'),
      );
      return tr;
    }),
    'no shared groups',
  );
  fill(
    $('job-queues'),
    (s.queues ?? []).map((q) => {
      const tr = document.createElement('tr');
      tr.append(
        cell(q.name),
        cell(fmt(q.waiting + q.delayed), 'num'),
        cell(fmt(q.pulled), 'num'),
        cell(q.oldestAgeMs === null ? '–' : `${fmt(Math.round(q.oldestAgeMs / 1000))} s`, 'num'),
        cell(fmt(q.deadLettered), 'num'),
      );
      return tr;
    }),
    'no declared queues',
  );
  $('warnings').replaceChildren(
    ...s.warnings.map((w) => {
      const li = document.createElement('li');
      li.className = w.level;
      const extra = Object.entries(w.fields)
        .filter(([, v]) => typeof v !== 'object')
        .map(([k, v]) => `${k}=${v}`)
        .join(' ');
      li.textContent = `${new Date(w.time).toLocaleTimeString()} ${w.level.toUpperCase()} ${w.msg} ${extra}`;
      return li;
    }),
  );
  if (s.warnings.length === 0) $('warnings').innerHTML = '<li class="muted">none</li>';
}

async function loadClients() {
  const prefix = $('search').value;
  const q = new URLSearchParams({ limit: '100' });
  if (prefix) q.set('prefix', prefix);
  let page;
  try {
    page = await (await api(`/api/v1/clients?${q}`)).json();
  } catch {
    return;
  }
  fill(
    $('clients'),
    page.items.map((c) => {
      const tr = document.createElement('tr');
      tr.dataset.client = c.clientId;
      const state = cell(c.connected ? 'connected' : 'offline', c.connected ? 'online' : 'muted');
      const td = document.createElement('td');
      if (c.connected) {
        const b = document.createElement('button');
        b.type = 'button';
        b.className = 'kick';
        b.textContent = 'Kick';
        b.dataset.client = c.clientId;
        b.addEventListener('click', () => kick(c.clientId, b));
        td.append(b);
      }
      tr.append(
        cell(c.clientId),
        cell(c.username ?? '', 'hide-narrow'),
        state,
        cell(c.remoteAddress ?? '', 'hide-narrow'),
        cell(fmt(c.subscriptionCount), 'num'),
        cell(fmt(c.queued), 'num'),
        td,
      );
      return tr;
    }),
    prefix ? 'no client id starts with that' : 'no clients',
  );
  $('clients-more').textContent =
    page.total > page.items.length ? `${page.items.length} of ${page.total} shown` : '';
}

async function kick(clientId, button) {
  button.disabled = true;
  try {
    await api(`/api/v1/clients/${encodeURIComponent(clientId)}/kick`, { method: 'POST' });
  } finally {
    await loadClients();
  }
}

function makeChart() {
  const el = $('chart');
  const width = () => Math.max(240, el.clientWidth);
  chart = new uPlot(
    {
      width: width(),
      height: 200,
      series: [
        {},
        { label: 'in', stroke: '#2266cc', width: 2 },
        { label: 'out', stroke: '#e67e22', width: 2 },
      ],
      axes: [{}, { size: 50 }],
      scales: { x: { time: true } },
    },
    series,
    el,
  );
  window.addEventListener('resize', () => chart.setSize({ width: width(), height: 200 }));
}

async function start() {
  // A first request tells a wrong token from a down broker before streaming.
  let first;
  try {
    first = await (await api('/api/v1/live')).json();
  } catch {
    return;
  }
  $('login').hidden = true;
  $('app').hidden = false;
  if (!chart) makeChart();
  render(first);
  source = new EventSource(`/api/v1/events?auth=${encodeURIComponent(auth)}`);
  source.onmessage = (e) => render(JSON.parse(e.data));
  source.onerror = () => {
    $('status').textContent = 'reconnecting…';
  };
  loadClients();
  clientsTimer = setInterval(loadClients, 2000);
}

$('login').addEventListener('submit', (e) => {
  e.preventDefault();
  auth = authFrom($('token').value);
  localStorage.setItem(KEY, auth);
  start();
});
$('logout').addEventListener('click', () => {
  localStorage.removeItem(KEY);
  auth = null;
  showLogin(false);
});
let searchTimer;
$('search').addEventListener('input', () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(loadClients, 200);
});

if (auth) start();
else showLogin(false);
