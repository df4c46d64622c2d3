/**
 * The acl-file plugin (`--acl-file FILE`): Mosquitto's acl_file rules (plugins/acl-file/rules.ts)
 * applied to publish (write), subscribe (read, on the filter) and every delivery (read, on the
 * topic, so a wildcard subscriber never receives what it may not read). Re-read on
 * broker.reload(); a file that fails to parse keeps the rules loaded before.
 */
import { readFile } from 'node:fs/promises';
import { definePlugin } from '../api.js';
import { fileOption } from '../file-option.js';
import type { ClientInfo } from '../types.js';
import {
  type AclRules,
  ClientAcl,
  type CompiledRule,
  compileRules,
  parseAcl,
  patternsFor,
  userRules,
} from './rules.js';

export interface AclFileOptions {
  /** Path of the ACL file. */
  file: string;
}

export class AclFileError extends Error {}

/** Reads and parses a file; throws naming each bad line. */
export async function loadAcl(path: string): Promise<AclRules> {
  const { rules, errors } = parseAcl(await readFile(path, 'utf8'));
  if (errors.length > 0)
    throw new AclFileError(`${path}: ${errors.map((e) => `line ${e.line}: ${e.message}`).join('; ')}`);
  return rules;
}

/** `$share/<group>/<filter>` → `<filter>`: shared subscriptions are judged on their filter. */
function unshared(filter: string): string {
  if (!filter.startsWith('$share/')) return filter;
  const slash = filter.indexOf('/', 7);
  return slash < 0 ? filter : filter.slice(slash + 1);
}

export default definePlugin<AclFileOptions>({
  name: 'acl-file',
  async setup(api, options) {
    if (typeof options?.file !== 'string' || options.file === '')
      throw new TypeError('the "file" option (path of the ACL file) is required');
    let path = options.file;
    let rules = await loadAcl(path);
    api.log.info({ rules: rules.size }, 'acl file loaded');

    // Each user's own rules compiled once per rule set (key '' holds the anonymous ones; a user
    // name cannot be empty there, since `user` needs one).
    let users = new Map<string, CompiledRule[]>();
    const ownRules = (username: string | undefined): CompiledRule[] => {
      const key = username ?? '';
      let own = users.get(key);
      if (own === undefined) {
        own = compileRules(userRules(rules, username));
        users.set(key, own);
      }
      return own;
    };
    // Each connection's ACL (its %u / %c patterns substituted and compiled), made at its first
    // check and kept while the connection's ClientInfo lives and the rule set is unchanged.
    const cache = new WeakMap<ClientInfo, { rules: AclRules; acl: ClientAcl }>();
    const aclOf = (client: ClientInfo): ClientAcl => {
      const hit = cache.get(client);
      if (hit !== undefined && hit.rules === rules) return hit.acl;
      const patterns = compileRules(patternsFor(rules, client.clientId, client.username));
      const acl = new ClientAcl(ownRules(client.username), patterns);
      cache.set(client, { rules, acl });
      return acl;
    };

    // Synchronous, and allocation-free once a client's rules are compiled (its first check).
    api.addHooks({
      authorizePublish: (client, topic) => (aclOf(client).write.allows(topic) ? 'allow' : 'deny'),
      authorizeSubscribe: (client, filter) =>
        aclOf(client).subscription(unshared(filter)) ? 'allow' : 'deny',
      authorizeDeliver: (client, topic) => (aclOf(client).read.allows(topic) ? 'allow' : 'deny'),
      // Rules change only at reload, so a subscription the rules grant whole needs no check per
      // delivery (the broker asks again after each reload).
      coversDeliveries: (client, filter) => aclOf(client).readsAll(filter),
    });

    // New options (the config file's aclFile changed) may name another file.
    api.onReload(async (next) => {
      const file = fileOption(next) ?? path;
      try {
        const loaded = await loadAcl(file);
        users = new Map();
        rules = loaded;
        path = file;
      } catch (err) {
        api.log.error({ err }, 'acl file not reloaded; keeping the previous rules');
        throw err;
      }
      api.log.info({ rules: rules.size }, 'acl file reloaded');
    });
  },
});
