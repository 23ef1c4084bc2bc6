// TUF attacks against a REAL agent process: one server with organisation keys (3 root keys, threshold 2),
// a plain static mirror the attacks tamper with, and a few devices whose agents pinned the root at enrollment
// or had it pre-provisioned. For every attack the agent must refuse, keep running its last good release
// (the `current` symlink does not move, nothing is staged) and the server must hold the refusal and its reason.
// Then the offline flow: a bundle dropped into an agent's inbox with no server reachable at all, reported
// exactly once when the server comes up.
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { connect, createServer as createTcpServer, type Server } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Report } from '../src/agent/journal.ts';
import { api } from '../src/cli/client.ts';
import { importRelease } from '../src/cli/commands/release.ts';
import { type SpawnedDevice, stopAgents, writeContent } from '../src/demo/fleet.ts';
import type { RolloutView } from '../src/server/routes/admin-rollouts.ts';
import { exportBundle } from '../src/trust/ops/bundle-export.ts';
import { exportTree } from '../src/trust/ops/export.ts';
import { type StaticServer, serveStatic } from '../src/trust/ops/static-server.ts';
import { TufRepository } from '../src/trust/signer/tuf-repository.ts';
import {
  activeRelease,
  enrollToken,
  GOOD,
  journalOf,
  OLD,
  onVersion,
  pin,
  publishReleases,
  refusals,
  ringfence,
  seededDevice,
  start,
  waitEnrolled,
} from './agent-harness.ts';
import { guardProcesses } from './helpers/processes.ts';
import { startTestServer, type TestServer, until } from './helpers/server.ts';
import { type AttackContext, attack, MIRROR_ATTACKS, resetMirror } from './trust-harness.ts';

const NEXT = '1.3.0';

describe('trust: attacks against a real agent', { timeout: 400_000 }, () => {
  let ts: TestServer;
  let repo: TufRepository;
  let mirrorSrv: StaticServer;
  let ctx: AttackContext;
  let content: string;
  let token: string;
  const devices: SpawnedDevice[] = [];
  let viaMirror: SpawnedDevice; // fetches metadata and targets from the static mirror
  let viaServer: SpawnedDevice; // fetches from the server's /v1/tuf and /v1/blobs
  let mirrorId: string;
  let serverId: string;

  /** Waits until the device checked in twice after `since` (so it has seen what the server wants now). */
  const checkedInTwice = async (deviceId: string) => {
    for (let i = 0; i < 2; i++) {
      const since = Date.now();
      await until(
        () =>
          ts.srv.ctx.store.db
            .selectFrom('devices')
            .select('last_seen_at')
            .where('id', '=', deviceId)
            .executeTakeFirstOrThrow(),
        (r) => r.last_seen_at > since,
        120_000,
        'a check-in',
      );
    }
  };

  /** Expects the server to hold a refusal of `version` of class `cls` from the device, with its reason. */
  const expectRefused = async (
    d: SpawnedDevice,
    id: string,
    version: string,
    cls: string,
    re: RegExp,
    since: number,
  ) => {
    const got = await until(
      () => refusals(ts, id, version, since),
      (rows) => rows.some((r) => r.class === cls),
      120_000,
      `${d.name} refuses ${version} [${cls}]`,
    );
    const row = got.find((r) => r.class === cls)!;
    assert.match(row.reason ?? '', re);
    assert.equal(activeRelease(d), d === viaMirror ? GOOD : OLD, 'the last good release keeps running');
    assert.equal(existsSync(join(d.appDir, 'releases', version)), false, 'nothing was staged');
    const audit = await ts.srv.ctx.store.db
      .selectFrom('audit')
      .selectAll()
      .where('action', '=', 'device.refused')
      .where('subject', '=', `device/${id}`)
      .execute();
    assert.ok(
      audit.some((a) => JSON.parse(a.detail).class === cls),
      'the refusal is in the audit log',
    );
    const dev = await api<{ components: Array<{ health: { trust?: string; refused?: { class: string } } }> }>(
      ts.conn,
      'GET',
      `/v1/admin/devices/${d.name}`,
    );
    assert.equal(dev.components[0].health.trust, 'verified');
    return row;
  };

  before(async () => {
    ts = await startTestServer();
    repo = TufRepository.init(join(ts.dir, 'server'), { rootKeys: 3, rootThreshold: 2 }).repo;
    content = await publishReleases(ts, [OLD, GOOD]);
    const oldTree = join(ts.dir, 'old-tree');
    await exportTree(repo, ts.srv.ctx.blobs, oldTree);
    await importRelease(ts.conn, 'sensor-content', NEXT, [writeContent(join(content, NEXT), NEXT, 6)]);
    await api(ts.conn, 'POST', `/v1/admin/releases/sensor-content@${NEXT}/approve`, {});
    const mirror = join(ts.dir, 'mirror');
    await exportTree(repo, ts.srv.ctx.blobs, mirror);
    mirrorSrv = await serveStatic(mirror);
    const targetPath = Object.keys(repo.targets().signed.targets).find((p) =>
      p.startsWith(`sensor-content/${NEXT}/`),
    )!;
    ctx = { repo, blobs: ts.srv.ctx.blobs, mirror, oldTree, targetPath };
    token = await enrollToken(ts, 10);
    viaMirror = seededDevice(ts, content, 'tuf-mirror', token, {
      probationMs: 300,
      edit: (cfg) => {
        cfg.trust = { mirror: mirrorSrv.url };
      },
    });
    viaServer = seededDevice(ts, content, 'tuf-server', token, { probationMs: 300 });
    devices.push(viaMirror, viaServer);
    for (const d of devices) start(d);
    mirrorId = await waitEnrolled(ts, viaMirror);
    serverId = await waitEnrolled(ts, viaServer);
  });

  after(async () => {
    await stopAgents(devices);
    await mirrorSrv?.close();
    await ts?.close();
  });

  it('pins the current root at enrollment and installs a signed release from a plain mirror', async () => {
    for (const d of devices) {
      const file = join(d.dir, 'state', 'tuf-root.json');
      // The server records the device before the agent has read the enrollment response.
      await until(async () => existsSync(file), Boolean, 120_000, `${d.name} pinned the root`);
      const pinned = JSON.parse(readFileSync(file, 'utf8'));
      assert.deepEqual(pinned, JSON.parse(repo.file('root.json')!.toString()));
    }
    await pin(ts, viaMirror, GOOD);
    await onVersion(viaMirror, GOOD, 120_000, 'mirror device on GOOD');
    assert.equal(activeRelease(viaMirror), GOOD);
    // The device's trusted metadata was committed (root first, timestamp last) by the verifier.
    assert.ok(existsSync(join(viaMirror.dir, 'state', 'tuf', 'timestamp.json')));
  });

  it('arbitrary installation: a release approved only in a tampered server database is refused', async () => {
    // The attacker owns the server's database but not the organisation's targets key.
    const evil = '6.6.6';
    await importRelease(ts.conn, 'sensor-content', evil, [writeContent(join(content, evil), evil, 6)]);
    await ts.srv.ctx.store.db
      .updateTable('releases')
      .set({ approved_at: Date.now() })
      .where('version', '=', evil)
      .execute();
    await pin(ts, viaServer, evil);
    try {
      await expectRefused(
        viaServer,
        serverId,
        evil,
        'unapproved',
        /not in the organisation's signed targets/,
        0,
      );
    } finally {
      await api(ts.conn, 'POST', '/v1/admin/fleet/unpin', {
        selector: `dev=${viaServer.name}`,
        component: 'sensor-content',
      });
    }
  });

  it('indefinite freeze during a rollout: the refusal counts as a failure of the wave', async () => {
    const at = attack('indefinite freeze');
    const since = Date.now();
    at.run(ctx);
    try {
      // The pin from the first test would win over any rollout.
      await api(ts.conn, 'POST', '/v1/admin/fleet/unpin', {
        selector: `dev=${viaMirror.name}`,
        component: 'sensor-content',
      });
      await api(ts.conn, 'POST', '/v1/admin/plans', {
        file: 'trust.yaml',
        source: `name: trust\nfirst_wave_cap: 100%\nreport_deadline: 60s\nwaves:\n  - name: only\n    select: dev=${viaMirror.name}\n    size: 100%\n`,
      });
      const r = await api<RolloutView>(ts.conn, 'POST', '/v1/admin/rollouts', {
        release: `sensor-content@${NEXT}`,
        plan: 'trust',
      });
      await expectRefused(viaMirror, mirrorId, NEXT, at.class, at.reason, since);
      const view = await until(
        () => api<RolloutView>(ts.conn, 'GET', `/v1/admin/rollouts/${r.id}`),
        (v) => v.waves[0].failed === 1,
        120_000,
        'the wave counts the refusal as failed',
      );
      assert.equal(view.waves[0].succeeded, 0);
      await api(ts.conn, 'POST', `/v1/admin/rollouts/${r.id}/abort`, {}).catch(() => {});
    } finally {
      await pin(ts, viaMirror, GOOD);
      await checkedInTwice(mirrorId);
      await resetMirror(ctx);
    }
  });

  for (const at of MIRROR_ATTACKS.filter((a) => !a.name.startsWith('indefinite freeze'))) {
    it(`${at.name}: refused by the agent, last good release kept, reason reported`, async () => {
      if (at.name.startsWith('mix-and-match')) {
        // The device already trusts the current snapshot; only a newer state makes it fetch one.
        const v = '1.4.0';
        await importRelease(ts.conn, 'sensor-content', v, [writeContent(join(content, v), v, 6)]);
        await api(ts.conn, 'POST', `/v1/admin/releases/sensor-content@${v}/approve`, {});
        await resetMirror(ctx);
      }
      const since = Date.now();
      at.run(ctx);
      try {
        await pin(ts, viaMirror, NEXT);
        await expectRefused(viaMirror, mirrorId, NEXT, at.class, at.reason, since);
      } finally {
        // Off the attacked release before the honest mirror is back, so it is not installed in between.
        await pin(ts, viaMirror, GOOD);
        await checkedInTwice(mirrorId);
        await resetMirror(ctx);
      }
    });
  }

  it('after the attacks the honest mirror still works: the device moves on to the signed release', async () => {
    await pin(ts, viaMirror, NEXT);
    await onVersion(viaMirror, NEXT, 120_000, 'mirror device on NEXT');
    assert.equal(activeRelease(viaMirror), NEXT);
  });

  it('offline: a bundle in the inbox is verified and applied with no server, then reported exactly once', async () => {
    const bundle = join(ts.dir, 'next.rfb');
    await exportBundle(repo, ts.srv.ctx.blobs, bundle, { refs: [`sensor-content@${NEXT}`] });
    // A port nothing listens on yet: the device has never reached a server.
    const probe = createTcpServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const port = (probe.address() as { port: number }).port;
    await new Promise<void>((r) => probe.close(() => r()));
    const rootFile = join(ts.dir, 'org-root.json');
    copyFileSync(join(repo.metadataDir, '1.root.json'), rootFile); // pre-provisioned, e.g. in the image
    const inbox = join(ts.dir, 'inbox');
    mkdirSync(inbox, { recursive: true });
    const d = seededDevice(ts, content, 'tuf-offline', token, {
      edit: (cfg) => {
        cfg.server = `http://127.0.0.1:${port}`;
        cfg.trust = { root: rootFile };
        cfg.offline = { inbox };
      },
    });
    devices.push(d);
    start(d);
    // Copied in under a temporary name and renamed, as an operator's script (or a USB automount) would.
    copyFileSync(bundle, join(inbox, '.next.rfb.copying'));
    renameSync(join(inbox, '.next.rfb.copying'), join(inbox, 'next.rfb'));
    await onVersion(d, NEXT, 120_000, 'offline device applied the bundle');
    assert.equal(activeRelease(d), NEXT);
    // The agent moves the bundle after the switch it journals, so wait for that too (not just the version).
    await until(
      async () => existsSync(join(inbox, 'done', 'next.rfb')),
      (moved) => moved,
      120_000,
      'the bundle was moved to done/',
    );
    const outbox = JSON.parse(readFileSync(join(d.dir, 'state', 'outbox.json'), 'utf8')) as Report[];
    assert.equal(outbox.length, 1);
    assert.equal(outbox[0].outcome, 'succeeded');
    assert.equal(outbox[0].offline, true);
    assert.equal(existsSync(join(d.dir, 'state', 'identity.json')), false, 'never reached a server');

    // The server comes up at the address the device knows (a loopback forwarder to the real server).
    const proxy: Server = createTcpServer((sock) => {
      const up = connect(Number(new URL(ts.url).port), '127.0.0.1');
      sock.pipe(up).pipe(sock);
      sock.on('error', () => up.destroy());
      up.on('error', () => sock.destroy());
    });
    await new Promise<void>((r) => proxy.listen(port, '127.0.0.1', r));
    try {
      const id = await waitEnrolled(ts, d);
      const rows = async () =>
        ts.srv.ctx.store.db
          .selectFrom('reports')
          .selectAll()
          .where('device_id', '=', id)
          .where('version', '=', NEXT)
          .execute();
      await until(rows, (r) => r.length >= 1, 120_000, 'the offline report arrives');
      await checkedInTwice(id);
      const got = await rows();
      assert.equal(got.length, 1, 'exactly once');
      assert.equal(got[0].txn_id, outbox[0].txn_id);
      assert.equal(got[0].outcome, 'succeeded');
      assert.equal(JSON.parse(got[0].detail).offline, true);
      const audit = await ts.srv.ctx.store.db
        .selectFrom('audit')
        .selectAll()
        .where('subject', '=', `device/${id}`)
        .where('action', '=', 'device.succeeded')
        .execute();
      assert.equal(audit.length, 1, 'the offline update is in the audit trail');
      assert.equal(JSON.parse(readFileSync(join(d.dir, 'state', 'outbox.json'), 'utf8')).length, 0);
    } finally {
      await stopAgents([d]);
      await new Promise<void>((r) => proxy.close(() => r()));
    }
  });

  it('apply-bundle CLI: local holds and pins are obeyed, a foreign or corrupt bundle is refused', async () => {
    const bundle = join(ts.dir, 'next.rfb');
    const rootFile = join(ts.dir, 'org-root.json');
    const d = seededDevice(ts, content, 'tuf-cli', token, {
      edit: (cfg) => {
        cfg.server = 'http://127.0.0.1:9'; // never used: no daemon runs
        cfg.trust = { root: rootFile };
      },
    });
    const apply = (file: string) =>
      ringfence(['agent', 'apply-bundle', file, '--config', d.config, '--json']);
    assert.equal(ringfence(['agent', 'hold', '--config', d.config]).code, 0);
    let r = apply(bundle);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /"outcome": "skipped"[\s\S]*held on the device/);
    assert.equal(activeRelease(d), OLD);
    assert.equal(ringfence(['agent', 'unhold', '--config', d.config]).code, 0);
    assert.equal(ringfence(['agent', 'pin', `sensor-content@${GOOD}`, '--config', d.config]).code, 0);
    r = apply(bundle);
    assert.match(r.out, /"outcome": "skipped"[\s\S]*pinned to 1\.1\.0/);
    assert.equal(activeRelease(d), OLD);

    // A bundle signed by another organisation's keys is refused by the TUF check.
    const other = TufRepository.init(join(ts.dir, 'other-org'), {}).repo;
    await other.addTargets(
      Object.entries(repo.targets().signed.targets)
        .filter(([p]) => p.startsWith(`sensor-content/${NEXT}/`))
        .map(([path, t]) => ({
          path: path.replace(NEXT, '9.9.9'),
          sha256: t.hashes.sha256,
          length: t.length,
          custom: { ...(t.custom as object), version: '9.9.9' },
        })),
      Date.now(),
    );
    const foreign = join(ts.dir, 'foreign.rfb');
    await exportBundle(other, ts.srv.ctx.blobs, foreign);
    assert.equal(ringfence(['agent', 'unpin', '--config', d.config]).code, 0);
    r = apply(foreign);
    assert.equal(r.code, 1, r.out);
    assert.match(r.out, /"outcome": "refused"[\s\S]*"class": "signature"/);
    assert.equal(activeRelease(d), OLD);

    // A corrupted copy fails its container checksums before anything else.
    const corrupt = join(ts.dir, 'corrupt.rfb');
    const bytes = readFileSync(bundle);
    bytes[Math.floor(bytes.length / 2)] ^= 0xff;
    writeFileSync(corrupt, bytes);
    r = apply(corrupt);
    assert.notEqual(r.code, 0);
    assert.match(r.out, /bundle refused/);
    assert.equal(activeRelease(d), OLD);

    r = apply(bundle);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /"outcome": "succeeded"/);
    assert.equal(activeRelease(d), NEXT);
    const outbox = JSON.parse(readFileSync(join(d.dir, 'state', 'outbox.json'), 'utf8')) as Report[];
    assert.deepEqual(
      outbox.map((o) => [o.version, o.outcome, o.class ?? null, o.offline]),
      [
        ['9.9.9', 'refused', 'signature', true],
        [NEXT, 'succeeded', null, true],
      ],
    );
  });
});

describe('trust: a server without keys', { timeout: 300_000 }, () => {
  let ts: TestServer;
  const devices: SpawnedDevice[] = [];
  after(async () => {
    await stopAgents(devices);
    await ts?.close();
  });

  it('sha256 only while unkeyed, shown as trust "unverified"; pins the root once keys exist', async () => {
    ts = await startTestServer();
    const content = await publishReleases(ts, [OLD, GOOD]);
    const d = seededDevice(ts, content, 'unkeyed', await enrollToken(ts, 1));
    devices.push(d);
    start(d);
    await waitEnrolled(ts, d);
    const trustOf = async () =>
      (
        await api<{ components: Array<{ health: { trust?: string } }> }>(
          ts.conn,
          'GET',
          `/v1/admin/devices/${d.name}`,
        )
      ).components[0]?.health.trust;
    await until(trustOf, (t) => t === 'unverified', 120_000, 'trust reported unverified');
    await pin(ts, d, GOOD);
    await until(
      async () => journalOf(d).current,
      (v) => v === GOOD,
      120_000,
      'installed on sha256',
    );
    assert.match(readFileSync(join(d.dir, 'agent.log'), 'utf8'), /no TUF root pinned/);
    assert.equal(existsSync(join(d.dir, 'state', 'tuf-root.json')), false);
    // `keys init` on the server: the device pins the root at its next check-in and verifies from then on.
    const repo = TufRepository.init(join(ts.dir, 'server')).repo;
    await until(trustOf, (t) => t === 'verified', 120_000, 'trust reported verified');
    assert.deepEqual(
      JSON.parse(readFileSync(join(d.dir, 'state', 'tuf-root.json'), 'utf8')),
      JSON.parse(repo.file('root.json')!.toString()),
    );
    // Releases approved before the keys existed are signed in only when the server restarts: until then the
    // device refuses them (fail closed), e.g. going back to OLD.
    await pin(ts, d, OLD);
    const row = await until(
      () =>
        ts.srv.ctx.store.db
          .selectFrom('reports')
          .selectAll()
          .where('version', '=', OLD)
          .where('outcome', '=', 'refused')
          .execute(),
      (r) => r.length > 0,
      120_000,
      'refusal of an unsigned release',
    );
    assert.equal(JSON.parse(row[0].detail).class, 'unapproved');
    assert.equal(journalOf(d).current, GOOD);
  });
});

// Last of the file's top-level hooks: no child of this file may outlive its tests.
guardProcesses();
