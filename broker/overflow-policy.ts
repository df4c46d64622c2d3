import type { QueueOverflow, QueueOverflowRule } from './options.js';

/**
 * The queue overflow policy of each session, from the broker-wide one and the rules by client id
 * (BrokerOptions.queueOverflowByClient). A session asks once, when it is created: the hot path
 * reads its own field.
 */
export class OverflowPolicies {
  private readonly rules: { re: RegExp; policy: QueueOverflow }[];
  /** Some session may have the `reject` policy: publishers' 5.0 QoS 1/2 publishes are checked for it. */
  readonly anyReject: boolean;

  constructor(
    readonly fallback: QueueOverflow,
    rules: readonly QueueOverflowRule[],
  ) {
    this.rules = rules.map((r) => ({ re: pattern(r.match), policy: r.policy }));
    this.anyReject = fallback === 'reject' || rules.some((r) => r.policy === 'reject');
  }

  for(clientId: string): QueueOverflow {
    for (const r of this.rules) if (r.re.test(clientId)) return r.policy;
    return this.fallback;
  }
}

/** `*` matches any run of characters (none included); everything else is literal. */
function pattern(match: string): RegExp {
  const parts = match.split('*').map((p) => p.replace(/[\\^$.+?()[\]{}|/]/g, '\\$&'));
  return new RegExp(`^${parts.join('.*')}$`, 's');
}
