/**
 * The scram plugin (`--scram-file FILE`): the SCRAM-SHA-256 enhanced-authentication method over a
 * file of salted keys (credentials.ts), re-read on broker.reload().
 */
import { definePlugin } from '../api.js';
import { fileOption } from '../file-option.js';
import { readScramFile } from './credentials.js';
import { METHOD, scramMethod } from './server.js';

export interface ScramOptions {
  /** Path of the credentials file (`heron scram-passwd` writes one). */
  file: string;
}

export default definePlugin<ScramOptions>({
  name: 'scram',
  async setup(api, options) {
    if (typeof options?.file !== 'string' || options.file === '')
      throw new TypeError('the "file" option (path of the SCRAM credentials file) is required');
    let users = await readScramFile(options.file);
    api.log.info({ users: users.size }, 'SCRAM credentials loaded');
    api.addAuthMethod(
      METHOD,
      scramMethod((user) => users.get(user)),
    );
    let path = options.file;
    // New options (the config file's scramFile changed) may name another file.
    api.onReload(async (next) => {
      const file = fileOption(next) ?? path;
      try {
        // A file that fails to read or parse keeps the users loaded before.
        users = await readScramFile(file);
        path = file;
      } catch (err) {
        api.log.error({ err }, 'SCRAM credentials not reloaded; keeping the previous ones');
        throw err;
      }
      api.log.info({ users: users.size }, 'SCRAM credentials reloaded');
    });
  },
});
