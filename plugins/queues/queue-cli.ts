import { parseArgs } from 'node:util';

/**
 * `heron queue list|stats|peek|purge|dlq-replay [NAME]`: declared queues through the admin HTTP
 * API (plugins/queues/http-routes.ts), at --http-url with --admin-token (or HERON_HTTP_URL,
 * HERON_ADMIN_TOKEN). Exit 0, 1 when the broker refuses or cannot be reached, 2 on bad usage.
 */
const USAGE = `Usage: heron queue list [--http-url URL] [--admin-token TOKEN] [--json]
       heron queue stats NAME [...]
       heron queue peek NAME [--max N] [...]
       heron queue purge NAME [...]
       heron queue dlq-replay NAME [--max N] [...]
--http-url defaults to HERON_HTTP_URL, else http://127.0.0.1:18083; --admin-token to HERON_ADMIN_TOKEN.`;

const NEEDS_NAME = new Set(['stats', 'peek', 'purge', 'dlq-replay']);

type Out = (s: string) => void;

export async function queueMain(
  args: string[],
  out: Out = (s) => process.stdout.write(s),
  err: Out = (s) => process.stderr.write(s),
): Promise<number> {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(args);
  } catch (e) {
    err(`heron queue: ${(e as Error).message}\n${USAGE}\n`);
    return 2;
  }
  const { command, name, url, token, max, json } = parsed;
  const path = name === undefined ? '' : `/${encodeURIComponent(name)}`;
  const routes: Record<string, { method: string; route: string; body?: unknown }> = {
    list: { method: 'GET', route: '' },
    stats: { method: 'GET', route: path },
    peek: { method: 'GET', route: `${path}/peek${max === undefined ? '' : `?max=${max}`}` },
    purge: { method: 'POST', route: `${path}/purge` },
    'dlq-replay': {
      method: 'POST',
      route: `${path}/dlq-replay`,
      body: max === undefined ? undefined : { max },
    },
  };
  const r = routes[command];
  let res: Response;
  try {
    res = await fetch(`${url.replace(/\/+$/, '')}/api/v1/queues${r.route}`, {
      method: r.method,
      headers: {
        authorization: `Bearer ${token}`,
        ...(r.body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      body: r.body === undefined ? undefined : JSON.stringify(r.body),
    });
  } catch (e) {
    err(`heron queue: cannot reach ${url}: ${(e as Error).cause ?? (e as Error).message}\n`);
    return 1;
  }
  const text = await res.text();
  let body: Record<string, unknown>;
  try {
    body = JSON.parse(text) as Record<string, unknown>;
  } catch {
    err(`heron queue: HTTP ${res.status}: ${text}\n`);
    return 1;
  }
  if (!res.ok) {
    err(`heron queue: HTTP ${res.status}: ${String(body.error ?? body.message ?? text)}\n`);
    return 1;
  }
  if (json) {
    out(`${JSON.stringify(body, null, 2)}\n`);
    return 0;
  }
  out(render(command, body));
  return 0;
}

function parse(args: string[]) {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      'http-url': { type: 'string' },
      'admin-token': { type: 'string' },
      max: { type: 'string' },
      json: { type: 'boolean' },
    },
  });
  const [command, name, ...extra] = positionals;
  if (command === undefined || !(command === 'list' || NEEDS_NAME.has(command)))
    throw new Error(`unknown command ${command ?? '(none)'}`);
  if (NEEDS_NAME.has(command) && name === undefined) throw new Error(`${command} needs a queue NAME`);
  if (command === 'list' && name !== undefined) extra.unshift(name);
  if (extra.length > 0) throw new Error(`unexpected ${extra.join(' ')}`);
  let max: number | undefined;
  if (values.max !== undefined) {
    max = Number(values.max);
    if (!Number.isInteger(max) || max < 1)
      throw new Error(`--max must be a positive integer, got "${values.max}"`);
  }
  return {
    command,
    name: command === 'list' ? undefined : name,
    url: values['http-url'] ?? process.env.HERON_HTTP_URL ?? 'http://127.0.0.1:18083',
    token: values['admin-token'] ?? process.env.HERON_ADMIN_TOKEN ?? '',
    max,
    json: values.json === true,
  };
}

const age = (ms: unknown) =>
  typeof ms !== 'number'
    ? '-'
    : ms < 1000
      ? `${ms}ms`
      : ms < 120_000
        ? `${Math.round(ms / 1000)}s`
        : `${Math.round(ms / 60_000)}m`;

function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return `${rows
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i]))
        .join('  ')
        .trimEnd(),
    )
    .join('\n')}\n`;
}

function render(command: string, body: Record<string, unknown>): string {
  switch (command) {
    case 'list': {
      const qs = body.queues as Record<string, unknown>[];
      const head = ['NAME', 'FILTER', 'WAITING', 'DELAYED', 'PULLED', 'MEMBERS', 'OLDEST', 'DEAD-LETTERED'];
      return table([
        head,
        ...qs.map((q) => [
          String(q.name),
          String(q.filter),
          String(q.waiting),
          String(q.delayed),
          String(q.pulled),
          `${q.membersOnline}/${q.members}`,
          age(q.oldestAgeMs),
          String(q.deadLettered),
        ]),
      ]);
    }
    case 'stats':
      return table(Object.entries(body).map(([k, v]) => [`${k}:`, k === 'oldestAgeMs' ? age(v) : String(v)]));
    case 'peek': {
      const ms = body.messages as Record<string, unknown>[];
      if (ms.length === 0) return 'empty\n';
      return table([
        ['STATE', 'ATTEMPTS', 'TOPIC', 'PAYLOAD'],
        ...ms.map((m) => [
          String(m.state),
          String(m.attempts),
          String(m.topic),
          m.encoding === 'utf8' ? String(m.payload) : `base64:${String(m.payload)}`,
        ]),
      ]);
    }
    case 'purge':
      return `purged ${body.purged}\n`;
    default:
      return `replayed ${body.replayed}\n`;
  }
}
