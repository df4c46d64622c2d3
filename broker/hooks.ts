import type { Connection } from './connection.js';

/**
 * Calls the synchronous authorization hooks for a connection. A hook that throws, or that returns
 * a promise (these hooks answer at once; a promise is no answer), denies, and is logged with the
 * client id: a faulty policy refuses rather than lets through, and never ends the process. Callers
 * test that the hook exists first, so a broker without hooks pays nothing.
 */
export function allowPublish(conn: Connection, topic: string): boolean {
  return ask(conn, 'authorizePublish', topic);
}

export function allowSubscribe(conn: Connection, filter: string): boolean {
  return ask(conn, 'authorizeSubscribe', filter);
}

function ask(conn: Connection, hook: 'authorizePublish' | 'authorizeSubscribe', topic: string): boolean {
  const log = conn.broker.log;
  let answer: unknown;
  try {
    answer = conn.broker.hooks[hook]?.(conn.clientInfo, topic);
  } catch (err) {
    log.error({ err, clientId: conn.clientId, hook, topic }, 'hook threw; denied');
    return false;
  }
  if (typeof answer === 'boolean') return answer;
  if (typeof (answer as PromiseLike<unknown> | undefined)?.then === 'function') {
    // Its rejection must not become an unhandled one.
    (answer as PromiseLike<unknown>).then(undefined, (err: unknown) =>
      log.error({ err, clientId: conn.clientId, hook, topic }, 'hook rejected'),
    );
    log.error({ clientId: conn.clientId, hook, topic }, 'hook returned a promise; denied');
    return false;
  }
  return Boolean(answer);
}
