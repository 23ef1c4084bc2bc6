// `npm run package:deb`: the agent as a Debian package, dist/ringfence-agent_<version>_all.deb. The package's
// sources are real files under packaging/deb/ (the tree as installed, plus DEBIAN/); this script adds the device
// build (scripts/build-agent.ts), renders DEBIAN/control, sets every mode itself (a checkout's modes depend on
// git and the umask) and builds with `dpkg-deb --root-owner-group`, so everything is root:root without fakeroot.
import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  copyFileSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { VERSION } from '../src/version.ts';
import { buildAgent } from './build-agent.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const PACKAGE_SOURCES = join(ROOT, 'packaging/deb');
export const PACKAGE_NAME = 'ringfence-agent';
const DEFAULT_MAINTAINER = 'Ringfence maintainers <maintainers@ringfence.invalid>';

/**
 * The mode of each packaged file, by its path in the package. Maintainer scripts and commands are executable;
 * agent.yaml holds the enrollment token, so it is not world-readable; everything else is plain 0644.
 */
export function packagedMode(path: string): number {
  if (/^DEBIAN\/(postinst|prerm|postrm|preinst)$/.test(path)) return 0o755;
  if (path.startsWith('usr/bin/')) return 0o755;
  if (path === 'etc/ringfence/agent.yaml') return 0o640;
  return 0o644;
}

export interface DebResult {
  file: string;
  version: string;
  bytes: number;
}

/** Copies packaging/deb/ into `stage` (files only, modes from packagedMode), leaving out the control template. */
function copySources(stage: string): void {
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const from = join(dir, e.name);
      const rel = relative(PACKAGE_SOURCES, from);
      if (e.isDirectory()) {
        walk(from);
      } else if (rel !== 'DEBIAN/control.in') {
        const to = join(stage, rel);
        mkdirSync(dirname(to), { recursive: true });
        copyFileSync(from, to); // a symlink is copied as the file it points to
        chmodSync(to, packagedMode(rel));
      }
    }
  };
  walk(PACKAGE_SOURCES);
}

/** Every folder of the staged tree 0755 (mkdtemp makes 0700, and dpkg-deb refuses such a DEBIAN/). */
function openFolders(dir: string): void {
  chmodSync(dir, 0o755);
  for (const e of readdirSync(dir, { withFileTypes: true }))
    if (e.isDirectory()) openFolders(join(dir, e.name));
}

/** Installed-Size: the payload in KiB (each file rounded up to a KiB, as dpkg-gencontrol does). */
function installedKiB(stage: string): number {
  let kib = 0;
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (dir === stage && e.name === 'DEBIAN') continue;
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else kib += Math.ceil(lstatSync(p).size / 1024);
    }
  };
  walk(stage);
  return kib;
}

export async function packageDeb(opts: { out?: string; maintainer?: string } = {}): Promise<DebResult> {
  const out = resolve(opts.out ?? join(ROOT, 'dist'));
  const maintainer = opts.maintainer ?? DEFAULT_MAINTAINER;
  if (!/^[^<>\n]+ <[^<>\s]+@[^<>\s]+>$/.test(maintainer))
    throw new Error(`--maintainer must look like "Name <mail@host>", got "${maintainer}"`);
  const stage = mkdtempSync(join(tmpdir(), 'rf-deb-'));
  try {
    copySources(stage);
    const lib = join(stage, 'usr/lib/ringfence');
    mkdirSync(lib, { recursive: true });
    // Built straight into the package tree: dist/ringfence-agent.mjs may be in use by a running agent.
    await buildAgent({ quiet: true, outfile: join(lib, 'ringfence-agent.mjs') });
    chmodSync(join(lib, 'ringfence-agent.mjs'), 0o644); // run by node (the unit, the wrapper), not directly
    const control = readFileSync(join(PACKAGE_SOURCES, 'DEBIAN/control.in'), 'utf8')
      .replace('@VERSION@', VERSION)
      .replace('@MAINTAINER@', maintainer)
      .replace('@INSTALLED_SIZE@', String(installedKiB(stage)));
    if (/@[A-Z_]+@/.test(control))
      throw new Error('DEBIAN/control.in has a placeholder this script does not fill');
    writeFileSync(join(stage, 'DEBIAN/control'), control, { mode: 0o644 });
    openFolders(stage);
    mkdirSync(out, { recursive: true });
    const file = join(out, `${PACKAGE_NAME}_${VERSION}_all.deb`);
    // --root-owner-group: root:root for every entry, whoever builds (no fakeroot needed).
    execFileSync('dpkg-deb', ['--root-owner-group', '--build', stage, file], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    return { file, version: VERSION, bytes: statSync(file).size };
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === resolve(process.argv[1])) {
  const { values } = parseArgs({
    options: { out: { type: 'string' }, maintainer: { type: 'string' }, json: { type: 'boolean' } },
  });
  try {
    const r = await packageDeb({ out: values.out, maintainer: values.maintainer });
    console.log(values.json ? JSON.stringify(r) : r.file);
  } catch (e) {
    const err = e as Error & { stderr?: Buffer };
    console.error(`package-deb: ${err.stderr?.toString().trim() || err.message}`);
    process.exitCode = 1;
  }
}
