/** A started listener, whatever its protocol: the broker only needs to know its port and how to stop it. */
export interface Transport {
  readonly name: string;
  readonly port: number;
  close(): Promise<void>;
}
