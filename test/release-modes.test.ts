// File modes travel with a release: `release import` (the real CLI) records each file's mode masked to 0o755,
// the server signs it into the TUF targets (custom.mode) and offers it at check-in, and a real agent process
// restores it when staging, so a health check that runs `./current/health.sh` directly (no `sh`) passes and the
// release commits. The same through an offline bundle (`bundle export` + `agent apply-bundle`, and `bundle import`
// on a branch server), a server that lies about a mode is refused by a device with a pinned root, and a release
// that carries no modes (an old import) is staged 0644 — the failure this feature fixes.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  readFileSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { FileBackend } from '../src/agent/backend-file.ts';
import { checkOffer } from '../src/agent/offer.ts';
import { api } from '../src/cli/client.ts';
import { BIN, type SpawnedDevice, stopAgents } from '../src/demo/fleet.ts';
import { decode, encode } from '../src/server/db/json.ts';
import type { ReleaseView } from '../src/server/routes/admin-releases.ts';
import { TufRepository } from '../src/trust/signer/tuf-repository.ts';
import {
  activeRelease,
  enrollToken,
  journalOf,
  OLD,
  onVersion,
  pin,
  publishReleases,
  refusals,
  report,
  ringfence,
  seededDevice,
  start,
  waitEnrolled,
} from './agent-harness.ts';
import { guardProcesses } from './helpers/processes.ts';
import { startTestServer, type TestServer, until } from './helpers/server.ts';

const COMPONENT = 'sensor-content';
const HEALTH =
  '#!/bin/sh\n# the release checks itself; run directly by the device health check\necho "healthy $0"\n';

/** What each file of the test release is created with, and the mode a device must end up with. */
const FILES: Array<{ name: string; body: string; mode: number; want: number }> = [
  { name: 'health.sh', body: HEALTH, mode: 0o755, want: 0o755 },
  { name: 'data.txt', body: 'content definitions\n', mode: 0o644, want: 0o644 },
  { name: 'bin/tool', body: '#!/bin/sh\necho tool\n', mode: 0o775, want: 0o755 }, // group write dropped
  { name: 'private.conf', body: 'secret=1\n', mode: 0o640, want: 0o640 },
  { name: 'setuid.sh', body: '#!/bin/sh\nid\n', mode: 0o4777, want: 0o755 }, // setuid and o+w dropped
];

/** A release folder with the files above, their modes set explicitly (the umask plays no part). */
function releaseFolder(root: string, version: string): string {
  const dir = join(root, 'modes', version);
  for (const f of FILES) {
    const p = join(dir, f.name);
    mkdirSync(join(p, '..'), { recursive: true });
    writeFileSync(p, `${f.body}# ${version}\n`);
    chmodSync(p, f.mode);
  }
  return dir;
}

/** The real CLI, asynchronously (the server runs in this process: a blocking spawn would deadlock it). */
function cli(args: string[], env: Record<string, string> = {}): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BIN, ...args],
      { env: { ...process.env, ...env }, timeout: 60_000 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        resolve({ code, out: `${stdout}${stderr}` });
      },
    );
  });
}

const modeOf = (p: string) => statSync(p).mode & 0o7777;

/** The device's files of `version` have the modes the release recorded (masked), and the bytes imported. */
function assertModes(d: SpawnedDevice, version: string, source: string): void {
  for (const f of FILES) {
    const p = join(d.appDir, 'releases', version, f.name);
    assert.equal(
      modeOf(p).toString(8),
      f.want.toString(8),
      `${d.name}: ${version}/${f.name} has mode ${modeOf(p).toString(8)}`,
    );
    assert.ok(readFileSync(p).equals(readFileSync(join(source, f.name))), `${f.name} bytes`);
  }
}

/** A device whose only health check runs the release's own script directly, as the operator's config says. */
function execCheckDevice(
  ts: TestServer,
  content: string,
  name: string,
  token: string,
  edit = (_c: Record<string, unknown>) => {},
) {
  return seededDevice(ts, content, name, token, {
    probationMs: 600,
    edit: (cfg) => {
      const comps = cfg.components as Array<Record<string, unknown>>;
      comps[0].health = [{ name: 'self-test', exec: './current/health.sh', timeout: '5s' }];
      edit(cfg);
    },
  });
}

describe('release modes: a keyed server, devices with a pinned root', { timeout: 480_000 }, () => {
  let ts: TestServer;
  let repo: TufRepository;
  let content: string;
  let token: string;
  let env: Record<string, string>;
  let folder: string;
  const devices: SpawnedDevice[] = [];
  let online: SpawnedDevice;
  let onlineId: string;
  const V = '1.1.0';

  before(async () => {
    ts = await startTestServer();
    repo = TufRepository.init(join(ts.dir, 'server')).repo;
    content = await publishReleases(ts, [OLD]);
    token = await enrollToken(ts, 10);
    env = { RINGFENCE_SERVER: ts.url, RINGFENCE_TOKEN: ts.conn.token };
    folder = releaseFolder(ts.dir, V);
  });

  after(async () => {
    await stopAgents(devices);
    await ts?.close();
  });

  it('`release import` records each mode masked to 0755; approval signs it into the targets', async () => {
    const imp = await cli(
      ['release', 'import', '--component', COMPONENT, '--version', V, folder, '--json'],
      env,
    );
    assert.equal(imp.code, 0, imp.out);
    const appr = await cli(['release', 'approve', `${COMPONENT}@${V}`], env);
    assert.equal(appr.code, 0, appr.out);
    const rel = (await api<ReleaseView[]>(ts.conn, 'GET', '/v1/admin/releases')).find(
      (r) => r.version === V,
    )!;
    const recorded = Object.fromEntries(rel.artifacts.map((a) => [a.name, a.mode]));
    assert.deepEqual(recorded, Object.fromEntries(FILES.map((f) => [f.name, f.want])));
    const targets = repo.targets().signed.targets;
    for (const f of FILES)
      assert.equal(
        (targets[`${COMPONENT}/${V}/${f.name}`].custom as { mode?: number }).mode,
        f.want,
        `signed custom.mode of ${f.name}`,
      );
    // A restart re-signs approved releases from a source that knows no modes: the signed mode stays.
    const t = targets[`${COMPONENT}/${V}/health.sh`];
    await repo.addTargets(
      [
        {
          path: `${COMPONENT}/${V}/health.sh`,
          sha256: t.hashes.sha256,
          length: t.length,
          custom: { component: COMPONENT, version: V, name: 'health.sh' },
        },
      ],
      Date.now(),
    );
    assert.equal(
      (repo.targets().signed.targets[`${COMPONENT}/${V}/health.sh`].custom as { mode?: number }).mode,
      0o755,
    );
  });

  it('a device whose health check runs ./current/health.sh directly commits the release, modes restored', async () => {
    online = execCheckDevice(ts, content, 'modes-online', token);
    devices.push(online);
    start(online);
    onlineId = await waitEnrolled(ts, online);
    await until(
      async () => existsSync(join(online.dir, 'state', 'tuf-root.json')),
      Boolean,
      120_000,
      'the device pinned the root',
    );
    await pin(ts, online, V);
    const j = await onVersion(online, V, 60_000, 'the device committed the release');
    assert.deepEqual(j.quarantined, [], 'not rolled back, not quarantined');
    assert.equal(j.lastHealth?.ok, true);
    assert.equal(activeRelease(online), V);
    assertModes(online, V, folder);
    const rows = await until(
      () => report(ts, onlineId, V),
      (r) => r.length > 0,
      120_000,
      'the success report',
    );
    assert.deepEqual(
      rows.map((r) => r.outcome),
      ['succeeded'],
    );
  });

  it('offline: `bundle export` + `agent apply-bundle` restores the modes; `bundle import` keeps them', async () => {
    const data = join(ts.dir, 'server');
    const bundle = join(ts.dir, 'modes.rfb');
    const exp = await cli(['bundle', 'export', bundle, `${COMPONENT}@${V}`, '--data', data, '--json']);
    assert.equal(exp.code, 0, exp.out);
    const rootFile = join(ts.dir, 'org-root.json');
    copyFileSync(join(repo.metadataDir, '1.root.json'), rootFile); // pre-provisioned, as in a device image
    const d = execCheckDevice(ts, content, 'modes-offline', token, (cfg) => {
      cfg.server = 'http://127.0.0.1:9'; // never reached: no daemon runs, the bundle is applied by hand
      cfg.trust = { root: rootFile };
    });
    const r = ringfence(['agent', 'apply-bundle', bundle, '--config', d.config, '--json']);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /"outcome": "succeeded"/);
    assert.equal(activeRelease(d), V);
    assert.deepEqual(journalOf(d).quarantined, []);
    assertModes(d, V, folder);

    // A branch server importing the bundle registers the release with the same modes.
    const branch = join(ts.dir, 'branch');
    const imp = await cli(['bundle', 'import', bundle, '--data', branch, '--root', rootFile, '--json']);
    assert.equal(imp.code, 0, imp.out);
    const { openStore } = await import('../src/server/db/database.ts');
    const store = await openStore({ dataDir: branch });
    try {
      const row = await store.db
        .selectFrom('releases')
        .select('artifacts')
        .where('component', '=', COMPONENT)
        .where('version', '=', V)
        .executeTakeFirstOrThrow();
      const arts = decode(row.artifacts);
      assert.deepEqual(
        Object.fromEntries(arts.map((a) => [a.name, a.mode])),
        Object.fromEntries(FILES.map((f) => [f.name, f.want])),
      );
    } finally {
      await store.close();
    }
  });

  it('a server that lies about a mode (database row tampered after signing) is refused by the device', async () => {
    const LIE = '1.2.0';
    const dir = releaseFolder(ts.dir, LIE);
    const imp = await cli(['release', 'import', '--component', COMPONENT, '--version', LIE, dir], env);
    assert.equal(imp.code, 0, imp.out);
    assert.equal((await cli(['release', 'approve', `${COMPONENT}@${LIE}`], env)).code, 0);
    // The attacker owns the database, not the targets key: data.txt is offered executable, health.sh not.
    const row = await ts.srv.ctx.store.db
      .selectFrom('releases')
      .select(['id', 'artifacts'])
      .where('component', '=', COMPONENT)
      .where('version', '=', LIE)
      .executeTakeFirstOrThrow();
    const arts = decode(row.artifacts).map((a) => (a.name === 'data.txt' ? { ...a, mode: 0o755 } : a));
    await ts.srv.ctx.store.db
      .updateTable('releases')
      .set({ artifacts: encode(arts) })
      .where('id', '=', row.id)
      .execute();
    const since = Date.now();
    await pin(ts, online, LIE);
    const got = await until(
      () => refusals(ts, onlineId, LIE, since),
      (rows) => rows.length > 0,
      60_000,
      'the device refuses the lying offer',
    );
    assert.equal(got[0].class, 'mismatch');
    assert.match(got[0].reason ?? '', /data\.txt: offered mode 0755, signed 0644/);
    assert.equal(activeRelease(online), V, 'the last good release keeps running');
    assert.equal(existsSync(join(online.appDir, 'releases', LIE)), false, 'nothing was staged');
    // The device keeps the refusal in its journal (it retries the same offer at each poll, reporting it once).
    assert.equal(journalOf(online).refused?.class, 'mismatch');
    assert.equal(journalOf(online).current, V);
  });
});

describe('release modes: a server without keys (sha256 only)', { timeout: 400_000 }, () => {
  let ts: TestServer;
  let content: string;
  let token: string;
  let env: Record<string, string>;
  const devices: SpawnedDevice[] = [];

  before(async () => {
    ts = await startTestServer();
    content = await publishReleases(ts, [OLD]);
    token = await enrollToken(ts, 10);
    env = { RINGFENCE_SERVER: ts.url, RINGFENCE_TOKEN: ts.conn.token };
  });

  after(async () => {
    await stopAgents(devices);
    await ts?.close();
  });

  it('the check-in answer carries the modes; the release commits with health.sh executable', async () => {
    const V = '1.1.0';
    const folder = releaseFolder(ts.dir, V);
    const imp = await cli(['release', 'import', '--component', COMPONENT, '--version', V, folder], env);
    assert.equal(imp.code, 0, imp.out);
    assert.equal((await cli(['release', 'approve', `${COMPONENT}@${V}`], env)).code, 0);
    const d = execCheckDevice(ts, content, 'modes-unkeyed', token);
    devices.push(d);
    start(d);
    const id = await waitEnrolled(ts, d);
    await pin(ts, d, V);
    const j = await onVersion(d, V, 60_000, 'the device committed the release');
    assert.deepEqual(j.quarantined, []);
    assertModes(d, V, folder);
    assert.match(readFileSync(join(d.dir, 'agent.log'), 'utf8'), /no TUF root pinned/);

    // A release registered without modes (an old client): every file is staged 0644, so the same health check
    // cannot run the script (exit 126) and the release is rolled back and quarantined — the failure fixed above.
    const OLDSTYLE = '1.0.5';
    const rel = (await api<ReleaseView[]>(ts.conn, 'GET', '/v1/admin/releases')).find(
      (r) => r.version === V,
    )!;
    await api(ts.conn, 'POST', '/v1/admin/releases', {
      component: COMPONENT,
      version: OLDSTYLE,
      artifacts: rel.artifacts.map(({ name, sha256, length }) => ({ name, sha256, length })),
    });
    await api(ts.conn, 'POST', `/v1/admin/releases/${COMPONENT}@${OLDSTYLE}/approve`, {});
    await pin(ts, d, OLDSTYLE);
    const after = await until(
      async () => journalOf(d),
      (x) => x.quarantined.includes(OLDSTYLE) && x.txn === null,
      60_000,
      'the mode-less release is rolled back',
    );
    assert.equal(after.current, V);
    const rows = await until(
      () => report(ts, id, OLDSTYLE),
      (r) => r.length > 0,
      120_000,
      'the rollback report',
    );
    assert.equal(rows[0].outcome, 'rolled-back');
    assert.match(rows[0].reason ?? '', /126|[Pp]ermission denied/);
  });
});

describe('release modes: validation and the file backend', { timeout: 300_000 }, () => {
  it('offers: mode is optional, an integer 0..0o777; anything else is refused as an invalid offer', () => {
    const art = { name: 'a.sh', sha256: 'a'.repeat(64), length: 1 };
    const offer = (mode: unknown) =>
      checkOffer(
        { component: 'c', version: '1', artifacts: [{ ...art, ...(mode === undefined ? {} : { mode }) }] },
        { component: 'c' },
      );
    const ok = offer(0o755);
    assert.ok(ok.ok && ok.offer.artifacts[0].mode === 0o755);
    const none = offer(undefined);
    assert.ok(none.ok && none.offer.artifacts[0].mode === undefined);
    for (const bad of [-1, 0o1000, 0o4755, 1.5, '755', true, {}]) {
      const r = offer(bad);
      assert.equal(r.ok, false, `mode ${JSON.stringify(bad)} accepted`);
      if (!r.ok) assert.match(r.reason, /^invalid offer: mode .* of "a\.sh"/);
    }
  });

  it('the admin API accepts mode 0..0o777 per artifact and refuses anything else', async (t) => {
    const ts = await startTestServer();
    t.after(() => ts.close());
    const blob = await api<{ sha256: string; length: number }>(
      ts.conn,
      'POST',
      '/v1/admin/blobs',
      new Uint8Array(Buffer.from('x\n')),
    );
    const post = (version: string, mode: unknown) =>
      fetch(`${ts.url}/v1/admin/releases`, {
        method: 'POST',
        headers: { authorization: `Bearer ${ts.conn.token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ component: 'c', version, artifacts: [{ name: 'x', ...blob, mode }] }),
      });
    for (const bad of [-1, 0o1000, 1.5, 'rwx'])
      assert.equal((await post('9', bad)).status, 400, `mode ${JSON.stringify(bad)}`);
    assert.equal((await post('1', 0o777)).status, 201);
    const rel = (await api<ReleaseView[]>(ts.conn, 'GET', '/v1/admin/releases'))[0];
    assert.deepEqual(rel.artifacts, [{ name: 'x', sha256: blob.sha256, length: blob.length, mode: 0o777 }]);
  });

  it('the file backend stages and activates with the mode (masked), and rollback restores the old one', async (t) => {
    const { mkdtempSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const dir = mkdtempSync(join(tmpdir(), 'rf-modes-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const src = join(dir, 'src');
    writeFileSync(src, '#!/bin/sh\necho ok\n');
    const target = join(dir, 'etc', 'tool.sh');
    mkdirSync(join(dir, 'etc'));
    const b = new FileBackend(target, 3);
    await b.stage('1', [{ name: 'tool.sh', path: src }]);
    await b.activate('1');
    assert.equal(modeOf(target), 0o644, 'no mode: 0644');
    await b.stage('2', [{ name: 'tool.sh', path: src, mode: 0o777 }]);
    await b.activate('2');
    assert.equal(modeOf(target), 0o755, 'masked to 0755');
    await b.rollback('1');
    assert.equal(modeOf(target), 0o644);
  });
});

// Last of the file's top-level hooks: no child of this file may outlive its tests.
guardProcesses();
