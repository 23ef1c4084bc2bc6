// The agent over HTTPS: a CA and a server certificate for 127.0.0.1 made with `openssl` at test time, a node:https
// fake server (enrollment, check-in, TUF metadata, blobs) and real agent processes. With `ca:` the agent enrolls,
// checks in and applies a TUF-verified release whose metadata and blob come over the same TLS connection trust;
// without `ca:` (system CAs only) or with another CA it refuses the connection and says why in its log.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { type AddressInfo, createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { stringify } from 'yaml';
import type { ComponentJournal } from '../src/agent/journal.ts';
import { BIN } from '../src/demo/fleet.ts';
import { publishRelease, TufRepository } from '../src/trust/signer/tuf-repository.ts';
import { type FakeServer, ringfence, spawnAgent, startFakeServer, stopProcess } from './agent-harness.ts';
import { guardProcesses, spawnGroup } from './helpers/processes.ts';
import { until } from './helpers/server.ts';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const COMPONENT = 'sensor-content';
const CONTENT = Buffer.from('threads=8\n');

function openssl(dir: string, args: string[]): void {
  const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8', timeout: 60_000 });
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`);
}

/** A CA (ca.pem), a server certificate for IP 127.0.0.1 signed by it (server.pem, server.key), and an unrelated CA. */
function makeCertificates(dir: string): void {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  const caConf = (cn: string) =>
    `[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = ${cn}\n[v3_ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\nsubjectKeyIdentifier = hash\n`;
  writeFileSync(join(dir, 'ca.cnf'), caConf('Ringfence test CA'));
  writeFileSync(join(dir, 'other-ca.cnf'), caConf('Some other CA'));
  writeFileSync(
    join(dir, 'leaf.cnf'),
    '[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = 127.0.0.1\n[leaf]\nbasicConstraints = CA:FALSE\nkeyUsage = critical,digitalSignature\nextendedKeyUsage = serverAuth\nsubjectAltName = IP:127.0.0.1\nauthorityKeyIdentifier = keyid\n',
  );
  openssl(dir, [
    'req',
    '-x509',
    ...ec,
    '-keyout',
    'ca.key',
    '-out',
    'ca.pem',
    '-days',
    '2',
    '-config',
    'ca.cnf',
    '-extensions',
    'v3_ca',
  ]);
  openssl(dir, [
    'req',
    '-x509',
    ...ec,
    '-keyout',
    'other-ca.key',
    '-out',
    'other-ca.pem',
    '-days',
    '2',
    '-config',
    'other-ca.cnf',
    '-extensions',
    'v3_ca',
  ]);
  openssl(dir, ['req', '-new', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-config', 'leaf.cnf']);
  openssl(dir, [
    'x509',
    '-req',
    '-in',
    'server.csr',
    '-CA',
    'ca.pem',
    '-CAkey',
    'ca.key',
    '-CAcreateserial',
    '-out',
    'server.pem',
    '-days',
    '2',
    '-extfile',
    'leaf.cnf',
    '-extensions',
    'leaf',
  ]);
}

describe('agent over HTTPS with a private CA', { timeout: 300_000 }, () => {
  let dir: string;
  let repo: TufRepository;
  const fakes: FakeServer[] = [];
  const agents: ChildProcess[] = [];
  const blobs = new Map([[sha(CONTENT), CONTENT]]);

  /** A device folder running 1.0.0 whose config points at `server`; `extra` is merged into the config. */
  function device(name: string, server: string, extra: Record<string, unknown>) {
    const d = join(dir, name);
    mkdirSync(join(d, 'app', 'releases', '1.0.0'), { recursive: true });
    writeFileSync(join(d, 'app', 'releases', '1.0.0', 'service.conf'), 'threads=4\n');
    symlinkSync(join('releases', '1.0.0'), join(d, 'app', 'current'));
    const config = join(d, 'agent.yaml');
    writeFileSync(
      config,
      stringify({
        server,
        enroll_token: 'enroll-me',
        name,
        state_dir: './state',
        poll_interval: '300ms',
        retry: { base: '200ms', max: '1s' },
        trust: { root: join(repo.metadataDir, '1.root.json') },
        components: [{ name: COMPONENT, backend: { type: 'dir', path: './app' } }],
        ...extra,
      }),
    );
    return { dir: d, config, log: join(d, 'agent.log') };
  }

  const tls = () => ({
    key: readFileSync(join(dir, 'server.key')),
    cert: readFileSync(join(dir, 'server.pem')),
  });
  const env = { NODE_EXTRA_CA_CERTS: '' }; // nothing but the config decides what is trusted

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'rf-https-'));
    makeCertificates(dir);
    const org = join(dir, 'org');
    repo = TufRepository.init(org).repo;
    await publishRelease(
      org,
      {
        component: COMPONENT,
        version: '1.1.0',
        artifacts: [{ name: 'service.conf', sha256: sha(CONTENT), length: CONTENT.length }],
      },
      Date.now(),
    );
  });

  after(async () => {
    for (const a of agents) await stopProcess(a);
    for (const f of fakes) await f.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('with `ca:` the agent enrolls, checks in and applies a verified release over https', async () => {
    const fake = await startFakeServer({ tls: tls(), tufDir: repo.metadataDir, blobs });
    fakes.push(fake);
    assert.match(fake.url, /^https:\/\/127\.0\.0\.1:\d+$/);
    fake.desired = [
      {
        component: COMPONENT,
        version: '1.1.0',
        artifacts: [
          {
            name: 'service.conf',
            sha256: sha(CONTENT),
            length: CONTENT.length,
            url: `/v1/blobs/${sha(CONTENT)}`,
          },
        ],
      },
    ];
    const d = device('with-ca', fake.url, { ca: '../ca.pem' }); // relative to the config's folder
    agents.push(spawnAgent(d.config, d.log, env));
    const journal = () =>
      JSON.parse(readFileSync(join(d.dir, 'state', `component-${COMPONENT}.json`), 'utf8'));
    await until(
      async () =>
        existsSync(join(d.dir, 'state', `component-${COMPONENT}.json`))
          ? (journal() as ComponentJournal)
          : null,
      (j) => j?.current === '1.1.0' && j.txn === null,
      90_000,
      'the release applied over https',
    ).catch((e) => {
      throw new Error(`${(e as Error).message}\n${readFileSync(d.log, 'utf8').slice(-3000)}`);
    });
    assert.equal(readFileSync(join(d.dir, 'app', 'current', 'service.conf'), 'utf8'), CONTENT.toString());
    const paths = fake.requests.map((r) => r.path);
    assert.ok(paths.includes('/v1/enroll'), 'enrolled over https');
    assert.ok(paths.includes('/v1/checkin'), 'checked in over https');
    assert.ok(paths.includes('/v1/tuf/timestamp.json'), 'TUF metadata over https with the same ca');
    assert.ok(paths.includes(`/v1/blobs/${sha(CONTENT)}`), 'the blob over https with the same ca');
    await until(
      async () => fake.reports.filter((r) => r.version === '1.1.0' && r.outcome === 'succeeded'),
      (r) => r.length === 1,
      120_000,
      'the success report over https',
    );
    const id = JSON.parse(readFileSync(join(d.dir, 'state', 'identity.json'), 'utf8'));
    assert.equal(id.server, fake.url);
  });

  for (const [what, extra, re] of [
    ['without `ca:` (system CAs only)', {}, /set `ca:` in the agent config/],
    ['with `ca:` of another CA', { ca: '../other-ca.pem' }, /not trusted .* by the configured ca/],
  ] as const) {
    it(`${what} the agent refuses the connection and logs why`, async () => {
      const fake = await startFakeServer({ tls: tls(), tufDir: repo.metadataDir, blobs });
      fakes.push(fake);
      const d = device(`refused-${fakes.length}`, fake.url, extra);
      agents.push(spawnAgent(d.config, d.log, env));
      const log = await until(
        async () => (existsSync(d.log) ? readFileSync(d.log, 'utf8') : ''),
        (t) =>
          /check-in failed/.test(t) &&
          /TLS: the certificate of https:\/\/127\.0\.0\.1:\d+ is not trusted/.test(t),
        90_000,
        'the TLS refusal in the log',
      );
      assert.match(log, re);
      assert.match(log, /last good release keeps running/);
      assert.deepEqual(fake.requests, [], 'not a single HTTP request went over the untrusted connection');
      assert.equal(existsSync(join(d.dir, 'state', 'identity.json')), false, 'not enrolled');
      await stopProcess(agents.at(-1));
    });
  }

  it('`ca:` with an http:// server is a configuration error', () => {
    const d = device('http-with-ca', 'http://127.0.0.1:9', { ca: '../ca.pem' });
    const r = ringfence(['agent', 'status', '--config', d.config]);
    assert.notEqual(r.code, 0);
    assert.match(r.out, /ca: is for an https:\/\/ server/);
  });
});

describe('the real server over HTTPS (ringfence server --tls-cert/--tls-key)', () => {
  let dir: string;
  let server: ChildProcess | undefined;
  let agent: ChildProcess | undefined;
  const ADMIN = 'rfadm_https_test_0123456789abcdefghijklmnopqrstuv';

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'rf-https-real-'));
    makeCertificates(dir);
  });
  after(async () => {
    await stopProcess(agent);
    await stopProcess(server);
    rmSync(dir, { recursive: true, force: true });
  });

  /** A request to the server trusting only the test CA. */
  function call(
    port: number,
    method: string,
    path: string,
    body?: unknown,
  ): Promise<{ status: number; json: unknown }> {
    return new Promise((resolve, reject) => {
      const req = httpsRequest(
        {
          host: '127.0.0.1',
          port,
          method,
          path,
          ca: readFileSync(join(dir, 'ca.pem')),
          headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
        },
        (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (c) => {
            text += c;
          });
          res.on('end', () => resolve({ status: res.statusCode ?? 0, json: text ? JSON.parse(text) : null }));
        },
      );
      req.on('error', reject);
      req.end(body === undefined ? undefined : JSON.stringify(body));
    });
  }

  let port = 0;
  it('serves the API over TLS, and a real agent with `ca:` enrolls and checks in', async () => {
    port = await freePort();
    const log = join(dir, 'server.log');
    // A short headers timeout, so the next test can show it does not cut TLS connections that are in use.
    mkdirSync(join(dir, 'data'), { recursive: true, mode: 0o700 });
    writeFileSync(join(dir, 'data', 'server.yaml'), 'limits:\n  headers_timeout_s: 1\n');
    const fd = openSync(log, 'a');
    server = spawnGroup(
      process.execPath,
      [
        BIN,
        'server',
        '--data',
        join(dir, 'data'),
        '--port',
        String(port),
        '--tls-cert',
        join(dir, 'server.pem'),
        '--tls-key',
        join(dir, 'server.key'),
      ],
      { stdio: ['ignore', fd, fd], env: { ...process.env, RINGFENCE_INITIAL_ADMIN_TOKEN: ADMIN } },
    );
    closeSync(fd);
    await until(
      async () => call(port, 'GET', '/healthz').catch(() => ({ status: 0, json: null })),
      (r) => r.status === 200,
      60_000,
      'the https server',
    );
    assert.doesNotMatch(
      readFileSync(log, 'utf8'),
      new RegExp(ADMIN),
      'a token from the environment is not printed',
    );
    const tok = (await call(port, 'POST', '/v1/admin/enroll-tokens', { uses: 1 })) as {
      status: number;
      json: { token: string };
    };
    assert.equal(tok.status, 201);
    const d = join(dir, 'dev');
    mkdirSync(join(d, 'app'), { recursive: true });
    const config = join(d, 'agent.yaml');
    writeFileSync(
      config,
      stringify({
        server: `https://127.0.0.1:${port}`,
        ca: '../ca.pem',
        enroll_token: tok.json.token,
        name: 'tls-device',
        state_dir: './state',
        poll_interval: '300ms',
        components: [{ name: COMPONENT, backend: { type: 'dir', path: './app' } }],
      }),
    );
    agent = spawnAgent(config, join(d, 'agent.log'), { NODE_EXTRA_CA_CERTS: '' });
    const devices = await until(
      async () =>
        (await call(port, 'GET', '/v1/admin/devices')).json as Array<{ name: string; components: unknown[] }>,
      (l) => l.length === 1 && l[0].components.length === 1,
      60_000,
      'the agent enrolled and checked in over https',
    );
    assert.equal(devices[0].name, 'tls-device');
  });

  it('keeps a TLS keep-alive connection open past the headers timeout (it only bounds unfinished headers)', async () => {
    const keepAlive = new HttpsAgent({ keepAlive: true, ca: readFileSync(join(dir, 'ca.pem')) });
    const get = () =>
      new Promise<{ status: number; reused: boolean }>((resolve, reject) => {
        const req = httpsRequest({ host: '127.0.0.1', port, path: '/healthz', agent: keepAlive }, (res) => {
          res.resume();
          res.on('end', () => resolve({ status: res.statusCode ?? 0, reused: req.reusedSocket }));
        });
        req.on('error', reject);
        req.end();
      });
    try {
      assert.equal((await get()).status, 200);
      // Waiting out the 1 s headers timeout is the point of this test.
      await new Promise((r) => setTimeout(r, 2500));
      const again = await get();
      assert.equal(again.status, 200);
      assert.equal(again.reused, true, 'the same TLS connection served the second request');
    } finally {
      keepAlive.destroy();
    }
  });
});

async function freePort(): Promise<number> {
  const s = createNetServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

// Last of the file's top-level hooks: no child of this file may outlive its tests.
guardProcesses();
