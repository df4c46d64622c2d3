/**
 * The password-file plugin (`--password-file FILE`): CONNECT credentials checked against a
 * Mosquitto password file (plugins/password-file/passwords.ts), re-read on broker.reload().
 */
import { definePlugin } from '../api.js';
import { fileOption } from '../file-option.js';
import { PasswordFile } from './passwords.js';

export interface PasswordFileOptions {
  /** Path of the password file. */
  file: string;
}

export default definePlugin<PasswordFileOptions>({
  name: 'password-file',
  async setup(api, options) {
    if (typeof options?.file !== 'string' || options.file === '')
      throw new TypeError('the "file" option (path of the password file) is required');
    let passwords = await PasswordFile.open(options.file);
    api.log.info({ users: passwords.size }, 'password file loaded');
    api.addHooks({
      // No user name: not ours to judge (allowAnonymous decides). A user name with a missing or
      // wrong password, or one not in the file: bad credentials.
      authenticate: async (_client, username, password) => {
        if (username === undefined) return 'pass';
        if (password === undefined) return 'deny';
        return (await passwords.check(username, password)) ? 'allow' : 'deny';
      },
    });
    // The HTTP admin API checks --admin-users' Basic credentials here.
    api.provide('passwords', { check: (username, password) => passwords.check(username, password) });
    // New options (the config file's passwordFile changed) may name another file.
    api.onReload(async (next) => {
      const file = fileOption(next);
      try {
        // A file that fails to read or parse keeps the users loaded before.
        if (file !== undefined && file !== options.file) passwords = await PasswordFile.open(file);
        else await passwords.reload();
      } catch (err) {
        api.log.error({ err }, 'password file not reloaded; keeping the previous one');
        throw err;
      }
      api.log.info({ users: passwords.size }, 'password file reloaded');
    });
  },
});
