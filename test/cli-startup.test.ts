// The compiled CLI (scripts/build-cli.ts) stays light to start: `ringfence --help`, `--version` and shell completion
// load the command definitions and commander, nothing else. Checked on esbuild's own record of the build (its
// metafile): what the entry imports statically, however indirectly. Timings are in bench/cli-start.ts, not here.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { Metafile } from 'esbuild';
import { buildCli } from '../scripts/build-cli.ts';
import { VERSION } from '../src/version.ts';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('..', import.meta.url));
// Inside the checkout, so the build's bare imports resolve from its node_modules as they do when installed.
const OUT = join(ROOT, 'dist', `cli-test-${process.pid}`);

/** The npm packages and our own source files reached from `entry` through static imports only. */
function staticClosure(meta: Metafile, entry: string): { packages: Set<string>; sources: Set<string> } {
  const packages = new Set<string>();
  const sources = new Set<string>();
  const seen = new Set<string>();
  const walk = (file: string) => {
    if (seen.has(file)) return;
    seen.add(file);
    const out = meta.outputs[file];
    for (const input of Object.keys(out.inputs)) sources.add(input);
    for (const i of out.imports) {
      if (i.kind !== 'import-statement') continue; // dynamic imports load on demand
      if (!i.external) walk(i.path);
      else if (!i.path.startsWith('node:')) packages.add(i.path);
    }
  };
  walk(entry);
  return { packages, sources };
}

describe('the compiled CLI', { timeout: 120_000 }, () => {
  let meta: Metafile;
  let entry: string;
  // What `--help` runs: the entry (which answers --version alone), then run.ts, which builds the command tree.
  let commandLine: string;

  before(async () => {
    meta = await buildCli({ quiet: true, outdir: OUT });
    const found = Object.keys(meta.outputs).find((f) => f.endsWith(`cli-test-${process.pid}/ringfence.js`));
    assert.ok(found, 'the build has the ringfence.js entry');
    entry = found;
    const run = Object.entries(meta.outputs).find(([, o]) => o.entryPoint === 'src/cli/run.ts');
    assert.ok(run, 'run.ts is a chunk of its own');
    commandLine = run[0];
  });
  after(() => rmSync(OUT, { recursive: true, force: true }));

  it('--version loads nothing but the entry; the command tree loads no npm package but commander', () => {
    const version = staticClosure(meta, entry);
    assert.deepEqual([...version.packages], []);
    assert.deepEqual([...version.sources].sort(), ['src/cli/main.ts', 'src/version.ts']);
    const tree = staticClosure(meta, commandLine);
    assert.deepEqual([...tree.packages], ['commander']);
    // Nor any of the packages the build bundles (BUNDLED_PACKAGES: zod, yaml, typebox, kysely, …).
    assert.deepEqual(
      [...tree.sources].filter((f) => f.includes('node_modules/')),
      [],
    );
  });

  it('loads no server, agent runtime, trust, database or simulator code before a command runs', () => {
    const { sources } = staticClosure(meta, commandLine);
    assert.ok(sources.has('src/cli/program.ts'));
    const heavy = [...sources].filter(
      (f) =>
        /^src\/(server\/(?!services\/history-views\.ts)|trust\/|store\/|sim\/(?!faults\.ts))/.test(f) ||
        /^src\/agent\/(?!commands\.ts|config-template\.ts)/.test(f) ||
        /^src\/engine\/(plan|rollout|exposure)\.ts$/.test(f),
    );
    assert.deepEqual(heavy, []);
    // The work itself is in the build, loaded on demand.
    const all = new Set(Object.values(meta.outputs).flatMap((o) => Object.keys(o.inputs)));
    for (const f of ['src/server/app.ts', 'src/agent/agent.ts', 'src/sim/rehearsal.ts', 'src/engine/plan.ts'])
      assert.ok(all.has(f), `${f} is in the build`);
  });

  it('runs on plain node: --version, --help, a usage error', async () => {
    const bin = join(OUT, 'ringfence.js');
    const v = await run(process.execPath, [bin, '--version']);
    assert.equal(v.stdout, `${VERSION}\n`);
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    assert.equal(VERSION, pkg.version, 'src/version.ts matches package.json');
    const h = await run(process.execPath, [bin, '--help']);
    assert.match(h.stdout, /^Usage: ringfence /);
    assert.match(h.stdout, /\n {2}rollout /);
    await assert.rejects(run(process.execPath, [bin, 'nope']), (e: { code: number }) => e.code === 2);
  });
});
