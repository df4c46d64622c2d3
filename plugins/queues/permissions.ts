import { hash, timingSafeEqual } from 'node:crypto';

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

// One-shot: no Hash object per request.
const digest = (s: string) => hash('sha256', s, 'buffer');

export class QueuePermissions {
  /** Tokens by their SHA-256 digests, compared in constant time (so lengths do not leak either). */
  private readonly tokens: { digest: Buffer; caller: Caller }[] = [];

  constructor(o: QueuePermissionsOptions = {}) {
    for (const t of o.adminTokens ?? [])
      if (t !== '') this.tokens.push({ digest: digest(t), caller: { admin: true, queues: null } });
    for (const c of o.consumers ?? []) {
      if (typeof c?.token !== 'string' || c.token === '' || !Array.isArray(c.queues))
        throw new TypeError('a queue consumer needs a token and a list of queues');
      const queues = c.queues.includes('*') ? null : new Set(c.queues);
      this.tokens.push({ digest: digest(c.token), caller: { admin: false, queues } });
    }
  }

  /** The caller of an `Authorization` header value, or null. */
  caller(authorization: string | undefined): Caller | null {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? '');
    if (m === null) return null;
    const given = digest(m[1]);
    let found: Caller | null = null;
    // Every token is compared, whichever matches: the time does not tell which one did.
    for (const t of this.tokens) if (timingSafeEqual(given, t.digest) && found === null) found = t.caller;
    return found;
  }

  static allows(caller: Caller, queue: string, action: QueueAction): boolean {
    if (caller.admin) return true;
    if (action === 'admin') return false;
    return caller.queues === null || caller.queues.has(queue);
  }
}
