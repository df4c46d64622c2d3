import type { IAuthPacket } from 'mqtt-packet';
import type { AuthMethod, AuthStep } from '../plugins/api.js';
import type { Connection } from './connection.js';
import { violation } from './handlers/validate.js';
import { RC } from './reason-codes.js';

/**
 * MQTT 5.0 enhanced authentication (section 4.12): the AUTH exchange at CONNECT and
 * re-authentication on a live connection, driving the methods plugins register
 * (api.addAuthMethod). A method's step is guarded like a hook: a throw, a rejection, a bad answer
 * or a step slower than hookTimeout ends the exchange as a server error.
 */

export interface RegisteredMethod {
  plugin: string;
  method: AuthMethod;
}

/** A step that failed to answer (as opposed to a method answering failure). */
export const BROKEN = { result: 'broken' } as const;
export type Step = AuthStep | typeof BROKEN;

const AUTH_SUCCESS = 0x00;
const CONTINUE = 0x18;
const REAUTHENTICATE = 0x19;
const TIMED_OUT = Symbol('timed out');

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return typeof (v as PromiseLike<unknown> | null)?.then === 'function';
}

function validStep(v: unknown): v is AuthStep {
  if (typeof v !== 'object' || v === null) return false;
  const s = v as Record<string, unknown>;
  const dataOk = s.data === undefined || Buffer.isBuffer(s.data);
  if (s.result === 'continue') return dataOk && 'state' in s;
  if (s.result === 'success') return dataOk && (s.username === undefined || typeof s.username === 'string');
  if (s.result === 'failure')
    return s.reasonCode === undefined || s.reasonCode === 0x86 || s.reasonCode === 0x87;
  return false;
}

/** Runs one step of `name`, guarded; never throws. */
async function runStep(
  conn: Connection,
  name: string,
  reg: RegisteredMethod,
  call: () => unknown,
): Promise<Step> {
  const log = conn.broker.log;
  const fields = { plugin: reg.plugin, method: name, clientId: conn.clientId };
  let answer: unknown;
  try {
    answer = call();
    if (isThenable(answer)) {
      const ms = conn.broker.options.hookTimeout;
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<typeof TIMED_OUT>((resolve) => {
        timer = setTimeout(() => resolve(TIMED_OUT), ms);
      });
      answer = await Promise.race([answer, timeout]).finally(() => clearTimeout(timer));
      if (answer === TIMED_OUT) {
        log.error({ ...fields, timeoutMs: ms }, 'authentication method timed out');
        return BROKEN;
      }
    }
  } catch (err) {
    log.error({ ...fields, err }, 'authentication method failed');
    return BROKEN;
  }
  if (validStep(answer)) return answer;
  log.error(fields, 'authentication method answered no valid step');
  return BROKEN;
}

function authPacket(reasonCode: number, method: string, data: Buffer | undefined): IAuthPacket {
  const properties: NonNullable<IAuthPacket['properties']> = { authenticationMethod: method };
  if (data !== undefined) properties.authenticationData = data;
  return { cmd: 'auth', reasonCode, properties };
}

/**
 * The exchange for a CONNECT naming a registered method: start(), then for each `continue` an
 * AUTH 0x18 to the client and its AUTH 0x18 back [MQTT-4.12.0-2] [MQTT-4.12.0-3]. Resolves with
 * the final step, or null once the connection is closed (a violation here closes it; the
 * CONNECT timeout bounds the whole exchange).
 */
export async function authenticateAtConnect(
  conn: Connection,
  name: string,
  data: Buffer | undefined,
): Promise<Step | null> {
  const reg = conn.broker.plugins.authMethods.get(name);
  if (reg === undefined) return BROKEN;
  let step = await runStep(conn, name, reg, () => reg.method.start(conn.clientInfo, data));
  for (;;) {
    if (conn.closing) return null;
    if (step.result !== 'continue') return step;
    // Every AUTH carries the CONNECT's method [MQTT-4.12.0-5].
    conn.send(authPacket(CONTINUE, name, step.data));
    const p = await conn.nextPacket();
    if (p === null || conn.closing) return null;
    if (p.cmd === 'disconnect') {
      conn.close(undefined, 'DISCONNECT during authentication', false);
      return null;
    }
    // Until CONNACK, a client authenticating sends only AUTH or DISCONNECT [MQTT-3.1.2-30].
    if (p.cmd !== 'auth') {
      conn.close(RC.PROTOCOL_ERROR, `${p.cmd} during authentication`, false);
      return null;
    }
    const bad = violation(p);
    if (bad) {
      conn.close(bad.code, bad.why, false);
      return null;
    }
    if (p.reasonCode !== CONTINUE || p.properties?.authenticationMethod !== name) {
      conn.close(RC.PROTOCOL_ERROR, 'AUTH without Continue or with another method', false);
      return null;
    }
    const state = step.state;
    const answer = p.properties?.authenticationData;
    step = await runStep(conn, name, reg, () => reg.method.continue(conn.clientInfo, state, answer));
  }
}

/**
 * AUTH from a client: only with the method it authenticated with at CONNECT [MQTT-4.12.0-7]
 * [MQTT-4.12.1-1]; 0x19 starts a re-authentication, 0x18 answers the server's AUTH 0x18 in one.
 * Success: AUTH 0x00; failure: DISCONNECT 0x87 and close [MQTT-4.12.1-2]. The connection's
 * later packets wait while a step runs.
 */
export function reauthenticate(conn: Connection, packet: IAuthPacket): void {
  const name = conn.authMethod;
  if (name === undefined) return conn.close(RC.PROTOCOL_ERROR, 'AUTH without enhanced authentication');
  if (packet.properties?.authenticationMethod !== name)
    return conn.close(RC.PROTOCOL_ERROR, 'AUTH with another authentication method');
  const pending = conn.reauth;
  const rc = packet.reasonCode;
  if (!(rc === REAUTHENTICATE && pending === undefined) && !(rc === CONTINUE && pending !== undefined))
    return conn.close(RC.PROTOCOL_ERROR, `AUTH 0x${rc.toString(16)} out of sequence`);
  const reg = conn.broker.plugins.authMethods.get(name);
  if (reg === undefined) return conn.close(RC.UNSPECIFIED_ERROR, 'authentication method gone');
  conn.reauth = undefined;
  const data = packet.properties?.authenticationData;
  const client = conn.clientInfo;
  conn.hold();
  void runStep(conn, name, reg, () =>
    pending === undefined ? reg.method.start(client, data) : reg.method.continue(client, pending.state, data),
  )
    .then((step) => {
      if (conn.closing) return;
      if (step.result === 'continue') {
        conn.reauth = { state: step.state };
        conn.send(authPacket(CONTINUE, name, step.data));
      } else if (
        step.result === 'success' &&
        (step.username === undefined || step.username === conn.username)
      ) {
        conn.send(authPacket(AUTH_SUCCESS, name, step.data));
      } else {
        // Another identity than the one connected is a failure too: ClientInfo does not change.
        const code = step.result === 'broken' ? RC.UNSPECIFIED_ERROR : RC.NOT_AUTHORIZED;
        return conn.close(code, 're-authentication failed');
      }
      conn.release();
    })
    .catch((err: unknown) => conn.fail(err, 're-authentication'));
}
