import { LevelPersistence } from '../../persistence/level.js';
import { MemoryPersistence } from '../../persistence/memory.js';
import type { Persistence } from '../../persistence/types.js';
import aclFilePlugin from '../../plugins/acl-file/index.js';
import type { PluginEntry } from '../../plugins/api.js';
import { type HttpAuthOptions, default as httpAuthPlugin } from '../../plugins/http-auth/index.js';
import { type JwtOptions, default as jwtPlugin } from '../../plugins/jwt/index.js';
import { loadPluginModule } from '../../plugins/load.js';
import { loadPersistence } from '../../plugins/load-persistence.js';
import passwordFilePlugin from '../../plugins/password-file/index.js';
import scramPlugin from '../../plugins/scram/index.js';
import sysPlugin from '../../plugins/sys/index.js';
import type { BrokerOptions } from '../options.js';
import { ConfigError } from './errors.js';
import type { Config } from './schema.js';

/** A shorthand port: 0 disables the optional listeners (as the flags always did); TCP 0 picks a free port. */
const optional = (n: number | null) => (n === 0 ? null : n);

/** The broker's options from the effective configuration (everything but plugins and persistence). */
export function brokerOptions(c: Config): BrokerOptions {
  return {
    allowAnonymous: c.allowAnonymous === 'auto' ? undefined : c.allowAnonymous,
    hookTimeout: c.hookTimeout,
    port: c.port,
    host: c.host || undefined,
    wsPort: optional(c.wsPort),
    wsPath: c.wsPath,
    wsTrustProxy: c.wsTrustProxy,
    wsTrustedProxies: c.wsTrustedProxies,
    // An empty list is the default: pages on the Host header's host name only.
    wsAllowedOrigins: c.wsAllowedOrigins.length > 0 ? c.wsAllowedOrigins : undefined,
    tlsIdentityAsUsername: c.tlsIdentityAsUsername,
    tls: c.tlsCert
      ? {
          cert: c.tlsCert,
          key: c.tlsKey,
          ca: c.tlsCa || undefined,
          requireClientCert: c.tlsRequireClientCert,
        }
      : undefined,
    tlsPort: optional(c.tlsPort),
    wssPort: optional(c.wssPort),
    listeners: c.listeners,
    logLevel: c.logLevel,
    maxInflight: c.maxInflight,
    maxQueued: c.maxQueued,
    maxQueuedBytes: c.maxQueuedBytes,
    maxMemory: c.maxMemory === 'auto' ? undefined : c.maxMemory,
    queueOverflow: c.queueOverflow,
    queueOverflowByClient: c.queueOverflowByClient,
    stuckTimeout: c.stuckTimeout,
    receiveMaximum: c.receiveMaximum,
    maxPacketSize: c.maxPacketSize,
    maxKeepalive: c.maxKeepalive,
    connectTimeout: c.connectTimeout,
    topicAliasMaximum: c.topicAliasMaximum,
    maxTopicLevels: c.maxTopicLevels,
    maxTopicLength: c.maxTopicLength,
    shareStrategy: c.shareStrategy,
    shareGroups: c.shareGroups,
    shareQueueMax: c.shareQueueMax,
    retryBase: c.retryBase,
    retryFactor: c.retryFactor,
    retryMaxAttempts: c.retryMaxAttempts,
    dedupWindow: c.dedupWindow,
    dedupMaxKeys: c.dedupMaxKeys,
    maxConnections: c.maxConnections,
    connectRate: c.connectRate,
    connectBurst: c.connectBurst,
    maxPublishRate: c.maxPublishRate,
    maxPublishBytesRate: c.maxPublishBytesRate,
    maxClientIdLength: c.maxClientIdLength,
    flappingMaxConnects: c.flappingMaxConnects,
    flappingWindow: c.flappingWindow,
    flappingBan: c.flappingBan,
    maxSessionExpiry: c.maxSessionExpiry,
    maxRetained: c.maxRetained,
    maxRetainedBytes: c.maxRetainedBytes,
    maxSharedGroups: c.maxSharedGroups,
    maxSharedGroupsPerClient: c.maxSharedGroupsPerClient,
    maxConnectSize: c.maxConnectSize,
  };
}

export async function openPersistence(c: Config): Promise<Persistence> {
  if (c.persistence === 'level') return new LevelPersistence({ dir: c.dataDir, sync: c.sync });
  if (c.persistence === 'memory') return new MemoryPersistence();
  try {
    return await loadPersistence(c.persistence, { dataDir: c.dataDir, sync: c.sync });
  } catch (err) {
    throw new ConfigError([(err as Error).message], 2);
  }
}

/** The plugins in chain order, and the name each entry of `plugins:` registered under (for reloads). */
export async function loadPlugins(c: Config): Promise<{ entries: PluginEntry[]; names: string[] }> {
  const entries: PluginEntry[] = [];
  // $SYS only publishes (no hooks): first, so its first update is ready with the broker.
  if (c.sysInterval > 0) entries.push([sysPlugin, { interval: c.sysInterval }]);
  if (c.passwordFile) entries.push([passwordFilePlugin, { file: c.passwordFile }]);
  if (c.scramFile) entries.push([scramPlugin, { file: c.scramFile }]);
  const names: string[] = [];
  for (const p of c.plugins) {
    try {
      const plugin = await loadPluginModule(p.path);
      entries.push([plugin, p.options]);
      names.push(plugin.name);
    } catch (err) {
      throw new ConfigError([(err as Error).message], 2);
    }
  }
  if (c.jwtSecret || c.jwtPublicKey || c.jwksFile) {
    // Key files are read at setup: a missing or bad one fails the start.
    const options: JwtOptions = {
      secret: c.jwtSecret || undefined,
      publicKeyFile: c.jwtPublicKey || undefined,
      jwksFile: c.jwksFile || undefined,
      usernameClaim: c.jwtUsernameClaim,
      aclClaim: c.jwtAclClaim,
    };
    entries.push([jwtPlugin, options]);
  }
  if (c.httpAuthUrl) {
    const options: HttpAuthOptions = {
      url: c.httpAuthUrl,
      aclUrl: c.httpAclUrl || undefined,
      timeout: c.httpAuthTimeout,
      cacheTtl: c.httpAuthCacheTtl,
      default: c.httpAuthDefault,
    };
    entries.push([httpAuthPlugin, options]);
  }
  // Last in the chains: the ACL file decides every check (what no rule grants is denied), so the
  // plugins before it (jwt's acl claim, http-auth) get their say first.
  if (c.aclFile) entries.push([aclFilePlugin, { file: c.aclFile }]);
  return { entries, names };
}
