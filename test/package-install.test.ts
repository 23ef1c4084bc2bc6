// The npm package as an operator gets it: `npm pack` (prepack builds dist/), then `npm install -g` of the tarball
// into a temporary prefix from the npm cache, then the installed `ringfence` on plain node: no tsx, no sources.
// The tarball is packed from a copy of the checkout, so its build never rewrites the dist/ other tests are using.
// Slow by nature: npm builds better-sqlite3 from source here (one to four minutes).
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { VERSION } from '../src/version.ts';
import { guardProcesses, killProcess, spawnGroup } from './helpers/processes.ts';
import { until } from './helpers/server.ts';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const NPM_FLAGS = ['--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error'];

/** The checkout's files as git sees them (tracked, and new files not ignored): what a fresh clone would hold. */
function copyCheckout(to: string): void {
  const files = execFileSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], {
    cwd: ROOT,
    maxBuffer: 64 << 20,
  })
    .toString()
    .split('\0')
    .filter((f) => f && existsSync(join(ROOT, f)));
  for (const f of files) {
    mkdirSync(dirname(join(to, f)), { recursive: true });
    cpSync(join(ROOT, f), join(to, f), { verbatimSymlinks: true });
  }
  // The build tools (esbuild, vite, tsx) come from the checkout's own install.
  symlinkSync(join(ROOT, 'node_modules'), join(to, 'node_modules'));
}

describe('npm package: pack, install -g, run on plain node', { timeout: 900_000 }, () => {
  guardProcesses();
  const tmp = mkdtempSync(join(tmpdir(), 'rf-pack-'));
  const prefix = join(tmp, 'prefix');
  const installed = join(prefix, 'lib/node_modules/ringfence');
  const bin = join(prefix, 'bin/ringfence');
  // The installed CLI on the PATH, with no settings of the operator's leaking in.
  const env = {
    ...process.env,
    PATH: `${join(prefix, 'bin')}:${process.env.PATH}`,
    RINGFENCE_CONFIG: join(tmp, 'no-config.yaml'),
  };
  let tarball: string;

  before(async () => {
    const src = join(tmp, 'src');
    copyCheckout(src);
    const packed = await run('npm', ['pack', '--pack-destination', tmp, '--loglevel=error'], {
      cwd: src,
      maxBuffer: 64 << 20,
    });
    tarball = join(tmp, packed.stdout.trim().split('\n').at(-1) ?? '');
    assert.ok(existsSync(tarball), `npm pack wrote ${tarball}`);
    // --allow-scripts: npm 11 runs a dependency's install script (better-sqlite3's native build) only when allowed.
    await run(
      'npm',
      ['install', '-g', '--prefix', prefix, '--allow-scripts=better-sqlite3', ...NPM_FLAGS, tarball],
      {
        cwd: tmp,
        maxBuffer: 64 << 20,
      },
    );
  });
  after(() => rmSync(tmp, { recursive: true, force: true }));

  it('the tarball holds the build and no TypeScript sources; tsx is not installed', async () => {
    const listing = (await run('tar', ['tzf', tarball], { maxBuffer: 64 << 20 })).stdout.split('\n');
    for (const f of [
      'bin/ringfence.js',
      'dist/cli/ringfence.js',
      'dist/web/index.html',
      'dist/ringfence-agent.mjs',
      // npm packs no symlinks: the agent's units ship at their canonical place (docs/examples links to them).
      'packaging/deb/lib/systemd/system/ringfence-agent.service',
    ])
      assert.ok(listing.includes(`package/${f}`), `${f} is in the tarball`);
    assert.deepEqual(
      listing.filter(
        (f) => f.startsWith('package/src/') || f.endsWith('.ts') || f.startsWith('package/test/'),
      ),
      [],
    );
    assert.ok(existsSync(join(installed, 'dist/cli/ringfence.js')));
    assert.ok(!existsSync(join(installed, 'src')), 'no sources installed');
    assert.ok(!existsSync(join(installed, 'node_modules/tsx')), 'tsx is a development dependency only');
    assert.ok(
      readdirSync(join(installed, 'node_modules/better-sqlite3/build/Release')).includes(
        'better_sqlite3.node',
      ),
      'the native SQLite driver was built',
    );
  });

  it('ringfence --version and --help', async () => {
    assert.equal((await run(bin, ['--version'], { env })).stdout, `${VERSION}\n`);
    assert.match((await run(bin, ['--help'], { env })).stdout, /^Usage: ringfence /);
  });

  it('ringfence server from the package serves the API and the dashboard', async () => {
    const data = join(tmp, 'server-data');
    const proc = spawnGroup(bin, ['server', '--data', data, '--port', '0'], { env });
    let out = '';
    proc.stdout?.on('data', (d) => {
      out += d;
    });
    proc.stderr?.on('data', (d) => {
      out += d;
    });
    try {
      const url = await until(
        async () => /"address":"(http:\/\/127\.0\.0\.1:\d+)"/.exec(out)?.[1],
        (u) => !!u,
        60_000,
      );
      const health = (await (await fetch(`${url}/healthz`)).json()) as { version: string };
      assert.equal(health.version, VERSION);
      const page = await fetch(`${url}/`);
      assert.equal(page.status, 200);
      assert.match(await page.text(), /<!doctype html>/i);
    } finally {
      await killProcess(proc);
    }
  });

  it('ringfence demo --json from the installed package: the story holds', async () => {
    const r = await run(bin, ['demo', '--json'], { env, cwd: tmp, maxBuffer: 64 << 20 });
    const summary = JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '') as {
      fleet: number;
      good: { exposed: number; succeeded: number };
      bad: { exposed: number; rolled_back: number; halted: boolean };
    };
    assert.equal(summary.good.succeeded, summary.fleet, r.stdout);
    assert.ok(summary.bad.halted, 'the bad release was halted');
    assert.ok(summary.bad.exposed < summary.fleet, 'the bad release reached only part of the fleet');
  });
});
