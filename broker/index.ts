export { FORMAT_VERSION, LevelPersistence, type LevelPersistenceOptions } from '../persistence/level.js';
export { MemoryPersistence } from '../persistence/memory.js';
export type {
  DedupRecord,
  GroupMessageRecord,
  OutgoingRecord,
  Persistence,
  SessionRecord,
  StoredMessage,
  SubscriptionRecord,
} from '../persistence/types.js';
export {
  type AuthMethod,
  type AuthStep,
  definePlugin,
  type HookName,
  type Plugin,
  type PluginApi,
  type PluginEntry,
  type PluginHooks,
  type SubscriptionInfo,
  type Verdict,
} from '../plugins/api.js';
export { loadPlugin } from '../plugins/load.js';
export {
  loadPersistence,
  type PersistenceFactory,
  type PersistenceFactoryOptions,
} from '../plugins/load-persistence.js';
export type {
  BrokerStatsSnapshot,
  ByQos,
  ClientStats,
  GroupInfo,
  LatencyHistogram,
  MessageStats,
  QueueInfo,
} from '../plugins/stats-types.js';
export type { ClientInfo, Hooks } from '../plugins/types.js';
export {
  Broker,
  type BrokerEvents,
  type BrokerReload,
  type BrokerStats,
  createBroker,
  type PublishOptions,
} from './broker.js';
export type { ConnectionInfo } from './connection.js';
export type { Message } from './message.js';
export {
  type BrokerOptions,
  type QueueOverflow,
  type QueueOverflowRule,
  RELOADABLE,
  type ReloadableOption,
} from './options.js';
export { RC } from './reason-codes.js';
export type { ShareStrategy } from './shared/strategies.js';
export type { ListenerOptions, ListenerType } from './transports/listeners.js';
