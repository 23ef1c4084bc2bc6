// The release services over a real SQLite database in a temp folder: import, approve, bundle registration (all
// or nothing) and the gc plan.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { listAudit } from '../src/server/db/audit.ts';
import { openStore, type Store } from '../src/server/db/database.ts';
import { findRelease } from '../src/server/db/releases.ts';
import { planGc } from '../src/server/services/release-gc.ts';
import {
  approveRelease,
  blobInUse,
  importRelease,
  registerBundleReleases,
  releaseViews,
} from '../src/server/services/releases.ts';

const A = 'a'.repeat(64);
const B = 'b'.repeat(64);
const blobs = { has: (h: string) => h !== B, size: () => 10 };
const refused = (status: number, re: RegExp) => (e: Error & { statusCode?: number }) =>
  e.statusCode === status && re.test(e.message);

describe('release services (real SQLite)', () => {
  let dir: string;
  let store: Store;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'rf-releases-'));
    store = await openStore({ dataDir: join(dir, 'data') });
  });
  after(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('imports a release in canonical form, once; a missing blob or a bad name is refused', async () => {
    const art = { mode: 0o644, length: 10, sha256: A, name: 'app.bin' };
    await importRelease(store.db, blobs, { component: 'app', version: '1', artifacts: [art] }, 1000);
    const rel = await findRelease(store.db, 'app', '1');
    assert.deepEqual(
      JSON.stringify(rel?.artifacts),
      JSON.stringify([{ name: 'app.bin', sha256: A, length: 10, mode: 0o644 }]),
    );
    await assert.rejects(
      importRelease(store.db, blobs, { component: 'app', version: '1', artifacts: [art] }, 1000),
      refused(409, /app@1 exists; releases are immutable/),
    );
    await assert.rejects(
      importRelease(
        store.db,
        blobs,
        { component: 'app', version: '2', artifacts: [{ ...art, sha256: B }] },
        1,
      ),
      refused(400, /was not uploaded/),
    );
    await assert.rejects(
      importRelease(
        store.db,
        blobs,
        { component: 'app', version: '2', artifacts: [{ ...art, name: '../x' }] },
        1,
      ),
      refused(400, /./),
    );
    assert.equal(await findRelease(store.db, 'app', '2'), undefined);
  });

  it('approves once (audited once); an unknown release is a 404', async () => {
    await approveRelease(store.db, join(dir, 'data'), 'app@1', 2000);
    await approveRelease(store.db, join(dir, 'data'), 'app@1', 3000);
    const [view] = await releaseViews(store.db);
    assert.equal(view.approved, true);
    assert.equal(view.approved_at, 2000);
    const approvals = (await listAudit(store.db, { subject: 'release/app@1' })).filter(
      (e) => e.action === 'release.approved',
    );
    assert.equal(approvals.length, 1);
    await assert.rejects(approveRelease(store.db, dir, 'app@9', 1), refused(404, /no release app@9/));
    await assert.rejects(approveRelease(store.db, dir, 'app', 1), refused(400, /expected NAME@VERSION/));
  });

  it('registers bundle releases all or nothing: one clash leaves none added', async () => {
    const same = {
      component: 'app',
      version: '1',
      artifacts: [{ name: 'app.bin', sha256: A, length: 10, mode: 0o644 }],
    };
    const fresh = { component: 'lib', version: '1', artifacts: [{ name: 'lib.so', sha256: A, length: 10 }] };
    const clash = { component: 'app', version: '1', artifacts: [{ name: 'other', sha256: A, length: 10 }] };
    await assert.rejects(
      registerBundleReleases(store.db, [fresh, clash], { file: 'b.rfb', user: 'ops', now: 5 }),
      /app@1 exists here with other content/,
    );
    assert.equal(await findRelease(store.db, 'lib', '1'), undefined, 'the fresh release was not kept');
    assert.deepEqual(
      await registerBundleReleases(store.db, [same, fresh], {
        file: 'b.rfb',
        user: 'ops',
        dryRun: true,
        now: 5,
      }),
      [],
    );
    assert.equal(await findRelease(store.db, 'lib', '1'), undefined, 'a dry run adds nothing');
    assert.deepEqual(
      await registerBundleReleases(store.db, [same, fresh], { file: 'b.rfb', user: 'ops', now: 5 }),
      ['lib@1'],
    );
    const lib = await findRelease(store.db, 'lib', '1');
    assert.equal(lib?.approvedBy, 'bundle (organisation-signed targets)');
    assert.deepEqual(lib?.provenance, { bundle: 'b.rfb', imported_by: 'ops' });
    assert.equal(await blobInUse(store.db, A), true);
    assert.equal(await blobInUse(store.db, 'c'.repeat(64)), false);
    assert.equal(await blobInUse(store.db, '%'), true, 'a name that is no hash is never collected');
  });

  it('plans gc: keeps what is referenced and the newest of each component', () => {
    const rel = (component: string, version: string, createdAt: number) => ({
      component,
      version,
      createdAt,
      artifacts: [],
    });
    const { keep, drop } = planGc(
      [rel('app', '1', 1), rel('app', '2', 2), rel('app', '3', 3), rel('lib', '1', 1)],
      new Set(['app@1']),
    );
    assert.deepEqual(keep.map((r) => `${r.component}@${r.version}`).sort(), ['app@1', 'app@3', 'lib@1']);
    assert.deepEqual(
      drop.map((r) => `${r.component}@${r.version}`),
      ['app@2'],
    );
  });
});
