#!/usr/bin/env node
// The `heron` command (package.json "bin"): subcommands, else the broker (broker/cli/main.ts).
import { passwdMain } from '../plugins/password-file/passwd-cli.js';
import { scramPasswdMain } from '../plugins/scram/credentials.js';
import { checkConfigMain, main } from './cli/main.js';

const [command, ...rest] = process.argv.slice(2);
if (command === 'passwd')
  passwdMain(rest).then((code) => {
    process.exitCode = code;
  });
else if (command === 'scram-passwd')
  scramPasswdMain(rest).then((code) => {
    process.exitCode = code;
  });
else if (command === 'check-config')
  checkConfigMain(rest).then((code) => {
    process.exitCode = code;
  });
else void main(process.argv.slice(2));
