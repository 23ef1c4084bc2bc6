// `agent init` for real: the CLI writes configurations that the agent's own loader accepts, with their comments,
// private modes and refusals; hostile flag values stay data (a property test of the template, then the CLI); a
// written configuration enrolls a real agent process against a real server; the device build has `init` too.
import assert from 'node:assert/strict';
import { type ChildProcess, execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { parseDocument } from 'yaml';
import { buildAgent } from '../scripts/build-agent.ts';
import { loadAgentConfig, parseAgentConfig } from '../src/agent/config.ts';
import {
  type AgentInitOptions,
  BACKENDS,
  renderAgentConfig,
  yamlString,
} from '../src/agent/config-template.ts';
import { BIN } from '../src/demo/fleet.ts';
import { guardProcesses, killProcess, spawnGroup } from './helpers/processes.ts';
import { callAs, startTestServer, type TestServer, until } from './helpers/server.ts';

const ORIGIN = {
  command: 'ringfence agent init',
  version: '0.0.0-test',
  at: new Date('2026-01-02T03:04:05Z'),
};

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command line with no terminal and no stdin, as CI does. */
function runNode(args: string[], cwd: string): Promise<Run> {
  return new Promise((res) => {
    const p = execFile(
      process.execPath,
      args,
      { cwd, env: { ...process.env, CI: 'true' }, timeout: 120_000 },
      (err, stdout, stderr) => res({ code: err ? Number(err.code ?? -1) : 0, stdout, stderr }),
    );
    p.stdin?.end();
  });
}

const cli = (dir: string, args: string[]) => runNode([BIN, 'agent', 'init', ...args], dir);

/** The YAML text parsed with nothing but the parser: what the structure holds, whatever the schema says. */
function yamlData(text: string): Record<string, unknown> {
  const doc = parseDocument(text, { uniqueKeys: true });
  assert.deepEqual(doc.errors, [], 'the text is valid YAML');
  return doc.toJS() as Record<string, unknown>;
}

describe('agent init: the template', () => {
  const base: AgentInitOptions = {
    server: 'http://127.0.0.1:8080',
    labels: [],
    stateDir: './state',
    component: 'app',
    backend: 'dir',
    target: './app',
  };

  it('escapes what YAML or a reader would act on, and keeps printable text as it is', () => {
    assert.equal(yamlString('a: b # c'), '"a: b # c"');
    assert.equal(yamlString('say "hi" \\o/'), '"say \\"hi\\" \\\\o/"');
    assert.equal(yamlString('one\ntwo\tthree\r'), '"one\\ntwo\\tthree\\r"');
    assert.equal(
      yamlString('\u001b[31m\u0085\u2028\u202e\ud800'),
      '"\\u001b[31m\\u0085\\u2028\\u202e\\ud800"',
    );
    assert.equal(yamlString('Zürich ✓ 😀'), '"Zürich ✓ 😀"');
  });

  it('any string in any field stays one string: the structure never changes (property)', () => {
    // Dense in what YAML and comments care about, plus arbitrary code units (lone surrogates included).
    const hostileChar = fc.constantFrom(
      ...':#-"\'\\ \t\n\r{}[]&*!|>%@`,?',
      '\u0000',
      '\u001b',
      '\u007f',
      '\u0085',
      '\u00a0',
      '\u2028',
      '\u2029',
      '\u202e',
      '\ufeff',
      '\ud800',
      '\udfff',
      'é',
      '😀',
    );
    const text = fc.oneof(
      fc.string({ unit: hostileChar, maxLength: 30 }),
      fc.string({ unit: 'binary', maxLength: 30 }),
      fc.constantFrom(
        '',
        'true',
        'null',
        '~',
        '0x10',
        '1e3',
        '---',
        '...',
        '- x',
        '? x',
        'a: b # c',
        '*x',
        '&x',
      ),
    );
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.tuple(text, text), { selector: ([k]) => k, maxLength: 6 }),
        text,
        text,
        text,
        text,
        fc.constantFrom(...BACKENDS),
        fc.record({ stage: text, activate: text, commit: text, rollback: text }),
        fc.option(text, { nil: undefined }),
        (labels, name, token, target, stateDir, backend, exec, healthCheck) => {
          const o: AgentInitOptions = {
            ...base,
            labels,
            name,
            enrollToken: token,
            target,
            stateDir,
            backend,
            exec: backend === 'exec' ? exec : undefined,
            healthCheck,
            poll: name,
          };
          const text = renderAgentConfig(o, ORIGIN);
          assert.equal(Buffer.from(text, 'utf8').toString('utf8'), text, 'survives being written as UTF-8');
          assert.ok(
            // biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is the point.
            !/[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u202a-\u202e]/.test(text),
            'no raw control character',
          );
          const data = yamlData(text);
          assert.deepEqual(Object.keys(data), [
            'server',
            'enroll_token',
            'name',
            'state_dir',
            'labels',
            'poll_interval',
            'components',
          ]);
          assert.deepEqual(Object.entries(data.labels as object), labels);
          assert.equal(data.name, name);
          assert.equal(data.enroll_token, token);
          assert.equal(data.state_dir, stateDir);
          assert.equal(data.poll_interval, name);
          const [c, ...more] = data.components as Array<Record<string, unknown>>;
          assert.equal(more.length, 0);
          assert.deepEqual(
            c.backend,
            backend === 'exec' ? { type: 'exec', path: target, ...exec } : { type: backend, path: target },
          );
          assert.deepEqual(
            c.health,
            healthCheck === undefined ? [] : [{ name: 'health-check', exec: healthCheck }],
          );
        },
      ),
      { numRuns: 400 },
    );
  });

  it('every optional setting is a commented line, and uncommented they pass the schema', () => {
    for (const backend of BACKENDS) {
      const text = renderAgentConfig(
        {
          ...base,
          server: 'https://patch.example.internal',
          labels: [['env', 'lab']],
          backend,
          exec: backend === 'exec' ? { activate: 'a', rollback: 'r' } : undefined,
          healthCheck: 'true',
        },
        ORIGIN,
      );
      const commented = [
        '# enroll_token:',
        '# name:',
        '# poll_interval:',
        '# wake:',
        '# retry:',
        '# limits:',
      ];
      commented.push('# trust:', '#   root:', '#   mirror:', '# offline:', '#   inbox:', '# ca:');
      commented.push('      # keep:', '    # hooks:', '    # probation:', '    # max_attempts:');
      commented.push('        # timeout:', '        # retries:', '        # interval:');
      if (backend === 'exec') commented.push('      # stage:', '      # commit:', '      # timeout:');
      for (const c of commented) assert.ok(text.includes(`\n${c}`), `${backend}: commented out: ${c}`);
      // Remove the "# " in front of every setting: the defaults shown are valid settings themselves.
      const uncommented = text.replace(/^(\s*)# (?=[a-z_]+:|\s+[a-z_]+:)/gm, '$1');
      assert.ok(!/^\s*# [a-z_]+:/m.test(uncommented));
      const cfg = parseAgentConfig(uncommented, join(tmpdir(), 'x', 'agent.yaml'));
      assert.equal(cfg.enroll_token, 'rfenr_...', backend);
      assert.equal(cfg.name, 'edge-017');
      assert.equal(cfg.poll_interval, 60_000);
      assert.equal(cfg.wake, 'long-poll');
      assert.equal(cfg.trust?.mirror, 'http://mirror.example.internal/tuf');
      assert.equal(cfg.components[0].max_attempts, 3);
      assert.equal(cfg.components[0].hooks.timeout, 60_000);
      assert.equal(cfg.components[0].health[0].timeout, 10_000);
      assert.equal(cfg.retry.max, 300_000);
    }
  });
});

describe('agent init: the command', { timeout: 300_000 }, () => {
  let dir: string;
  let token: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'rf-init-'));
    token = join(dir, 'enroll-token');
    writeFileSync(token, 'rf_enroll_0123456789abcdef\n', { mode: 0o600 });
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const flags = (out: string, more: string[] = []) => [
    '--server',
    'http://127.0.0.1:8080',
    '--enroll-token-file',
    token,
    '--component',
    'sensor-content',
    '--target',
    './app',
    '--state-dir',
    './state',
    '--out',
    out,
    ...more,
  ];

  it('writes a commented configuration the agent loads, 0600 with the token, and says so', async () => {
    const out = join(dir, 'etc', 'agent.yaml'); // a missing folder is created
    const r = await cli(
      dir,
      flags(out, [
        '--name',
        'edge-017',
        '--label',
        'env=prod',
        '--label',
        'tier=B',
        '--poll',
        '30s',
        '--health-check',
        'systemctl is-active --quiet sensor',
      ]),
    );
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^wrote ${out} \\(mode 0600\\)`));
    assert.equal(r.stderr, '');
    assert.equal(statSync(out).mode & 0o777, 0o600);
    const text = readFileSync(out, 'utf8');
    assert.match(
      text,
      /^# Ringfence agent configuration, written by `ringfence agent init` \(Ringfence \S+\)\n# on \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\./,
    );
    assert.match(text, /\n# The patch server the agent pulls from/);
    assert.match(text, /\n {4}# The dir backend: each release unpacked into <path>\/releases\/<version>\//);
    const cfg = loadAgentConfig(out);
    assert.equal(cfg.server, 'http://127.0.0.1:8080');
    assert.equal(cfg.enroll_token, 'rf_enroll_0123456789abcdef', 'read from the file, newline trimmed');
    assert.equal(cfg.name, 'edge-017');
    assert.deepEqual(cfg.labels, { env: 'prod', tier: 'B' });
    assert.equal(cfg.poll_interval, 30_000);
    assert.equal(cfg.state_dir, join(dir, 'etc', 'state'), 'relative paths are taken from the file’s folder');
    const [c] = cfg.components;
    assert.deepEqual(c.backend, { type: 'dir', path: join(dir, 'etc', 'app'), keep: 3 });
    assert.deepEqual(c.health, [
      {
        name: 'health-check',
        exec: 'systemctl is-active --quiet sensor',
        timeout: 10_000,
        interval: 1000,
        retries: 0,
      },
    ]);
  });

  it('refuses to replace a file without --force (exit 2, file untouched), replaces it with --force', async () => {
    const out = join(dir, 'existing.yaml');
    writeFileSync(out, 'precious\n', { mode: 0o644 });
    let r = await cli(dir, flags(out));
    assert.equal(r.code, 2);
    assert.equal(r.stderr, `ringfence: --out: ${out} exists (--force replaces it)\n`);
    assert.equal(readFileSync(out, 'utf8'), 'precious\n');
    r = await cli(dir, [...flags(out), '--json']);
    assert.equal(r.code, 2);
    assert.deepEqual(JSON.parse(r.stdout), {
      error: 'usage',
      message: `--out: ${out} exists (--force replaces it)`,
    });
    r = await cli(dir, flags(out, ['--force', '--json', '--health-check', 'true']));
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), {
      file: out,
      mode: '0600',
      server: 'http://127.0.0.1:8080',
      name: null,
      labels: {},
      enroll_token: true,
      state_dir: './state',
      component: 'sensor-content',
      backend: 'dir',
      target: './app',
      health_check: 'true',
    });
    assert.equal(statSync(out).mode & 0o777, 0o600, 'the replaced 0644 file is now private');
    assert.equal(loadAgentConfig(out).enroll_token, 'rf_enroll_0123456789abcdef');
  });

  it('without a token the file is not private-only; without a check it warns', async () => {
    const out = join(dir, 'no-token.yaml');
    const r = await cli(dir, [
      '--server',
      'https://patch.example.internal:8443',
      '--component',
      'app',
      '--target',
      '/opt/app',
      '--out',
      out,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stderr,
      /^note: no --health-check: every release that switches will be committed unchecked\n$/,
    );
    assert.equal(statSync(out).mode & 0o777, 0o644 & ~process.umask());
    const cfg = loadAgentConfig(out);
    assert.equal(cfg.enroll_token, undefined);
    assert.equal(cfg.state_dir, '/var/lib/ringfence');
    assert.deepEqual(cfg.components[0].health, []);
  });

  it('hostile label and name values stay data, and reach the loaded configuration unchanged', async () => {
    const labels: Record<string, string> = {
      site: 'a: b # c',
      quote: 'say "hi" \\o/ \'x\'',
      flow: '{ env: prod }, [1, 2]',
      anchor: '&a *a !!str |- >',
      doc: '--- ...',
      bool: 'true',
      num: '0x10',
      lead: '  - item',
      empty: '',
      intl: 'Zürich ✓ 😀 \u202e',
    };
    const out = join(dir, 'hostile.yaml');
    const name = 'edge # 1: "x"';
    const r = await cli(
      dir,
      flags(
        out,
        Object.entries(labels)
          .flatMap(([k, v]) => ['--label', `${k}=${v}`])
          .concat(['--name', name]),
      ),
    );
    assert.equal(r.code, 0, r.stderr);
    const cfg = loadAgentConfig(out);
    assert.deepEqual(cfg.labels, labels);
    assert.equal(cfg.name, name);
    assert.equal(cfg.components.length, 1);
    assert.deepEqual(Object.keys(yamlData(readFileSync(out, 'utf8'))), [
      'server',
      'enroll_token',
      'name',
      'state_dir',
      'labels',
      'components',
    ]);
  });

  it('the exec backend takes its commands; --out - prints the configuration', async () => {
    const r = await cli(dir, [
      '--server',
      'http://10.0.0.5:8080',
      '--component',
      'os',
      '--backend',
      'exec',
      '--target',
      '/var/lib/ringfence/os',
      '--activate',
      '/usr/local/lib/ringfence/os-activate.sh "$RINGFENCE_VERSION"',
      '--rollback',
      '/usr/local/lib/ringfence/os-rollback.sh',
      '--commit',
      'true # done',
      '--health-check',
      'test -f /run/greenboot/green',
      '--out',
      '-',
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, '');
    const cfg = parseAgentConfig(r.stdout, join(dir, 'stdout.yaml'));
    assert.deepEqual(cfg.components[0].backend, {
      type: 'exec',
      path: '/var/lib/ringfence/os',
      keep: 3,
      timeout: 300_000,
      activate: '/usr/local/lib/ringfence/os-activate.sh "$RINGFENCE_VERSION"',
      rollback: '/usr/local/lib/ringfence/os-rollback.sh',
      commit: 'true # done',
    });
  });

  it('a bad flag is a usage error (exit 2): one line that names the flag, nothing written', async () => {
    const out = join(dir, 'never.yaml');
    const cases: Array<[string[], RegExp]> = [
      [['--label', 'env'], /^ringfence: --label: expected KEY=VALUE, got "env"$/],
      [['--label', 'a b=c'], /^ringfence: --label: key "a b": /],
      [['--label', 'env=a\nb'], /^ringfence: --label: env: the value must be printable text/],
      [['--label', 'env=a', '--label', 'env=b'], /^ringfence: --label: env given twice$/],
      [['--poll', 'soon'], /^ringfence: --poll: invalid duration "soon"/],
      [['--component', '../etc'], /^ringfence: --component: /],
      [['--activate', 'x'], /^ringfence: --activate: only for --backend exec \(not dir\)$/],
      [
        ['--backend', 'exec'],
        /^ringfence: --activate: the command that does it is required with --backend exec$/,
      ],
      [['--health-check', ' '], /^ringfence: --health-check: /],
      [['--name', ''], /^ringfence: --name: /],
    ];
    // Independent processes: run side by side.
    const runs = await Promise.all(
      cases.map(([more]) => cli(dir, flags(out, ['--health-check', 'true', ...more]))),
    );
    cases.forEach(([more, want], i) => {
      const r = runs[i];
      assert.equal(r.code, 2, `${more.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr.trimEnd(), want, more.join(' '));
      assert.equal(r.stderr.trimEnd().split('\n').length, 1, `one line: ${r.stderr}`);
    });
    const whole: Array<[string[], RegExp]> = [
      [['--server', 'ftp://x', '--component', 'a', '--target', 't', '--out', out], /^ringfence: --server: /],
      [['--component', 'a', '--target', 't', '--out', out], /^ringfence: --server: required/],
      [
        ['--server', 'http://x', '--component', 'a', '--target', 't', '--out', '-', '--json'],
        /^ringfence: --json: not with --out -/,
      ],
      [
        [
          '--server',
          'http://x',
          '--component',
          'a',
          '--target',
          't',
          '--enroll-token-file',
          join(dir, 'none'),
          '--out',
          out,
        ],
        /^ringfence: --enroll-token-file: cannot read /,
      ],
      [
        [
          '--server',
          'http://x',
          '--component',
          'a',
          '--target',
          't',
          '--out',
          out,
          '--enroll-token-file',
          '/dev/null',
        ],
        /^ringfence: --enroll-token-file: \/dev\/null is empty$/,
      ],
      [
        ['--server', 'http://x', '--component', 'a', '--target', 't', '--out', dir],
        /^ringfence: --out: .* is a folder$/,
      ],
    ];
    const wholeRuns = await Promise.all(whole.map(([args]) => cli(dir, args)));
    whole.forEach(([args, want], i) => {
      const r = wholeRuns[i];
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr.trimEnd(), want, args.join(' '));
    });
    // Commander's own checks (missing required flag, unknown choice, conflicting flags) are usage errors too.
    let r = await cli(dir, ['--server', 'http://x', '--target', 't', '--out', out]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /required option '--component <name>' not specified/);
    r = await cli(dir, flags(out, ['--backend', 'tarball']));
    assert.equal(r.code, 2);
    assert.match(r.stderr, /argument 'tarball' is invalid\. Allowed choices are dir, file, exec/);
    r = await cli(dir, flags(out, ['--enroll-token', 'rf_enroll_x']));
    assert.equal(r.code, 2);
    assert.match(
      r.stderr,
      /'--enroll-token <token>' cannot be used with option '--enroll-token-file <file>'/,
    );
    assert.throws(() => statSync(out), /ENOENT/);
  });

  it('every agent command has a description and examples', async () => {
    for (const c of [
      [],
      ['status'],
      ['boot-guard'],
      ['rollback'],
      ['pin'],
      ['unpin'],
      ['clear-quarantine'],
      ['apply-bundle'],
      ['hold'],
      ['unhold'],
      ['init'],
    ]) {
      const r = await runNode([BIN, 'agent', ...c, '--help'], dir);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /\n\n[a-z].+\n/, `${c}: a description`);
      assert.match(
        r.stdout,
        new RegExp(`\\nExamples:\\n {2}\\$ ringfence agent ${c[0] ?? '--config'}`),
        `${c}`,
      );
    }
  });
});

describe('agent init: a written configuration enrolls a real agent', { timeout: 300_000 }, () => {
  let ts: TestServer;
  let agent: ChildProcess | undefined;
  before(async () => {
    ts = await startTestServer();
  });
  after(async () => {
    await killProcess(agent);
    await ts?.close();
  });

  it('enrolls with its name and labels, and checks in', async () => {
    const dev = join(ts.dir, 'device');
    mkdirSync(dev);
    const tok = await callAs(ts.url, 'POST', '/v1/admin/enroll-tokens', ts.conn.token, { uses: 1 });
    assert.equal(tok.status, 201, JSON.stringify(tok.body));
    writeFileSync(join(dev, 'token'), String(tok.body.token), { mode: 0o600 });
    const labels = { site: 'fra1: hall # 2', role: 'replica "b"' };
    const r = await cli(dev, [
      '--server',
      ts.url,
      '--enroll-token-file',
      'token',
      '--name',
      'init-device',
      ...Object.entries(labels).flatMap(([k, v]) => ['--label', `${k}=${v}`]),
      '--component',
      'sensor-content',
      '--target',
      './app',
      '--state-dir',
      './state',
      '--poll',
      '250ms',
      '--health-check',
      'true',
      '--out',
      'agent.yaml',
    ]);
    assert.equal(r.code, 0, r.stderr);

    agent = spawnGroup(process.execPath, [BIN, 'agent', '--config', join(dev, 'agent.yaml')], {
      cwd: dev,
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, RINGFENCE_LOG_LEVEL: 'warn', CI: 'true' },
    });
    let log = '';
    agent.stderr?.on('data', (d) => {
      log += d;
    });
    const seen = await until(
      () => callAs(ts.url, 'GET', '/v1/admin/devices/init-device', ts.conn.token),
      (v) => v.status === 200 && (v.body.components as unknown[] | undefined)?.length === 1,
      120_000,
      'the first check-in of the agent',
    ).catch((e) => {
      throw new Error(`${(e as Error).message}\nagent log: ${log.slice(-2000)}`);
    });
    const body = seen.body as { labels: Record<string, string>; components: Array<{ name: string }> };
    assert.deepEqual(body.labels, labels);
    assert.equal(body.components[0].name, 'sensor-content');
    await killProcess(agent);
  });
});

describe('agent init in the device build', { timeout: 300_000 }, () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'rf-init-build-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('ringfence-agent init writes the same configuration', async () => {
    // The shipped build, written into this test's own folder: test/agent-build.test.ts may be running
    // dist/ringfence-agent.mjs at the same time.
    const bundle = await buildAgent({ quiet: true, outfile: join(dir, 'ringfence-agent.mjs') });
    let r = await runNode([bundle, 'init', '--help'], dir);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /\nExamples:\n {2}\$ ringfence-agent init --server /);
    const token = join(dir, 'token');
    writeFileSync(token, 'rf_enroll_device_build\n', { mode: 0o600 });
    const args = [
      'init',
      '--server',
      'http://127.0.0.1:8080',
      '--enroll-token-file',
      token,
      '--label',
      'site=a: b',
      '--component',
      'app',
      '--target',
      './app',
      '--health-check',
      'true',
      '--out',
      join(dir, 'agent.yaml'),
    ];
    r = await runNode([bundle, ...args], dir);
    assert.equal(r.code, 0, r.stderr);
    const text = readFileSync(join(dir, 'agent.yaml'), 'utf8');
    assert.match(text, /^# Ringfence agent configuration, written by `ringfence-agent init`/);
    assert.equal(statSync(join(dir, 'agent.yaml')).mode & 0o777, 0o600);
    const cfg = loadAgentConfig(join(dir, 'agent.yaml'));
    assert.equal(cfg.server, 'http://127.0.0.1:8080');
    assert.deepEqual(cfg.labels, { site: 'a: b' });
    r = await runNode([bundle, ...args], dir);
    assert.equal(r.code, 2, 'a refusal to overwrite is a usage error in the device build too');
    assert.match(r.stderr, /^ringfence-agent: --out: .* exists \(--force replaces it\)\n$/);
    r = await runNode([bundle, 'status', '--json', '--config', join(dir, 'agent.yaml')], dir);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).components[0].component, 'app');
  });
});

// Last of the file's top-level hooks: no child of this file may outlive its tests.
guardProcesses();
