// The agent's Debian package, built by the real script with the real dpkg-deb: control fields, every path with its
// owner and mode, the bundle running on plain node, the maintainer scripts (syntax, and postinst/postrm run against
// a scratch root), the units and the server unit through `systemd-analyze verify` in a root made of the package,
// and the shipped agent.yaml against the agent's own schema once its placeholders are filled in.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import {
  chmodSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  realpathSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { loadAgentConfig } from '../src/agent/config.ts';
import { VERSION } from '../src/version.ts';

const run = promisify(execFile);
const ROOT = new URL('..', import.meta.url).pathname;
const SOURCES = join(ROOT, 'packaging/deb');

/** Runs a command; its exit code, stdout and stderr (never throws on a non-zero exit). */
async function sh(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}) {
  try {
    const r = await run(cmd, args, { ...opts, maxBuffer: 64 * 1024 * 1024 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout ?? '', stderr: err.stderr ?? '' };
  }
}

/** Every entry the package installs, with its mode; the list is exact, so a new file needs a line here. */
const EXPECTED: Record<string, string> = {
  './': 'drwxr-xr-x',
  './etc/': 'drwxr-xr-x',
  './etc/ringfence/': 'drwxr-xr-x',
  './etc/ringfence/agent.yaml': '-rw-r-----', // holds the enrollment token
  './lib/': 'drwxr-xr-x',
  './lib/systemd/': 'drwxr-xr-x',
  './lib/systemd/system/': 'drwxr-xr-x',
  './lib/systemd/system/ringfence-agent.service': '-rw-r--r--',
  './lib/systemd/system/ringfence-boot-guard.service': '-rw-r--r--',
  './usr/': 'drwxr-xr-x',
  './usr/bin/': 'drwxr-xr-x',
  './usr/bin/ringfence-agent': '-rwxr-xr-x',
  './usr/lib/': 'drwxr-xr-x',
  './usr/lib/ringfence/': 'drwxr-xr-x',
  './usr/lib/ringfence/ringfence-agent.mjs': '-rw-r--r--',
  './usr/share/': 'drwxr-xr-x',
  './usr/share/doc/': 'drwxr-xr-x',
  './usr/share/doc/ringfence-agent/': 'drwxr-xr-x',
  './usr/share/doc/ringfence-agent/copyright': '-rw-r--r--',
};

/** The node flags of an ExecStart= or exec line that runs ringfence-agent.mjs. */
function nodeFlags(text: string, what: string): string[] {
  const m = /^(?:ExecStart=|exec )\S*node((?:\s+--\S+)*)\s+\S*ringfence-agent\.mjs/m.exec(text);
  assert.ok(m, `${what} runs ringfence-agent.mjs with node`);
  return m[1].split(/\s+/).filter(Boolean);
}

/**
 * `systemd-analyze verify --root=ROOT UNIT…`: units are looked up in ROOT's unit folders and ExecStart= commands
 * in ROOT, so the root must hold what a device has. Any complaint counts: systemd reports a bad value or an
 * unknown key on stderr and still exits 0.
 */
async function verifyUnits(root: string, units: string[]): Promise<string> {
  const r = await sh('systemd-analyze', ['verify', '--man=no', `--root=${root}`, ...units]);
  return `${r.code === 0 ? '' : `exit ${r.code}\n`}${r.stderr}${r.stdout}`.trim();
}

describe('the agent as a Debian package', { timeout: 300_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'rf-deb-test-'));
  const out = join(dir, 'out');
  const tree = join(dir, 'tree'); // dpkg-deb -x
  const control = join(dir, 'control'); // dpkg-deb -e
  let deb: string;

  before(async () => {
    const r = await sh(
      process.execPath,
      ['--import', 'tsx', join(ROOT, 'scripts/package-deb.ts'), '--out', out, '--json'],
      {
        cwd: ROOT,
      },
    );
    assert.equal(r.code, 0, r.stderr);
    const res = JSON.parse(r.stdout) as { file: string; version: string; bytes: number };
    deb = res.file;
    assert.equal(deb, join(out, `ringfence-agent_${VERSION}_all.deb`));
    assert.equal(res.version, VERSION);
    assert.equal(res.bytes, statSync(deb).size);
    assert.equal((await sh('dpkg-deb', ['-x', deb, tree])).code, 0);
    assert.equal((await sh('dpkg-deb', ['-e', deb, control])).code, 0);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('has the control fields', async () => {
    const field = async (name: string) => (await sh('dpkg-deb', ['--field', deb, name])).stdout.trim();
    assert.equal(await field('Package'), 'ringfence-agent');
    assert.equal(await field('Version'), VERSION);
    assert.equal(await field('Architecture'), 'all');
    assert.match(await field('Maintainer'), /^[^<>]+ <[^<>\s]+@[^<>\s]+>$/);
    assert.equal(await field('Depends'), 'nodejs (>= 20.17), passwd');
    assert.equal(await field('Section'), 'admin');
    assert.equal(await field('Priority'), 'optional');
    const size = Number(await field('Installed-Size'));
    const bundle = statSync(join(tree, 'usr/lib/ringfence/ringfence-agent.mjs')).size;
    assert.ok(size >= bundle / 1024 && size < bundle / 1024 + 64, `Installed-Size ${size} KiB`);
    const description = (await field('Description')).split('\n');
    assert.match(description[0], /^Ringfence device agent: .{20,}/);
    assert.ok(description.length >= 5, 'a long description');
    assert.ok(
      description.slice(1).every((l) => l.startsWith(' ')),
      'every long-description line is indented',
    );
    const info = await sh('dpkg-deb', ['--info', deb]);
    assert.equal(info.code, 0);
    for (const member of ['conffiles', 'control', 'postinst', 'prerm', 'postrm'])
      assert.match(info.stdout, new RegExp(`\\s${member}\\s`), `control member ${member}`);
  });

  it('installs exactly the expected paths, all root:root with the expected modes', async () => {
    const r = await sh('dpkg-deb', ['--contents', deb]);
    assert.equal(r.code, 0, r.stderr);
    const seen: Record<string, string> = {};
    for (const line of r.stdout.trim().split('\n')) {
      const [mode, owner, , , , path] = line.split(/\s+/);
      assert.equal(owner, 'root/root', `${path} is root/root`);
      seen[path] = mode;
    }
    assert.deepEqual(seen, EXPECTED);
    // The control members as dpkg runs them: maintainer scripts executable, data files not.
    const modes = Object.fromEntries(
      ['control', 'conffiles', 'postinst', 'prerm', 'postrm'].map((f) => [
        f,
        statSync(join(control, f)).mode & 0o777,
      ]),
    );
    assert.deepEqual(modes, {
      control: 0o644,
      conffiles: 0o644,
      postinst: 0o755,
      prerm: 0o755,
      postrm: 0o755,
    });
    const conffiles = readFileSync(join(control, 'conffiles'), 'utf8').trim().split('\n');
    assert.deepEqual(conffiles, ['/etc/ringfence/agent.yaml']);
    for (const f of conffiles) assert.ok(existsSync(join(tree, f)), `conffile ${f} is in the package`);
  });

  it('ships an agent that runs on plain node, and a wrapper with the unit flags', async () => {
    const bundle = join(tree, 'usr/lib/ringfence/ringfence-agent.mjs');
    // From a folder with no node_modules anywhere above it: the bundle needs nothing but node.
    const version = await sh(process.execPath, [bundle, '--version'], { cwd: tree });
    assert.equal(version.code, 0, version.stderr);
    assert.equal(version.stdout.trim(), VERSION);
    const help = await sh(process.execPath, [bundle, '--help'], { cwd: tree });
    assert.equal(help.code, 0, help.stderr);
    assert.match(help.stdout, /boot-guard/);
    const wrapper = readFileSync(join(tree, 'usr/bin/ringfence-agent'), 'utf8');
    assert.equal((await sh('sh', ['-n', join(tree, 'usr/bin/ringfence-agent')])).code, 0);
    assert.match(wrapper, /^#!\/bin\/sh\n/);
    assert.match(
      wrapper,
      /^exec \/usr\/bin\/node (--\S+ )*\/usr\/lib\/ringfence\/ringfence-agent\.mjs "\$@"$/m,
    );
    const unit = readFileSync(join(tree, 'lib/systemd/system/ringfence-agent.service'), 'utf8');
    assert.deepEqual(nodeFlags(wrapper, 'the wrapper'), nodeFlags(unit, 'the agent unit'));
    assert.ok(nodeFlags(unit, 'the agent unit').includes('--no-opt'));
  });

  it('has maintainer scripts that parse, enable nothing, and set up a scratch root', async (t) => {
    for (const f of ['postinst', 'prerm', 'postrm']) {
      const r = await sh('sh', ['-n', join(control, f)]);
      assert.equal(r.code, 0, `${f}: ${r.stderr}`);
      const text = readFileSync(join(control, f), 'utf8');
      assert.match(text, /^#!\/bin\/sh\n/);
      // The commands it runs: without comments and the here-document of next steps it prints.
      const code = text.replace(/<<'NEXT'\n[\s\S]*?\nNEXT\n/g, '').replace(/^\s*#.*$/gm, '');
      assert.ok(code.length < text.length || f !== 'postinst', 'the next steps are left out');
      assert.doesNotMatch(
        code,
        /systemctl\s+(enable|start|restart|reenable)\b|--now/,
        `${f} enables or starts nothing`,
      );
    }
    if (process.getuid?.() !== 0) {
      t.skip('running the maintainer scripts needs root (a user in the scratch root, chown)');
      return;
    }
    // DPKG_ROOT: the scripts work on a scratch root's /etc and folders, never the host's.
    const root = join(dir, 'dpkg-root');
    mkdirSync(join(root, 'etc'), { recursive: true });
    writeFileSync(join(root, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
    writeFileSync(join(root, 'etc/group'), 'root:x:0:\n');
    writeFileSync(join(root, 'etc/shadow'), 'root:*:19000:0:99999:7:::\n', { mode: 0o640 });
    writeFileSync(join(root, 'etc/gshadow'), 'root:*::\n', { mode: 0o640 });
    const hostPasswd = readFileSync('/etc/passwd', 'utf8');
    const env = { ...process.env, DPKG_ROOT: root };
    const first = await sh('sh', [join(control, 'postinst'), 'configure'], { env });
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /installed but not enabled/);
    assert.match(
      first.stdout,
      /systemctl enable --now ringfence-boot-guard\.service ringfence-agent\.service/,
    );
    const user = readFileSync(join(root, 'etc/passwd'), 'utf8').match(
      /^ringfence:x:(\d+):(\d+):[^:\n]*:([^:\n]*):([^:\n]*)$/m,
    );
    assert.ok(user, 'the ringfence user');
    assert.equal(user[3], '/var/lib/ringfence');
    assert.equal(user[4], '/usr/sbin/nologin');
    assert.ok(Number(user[1]) < 1000, 'a system user');
    assert.match(readFileSync(join(root, 'etc/group'), 'utf8'), new RegExp(`^ringfence:x:${user[2]}:`, 'm'));
    const state = statSync(join(root, 'var/lib/ringfence'));
    assert.deepEqual([state.mode & 0o777, state.uid, state.gid], [0o750, 0, 0]);
    const srv = statSync(join(root, 'srv/ringfence'));
    assert.deepEqual([srv.mode & 0o777, srv.uid, srv.gid], [0o755, Number(user[1]), Number(user[2])]);
    assert.equal(readFileSync('/etc/passwd', 'utf8'), hostPasswd, "the host's users are untouched");
    // An upgrade: nothing is created twice, an operator's change to /srv/ringfence is kept, no next steps.
    chmodSync(join(root, 'srv/ringfence'), 0o750);
    const again = await sh('sh', [join(control, 'postinst'), 'configure', '0.0.9'], { env });
    assert.equal(again.code, 0, again.stderr);
    assert.equal(again.stdout, '');
    assert.equal(readFileSync(join(root, 'etc/passwd'), 'utf8').match(/^ringfence:/gm)?.length, 1);
    assert.equal(statSync(join(root, 'srv/ringfence')).mode & 0o777, 0o750);
    // remove keeps everything; purge deletes the agent's state but neither the component folders nor the user.
    writeFileSync(join(root, 'var/lib/ringfence/identity.json'), '{}');
    assert.equal((await sh('sh', [join(control, 'postrm'), 'remove'], { env })).code, 0);
    assert.ok(existsSync(join(root, 'var/lib/ringfence/identity.json')));
    assert.equal((await sh('sh', [join(control, 'postrm'), 'purge'], { env })).code, 0);
    assert.ok(!existsSync(join(root, 'var/lib/ringfence')), 'purge removes the state');
    assert.ok(existsSync(join(root, 'srv/ringfence')), 'purge keeps the component folders');
    assert.match(readFileSync(join(root, 'etc/passwd'), 'utf8'), /^ringfence:/m, 'purge keeps the user');
    assert.notEqual((await sh('sh', [join(control, 'postinst'), 'bogus'], { env })).code, 0);
  });

  it('has units that systemd-analyze verifies in a root made of the package, and the server unit', async () => {
    // The root: the extracted package, the host's own units (targets the units depend on), and the commands the
    // units run that other packages provide: /usr/bin/node (Depends: nodejs) and, for the server, /usr/bin/ringfence.
    const root = join(dir, 'verify-root');
    cpSync(tree, root, { recursive: true, verbatimSymlinks: true });
    const hostUnits = ['/lib/systemd/system', '/usr/lib/systemd/system']
      .filter((p) => existsSync(p))
      .map((p) => realpathSync(p));
    for (const units of new Set(hostUnits))
      cpSync(units, join(root, units), { recursive: true, verbatimSymlinks: true, force: false });
    for (const cmd of ['usr/bin/node', 'usr/bin/ringfence']) {
      writeFileSync(join(root, cmd), `#!/bin/sh\nexec ${process.execPath} "$@"\n`, { mode: 0o755 });
    }
    mkdirSync(join(root, 'etc/systemd/system'), { recursive: true });
    cpSync(
      join(ROOT, 'docs/examples/ringfence-server.service'),
      join(root, 'etc/systemd/system/ringfence-server.service'),
    );
    const units = ['ringfence-agent.service', 'ringfence-boot-guard.service', 'ringfence-server.service'];
    assert.equal(await verifyUnits(root, units), '');

    // The same check on broken copies: it must fail, or the pass above proves nothing.
    const broken = join(dir, 'verify-broken');
    cpSync(root, broken, { recursive: true, verbatimSymlinks: true });
    const agentUnit = join(broken, 'lib/systemd/system/ringfence-agent.service');
    writeFileSync(agentUnit, readFileSync(agentUnit, 'utf8').replace('KillMode=', 'KilMode='));
    assert.match(await verifyUnits(broken, ['ringfence-agent.service']), /Unknown key 'KilMode'/);
    const guardUnit = join(broken, 'lib/systemd/system/ringfence-boot-guard.service');
    writeFileSync(guardUnit, readFileSync(guardUnit, 'utf8').replace('/usr/bin/node ', '/usr/bin/nodejs '));
    assert.match(await verifyUnits(broken, ['ringfence-boot-guard.service']), /nodejs is not executable/);
    rmSync(join(broken, 'usr/bin/ringfence'));
    assert.match(await verifyUnits(broken, ['ringfence-server.service']), /ringfence is not executable/);
  });

  it('makes docs/examples point at the packaged units, and hardens the server unit', () => {
    for (const unit of ['ringfence-agent.service', 'ringfence-boot-guard.service']) {
      const example = join(ROOT, 'docs/examples', unit);
      assert.equal(
        realpathSync(example),
        realpathSync(join(SOURCES, 'lib/systemd/system', unit)),
        `${unit} is one file`,
      );
      assert.equal(
        readFileSync(join(tree, 'lib/systemd/system', unit), 'utf8'),
        readFileSync(example, 'utf8'),
      );
    }
    const server = readFileSync(join(ROOT, 'docs/examples/ringfence-server.service'), 'utf8');
    const settings = new Map<string, string[]>();
    for (const line of server.split('\n')) {
      const m = /^([A-Za-z]+)=(.*)$/.exec(line);
      if (m) settings.set(m[1], [...(settings.get(m[1]) ?? []), m[2]]);
    }
    const one = (k: string) => settings.get(k)?.join(' ');
    assert.equal(one('ProtectSystem'), 'strict');
    assert.equal(one('NoNewPrivileges'), 'yes');
    assert.equal(one('StateDirectory'), 'ringfence-server');
    assert.equal(one('CapabilityBoundingSet'), '', 'no capabilities');
    assert.equal(one('UMask'), '0077');
    assert.equal(one('RestrictAddressFamilies'), 'AF_INET AF_INET6 AF_UNIX');
    assert.equal(one('SystemCallFilter'), '@system-service');
    for (const k of ['ProtectHome', 'PrivateTmp', 'PrivateDevices', 'LockPersonality', 'RestrictNamespaces'])
      assert.equal(one(k), 'yes', k);
    for (const k of [
      'ProtectKernelTunables',
      'ProtectKernelModules',
      'ProtectKernelLogs',
      'ProtectControlGroups',
    ])
      assert.equal(one(k), 'yes', k);
    assert.equal(
      settings.get('MemoryDenyWriteExecute'),
      undefined,
      "V8's JIT needs writable executable memory",
    );
    assert.match(
      one('ExecStart') ?? '',
      /^ringfence server --data \/var\/lib\/ringfence-server --admin-token-file \/var\/lib\/ringfence-server\/\S+$/,
    );
    assert.equal(one('Restart'), 'on-failure');
  });

  it('ships an agent.yaml that passes the agent schema once its placeholders are filled in', () => {
    const text = readFileSync(join(tree, 'etc/ringfence/agent.yaml'), 'utf8');
    const fill: Record<string, string> = {
      '<SERVER-URL>': 'https://patch.example.internal:8080',
      '<ENROLL-TOKEN>': 'rfenr_example',
      '<DEVICE-NAME>': 'edge-017',
      '<SERVICE>': 'app',
    };
    // Outside comments, exactly these placeholders: one added to the file must be added here.
    const used = new Set(
      text
        .split('\n')
        .filter((l) => !/^\s*#/.test(l))
        .flatMap((l) => l.match(/<[A-Z][A-Z-]*>/g) ?? []),
    );
    assert.deepEqual([...used].sort(), Object.keys(fill).sort());
    const cfg = (name: string, body: string) => {
      const f = join(dir, name);
      writeFileSync(f, body);
      return f;
    };
    // As shipped, the agent refuses it (and so never checks in with a placeholder).
    assert.throws(() => loadAgentConfig(cfg('shipped.yaml', text)), /server: Invalid URL/);
    const filled = Object.entries(fill).reduce((t, [k, v]) => t.replaceAll(k, v), text);
    const c = loadAgentConfig(cfg('filled.yaml', filled));
    assert.equal(c.server, fill['<SERVER-URL>']);
    assert.equal(c.enroll_token, fill['<ENROLL-TOKEN>']);
    assert.equal(c.name, fill['<DEVICE-NAME>']);
    assert.equal(c.state_dir, '/var/lib/ringfence');
    assert.deepEqual(
      c.components.map((x) => [x.name, x.backend.type, x.backend.path]),
      [['app', 'dir', '/srv/ringfence/app']],
    );
    assert.equal(c.components[0].hooks.after_activate, 'systemctl restart app.service');
    // The folders postinst and the boot guard's RequiresMountsFor= prepare are the ones the config uses.
    const guard = readFileSync(join(tree, 'lib/systemd/system/ringfence-boot-guard.service'), 'utf8');
    assert.match(guard, /^RequiresMountsFor=\/var\/lib\/ringfence \/srv\/ringfence$/m);
    assert.match(guard, /--config \/etc\/ringfence\/agent\.yaml$/m);
  });
});
