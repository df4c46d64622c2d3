/**
 * TEMPORARY adapter, to be moved onto the plugin API (plugins/api.ts, definePlugin) once it
 * lands: turns a PasswordFile into the embedding `hooks.authenticate`. A client without a user
 * name or password is refused (anonymous access is off once a password file is configured).
 */
import type { Hooks } from '../types.js';
import type { PasswordFile } from './passwords.js';

export function passwordFileHooks(file: PasswordFile): Required<Pick<Hooks, 'authenticate'>> {
  return {
    authenticate: (_client, username, password) =>
      username === undefined || password === undefined ? false : file.check(username, password),
  };
}
