import type { IConnectPacket, Packet } from 'mqtt-packet';
import { RC } from '../reason-codes.js';
import { wellFormed } from '../topic-tree.js';

/** Why a packet is refused as a whole: the reason code (5.0) and a line for the log. */
export interface Violation {
  code: number;
  why: string;
}

// Where each property may appear (5.0 section 2.2.2.2, table 2-4), for the packets a client sends;
// a property elsewhere is a Malformed Packet. Subscription Identifier is allowed in PUBLISH here:
// the publish handler answers it with the Protocol Error [MQTT-3.3.4-6] asks for.
const CONNECT = 1;
const WILL = 2;
const PUBLISH = 4;
const ACK = 8; // PUBACK, PUBREC, PUBREL, PUBCOMP
const SUBSCRIBE = 16;
const UNSUBSCRIBE = 32;
const DISCONNECT = 64;
const AUTH = 128;
const ANY = 255;

const WHERE: Record<string, number> = {
  payloadFormatIndicator: PUBLISH | WILL,
  messageExpiryInterval: PUBLISH | WILL,
  contentType: PUBLISH | WILL,
  responseTopic: PUBLISH | WILL,
  correlationData: PUBLISH | WILL,
  subscriptionIdentifier: PUBLISH | SUBSCRIBE,
  sessionExpiryInterval: CONNECT | DISCONNECT,
  authenticationMethod: CONNECT | AUTH,
  authenticationData: CONNECT | AUTH,
  requestProblemInformation: CONNECT,
  willDelayInterval: WILL,
  requestResponseInformation: CONNECT,
  serverReference: DISCONNECT,
  reasonString: ACK | DISCONNECT | AUTH,
  receiveMaximum: CONNECT,
  topicAliasMaximum: CONNECT,
  topicAlias: PUBLISH,
  maximumPacketSize: CONNECT,
  userProperties: ANY,
};

const KIND: Record<string, number> = {
  connect: CONNECT,
  publish: PUBLISH,
  puback: ACK,
  pubrec: ACK,
  pubrel: ACK,
  pubcomp: ACK,
  subscribe: SUBSCRIBE,
  unsubscribe: UNSUBSCRIBE,
  disconnect: DISCONNECT,
  auth: AUTH,
};

/**
 * What is wrong with a packet as a whole before its handler sees it, if anything: its 5.0
 * properties, and for CONNECT its strings and will flags. (mqtt-packet already refuses unknown
 * property identifiers and most flag errors.)
 */
export function violation(packet: Packet): Violation | undefined {
  const props = (packet as { properties?: Record<string, unknown> }).properties;
  const kind = KIND[packet.cmd] ?? 0;
  let v = props === undefined ? undefined : propertiesViolation(props, kind, packet.cmd);
  if (packet.cmd === 'connect') v ??= connectViolation(packet);
  return v;
}

function propertiesViolation(
  props: Record<string, unknown>,
  kind: number,
  what: string,
): Violation | undefined {
  for (const name in props) {
    const value = props[name];
    if (((WHERE[name] ?? 0) & kind) === 0) {
      return { code: RC.MALFORMED_PACKET, why: `property ${name} is not allowed in ${what}` };
    }
    if (name === 'userProperties') {
      const user = value as Record<string, string | string[]>;
      for (const key in user) {
        const vals = user[key];
        if (!wellFormed(key) || (Array.isArray(vals) ? !vals.every(wellFormed) : !wellFormed(vals))) {
          return { code: RC.MALFORMED_PACKET, why: 'user property is not well-formed UTF-8' };
        }
      }
      continue;
    }
    // mqtt-packet collects a repeated property into an array. Each property other than User
    // Property appears at most once, a repeat is a Protocol Error (each property's own section,
    // e.g. 3.1.2.11.2, 3.3.2.3.4, 3.8.2.1.2).
    if (Array.isArray(value)) {
      return { code: RC.PROTOCOL_ERROR, why: `property ${name} given more than once` };
    }
    if (typeof value === 'string' && !wellFormed(value)) {
      // Ill-formed UTF-8 (U+FFFD once parsed) or U+0000 [MQTT-1.5.4-1] [MQTT-1.5.4-2].
      return { code: RC.MALFORMED_PACKET, why: `property ${name} is not well-formed UTF-8` };
    }
  }
  return undefined;
}

/**
 * CONNECT fields mqtt-packet accepts but the spec does not: ill-formed UTF-8 or U+0000 in the client
 * id, user name or will topic (3.1.1 [MQTT-1.5.3-1] [MQTT-1.5.3-2], 5.0 [MQTT-1.5.4-1]
 * [MQTT-1.5.4-2]) and Will QoS 3 (3.1.1 [MQTT-3.1.2-14], 5.0 [MQTT-3.1.2-12]): Malformed Packets,
 * so 3.1.1 closes without CONNACK [MQTT-3.1.4-1].
 */
function connectViolation(packet: IConnectPacket): Violation | undefined {
  const malformed = (why: string): Violation => ({ code: RC.MALFORMED_PACKET, why });
  if (!wellFormed(packet.clientId ?? '')) return malformed('client id is not well-formed UTF-8');
  if (packet.username !== undefined && !wellFormed(packet.username)) {
    return malformed('user name is not well-formed UTF-8');
  }
  const will = packet.will;
  if (will) {
    if (!wellFormed(will.topic)) return malformed('will topic is not well-formed UTF-8');
    if ((will.qos as number) === 3) return malformed('Will QoS 3');
    const wp = will.properties as Record<string, unknown> | undefined;
    if (wp) return propertiesViolation(wp, WILL, 'the will');
  }
  return undefined;
}
