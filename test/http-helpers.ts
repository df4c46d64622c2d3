/** A broker with the HTTP plugin on a free port, and fetch helpers for its admin API. */
import assert from 'node:assert/strict';
import type { BrokerOptions } from '../broker/options.js';
import httpPlugin, { type HttpOptions } from '../plugins/http/index.js';
import { onCleanup, startBroker } from './helpers.js';

export const TOKEN = 'test-admin-token';

export async function startAdmin(http: HttpOptions = {}, opts: BrokerOptions = {}) {
  let base = '';
  const t = await startBroker({
    ...opts,
    plugins: [
      ...(opts.plugins ?? []),
      [httpPlugin, { token: TOKEN, ...http, port: 0, onListen: (a: { url: string }) => (base = a.url) }],
    ],
  });
  onCleanup(() => t.broker.close());
  assert.match(base, /^http:\/\/127\.0\.0\.1:\d+$/, 'the HTTP plugin reports where it listens');
  const call = (path: string, init: RequestInit & { auth?: string | null } = {}) => {
    const headers = new Headers(init.headers);
    const auth = init.auth === undefined ? `Bearer ${TOKEN}` : init.auth;
    if (auth !== null) headers.set('authorization', auth);
    if (init.body !== undefined) headers.set('content-type', 'application/json');
    return fetch(base + path, { ...init, headers });
  };
  const json = async <T = unknown>(path: string, init: RequestInit = {}) => {
    const res = await call(path, init);
    assert.ok(res.ok, `${init.method ?? 'GET'} ${path}: ${res.status} ${res.ok ? '' : await res.text()}`);
    return (await res.json()) as T;
  };
  return { ...t, base, call, json };
}
