import type { BrokerReload } from '../broker.js';
import { RELOADABLE, type ReloadableOption } from '../options.js';
import type { Config, ConfigKey } from './schema.js';

/** What a SIGHUP does with a configuration read again. */
export interface ReloadPlan {
  update: BrokerReload;
  /** Keys (or plugins[i].options) applied now. */
  changed: string[];
  /** Keys that changed but take effect only after a restart (ports, listeners, persistence...). */
  needsRestart: string[];
  /** The configuration the broker runs with afterwards: what needs a restart keeps its old value. */
  running: Config;
}

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

/** Keys naming a built-in plugin's file: another file (not none) is given to the plugin's onReload. */
const FILE_PLUGINS: Partial<Record<ConfigKey, string>> = {
  passwordFile: 'password-file',
  scramFile: 'scram',
  aclFile: 'acl-file',
};

/**
 * Compares the running configuration with the one just read. The RELOADABLE broker options and the
 * options of `plugins:` entries (same modules, same order; given to their onReload) apply at once;
 * the files plugins read (password, SCRAM, ACL) are re-read by their onReload anyway.
 */
export function planReload(running: Config, next: Config, pluginNames: readonly string[]): ReloadPlan {
  const options: Partial<Record<ReloadableOption, unknown>> = {};
  const pluginOptions = new Map<string, unknown>();
  const changed: string[] = [];
  const needsRestart: string[] = [];
  const after = { ...running } as Record<ConfigKey, unknown>;
  for (const k of Object.keys(next) as ConfigKey[]) {
    if (same(running[k], next[k])) continue;
    if ((RELOADABLE as readonly string[]).includes(k)) {
      options[k as ReloadableOption] = next[k];
      after[k] = next[k];
      changed.push(k);
    } else if (FILE_PLUGINS[k] !== undefined && running[k] !== '' && next[k] !== '') {
      // Switched to another file: the plugin reads it (adding or removing one needs a restart).
      pluginOptions.set(FILE_PLUGINS[k], { file: next[k] });
      after[k] = next[k];
      changed.push(k);
    } else if (
      k === 'plugins' &&
      running.plugins.length === next.plugins.length &&
      running.plugins.every((p, i) => p.path === next.plugins[i].path)
    ) {
      next.plugins.forEach((p, i) => {
        if (same(p.options, running.plugins[i].options)) return;
        pluginOptions.set(pluginNames[i], p.options);
        changed.push(`plugins[${i}].options`);
      });
      after.plugins = next.plugins;
    } else needsRestart.push(k);
  }
  return {
    update: { options: options as BrokerReload['options'], pluginOptions },
    changed,
    needsRestart,
    running: after as Config,
  };
}
