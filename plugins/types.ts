/**
 * Typed hooks through which plugins apply policy (authentication, authorization) without touching
 * broker internals. Every hook is optional; a missing hook allows.
 */
export interface ClientInfo {
  clientId: string;
  username?: string;
  protocolVersion: 3 | 4 | 5;
  transport: string;
  remoteAddress?: string;
  remotePort?: number;
  /** Subject of a verified TLS client certificate, when there is one. */
  certificateSubject?: Record<string, string | string[]>;
}

export interface Hooks {
  /** Decides whether a CONNECT is accepted. */
  authenticate?(client: ClientInfo, username?: string, password?: Buffer): boolean | Promise<boolean>;
  /** Decides whether a client may publish to a topic. */
  authorizePublish?(client: ClientInfo, topic: string): boolean;
  /** Decides whether a client may subscribe to a filter. */
  authorizeSubscribe?(client: ClientInfo, filter: string): boolean;
}
