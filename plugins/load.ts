import { isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Plugin } from './api.js';

/**
 * Loads a plugin from `<path-or-package>[:<json options>]` (the `--plugin` flag): a path (starting
 * with `.` or `/`, or absolute) is resolved against cwd, anything else is imported as a package.
 * The module's default export is a definePlugin() result.
 */
export async function loadPlugin(spec: string, cwd = process.cwd()): Promise<[Plugin, unknown]> {
  // The options begin at the first `:` (paths and package names given to --plugin carry none).
  const colon = spec.indexOf(':');
  const where = colon < 0 ? spec : spec.slice(0, colon);
  let options: unknown;
  if (colon >= 0) {
    const json = spec.slice(colon + 1);
    try {
      options = JSON.parse(json);
    } catch (err) {
      throw new Error(`--plugin ${where}: options are not JSON: ${(err as Error).message}`);
    }
  }
  return [await loadPluginModule(where, cwd), options];
}

/** Loads a plugin module by path (resolved against cwd) or package name: its default export. */
export async function loadPluginModule(where: string, cwd = process.cwd()): Promise<Plugin> {
  const isPath = where.startsWith('.') || isAbsolute(where);
  const target = isPath ? pathToFileURL(resolve(cwd, where)).href : where;
  let mod: { default?: unknown };
  try {
    mod = (await import(target)) as { default?: unknown };
  } catch (err) {
    throw new Error(`--plugin ${where}: cannot load: ${(err as Error).message}`, { cause: err });
  }
  const plugin = mod.default as Partial<Plugin> | undefined;
  if (typeof plugin?.name !== 'string' || typeof plugin.setup !== 'function') {
    throw new Error(`--plugin ${where}: the default export is not a plugin (definePlugin({ name, setup }))`);
  }
  return plugin as Plugin;
}
