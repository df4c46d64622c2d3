import type { PluginApi } from '../api.js';
import { sameSecret } from './token.js';

export interface AdminAuth {
  /** The bearer token, when one is configured or generated. */
  token?: string;
  /** Users of the password file allowed as admin (Basic auth). */
  users: ReadonlySet<string>;
  /** Every request is admin (--admin-anonymous). */
  anonymous: boolean;
}

/**
 * Whether an Authorization header value carries admin credentials: `Bearer <token>`, or
 * `Basic <user:password>` of an admin user, checked by the password file's service.
 */
export async function isAdmin(auth: AdminAuth, api: PluginApi, header: string | undefined): Promise<boolean> {
  if (auth.anonymous) return true;
  if (typeof header !== 'string') return false;
  const space = header.indexOf(' ');
  if (space < 0) return false;
  const scheme = header.slice(0, space).toLowerCase();
  const value = header.slice(space + 1).trim();
  if (scheme === 'bearer') return auth.token !== undefined && sameSecret(value, auth.token);
  if (scheme !== 'basic' || auth.users.size === 0) return false;
  const decoded = Buffer.from(value, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return false;
  const user = decoded.slice(0, colon);
  if (!auth.users.has(user)) return false;
  const passwords = api.service('passwords');
  if (!passwords) return false;
  try {
    return await passwords.check(user, Buffer.from(decoded.slice(colon + 1)));
  } catch {
    return false;
  }
}
