// The trust commands as real processes: keys init, release import with vendor signatures, repo export,
// bundle export/import between two servers' data folders (complete, truncated and corrupted).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { generateKeyPairSync, sign } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  statSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { api } from '../src/cli/client.ts';
import { listAudit } from '../src/server/db/audit.ts';
import { openStore } from '../src/server/db/database.ts';
import type { ReleaseView } from '../src/server/routes/admin-releases.ts';
import { TufRepository } from '../src/trust/signer/tuf-repository.ts';
import { guardProcesses } from './helpers/processes.ts';
import { startTestServer } from './helpers/server.ts';

const run = promisify(execFile);

/** `release import` in-process through its real commander definition (no process start per import). */
async function releaseImport(conn: { server: string; token: string }, args: string[]) {
  const { Command } = await import('commander');
  const { releaseCommands } = await import('../src/cli/commands/release.ts');
  const p = new Command('ringfence').exitOverride();
  releaseCommands(p, () => conn);
  try {
    await p.parseAsync(['node', 'ringfence', 'release', 'import', ...args]);
    return { code: 0, err: '' };
  } catch (e) {
    return { code: 1, err: (e as Error).message };
  }
}
const CLI = ['--import', 'tsx', 'src/cli/main.ts'];

async function rf(args: string[], env: Record<string, string> = {}) {
  try {
    const r = await run(process.execPath, [...CLI, ...args], { env: { ...process.env, ...env } });
    return { code: 0, out: r.stdout, err: r.stderr };
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string };
    return { code: x.code, out: x.stdout, err: x.stderr };
  }
}

test('keys init via the CLI, vendor-verified import, approval, bundle export and import elsewhere', async () => {
  const ts = await startTestServer();
  const env = { RINGFENCE_SERVER: ts.url, RINGFENCE_TOKEN: ts.conn.token };
  try {
    const data = join(ts.dir, 'server');
    const init = await rf(['keys', 'init', '--data', data, '--json']);
    assert.equal(init.code, 0, init.err);
    assert.equal(JSON.parse(init.out).root_threshold, '1-of-1');
    // (The running server picks the repository up on its next request: no restart needed.)

    // Vendor: an ed25519 key, a SHA256SUMS manifest over two files, a detached signature over the manifest.
    const vendor = generateKeyPairSync('ed25519');
    const rel = join(ts.dir, 'vendor-rel');
    mkdirSync(rel);
    writeFileSync(join(rel, 'a.bin'), 'alpha');
    writeFileSync(join(rel, 'b.bin'), 'beta');
    const { createHash } = await import('node:crypto');
    const h = (s: string) => createHash('sha256').update(s).digest('hex');
    writeFileSync(join(rel, 'SHA256SUMS'), `${h('alpha')}  a.bin\n${h('beta')}  b.bin\n`);
    const sig = join(ts.dir, 'SHA256SUMS.sig');
    writeFileSync(
      sig,
      sign(null, readFileSync(join(rel, 'SHA256SUMS')), vendor.privateKey).toString('base64'),
    );
    const key = join(ts.dir, 'vendor.pub');
    writeFileSync(key, vendor.publicKey.export({ format: 'pem', type: 'spki' }));
    const importSensor7 = (vendorKey: string) =>
      releaseImport(ts.conn, [
        '--component',
        'sensor',
        '--version',
        '7',
        rel,
        '--vendor-sig',
        sig,
        '--vendor-key',
        vendorKey,
      ]);

    // Tampered file: refused before anything is uploaded.
    writeFileSync(join(rel, 'b.bin'), 'BETA');
    const bad = await importSensor7(key);
    assert.notEqual(bad.code, 0);
    assert.match(bad.err, /refused: b\.bin: sha256 .* differs from the signed SHA256SUMS/);
    assert.equal((await api<ReleaseView[]>(ts.conn, 'GET', '/v1/admin/releases')).length, 0);
    // Wrong vendor key: refused.
    const other = join(ts.dir, 'other.pub');
    writeFileSync(other, generateKeyPairSync('ed25519').publicKey.export({ format: 'pem', type: 'spki' }));
    writeFileSync(join(rel, 'b.bin'), 'beta');
    const wrong = await importSensor7(other);
    assert.match(wrong.err, /vendor signature does not match SHA256SUMS/);
    // Genuine: imported, provenance recorded in the audit log.
    const ok = await importSensor7(key);
    assert.equal(ok.code, 0, ok.err);
    const audit = await listAudit(ts.srv.ctx.store.db, { subject: 'release/sensor@7' });
    const prov = (
      audit[0].detail as {
        provenance: { vendor: { signed_over: string; verified_files: unknown[]; vendor_key_id: string } };
      }
    ).provenance.vendor;
    assert.equal(prov.signed_over, 'SHA256SUMS');
    assert.equal(prov.verified_files.length, 2);
    assert.match(prov.vendor_key_id, /^[0-9a-f]{64}$/);

    assert.equal((await rf(['release', 'approve', 'sensor@7'], env)).code, 0);
    const repo = TufRepository.open(data)!;
    assert.ok(repo.targets().signed.targets['sensor/7/a.bin']);

    // repo export
    const exp = await rf(['repo', 'export', join(ts.dir, 'mirror'), '--data', data, '--json']);
    assert.equal(exp.code, 0, exp.err);
    assert.equal(JSON.parse(exp.out).targets, 3);

    // Bundle: export, then import into a fresh data folder (a branch-office server) pinned to the same root.
    const file = join(ts.dir, 'sensor-7.rfb');
    const be = await rf([
      'bundle',
      'export',
      file,
      'sensor@7',
      '--data',
      data,
      '--valid-for',
      '30d',
      '--json',
    ]);
    assert.equal(be.code, 0, be.err);
    assert.ok(Date.parse(JSON.parse(be.out).expires) > Date.now() + 29 * 86_400_000);
    const branch = join(ts.dir, 'branch');
    const root = join(repo.metadataDir, '1.root.json');

    // Interrupted copy: the truncated file is refused and leaves nothing behind.
    const cut = join(ts.dir, 'cut.rfb');
    writeFileSync(cut, readFileSync(file));
    truncateSync(cut, statSync(cut).size - 30);
    const t1 = await rf(['bundle', 'import', cut, '--data', branch, '--root', root]);
    assert.notEqual(t1.code, 0);
    assert.match(t1.err, /bundle refused: .*(incomplete|truncated|marker)/);
    // Corrupted byte in a blob: refused.
    const bad2 = join(ts.dir, 'bad.rfb');
    const bytes = readFileSync(file);
    const at = bytes.indexOf(Buffer.from('alpha'));
    bytes[at] = 'A'.charCodeAt(0);
    writeFileSync(bad2, bytes);
    const t2 = await rf(['bundle', 'import', bad2, '--data', branch, '--root', root]);
    assert.match(t2.err, /bundle refused: .*checksum/);
    const leftovers = existsSync(branch) ? readdirSync(join(branch, 'blobs')).filter((d) => d !== 'tmp') : [];
    assert.deepEqual(leftovers, [], 'no blobs from refused bundles');
    if (existsSync(join(branch, 'tuf'))) assert.deepEqual(readdirSync(join(branch, 'tuf')), []);

    const good = await rf(['bundle', 'import', file, '--data', branch, '--root', root, '--json']);
    assert.equal(good.code, 0, good.err);
    assert.deepEqual(JSON.parse(good.out).added, ['sensor@7']);
    const store = await openStore({ dataDir: branch });
    try {
      const r = await store.db.selectFrom('releases').selectAll().execute();
      assert.equal(r.length, 1);
      assert.notEqual(r[0].approved_at, null);
    } finally {
      await store.close();
    }
    // The branch now mirrors the organisation's signed metadata.
    assert.ok(existsSync(join(branch, 'tuf', 'metadata', 'timestamp.json')));
  } finally {
    await ts.close();
  }
});

// Last of the file's top-level hooks: no child of this file may outlive its tests.
guardProcesses();
