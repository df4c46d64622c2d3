/**
 * The acl-file plugin over real connections, 3.1.1 and 5.0: a table of users × filters / topics ×
 * actions with the reason codes, %u / %c patterns, a `#` subscriber not receiving what it may not
 * read, anonymous rules, reload (new rules at once; a file that fails to parse keeps the old ones),
 * and allowAnonymous with and without authentication.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { IConnackPacket, IPubackPacket, IPublishPacket, ISubackPacket } from 'mqtt-packet';
import { describe, expect, it } from 'vitest';
import aclFilePlugin from '../plugins/acl-file/index.js';
import { covers, intersects, matches, parseAcl, patternsFor } from '../plugins/acl-file/rules.js';
import passwordFilePlugin from '../plugins/password-file/index.js';
import { formatPasswordFile, hashPassword } from '../plugins/password-file/passwords.js';
import { run as runCli } from './cli-helpers.js';
import { connectPacket, onCleanup, RawClient, startBroker } from './helpers.js';

function tmp(): string {
  const dir = mkdtempSync(join(tmpdir(), 'heron-acl-'));
  onCleanup(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const ACL = `# anonymous clients (before any user line)
topic read public/#
topic write public/anon

user alice
topic readwrite alice/#
topic read shared/+/data
topic deny shared/secret/data
topic write cmd/alice

user bob
topic read alice/status

user carol
topic read #
topic deny secret/#

# every client
pattern readwrite users/%u/#
pattern write clients/%c/out
`;

async function aclBroker(text = ACL, extra = {}) {
  const file = join(tmp(), 'acl');
  writeFileSync(file, text);
  const started = await startBroker({ plugins: [[aclFilePlugin, { file }]], ...extra });
  return { ...started, file };
}

type Who = 'alice' | 'bob' | 'carol' | null;
let ids = 0;

async function client(port: number, v: 4 | 5, who: Who, clientId = `c${ids++}`): Promise<RawClient> {
  return RawClient.connected(port, v, { clientId, ...(who === null ? {} : { username: who }) });
}

const REFUSED_SUB = { 4: 0x80, 5: 0x87 };

// user, subscription filter, granted. Rule: a filter is granted when a read rule covers it (every
// topic it can match, the rule matches) and no deny rule covers it.
const SUBSCRIBE: [Who, string, boolean][] = [
  ['alice', 'alice/#', true],
  ['alice', 'alice/+', true],
  ['alice', 'alice/x/y', true],
  ['alice', 'alice', true], // `alice/#` matches its parent level
  ['alice', '#', false],
  ['alice', '+/x', false],
  ['alice', 'shared/+/data', true],
  ['alice', 'shared/a/data', true],
  ['alice', 'shared/secret/data', false], // deny wins
  ['alice', 'shared/#', false], // wider than the rule
  ['alice', 'cmd/alice', false], // write only
  ['alice', 'users/alice/#', true], // pattern %u
  ['alice', 'users/bob/x', false],
  ['alice', '$share/g/alice/q', true], // checked without `$share/<group>/`
  ['alice', '$share/g/bob/x', false],
  ['bob', 'alice/status', true],
  ['bob', 'alice/#', false],
  ['bob', 'users/bob/+', true],
  ['bob', 'public/#', false], // the anonymous rules are not bob's
  ['carol', '#', true],
  ['carol', 'secret/#', false],
  ['carol', '$SYS/#', false], // a rule starting with a wildcard does not reach `$` topics
  [null, 'public/#', true],
  [null, 'public/a', true],
  [null, 'users/+/x', false], // %u patterns do not apply to anonymous clients
  [null, '#', false],
];

// user, client id, topic, write granted.
const PUBLISH: [Who, string, string, boolean][] = [
  ['alice', 'a1', 'alice/x', true],
  ['alice', 'a1', 'cmd/alice', true],
  ['alice', 'a1', 'shared/a/data', false], // read only
  ['alice', 'a1', 'users/alice/t', true],
  ['alice', 'dev1', 'clients/dev1/out', true], // pattern %c
  ['alice', 'dev1', 'clients/dev2/out', false],
  ['alice', 'a1', 'bob/x', false],
  ['bob', 'b1', 'alice/status', false],
  ['bob', 'b1', 'users/bob/q', true],
  ['carol', 'c1', 'news', false], // read # grants no write
  [null, 'n1', 'public/anon', true],
  [null, 'n1', 'public/other', false],
];

describe('acl-file: users × filters × actions', () => {
  for (const v of [4, 5] as const) {
    it(`v${v}: SUBSCRIBE granted or refused with ${REFUSED_SUB[v].toString(16)} per the table [MQTT-3.9.3-1]`, async () => {
      const { port } = await aclBroker();
      let messageId = 1;
      for (const [who, filter, granted] of SUBSCRIBE) {
        const c = await client(port, v, who);
        c.send({ cmd: 'subscribe', messageId, subscriptions: [{ topic: filter, qos: 1 }] });
        const ack = (await c.nextOf('suback')) as ISubackPacket;
        expect({ who, filter, code: ack.granted[0] }).toEqual({
          who,
          filter,
          code: granted ? 1 : REFUSED_SUB[v],
        });
        messageId++;
      }
    });

    it(`v${v}: PUBLISH allowed or refused per the table (5.0 PUBACK 0x87; 3.1.1 acknowledged and dropped [MQTT-3.3.5-2])`, async () => {
      const { port, broker } = await aclBroker();
      const routed: string[] = [];
      broker.on('publish', (m) => routed.push(m.topic));
      let messageId = 1;
      for (const [who, clientId, topic, granted] of PUBLISH) {
        const c = await client(port, v, who, clientId);
        c.send({
          cmd: 'publish',
          topic,
          payload: Buffer.from('x'),
          qos: 1,
          messageId,
          retain: false,
          dup: false,
        });
        const ack = (await c.nextOf('puback')) as IPubackPacket;
        const code = ack.reasonCode ?? 0;
        if (v === 5)
          expect({ who, topic, refused: code === 0x87 }).toEqual({ who, topic, refused: !granted });
        expect({ who, topic, routed: routed.includes(topic) }).toEqual({ who, topic, routed: granted });
        c.socket.destroy();
        await c.closed;
        messageId++;
      }
    });

    it(`v${v}: a # subscriber receives only what its ACL grants for read (authorizeDeliver), retained too`, async () => {
      const { port, broker } = await aclBroker();
      broker.publish({ topic: 'secret/retained', payload: 'r', retain: true });
      broker.publish({ topic: 'news/retained', payload: 'r', retain: true });
      const carol = await client(port, v, 'carol');
      carol.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: '#', qos: 0 }] });
      expect(((await carol.nextOf('suback')) as ISubackPacket).granted).toEqual([0]);
      expect(((await carol.nextOf('publish')) as IPublishPacket).topic).toBe('news/retained');
      for (const topic of ['news/1', 'secret/a', 'secret', '$SYS/x', 'news/2'])
        broker.publish({ topic, payload: 'p' });
      // Delivered in order: news/2 right after news/1 means the ones between were not delivered.
      expect(((await carol.nextOf('publish')) as IPublishPacket).topic).toBe('news/1');
      expect(((await carol.nextOf('publish')) as IPublishPacket).topic).toBe('news/2');
      // alice reads shared/+/data but not shared/secret/data.
      const alice = await client(port, v, 'alice');
      alice.send({ cmd: 'subscribe', messageId: 2, subscriptions: [{ topic: 'shared/+/data', qos: 0 }] });
      await alice.nextOf('suback');
      for (const topic of ['shared/a/data', 'shared/secret/data', 'shared/b/data'])
        broker.publish({ topic, payload: 'p' });
      expect(((await alice.nextOf('publish')) as IPublishPacket).topic).toBe('shared/a/data');
      expect(((await alice.nextOf('publish')) as IPublishPacket).topic).toBe('shared/b/data');
    });
  }
});

describe('acl-file: remembered answers', () => {
  for (const v of [4, 5] as const) {
    it(`v${v}: a # subscriber with many rules, over more topics than are remembered and again, receives exactly what it may read; a reload forgets the answers`, async () => {
      // More than two wildcard / deny rules: answers are remembered per topic (64 at most).
      const rules = 'user dan\ntopic read #\ntopic deny +/odd/#\ntopic deny x/+/y\ntopic deny +/even/no\n';
      const { port, broker, file } = await aclBroker(rules);
      const dan = await RawClient.connected(port, v, { clientId: `dan${v}`, username: 'dan' });
      dan.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: '#', qos: 0 }] });
      expect(((await dan.nextOf('suback')) as ISubackPacket).granted).toEqual([0]);
      const topics: string[] = [];
      for (let i = 0; i < 100; i++)
        topics.push(`t${i}/${i % 2 === 0 ? 'even' : 'odd'}/${i % 10 === 0 ? 'no' : 'ok'}`);
      const readable = (t: string) => t.includes('/even/') && !t.endsWith('/no');
      for (let round = 0; round < 3; round++) {
        for (const topic of topics) broker.publish({ topic, payload: 'p' });
        broker.publish({ topic: 'z/end', payload: 'p' });
        const got: string[] = [];
        for (;;) {
          const p = (await dan.nextOf('publish')) as IPublishPacket;
          if (p.topic === 'z/end') break;
          got.push(p.topic);
        }
        expect(got).toEqual(topics.filter(readable));
      }
      // The same topics under new rules: nothing remembered from the old ones is answered.
      writeFileSync(file, 'user dan\ntopic read #\ntopic read x/+/y\ntopic read z/#\ntopic deny q/+/r\n');
      await broker.reload();
      for (const topic of topics) broker.publish({ topic, payload: 'p' });
      broker.publish({ topic: 'z/end', payload: 'p' });
      const got: string[] = [];
      for (;;) {
        const p = (await dan.nextOf('publish')) as IPublishPacket;
        if (p.topic === 'z/end') break;
        got.push(p.topic);
      }
      expect(got).toEqual(topics);
    });
  }
});

describe('acl-file: reload', () => {
  for (const v of [4, 5] as const) {
    it(`v${v}: broker.reload() applies new rules to new checks at once; a file that fails to parse keeps the old rules and names the line`, async () => {
      const { port, broker, file } = await aclBroker('topic read public/#\ntopic write public/in\n');
      const c = await client(port, v, null);
      c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'public/#', qos: 0 }] });
      expect(((await c.nextOf('suback')) as ISubackPacket).granted).toEqual([0]);

      writeFileSync(file, '# public is gone\ntopic read other/#\n');
      await broker.reload();
      c.send({ cmd: 'subscribe', messageId: 2, subscriptions: [{ topic: 'public/x', qos: 0 }] });
      expect(((await c.nextOf('suback')) as ISubackPacket).granted).toEqual([REFUSED_SUB[v]]);
      c.send({ cmd: 'subscribe', messageId: 3, subscriptions: [{ topic: 'other/#', qos: 0 }] });
      expect(((await c.nextOf('suback')) as ISubackPacket).granted).toEqual([0]);
      // The existing public/# subscription no longer receives: read is checked per delivery.
      broker.publish({ topic: 'public/a', payload: 'p' });
      broker.publish({ topic: 'other/a', payload: 'p' });
      expect(((await c.nextOf('publish')) as IPublishPacket).topic).toBe('other/a');

      writeFileSync(file, 'topic read public/#\nbogus line\n');
      await expect(broker.reload()).rejects.toThrow(/line 2: unknown keyword "bogus"/);
      c.send({ cmd: 'subscribe', messageId: 4, subscriptions: [{ topic: 'other/b', qos: 0 }] });
      expect(((await c.nextOf('suback')) as ISubackPacket).granted).toEqual([0]);
      c.send({ cmd: 'subscribe', messageId: 5, subscriptions: [{ topic: 'public/b', qos: 0 }] });
      expect(((await c.nextOf('suback')) as ISubackPacket).granted).toEqual([REFUSED_SUB[v]]);
    });
  }

  it('the CLI: --acl-file is enforced and SIGHUP reloads it; a bad file keeps the old rules and logs the line', async () => {
    const file = join(tmp(), 'acl');
    writeFileSync(file, 'topic read a/#\n');
    const args = ['--port', '0', '--host', '127.0.0.1', '--ws-port', '0', '--persistence', 'memory'];
    const { child, line } = runCli([...args, '--acl-file', file]);
    const log = (msg: string, transport?: string) =>
      line((x) => x.msg === msg && (transport === undefined || x.transport === transport));
    const port = (await log('listening', 'tcp')).port as number;
    const granted = async (filter: string) => {
      const c = await RawClient.connected(port, 5);
      c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: filter, qos: 0 }] });
      const code = ((await c.nextOf('suback')) as ISubackPacket).granted[0];
      c.socket.destroy();
      return code;
    };
    expect(await granted('a/x')).toBe(0);
    expect(await granted('b/x')).toBe(0x87);
    writeFileSync(file, 'topic read b/#\n');
    child.kill('SIGHUP');
    expect((await log('acl file reloaded')).rules).toBe(1);
    expect(await granted('a/x')).toBe(0x87);
    expect(await granted('b/x')).toBe(0);
    writeFileSync(file, 'topic read a/#\ntopic read +a\n');
    child.kill('SIGHUP');
    const failed = await log('acl file not reloaded; keeping the previous rules');
    expect(JSON.stringify(failed.err)).toContain('line 2');
    expect(await granted('b/x')).toBe(0);
    expect(await granted('a/x')).toBe(0x87);
  });

  it('a file that fails to parse at start fails the start, naming the line', async () => {
    const file = join(tmp(), 'acl');
    writeFileSync(file, 'user alice\ntopic read a/#/b\n');
    await expect(startBroker({ plugins: [[aclFilePlugin, { file }]] })).rejects.toThrow(
      /line 2: "a\/#\/b" is not a valid topic filter/,
    );
  });
});

describe('acl-file: parsing and matching', () => {
  it('access words, default readwrite, patterns anywhere, comments and blank lines', () => {
    const { rules, errors } = parseAcl(
      '  # c\n\ntopic a/b\ntopic deny x\nuser u\npattern read p/%u\ntopic write w/#\ntopic read r\n',
    );
    expect(errors).toEqual([]);
    expect(rules.anonymous).toEqual([
      { access: 3, filter: 'a/b' },
      { access: 4, filter: 'x' },
    ]);
    expect(rules.patterns).toEqual([{ access: 1, filter: 'p/%u' }]);
    expect(rules.users.get('u')).toEqual([
      { access: 2, filter: 'w/#' },
      { access: 1, filter: 'r' },
    ]);
    expect(parseAcl('user\ntopic\nfoo bar\n').errors.map((e) => e.line)).toEqual([1, 2, 3]);
  });

  it('patterns: %u and %c substituted; none with %u for anonymous, none whose value holds a wildcard', () => {
    const { rules } = parseAcl('pattern read u/%u/#\npattern write c/%c\npattern read all/%u/%c\n');
    expect(patternsFor(rules, 'dev1', 'alice').map((r) => r.filter)).toEqual([
      'u/alice/#',
      'c/dev1',
      'all/alice/dev1',
    ]);
    expect(patternsFor(rules, 'dev1', undefined).map((r) => r.filter)).toEqual(['c/dev1']);
    // A user name or client id holding + or # would widen the rule: the pattern does not apply.
    expect(patternsFor(rules, 'd#', 'ev+l').map((r) => r.filter)).toEqual([]);
  });

  it('topic matching and filter coverage, $ topics excluded from leading wildcards [MQTT-4.7.2-1]', () => {
    const r = (f: string) => ({ levels: f.split('/'), wildFirst: f[0] === '+' || f[0] === '#' });
    expect(matches(r('a/+/c'), 'a/b/c')).toBe(true);
    expect(matches(r('a/+/c'), 'a/b/c/d')).toBe(false);
    expect(matches(r('a/+'), 'a')).toBe(false);
    expect(matches(r('a/+'), 'a/')).toBe(true);
    expect(matches(r('a/#'), 'a')).toBe(true);
    expect(matches(r('#'), '$SYS/x')).toBe(false);
    expect(matches(r('$SYS/#'), '$SYS/x')).toBe(true);
    const cov = (rule: string, sub: string) => covers(r(rule), sub.split('/'));
    expect(cov('a/#', 'a/+/c')).toBe(true);
    expect(cov('a/+/c', 'a/+/c')).toBe(true);
    expect(cov('a/b/c', 'a/+/c')).toBe(false);
    expect(cov('a/+', 'a/#')).toBe(false);
    expect(cov('+/#', '$SYS/#')).toBe(false);
    // Could one topic match both? (a deny rule against a subscription that a grant covers)
    const meet = (rule: string, sub: string) => intersects(r(rule), sub.split('/'));
    expect(meet('a/secret', 'a/#')).toBe(true);
    expect(meet('a/#', 'a')).toBe(true);
    expect(meet('a', 'a/#')).toBe(true);
    expect(meet('+/x', 'a/+')).toBe(true);
    expect(meet('a/b', 'a/c')).toBe(false);
    expect(meet('a/+', 'a')).toBe(false);
    expect(meet('a/b/c', 'a/+')).toBe(false);
    expect(meet('$SYS/#', '#')).toBe(false);
    expect(meet('#', '$SYS/x')).toBe(false);
    expect(meet('$SYS/+', '$SYS/#')).toBe(true);
  });
});

// A subscription whose filter the rules grant whole is not checked per delivery (coversDeliveries):
// that answer must not outlive the rules or the connection it was given for.
describe('acl-file: deliveries through a subscription granted whole', () => {
  for (const v of [4, 5] as const) {
    it(`v${v}: a deny rule added by a reload inside a granted filter stops those deliveries at once`, async () => {
      const { port, broker, file } = await aclBroker('user erin\ntopic read a/#\n');
      const erin = await RawClient.connected(port, v, { clientId: `erin-${v}`, username: 'erin' });
      erin.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'a/#', qos: 0 }] });
      expect(((await erin.nextOf('suback')) as ISubackPacket).granted).toEqual([0]);
      broker.publish({ topic: 'a/secret', payload: '1' });
      expect(((await erin.nextOf('publish')) as IPublishPacket).topic).toBe('a/secret');
      writeFileSync(file, 'user erin\ntopic read a/#\ntopic deny a/secret\n');
      await broker.reload();
      broker.publish({ topic: 'a/secret', payload: '2' });
      broker.publish({ topic: 'a/open', payload: '3' });
      expect(((await erin.nextOf('publish')) as IPublishPacket).topic).toBe('a/open');
    });

    it(`v${v}: a persistent session resumed by another user is checked against that user's rules`, async () => {
      const { port, broker } = await aclBroker('user fay\ntopic read f/#\nuser gus\ntopic read f/gus\n');
      const id = `shared-id-${v}`;
      const clean = v === 5 ? { clean: false, properties: { sessionExpiryInterval: 600 } } : { clean: false };
      const fay = await RawClient.connected(port, v, { clientId: id, username: 'fay', ...clean });
      fay.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'f/#', qos: 0 }] });
      expect(((await fay.nextOf('suback')) as ISubackPacket).granted).toEqual([0]);
      broker.publish({ topic: 'f/any', payload: '1' });
      expect(((await fay.nextOf('publish')) as IPublishPacket).topic).toBe('f/any');
      fay.send({ cmd: 'disconnect' });
      await fay.closed;
      const gus = await RawClient.connected(port, v, { clientId: id, username: 'gus', ...clean });
      broker.publish({ topic: 'f/any', payload: '2' });
      broker.publish({ topic: 'f/gus', payload: '3' });
      expect(((await gus.nextOf('publish')) as IPublishPacket).topic).toBe('f/gus');
    });
  }
});

async function connack(port: number, v: 4 | 5, username?: string, password?: string): Promise<number> {
  const c = await RawClient.open(port, v);
  c.send(
    connectPacket(v, { username, password: password === undefined ? undefined : Buffer.from(password) }),
  );
  const ack = (await c.next()) as IConnackPacket;
  return (v === 5 ? ack.reasonCode : ack.returnCode) as number;
}

describe('allowAnonymous', () => {
  const ANON = { 4: 0x05, 5: 0x87 };
  const BAD = { 4: 0x04, 5: 0x86 };
  async function passwords(): Promise<string> {
    const file = join(tmp(), 'passwords');
    writeFileSync(file, formatPasswordFile([{ user: 'alice', hash: await hashPassword('secret') }]));
    return file;
  }

  for (const v of [4, 5] as const) {
    it(`v${v}: default on without authentication; off with a password file (anonymous ${ANON[v]}, bad password ${BAD[v]})`, async () => {
      const open = await startBroker();
      expect(await connack(open.port, v)).toBe(0);
      const file = await passwords();
      const { port } = await startBroker({ plugins: [[passwordFilePlugin, { file }]] });
      expect(await connack(port, v)).toBe(ANON[v]);
      expect(await connack(port, v, 'alice', 'secret')).toBe(0);
      expect(await connack(port, v, 'alice', 'wrong')).toBe(BAD[v]);
      expect(await connack(port, v, 'nobody', 'secret')).toBe(BAD[v]);
    });

    it(`v${v}: allowAnonymous true with a password file lets anonymous in (still checking named users); false without authentication refuses it`, async () => {
      const file = await passwords();
      const on = await startBroker({ allowAnonymous: true, plugins: [[passwordFilePlugin, { file }]] });
      expect(await connack(on.port, v)).toBe(0);
      expect(await connack(on.port, v, 'alice', 'wrong')).toBe(BAD[v]);
      const off = await startBroker({ allowAnonymous: false });
      expect(await connack(off.port, v)).toBe(ANON[v]);
      expect(await connack(off.port, v, 'someone', 'x')).toBe(0);
    });

    it(`v${v}: password file + ACL: anonymous (allowed) gets the anonymous rules, alice hers`, async () => {
      const file = await passwords();
      const acl = join(tmp(), 'acl');
      writeFileSync(acl, 'topic read public/#\nuser alice\ntopic read alice/#\n');
      const { port } = await startBroker({
        allowAnonymous: true,
        plugins: [
          [passwordFilePlugin, { file }],
          [aclFilePlugin, { file: acl }],
        ],
      });
      const anon = await RawClient.connected(port, v);
      anon.send({
        cmd: 'subscribe',
        messageId: 1,
        subscriptions: [
          { topic: 'public/#', qos: 0 },
          { topic: 'alice/#', qos: 0 },
        ],
      });
      expect(((await anon.nextOf('suback')) as ISubackPacket).granted).toEqual([0, REFUSED_SUB[v]]);
      const alice = await RawClient.connected(port, v, {
        username: 'alice',
        password: Buffer.from('secret'),
      });
      alice.send({
        cmd: 'subscribe',
        messageId: 1,
        subscriptions: [
          { topic: 'public/#', qos: 0 },
          { topic: 'alice/#', qos: 0 },
        ],
      });
      expect(((await alice.nextOf('suback')) as ISubackPacket).granted).toEqual([REFUSED_SUB[v], 0]);
    });
  }
});
