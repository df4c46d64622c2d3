import { createHash } from 'node:crypto';
import { definePlugin, type PluginApi, type PluginHooks, type Verdict } from '../api.js';
import type { ClientInfo } from '../types.js';
import { TtlCache } from './cache.js';

/**
 * The `http-auth` plugin: authentication and publish/subscribe authorization asked of an HTTP
 * service. Each question is a POST of JSON; a 200 answer `{"result": "allow"|"deny"|"ignore"}`
 * decides (ignore = pass to the next plugin). Anything else — another status, a body that is not
 * such JSON, a timeout, a network error — gets the configured default. Definite answers are
 * cached; a cached answer is returned synchronously (no promise on the publish path).
 */
export interface HttpAuthOptions {
  /** Where CONNECTs are authenticated (and, without aclUrl, publish/subscribe authorized). */
  url: string;
  /** Where publish/subscribe are authorized; default `url`. '' or 'none': not asked. */
  aclUrl?: string;
  /** Milliseconds a request may take. Default 3000 (below the default --hook-timeout). */
  timeout?: number;
  /** Seconds an answer is cached (0 = no cache). Default 60. */
  cacheTtl?: number;
  /** Answers cached at most; the oldest goes first. Default 10000. */
  cacheMax?: number;
  /** What an unanswered question gets: deny, or ignore (pass). Default deny. */
  default?: 'deny' | 'ignore';
  /** Requests in flight at most; more wait in order. Default 64. */
  maxConcurrent?: number;
  /** Requests waiting at most; beyond it a question gets the default at once. Default 10000. */
  maxWaiting?: number;
}

const PROTOCOL: Record<ClientInfo['protocolVersion'], string> = { 3: '3.1', 4: '3.1.1', 5: '5.0' };

/** Maps the service's answer; null for anything that is not one. */
function verdictOf(body: unknown): Verdict | null {
  const r = (body as { result?: unknown } | null)?.result;
  return r === 'allow' ? 'allow' : r === 'deny' ? 'deny' : r === 'ignore' ? 'pass' : null;
}

export function httpAuthHooks(api: PluginApi, o: HttpAuthOptions): { hooks: PluginHooks; close(): void } {
  if (typeof o?.url !== 'string' || !/^https?:\/\//.test(o.url))
    throw new Error('http-auth: url must be an http:// or https:// URL');
  const aclUrl = o.aclUrl === undefined ? o.url : o.aclUrl === 'none' ? '' : o.aclUrl;
  if (aclUrl && !/^https?:\/\//.test(aclUrl)) throw new Error('http-auth: aclUrl must be an http(s) URL');
  const timeout = o.timeout ?? 3000;
  const fallback: Verdict = (o.default ?? 'deny') === 'ignore' ? 'pass' : 'deny';
  if (o.default !== undefined && o.default !== 'deny' && o.default !== 'ignore')
    throw new Error(`http-auth: default must be deny or ignore, got "${o.default}"`);
  const cache = new TtlCache<Verdict>((o.cacheTtl ?? 60) * 1000, o.cacheMax ?? 10_000);
  const maxConcurrent = Math.max(1, o.maxConcurrent ?? 64);
  const maxWaiting = o.maxWaiting ?? 10_000;
  /** The same question asked again while in flight shares the answer. */
  const inflight = new Map<string, Promise<Verdict>>();
  const waiting: (() => void)[] = [];
  let running = 0;
  let closed = false;
  const aborts = new Set<AbortController>();

  const post = async (url: string, body: object): Promise<Verdict | null> => {
    if (running >= maxConcurrent) {
      if (waiting.length >= maxWaiting) {
        api.log.warn({ url }, 'too many requests waiting; default answer');
        return null;
      }
      await new Promise<void>((resolve) => waiting.push(resolve));
      if (closed) {
        waiting.shift()?.();
        return null;
      }
    }
    running++;
    const ac = new AbortController();
    aborts.add(ac);
    const timer = setTimeout(() => ac.abort(new Error(`no answer within ${timeout} ms`)), timeout);
    try {
      const res = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
        signal: ac.signal,
      });
      if (res.status !== 200) {
        void res.body?.cancel().catch(() => undefined);
        api.log.warn({ url, status: res.status }, 'auth service answered without a result; default answer');
        return null;
      }
      const v = verdictOf(await res.json().catch(() => null));
      if (v === null) api.log.warn({ url }, 'auth service answered no valid result; default answer');
      return v;
    } catch (err) {
      if (!closed)
        api.log.warn({ url, err: (err as Error).message }, 'auth service not reached; default answer');
      return null;
    } finally {
      clearTimeout(timer);
      aborts.delete(ac);
      running--;
      waiting.shift()?.();
    }
  };

  /** Cached answer synchronously; else one request per distinct question. */
  const ask = (key: string, url: string, body: object): Verdict | Promise<Verdict> => {
    const hit = cache.get(key);
    if (hit !== undefined) return hit;
    const pending = inflight.get(key);
    if (pending) return pending;
    const p = post(url, body).then((v) => {
      inflight.delete(key);
      if (v === null) return fallback;
      cache.set(key, v);
      return v;
    });
    inflight.set(key, p);
    return p;
  };

  const hooks: PluginHooks = {
    authenticate(client, username, password) {
      const pw = password?.toString('utf8');
      // The password is kept in the cache key only as a digest.
      const key = `c\0${createHash('sha256')
        .update(`${client.clientId}\0${username ?? ''}\0${pw ?? ''}\0${client.remoteAddress ?? ''}`)
        .digest('base64')}`;
      return ask(key, o.url, {
        clientId: client.clientId,
        username: username ?? null,
        password: pw ?? null,
        address: client.remoteAddress ?? null,
        protocol: PROTOCOL[client.protocolVersion],
      });
    },
  };
  if (aclUrl) {
    const authorize = (action: 'publish' | 'subscribe') => (client: ClientInfo, topic: string) =>
      ask(`${action[0]}\0${client.clientId}\0${client.username ?? ''}\0${topic}`, aclUrl, {
        clientId: client.clientId,
        username: client.username ?? null,
        topic,
        action,
      });
    hooks.authorizePublish = authorize('publish');
    hooks.authorizeSubscribe = authorize('subscribe');
  }
  return {
    hooks,
    close() {
      closed = true;
      for (const ac of aborts) ac.abort();
      waiting.shift()?.();
      cache.clear();
    },
  };
}

export default definePlugin<HttpAuthOptions>({
  name: 'http-auth',
  setup(api, options) {
    const { hooks, close } = httpAuthHooks(api, options);
    api.addHooks(hooks);
    api.onClose(close);
  },
});
