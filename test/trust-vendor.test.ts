// Dual control (Uptane style) end to end: a vendor publishes its own TUF repository (another organisation's keys,
// made with the same repository code), `release import --vendor-tuf` checks every file against it before anything
// is uploaded and stores the vendor's metadata on the server, and a REAL agent process that pins the vendor's root
// installs only what both the organisation and the vendor signed, with the same sha256 and length.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Metadata, MetadataKind } from '@tufjs/models';
import { hashFile } from '../src/agent/backend-dir.ts';
import type { Report } from '../src/agent/journal.ts';
import { api } from '../src/cli/client.ts';
import { BIN, type SpawnedDevice, stopAgents, writeContent } from '../src/demo/fleet.ts';
import type { ReleaseView } from '../src/server/routes/admin-releases.ts';
import { type StaticServer, serveStatic } from '../src/trust/ops/static-server.ts';
import { generateKey, signerOf } from '../src/trust/signer/keys.ts';
import { TufRepository } from '../src/trust/signer/tuf-repository.ts';
import { unpack } from '../src/trust/verifier/bundle-reader.ts';
import {
  activeRelease,
  enrollToken,
  journalOf,
  OLD,
  onVersion,
  pin,
  publishReleases,
  refusals,
  seededDevice,
  start,
  waitEnrolled,
} from './agent-harness.ts';
import { guardProcesses } from './helpers/processes.ts';
import { startTestServer, type TestServer, until } from './helpers/server.ts';
import { DAY, signTimestamp } from './trust-harness.ts';

const C = 'sensor-content';

describe('trust: vendor + organisation dual control', { timeout: 300_000 }, () => {
  let ts: TestServer;
  let vendor: TufRepository; // the vendor's own TUF repository and keys
  let vendorRoot: string;
  let vendorSrv: StaticServer;
  let content: string;
  let vend: SpawnedDevice; // component with `vendor: acme`
  let plain: SpawnedDevice; // same component, no vendor
  let vendId: string;
  let token: string;
  let bundle: string; // an offline bundle of 1.6.0, exported with the vendor's metadata
  let env: Record<string, string>;
  const devices: SpawnedDevice[] = [];

  const serverVendorDir = () => join(ts.srv.ctx.dataDir, 'vendor-tuf', 'acme');

  /** The vendor signs a release folder into its own targets at `sensor-content/<version>/<file>`. */
  const vendorSigns = async (version: string, dir: string) => {
    const entries = [];
    for (const f of readdirSync(dir).sort()) {
      const h = await hashFile(join(dir, f));
      entries.push({ path: `${C}/${version}/${f}`, sha256: h.sha256, length: h.length });
    }
    await vendor.addTargets(entries, Date.now());
  };

  // Asynchronous: the server runs in this process, so a synchronous spawn would block it.
  const cli = (args: string[]) =>
    new Promise<{ code: number; out: string; stdout: string }>((res) => {
      execFile(
        process.execPath,
        [BIN, ...args],
        { env: { ...process.env, ...env }, timeout: 120_000 },
        (err, stdout, stderr) =>
          res({
            code: err ? ((err as { code?: number }).code ?? -1) : 0,
            out: `${stdout}${stderr}`,
            stdout,
          }),
      );
    });

  const orgRoot = () => join(ts.srv.ctx.dataDir, 'tuf', 'metadata', '1.root.json');

  /** A device that never reaches a server: both roots pre-provisioned, its component under `vendor: NAME`. */
  const offlineDevice = (name: string, vendorName = 'acme') =>
    seededDevice(ts, content, name, token, {
      probationMs: 200,
      edit: (cfg) => {
        cfg.server = 'http://127.0.0.1:9'; // never used: no daemon runs
        cfg.trust = { root: orgRoot(), vendors: { [vendorName]: { root: vendorRoot } } };
        (cfg.components as Array<Record<string, unknown>>)[0].vendor = vendorName;
      },
    });

  type Outcome = { component: string; version: string; outcome: string; class?: string; reason?: string };
  /** `ringfence agent apply-bundle FILE --config F --json` (the agent's log lines come before the JSON). */
  const applyBundle = async (d: SpawnedDevice, file: string) => {
    const r = await cli(['agent', 'apply-bundle', file, '--config', d.config, '--json']);
    const at = r.stdout.search(/^\[/m);
    return { ...r, res: at < 0 ? [] : (JSON.parse(r.stdout.slice(at)) as Outcome[]) };
  };

  const outboxOf = (d: SpawnedDevice) =>
    (JSON.parse(readFileSync(join(d.dir, 'state', 'outbox.json'), 'utf8')) as Report[]).map((o) => [
      o.version,
      o.outcome,
      o.class ?? null,
      o.offline ?? false,
    ]);

  /** The vendor targets file the server's current vendor snapshot points at (consistent snapshots). */
  const serverVendorTargets = () => {
    const read = (n: string) => JSON.parse(readFileSync(join(serverVendorDir(), n), 'utf8'));
    const snap = read(`${read('timestamp.json').signed.meta['snapshot.json'].version}.snapshot.json`);
    return join(serverVendorDir(), `${snap.signed.meta['targets.json'].version}.targets.json`);
  };

  const importArgs = (v: string, dir: string, source: string) => [
    'release',
    'import',
    '--component',
    C,
    '--version',
    v,
    dir,
    '--vendor-tuf',
    source,
    '--vendor-root',
    vendorRoot,
    '--vendor-name',
    'acme',
  ];

  const refusal = async (deviceId: string, version: string, cls: string, since: number) =>
    until(
      async () => (await refusals(ts, deviceId, version, since)).find((r) => r.class === cls),
      Boolean,
      120_000,
      `refusal of ${version} [${cls}]`,
    );

  /** The last good release keeps running and nothing of the refused one was staged. */
  const keptLastGood = (d: SpawnedDevice, good: string, refused: string) => {
    assert.equal(activeRelease(d), good);
    assert.equal(existsSync(join(d.appDir, 'releases', refused)), false, 'nothing was staged');
  };

  before(async () => {
    ts = await startTestServer();
    env = { RINGFENCE_SERVER: ts.url, RINGFENCE_TOKEN: ts.conn.token };
    TufRepository.init(ts.srv.ctx.dataDir); // the organisation's keys
    vendor = TufRepository.init(join(ts.dir, 'vendor')).repo; // the vendor's, unrelated
    vendorRoot = join(vendor.metadataDir, '1.root.json');
    vendorSrv = await serveStatic(vendor.metadataDir);
    content = await publishReleases(ts, [OLD]);
    token = await enrollToken(ts, 4);
    vend = seededDevice(ts, content, 'vend', token, {
      probationMs: 200,
      edit: (cfg) => {
        cfg.trust = { vendors: { acme: { root: vendorRoot } } };
        (cfg.components as Array<Record<string, unknown>>)[0].vendor = 'acme';
      },
    });
    plain = seededDevice(ts, content, 'plain', token, { probationMs: 200 });
    devices.push(vend, plain);
    for (const d of devices) start(d);
    vendId = await waitEnrolled(ts, vend);
    await waitEnrolled(ts, plain);
  });

  after(async () => {
    await stopAgents(devices);
    await vendorSrv?.close();
    await ts?.close();
  });

  it('import is refused, before any upload, when a file does not match the vendor metadata', async () => {
    await vendorSigns('1.3.0', writeContent(join(content, '1.3.0'), '1.3.0', 6));
    const forged = writeContent(join(ts.dir, 'forged', '1.3.0'), '1.3.0', 5); // same names, other bytes
    const r = await cli(importArgs('1.3.0', forged, vendor.metadataDir));
    assert.notEqual(r.code, 0);
    assert.equal(r.out.trim().split('\n').length, 1, `one line: ${r.out}`);
    assert.match(r.out, /refused: .*vendor acme signed/);
    const rels = await api<ReleaseView[]>(ts.conn, 'GET', '/v1/admin/releases');
    assert.ok(!rels.some((x) => x.version === '1.3.0'), 'nothing entered the repository');
    assert.equal(existsSync(join(serverVendorDir(), 'timestamp.json')), false);
    // A file the vendor never listed at all
    const r2 = await cli([
      ...importArgs('1.3.0', join(content, '1.3.0'), vendor.metadataDir),
      '--vendor-target-prefix',
      'other/',
    ]);
    assert.notEqual(r2.code, 0);
    assert.match(r2.out, /not in vendor acme's signed targets/);
  });

  it('import succeeds with the vendor metadata (over HTTP), records provenance and publishes the metadata', async () => {
    const r = await cli([...importArgs('1.3.0', join(content, '1.3.0'), vendorSrv.url), '--json']);
    assert.equal(r.code, 0, r.out);
    const rel = (await api<ReleaseView[]>(ts.conn, 'GET', '/v1/admin/releases')).find(
      (x) => x.version === '1.3.0',
    )!;
    const p = (rel as unknown as { provenance: { vendor_tuf: Record<string, unknown> } }).provenance
      .vendor_tuf;
    assert.deepEqual(p.vendor_root_keyids, [...vendor.root().signed.roles.root.keyIDs].sort());
    assert.deepEqual((p.targets as Array<{ path: string }>).map((t) => t.path).sort(), [
      `${C}/1.3.0/channel-291.dat`,
      `${C}/1.3.0/service.conf`,
    ]);
    for (const name of ['timestamp.json', '1.root.json']) {
      const res = await fetch(`${ts.url}/v1/vendor-tuf/acme/${name}`);
      assert.equal(res.status, 200);
      assert.ok(
        Buffer.from(await res.arrayBuffer()).equals(readFileSync(join(vendor.metadataDir, name))),
        name,
      );
    }
    const audit = await ts.srv.ctx.store.db
      .selectFrom('audit')
      .selectAll()
      .where('action', '=', 'release.imported')
      .where('subject', '=', `release/${C}@1.3.0`)
      .executeTakeFirstOrThrow();
    assert.ok(JSON.parse(audit.detail).provenance.vendor_tuf, 'vendor provenance is audited');
  });

  it('a device pinning the vendor root installs a release both sign', async () => {
    await api(ts.conn, 'POST', `/v1/admin/releases/${C}@1.3.0/approve`, {});
    await pin(ts, vend, '1.3.0');
    await pin(ts, plain, '1.3.0');
    await onVersion(vend, '1.3.0');
    await onVersion(plain, '1.3.0');
    assert.equal(activeRelease(vend), '1.3.0');
    assert.ok(
      existsSync(join(vend.dir, 'state', 'vendor-tuf', 'acme', 'timestamp.json')),
      'vendor metadata trusted',
    );
  });

  it('org-only approval of a file the vendor did not sign is refused (vendor-mismatch); a component without vendor: is unaffected', async () => {
    // The vendor signs 1.4.0 and 1.5.0; the organisation imports a tampered 1.4.0 without the vendor check
    // and approves it; a later honest import of 1.5.0 brings vendor metadata that lists the real 1.4.0.
    await vendorSigns('1.4.0', writeContent(join(content, '1.4.0'), '1.4.0', 6));
    await vendorSigns('1.5.0', writeContent(join(content, '1.5.0'), '1.5.0', 6));
    const tampered = writeContent(join(ts.dir, 'tampered', '1.4.0'), '1.4.0', 7);
    assert.equal(
      (await cli(['release', 'import', '--component', C, '--version', '1.4.0', tampered])).code,
      0,
    );
    assert.equal((await cli(importArgs('1.5.0', join(content, '1.5.0'), vendorSrv.url))).code, 0);
    for (const v of ['1.4.0', '1.5.0'])
      await api(ts.conn, 'POST', `/v1/admin/releases/${C}@${v}/approve`, {});
    const since = Date.now();
    await pin(ts, vend, '1.4.0');
    await pin(ts, plain, '1.4.0');
    const row = (await refusal(vendId, '1.4.0', 'vendor-mismatch', since))!;
    assert.match(row.reason ?? '', /vendor acme: .*1\.4\.0.*signed/);
    keptLastGood(vend, '1.3.0', '1.4.0');
    await onVersion(plain, '1.4.0'); // the organisation alone decides for a component without `vendor:`
    assert.equal(
      readFileSync(join(plain.appDir, 'current', 'service.conf'), 'utf8'),
      readFileSync(join(tampered, 'service.conf'), 'utf8'),
    );
    const dev = await api<{ components: Array<{ health: { refused?: { class: string } } }> }>(
      ts.conn,
      'GET',
      `/v1/admin/devices/${vend.name}`,
    );
    assert.equal(dev.components[0].health.refused?.class, 'vendor-mismatch');
  });

  it('vendor metadata signed by the wrong key is refused (vendor-signature); expired metadata too (vendor-expired)', async () => {
    const backup = join(ts.dir, 'vendor-backup');
    cpSync(serverVendorDir(), backup, { recursive: true });
    // Whoever controls the server replaces the vendor's metadata with metadata listing the right hashes, signed by
    // keys the device does not pin.
    const impostor = TufRepository.init(join(ts.dir, 'impostor')).repo;
    const entries = [];
    for (const f of readdirSync(join(content, '1.5.0')).sort()) {
      const h = await hashFile(join(content, '1.5.0', f));
      entries.push({ path: `${C}/1.5.0/${f}`, sha256: h.sha256, length: h.length });
    }
    await impostor.addTargets(entries, Date.now());
    rmSync(serverVendorDir(), { recursive: true });
    cpSync(impostor.metadataDir, serverVendorDir(), { recursive: true });
    let since = Date.now();
    await pin(ts, vend, '1.5.0');
    const row = (await refusal(vendId, '1.5.0', 'vendor-signature', since))!;
    assert.match(row.reason ?? '', /vendor acme: .*sign/);
    keptLastGood(vend, '1.3.0', '1.5.0');

    // A correctly signed vendor timestamp whose expiry has passed (freeze at the vendor's side).
    rmSync(serverVendorDir(), { recursive: true });
    cpSync(backup, serverVendorDir(), { recursive: true });
    signTimestamp({ repo: vendor, mirror: serverVendorDir() }, { expires: Date.now() - DAY });
    since = Date.now();
    const row2 = (await refusal(vendId, '1.5.0', 'vendor-expired', since))!;
    assert.match(row2.reason ?? '', /expired/);
    keptLastGood(vend, '1.3.0', '1.5.0');

    // The honest metadata again: the same release now installs.
    rmSync(serverVendorDir(), { recursive: true });
    cpSync(backup, serverVendorDir(), { recursive: true });
    await onVersion(vend, '1.5.0');
    assert.equal(activeRelease(vend), '1.5.0');
  });

  it('offline bundle: carries the vendor metadata; a vendor device applies it with no server and queues an offline report', async () => {
    await vendorSigns('1.6.0', writeContent(join(content, '1.6.0'), '1.6.0', 6));
    assert.equal((await cli(importArgs('1.6.0', join(content, '1.6.0'), vendorSrv.url))).code, 0);
    await api(ts.conn, 'POST', `/v1/admin/releases/${C}@1.6.0/approve`, {});
    bundle = join(ts.dir, 'vendor-1.6.0.rfb');
    const r = await cli(['bundle', 'export', bundle, `${C}@1.6.0`, '--data', ts.srv.ctx.dataDir]);
    assert.equal(r.code, 0, r.out);

    // The vendor's metadata travels byte for byte as the server holds it.
    const peek = mkdtempSync(join(ts.dir, 'peek-'));
    const m = unpack(bundle, peek);
    assert.deepEqual(
      m.releases.map((x) => `${x.component}@${x.version}`),
      [`${C}@1.6.0`],
    );
    const held = readdirSync(serverVendorDir())
      .filter((f) => f.endsWith('.json'))
      .sort();
    const carried = m.entries
      .filter((e) => e.name.startsWith('vendor-tuf/acme/'))
      .map((e) => e.name.slice('vendor-tuf/acme/'.length))
      .sort();
    assert.deepEqual(carried, held);
    assert.ok(carried.includes('timestamp.json') && carried.includes('1.root.json'), carried.join());
    for (const f of held)
      assert.ok(
        readFileSync(join(peek, 'vendor-tuf', 'acme', f)).equals(readFileSync(join(serverVendorDir(), f))),
        f,
      );

    const d = offlineDevice('bundle-vend');
    const a = await applyBundle(d, bundle);
    assert.equal(a.code, 0, a.out);
    assert.deepEqual(
      a.res.map((o) => [o.component, o.version, o.outcome]),
      [[C, '1.6.0', 'succeeded']],
    );
    assert.equal(activeRelease(d), '1.6.0');
    assert.equal(journalOf(d).current, '1.6.0');
    assert.ok(
      existsSync(join(d.dir, 'state', 'vendor-tuf', 'acme', 'timestamp.json')),
      'the vendor metadata from the bundle was verified and is now trusted',
    );
    assert.deepEqual(outboxOf(d), [['1.6.0', 'succeeded', null, true]]);
  });

  it('offline bundle: vendor targets re-signed by another key (vendor-signature) or with one byte changed (vendor-tampered) are refused; the last good release stays', async () => {
    const backup = join(ts.dir, 'vendor-backup-bundle');
    cpSync(serverVendorDir(), backup, { recursive: true });
    const restore = () => {
      rmSync(serverVendorDir(), { recursive: true });
      cpSync(backup, serverVendorDir(), { recursive: true });
    };
    // The same export with the server's copy of the vendor's targets altered (a compromised server, or anyone who
    // rebuilds the container on the way: its checksums are not signatures).
    const forged = async (name: string, edit: (file: string) => void) => {
      restore();
      edit(serverVendorTargets());
      const file = join(ts.dir, name);
      const r = await cli(['bundle', 'export', file, `${C}@1.6.0`, '--data', ts.srv.ctx.dataDir]);
      assert.equal(r.code, 0, r.out);
      return file;
    };
    let resigned: string;
    let oneByte: string;
    try {
      // Without the vendor's keys the targets can only be re-signed with another key, and then the snapshot and
      // timestamp above them too (they pin the targets' sha256 and length): a consistent chain under a foreign key.
      resigned = await forged('vendor-resigned.rfb', (targetsFile) => {
        const impostor = signerOf(generateKey('targets'));
        const resign = (file: string, kind: MetadataKind, edit: (signed: never) => void) => {
          const cur = JSON.parse(readFileSync(file, 'utf8'));
          edit(cur.signed as never);
          // fromJSON is overloaded per kind; signing and serialising are the same for every kind.
          const md = Metadata.fromJSON(kind as MetadataKind.Targets, { ...cur, signatures: [] });
          md.sign(impostor);
          const bytes = Buffer.from(JSON.stringify(md.toJSON()));
          writeFileSync(file, bytes);
          return {
            length: bytes.length,
            hashes: { sha256: createHash('sha256').update(bytes).digest('hex') },
          };
        };
        const tMeta = resign(targetsFile, MetadataKind.Targets, () => {});
        const tsFile = join(serverVendorDir(), 'timestamp.json');
        const sv = JSON.parse(readFileSync(tsFile, 'utf8')).signed.meta['snapshot.json'].version;
        const sMeta = resign(
          join(serverVendorDir(), `${sv}.snapshot.json`),
          MetadataKind.Snapshot,
          (s: { meta: Record<string, object> }) => {
            s.meta['targets.json'] = { ...s.meta['targets.json'], ...tMeta };
          },
        );
        resign(tsFile, MetadataKind.Timestamp, (s: { meta: Record<string, object> }) => {
          s.meta['snapshot.json'] = { ...s.meta['snapshot.json'], ...sMeta };
        });
      });
      oneByte = await forged('vendor-one-byte.rfb', (file) => {
        const text = readFileSync(file, 'utf8');
        const at = text.indexOf(`${C}/1.6.0/service.conf`);
        const h = /"sha256": ?"[0-9a-f]/.exec(text.slice(at))!;
        const i = at + h.index + h[0].length - 1; // first hex digit of the sha256 the vendor listed
        writeFileSync(file, text.slice(0, i) + (text[i] === '0' ? '1' : '0') + text.slice(i + 1));
      });
    } finally {
      restore();
    }

    const d = offlineDevice('bundle-forged');
    for (const [file, what, cls, reason] of [
      [resigned, 're-signed', 'vendor-signature', /vendor acme: .*sign/],
      [oneByte, 'one byte changed', 'vendor-tampered', /vendor acme: .*(hash|length)/],
    ] as const) {
      const r = await applyBundle(d, file);
      assert.equal(r.code, 1, `${what}: ${r.out}`);
      assert.deepEqual(
        r.res.map((o) => [o.version, o.outcome, o.class]),
        [['1.6.0', 'refused', cls]],
        what,
      );
      assert.match(r.res[0].reason ?? '', reason, what);
      keptLastGood(d, OLD, '1.6.0');
      assert.equal(
        existsSync(join(d.dir, 'state', 'vendor-tuf', 'acme', 'timestamp.json')),
        false,
        `${what}: nothing of the forged vendor metadata became trusted`,
      );
    }
    assert.deepEqual(outboxOf(d), [
      ['1.6.0', 'refused', 'vendor-signature', true],
      ['1.6.0', 'refused', 'vendor-tampered', true],
    ]);

    // The honest bundle still applies on the same device: the organisation's part of the forged ones was fine,
    // the vendor's check was what refused them.
    const ok = await applyBundle(d, bundle);
    assert.equal(ok.code, 0, ok.out);
    assert.equal(activeRelease(d), '1.6.0');
  });

  it('vendor-unavailable: vendor root pinned but no vendor metadata where the device looks; last good kept, reason reported', async () => {
    // Online: the server holds no metadata for vendor `globex`; another device's configured source is unreachable.
    const noMeta = seededDevice(ts, content, 'globex', token, {
      probationMs: 200,
      edit: (cfg) => {
        cfg.trust = { vendors: { globex: { root: vendorRoot } } };
        (cfg.components as Array<Record<string, unknown>>)[0].vendor = 'globex';
      },
    });
    const deadSource = seededDevice(ts, content, 'acme-dead-source', token, {
      probationMs: 200,
      edit: (cfg) => {
        cfg.trust = { vendors: { acme: { root: vendorRoot, source: 'http://127.0.0.1:9/acme' } } };
        (cfg.components as Array<Record<string, unknown>>)[0].vendor = 'acme';
      },
    });
    devices.push(noMeta, deadSource);
    for (const d of [noMeta, deadSource]) start(d);
    const noMetaId = await waitEnrolled(ts, noMeta);
    const deadId = await waitEnrolled(ts, deadSource);
    const since = Date.now();
    await pin(ts, noMeta, '1.5.0');
    await pin(ts, deadSource, '1.5.0');
    const row = (await refusal(noMetaId, '1.5.0', 'vendor-unavailable', since))!;
    assert.match(row.reason ?? '', /vendor globex: .*(404|timestamp)/);
    const row2 = (await refusal(deadId, '1.5.0', 'vendor-unavailable', since))!;
    assert.match(row2.reason ?? '', /vendor acme: .*cannot reach http:\/\/127\.0\.0\.1:9\/acme/);
    keptLastGood(noMeta, OLD, '1.5.0');
    keptLastGood(deadSource, OLD, '1.5.0');
    const dev = await api<{ components: Array<{ health: { refused?: { class: string } } }> }>(
      ts.conn,
      'GET',
      `/v1/admin/devices/${noMeta.name}`,
    );
    assert.equal(dev.components[0].health.refused?.class, 'vendor-unavailable');

    // Offline: a bundle that carries no metadata for the device's vendor.
    const off = offlineDevice('bundle-globex', 'globex');
    const r = await applyBundle(off, bundle);
    assert.equal(r.code, 1, r.out);
    assert.deepEqual(
      r.res.map((o) => [o.version, o.outcome, o.class]),
      [['1.6.0', 'refused', 'vendor-unavailable']],
    );
    assert.match(r.res[0].reason ?? '', /vendor globex: /);
    keptLastGood(off, OLD, '1.6.0');
    assert.deepEqual(outboxOf(off), [['1.6.0', 'refused', 'vendor-unavailable', true]]);
  });
});

// Last of the file's top-level hooks: no child of this file may outlive its tests.
guardProcesses();
