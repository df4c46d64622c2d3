import { Document, isMap, isScalar, type Pair } from 'yaml';
import { describeSource, type Effective } from './resolve.js';
import type { ConfigKey } from './schema.js';

const SECRETS = ['jwtSecret', 'adminToken'] as const;
const HIDDEN = '(hidden)';

/**
 * The effective configuration as YAML, each key with a comment saying where its value came from;
 * the output is itself a configuration file that starts the same broker (secrets aside).
 */
export function printConfig(eff: Effective): string {
  // Secrets are not printed (the output may be pasted into a bug report).
  const values = { ...eff.values };
  for (const k of SECRETS) if (values[k] !== '') values[k] = HIDDEN;
  values.queueConsumers = values.queueConsumers.map((c) => ({ ...c, token: HIDDEN }));
  const doc = new Document(values);
  doc.commentBefore =
    ' Heron effective configuration: each value says where it came from (default < file < env < flag).';
  if (isMap(doc.contents)) {
    for (const item of doc.contents.items as Pair[]) {
      if (!isScalar(item.key)) continue;
      const source = describeSource(eff.sources[String(item.key.value) as ConfigKey]);
      // A scalar takes the comment on its own line; a list or mapping gets it above its key.
      if (isScalar(item.value)) item.value.comment = ` ${source}`;
      else (item.key as { commentBefore?: string }).commentBefore = ` ${source}:`;
    }
  }
  return doc.toString({ lineWidth: 0 });
}
