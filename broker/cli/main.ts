import { createBroker } from '../broker.js';
import { createLogger } from '../logger.js';
import { brokerOptions, loadPlugins, openPersistence } from './build.js';
import { ConfigError } from './errors.js';
import { type GivenFlags, parseFlags, usage } from './flags.js';
import { planReload } from './reload.js';
import { CONFIG_ENV, type Effective, resolveConfig } from './resolve.js';

/** Prints a configuration problem (one line each, no stack trace) and sets the exit code. */
function fail(err: unknown): never {
  if (err instanceof ConfigError) {
    for (const p of err.problems) process.stderr.write(`heron: ${p}\n`);
    process.exit(err.exitCode);
  }
  process.stderr.write(`heron: ${(err as Error).message}\n`);
  process.exit(2);
}

/** `heron check-config FILE`: validates the file alone (no environment, no flags); exit 0 or 1. */
export async function checkConfigMain(args: string[]): Promise<number> {
  if (args.length !== 1 || args[0].startsWith('-')) {
    process.stderr.write('Usage: heron check-config FILE\n');
    return 2;
  }
  try {
    await resolveConfig({}, {}, args[0]);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    for (const p of err.problems) process.stderr.write(`heron: ${p}\n`);
    return 1;
  }
  process.stdout.write(`${args[0]}: configuration is valid\n`);
  return 0;
}

export async function main(args: string[]): Promise<void> {
  let flags: GivenFlags;
  try {
    flags = parseFlags(args);
  } catch (err) {
    process.stderr.write(`heron: ${(err as Error).message}\n\n${usage()}\n`);
    process.exit(2);
  }
  if (flags.help) {
    process.stdout.write(`${usage()}\n`);
    return;
  }
  const file = (flags.config as string | undefined) || process.env[CONFIG_ENV] || undefined;
  let eff: Effective;
  try {
    eff = await resolveConfig(flags, process.env, file);
  } catch (err) {
    fail(err);
  }
  for (const w of eff.warnings) process.stderr.write(`heron: ${w}\n`);
  if (flags['print-config']) {
    const { printConfig } = await import('./print.js');
    process.stdout.write(printConfig(eff));
    return;
  }
  const log = createLogger(eff.values.logLevel);
  let broker: ReturnType<typeof createBroker>;
  let pluginNames: string[];
  try {
    const persistence = await openPersistence(eff.values);
    const plugins = await loadPlugins(eff.values);
    pluginNames = plugins.names;
    broker = createBroker({
      ...brokerOptions(eff.values),
      plugins: plugins.entries,
      logger: log,
      persistence,
    });
  } catch (err) {
    fail(err);
  }
  if (file !== undefined) log.info({ file }, 'configuration file read');
  try {
    await broker.listen();
  } catch (err) {
    // A clear line on stderr too: a locked, corrupt or incompatible data dir is a user's problem.
    process.stderr.write(`heron: cannot start: ${(err as Error).message}\n`);
    log.fatal({ err }, 'cannot start');
    process.exitCode = 1;
    await broker.close().catch(() => undefined);
    return;
  }
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down');
    broker.close().then(
      () => process.exit(0),
      (err) => {
        log.error({ err }, 'error while shutting down');
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  // SIGHUP reads the configuration file again and applies what can change safely; the plugins
  // re-read their files (password file, ACL). What fails keeps its previous configuration.
  let running = eff.values;
  process.on('SIGHUP', async () => {
    let changed: string[] = [];
    let needsRestart: string[] = [];
    let update = {};
    if (file !== undefined) {
      try {
        const plan = planReload(running, (await resolveConfig(flags, process.env, file)).values, pluginNames);
        ({ changed, needsRestart, update } = plan);
        running = plan.running;
      } catch (err) {
        // Whatever went wrong, the running configuration stays and the broker keeps serving.
        const problems = err instanceof ConfigError ? err.problems : [(err as Error).message];
        log.error({ file, problems }, 'configuration file not reloaded: it has errors');
      }
    }
    if (needsRestart.length > 0)
      log.warn({ keys: needsRestart }, `changed, applied at the next restart: ${needsRestart.join(', ')}`);
    broker.reload(update).then(
      () => log.info({ changed }, 'reloaded'),
      (err) => log.error({ err, changed }, 'reload incomplete; what failed keeps its previous configuration'),
    );
  });
}
