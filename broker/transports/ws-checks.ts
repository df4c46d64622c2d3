import type { IncomingMessage } from 'node:http';
import { BlockList, isIP } from 'node:net';

/**
 * Whether a WebSocket upgrade's Origin may reach the broker. `allowed` undefined (the default): a
 * request without Origin (not from a browser: browsers always send one on a WebSocket upgrade) or
 * from a page on the same host name as the Host header (any port: a development server on
 * localhost:3000 reaching ws://localhost:8083). A list: those origins exactly (and no Origin);
 * `*` in it allows every origin.
 */
export function originAllowed(req: IncomingMessage, allowed: ReadonlySet<string> | undefined): boolean {
  const origin = req.headers.origin;
  if (origin === undefined) return true;
  if (allowed !== undefined) return allowed.has('*') || allowed.has(normalizeOrigin(origin));
  const host = req.headers.host;
  if (host === undefined) return false;
  try {
    return new URL(origin).hostname === new URL(`http://${host}`).hostname;
  } catch {
    // "null" (a file:// page, a sandboxed frame) and anything unparsable.
    return false;
  }
}

/** Origins compare as scheme://host[:port], lower case, without a trailing slash. */
export function normalizeOrigin(origin: string): string {
  return origin.trim().toLowerCase().replace(/\/+$/, '');
}

/** Addresses (and CIDR ranges) of reverse proxies whose X-Forwarded-For is believed. */
export function trustedProxies(list: readonly string[]): BlockList {
  const b = new BlockList();
  for (const entry of list) {
    const [address, bits] = entry.trim().split('/');
    const family = isIP(address) === 6 ? 'ipv6' : isIP(address) === 4 ? 'ipv4' : undefined;
    if (!family) throw new TypeError(`wsTrustedProxies: "${entry}" is not an IP address or CIDR range`);
    if (bits === undefined) b.addAddress(address, family);
    else b.addSubnet(address, Number(bits), family);
  }
  return b;
}

function trusted(proxies: BlockList, address: string): boolean {
  // An IPv4 peer on a dual-stack socket shows as ::ffff:a.b.c.d.
  const a = address.startsWith('::ffff:') && isIP(address.slice(7)) === 4 ? address.slice(7) : address;
  const family = isIP(a);
  return family !== 0 && proxies.check(a, family === 6 ? 'ipv6' : 'ipv4');
}

/**
 * The client address behind trusted proxies: each proxy appends the address it got the request
 * from, so the entries a client wrote itself are on the left. Walking from the right, the first
 * entry that is not a trusted proxy is the client. Undefined (the peer's own address counts) when
 * the peer is not a trusted proxy or the header names nobody.
 */
export function forwardedFor(
  peer: string | undefined,
  header: string | string[] | undefined,
  proxies: BlockList,
): string | undefined {
  if (peer === undefined || header === undefined || !trusted(proxies, peer)) return undefined;
  const entries = (Array.isArray(header) ? header.join(',') : header).split(',');
  let last: string | undefined;
  for (let i = entries.length - 1; i >= 0; i--) {
    const e = entries[i].trim();
    if (e === '') continue;
    if (isIP(e) === 0) return last; // not an address: nothing left of it is believed
    last = e;
    if (!trusted(proxies, e)) return e;
  }
  return last;
}
