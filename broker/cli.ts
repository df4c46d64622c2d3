#!/usr/bin/env -S node --max-semi-space-size=8
// The `heron` command (package.json "bin"): a subcommand, else the broker (broker/cli/main.ts).
// Each is imported only when it runs: `heron passwd` does not load the broker.
const [command, ...rest] = process.argv.slice(2);
const exit = (code: number) => {
  process.exitCode = code;
};
if (command === 'passwd')
  import('../plugins/password-file/passwd-cli.js').then((m) => m.passwdMain(rest)).then(exit);
else if (command === 'scram-passwd')
  import('../plugins/scram/credentials.js').then((m) => m.scramPasswdMain(rest)).then(exit);
else if (command === 'queue')
  import('../plugins/queues/queue-cli.js').then((m) => m.queueMain(rest)).then(exit);
else if (command === 'check-config') import('./cli/main.js').then((m) => m.checkConfigMain(rest)).then(exit);
else void import('./cli/main.js').then((m) => m.main(process.argv.slice(2)));
