import { createHash, timingSafeEqual } from 'node:crypto';

/**
 * Who may use which queue over HTTP (README "Job queues"). A bearer token is either an admin
 * token (every queue, every route) or a consumer token naming the queues it may pull from (and
 * ack, nack, extend, see); `*` in `queues` is every queue. Anything else is refused.
 */
export interface QueueConsumer {
  token: string;
  queues: string[];
}

export interface QueuePermissionsOptions {
  /** Tokens of the admin API: everything, including peek, purge and dlq-replay. */
  adminTokens?: string[];
  /** Tokens of pull consumers, each limited to its queues. */
  consumers?: QueueConsumer[];
}

/** What a route needs: `consume` (pull, ack, nack, extend, stats) or `admin` (peek, purge, dlq-replay). */
export type QueueAction = 'consume' | 'admin';

/** Who a request is: null when its token is unknown (401). */
export interface Caller {
  admin: boolean;
  /** Queues it may consume; null = every queue. */
  queues: ReadonlySet<string> | null;
}

const digest = (s: string) => createHash('sha256').update(s).digest();

/** Compares tokens in constant time (by their digests, so lengths do not leak either). */
function same(a: Buffer, b: string): boolean {
  return timingSafeEqual(a, digest(b));
}

export class QueuePermissions {
  private readonly admins: string[];
  private readonly consumers: QueueConsumer[];

  constructor(o: QueuePermissionsOptions = {}) {
    this.admins = [...(o.adminTokens ?? [])].filter((t) => t !== '');
    this.consumers = (o.consumers ?? []).map((c) => {
      if (typeof c?.token !== 'string' || c.token === '' || !Array.isArray(c.queues))
        throw new TypeError('a queue consumer needs a token and a list of queues');
      return { token: c.token, queues: [...c.queues] };
    });
  }

  /** The caller of an `Authorization` header value, or null. */
  caller(authorization: string | undefined): Caller | null {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? '');
    if (m === null) return null;
    const given = digest(m[1]);
    for (const t of this.admins) if (same(given, t)) return { admin: true, queues: null };
    for (const c of this.consumers) {
      if (same(given, c.token))
        return { admin: false, queues: c.queues.includes('*') ? null : new Set(c.queues) };
    }
    return null;
  }

  static allows(caller: Caller, queue: string, action: QueueAction): boolean {
    if (caller.admin) return true;
    if (action === 'admin') return false;
    return caller.queues === null || caller.queues.has(queue);
  }
}
