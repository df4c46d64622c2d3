import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TestPki {
  ca: string;
  cert: string;
  key: string;
  clientCert: string;
  clientKey: string;
}

/** A throwaway CA, a server certificate for 127.0.0.1/localhost and a client certificate, via the openssl CLI. */
export function makePki(): TestPki {
  const dir = mkdtempSync(join(tmpdir(), 'heron-pki-'));
  const f = (n: string) => join(dir, n);
  const ssl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'pipe' });
  try {
    ssl(
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-days',
      '2',
      '-subj',
      '/CN=Heron Test CA',
      '-keyout',
      f('ca.key'),
      '-out',
      f('ca.pem'),
    );
    writeFileSync(f('san.ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\n');
    for (const [name, subj, ext] of [
      ['server', '/CN=localhost', ['-extfile', f('san.ext')]],
      ['client', '/CN=device-42/O=Heron Tests', []],
    ] as const) {
      ssl(
        'req',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-subj',
        subj,
        '-keyout',
        f(`${name}.key`),
        '-out',
        f(`${name}.csr`),
      );
      ssl(
        'x509',
        '-req',
        '-in',
        f(`${name}.csr`),
        '-CA',
        f('ca.pem'),
        '-CAkey',
        f('ca.key'),
        '-CAcreateserial',
        '-days',
        '2',
        '-out',
        f(`${name}.pem`),
        ...ext,
      );
    }
    const r = (n: string) => readFileSync(f(n), 'utf8');
    // openssl wrote what the TLS tests rely on.
    for (const n of ['ca.pem', 'server.pem', 'client.pem']) assert.match(r(n), /-----BEGIN CERTIFICATE-----/);
    return {
      ca: r('ca.pem'),
      cert: r('server.pem'),
      key: r('server.key'),
      clientCert: r('client.pem'),
      clientKey: r('client.key'),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
