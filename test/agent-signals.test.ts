// Device signals (evidence gates): the pure parsers against fixed inputs and properties, the config's validation,
// and the sources against real things — shell processes (timeout, output limit, process group killed), files and
// a node:http server on 127.0.0.1 (oversize and slow answers).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { type ComponentConfig, parseAgentConfig } from '../src/agent/config.ts';
import { renderAgentConfig } from '../src/agent/config-template.ts';
import { checkCwd, probation } from '../src/agent/health.ts';
import {
  fetchHttpSource,
  MAX_EXEC_OUTPUT,
  MAX_SIGNAL_MAGNITUDE,
  MAX_SIGNALS,
  parsePrometheusText,
  parseSignalText,
  readFileSource,
  runExecSource,
  SIGNAL_NAME_RE,
  SignalSampler,
} from '../src/agent/signals.ts';
import { componentEnv } from '../src/agent/transaction-runner.ts';
import * as protocol from '../src/protocol/device.ts';
import { until } from './helpers/server.ts';

/** Whether a process is alive and not a zombie. */
function processAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^[ZX]$/.test(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0]);
  } catch {
    return false;
  }
}

/** Asserts that every value is finite, bounded, and named by one of `names`, and that there are few enough. */
function assertSound(values: Record<string, number>, names: readonly string[]) {
  const keys = Object.keys(values);
  assert.ok(keys.length <= MAX_SIGNALS, `${keys.length} values`);
  for (const k of keys) {
    assert.ok(names.includes(k), `unconfigured name ${k}`);
    assert.ok(SIGNAL_NAME_RE.test(k), `bad name ${k}`);
    assert.equal(typeof values[k], 'number');
    assert.ok(Number.isFinite(values[k]) && Math.abs(values[k]) <= MAX_SIGNAL_MAGNITUDE, `${k}=${values[k]}`);
  }
}

/** Agent config YAML with one component whose `signals:` block is `signals` (indented under the component). */
function configText(signals: string): string {
  return [
    'state_dir: ./state',
    'components:',
    '  - name: app',
    '    backend: { type: dir, path: ./app }',
    ...signals.split('\n').map((l) => `    ${l}`),
    '',
  ].join('\n');
}

describe('signals: the contract', () => {
  it('the agent uses the protocol limits (copied to keep TypeBox out of the agent)', () => {
    assert.equal(SIGNAL_NAME_RE.source, protocol.SIGNAL_NAME_RE.source);
    assert.equal(MAX_SIGNALS, protocol.MAX_SIGNALS);
    assert.equal(MAX_SIGNAL_MAGNITUDE, protocol.MAX_SIGNAL_MAGNITUDE);
  });
});

describe('signals: name=value and JSON text', () => {
  const names = ['restarts', 'crashes', 'boot_seconds', '__proto__'];

  it('reads name=value lines with spaces, comments, blank lines; ignores other names', () => {
    const r = parseSignalText(
      '# written by app-signals\n\n  restarts = 3\ncrashes=0 # since boot\r\nother=7\nboot_seconds=\t12.5e0\n',
      names,
    );
    assert.deepEqual(r.values, { restarts: 3, crashes: 0, boot_seconds: 12.5 });
    assert.deepEqual(r.errors, []);
  });

  it('keeps the last of a repeated name and refuses what is not a plain finite number', () => {
    const r = parseSignalText(
      'restarts=1\nrestarts=2\ncrashes=NaN\nboot_seconds=0x10\ncrashes=Infinity\ngarbage line\n',
      names,
    );
    assert.deepEqual(r.values, { restarts: 2 });
    assert.equal(r.errors.length, 4);
    assert.match(r.errors.join('\n'), /crashes: not a number: "NaN"/);
    assert.match(r.errors.join('\n'), /boot_seconds: not a number: "0x10"/);
    assert.match(r.errors.join('\n'), /line 6: expected name=value/);
  });

  it('refuses values beyond the magnitude the server accepts', () => {
    const r = parseSignalText(`restarts=1e16\ncrashes=-${MAX_SIGNAL_MAGNITUDE}\nboot_seconds=1e999`, names);
    assert.deepEqual(r.values, { crashes: -MAX_SIGNAL_MAGNITUDE });
    assert.match(r.errors.join('\n'), /restarts: beyond/);
    assert.match(r.errors.join('\n'), /boot_seconds: not a finite number/);
  });

  it('reads one JSON object; non-numbers and non-objects are errors', () => {
    assert.deepEqual(
      parseSignalText('{"restarts": 4, "crashes": 1.5, "other": 9, "__proto__": 2}', names).values,
      { restarts: 4, crashes: 1.5, ['__proto__']: 2 },
    );
    const own = parseSignalText('{"__proto__": 2}', names).values;
    assert.ok(Object.hasOwn(own, '__proto__'), 'a name like __proto__ is an own property');
    assert.equal(JSON.stringify(own), '{"__proto__":2}');
    const bad = parseSignalText('{"restarts": "4", "crashes": null, "boot_seconds": [1]}', names);
    assert.deepEqual(bad.values, {});
    assert.equal(bad.errors.length, 3);
    assert.deepEqual(parseSignalText('{"restarts": 4', names).errors, ['not valid JSON']);
    // A JSON array is not the JSON form (does not start with "{"): each line is a name=value error.
    assert.deepEqual(parseSignalText('[1,2]', names).values, {});
  });

  it('oversize text: only the first 64 KiB is read, and that is said', () => {
    const text = `restarts=5\n${'#'.repeat(MAX_EXEC_OUTPUT)}\ncrashes=1\n`;
    const r = parseSignalText(text, names);
    assert.deepEqual(r.values, { restarts: 5 });
    assert.match(r.errors[0], /longer than 65536 characters/);
  });

  it('bounds the error list', () => {
    const r = parseSignalText('x\n'.repeat(1000), names);
    assert.equal(r.errors.length, 6);
    assert.equal(r.errors[5], 'and 995 more');
  });
});

describe('signals: Prometheus text', () => {
  const names = ['app_errors_total', 'app_up', 'latency_seconds'];

  it('sums each configured name over its label sets; comments, timestamps and other names ignored', () => {
    const text = [
      '# HELP app_errors_total Errors by route.',
      '# TYPE app_errors_total counter',
      'app_errors_total{route="/a",code="500"} 3 1700000000000',
      'app_errors_total{route="/b c",code="503"} 2',
      'app_errors_total{msg="a } brace, and \\"quotes\\" and \\\\"} 1.5e1',
      'app_errors_total 1',
      'app_errors_total_created 1.7e9',
      'other_metric{x="y"} 100',
      '  app_up  1  ',
      'latency_seconds_bucket{le="+Inf"} 10',
      '',
    ].join('\n');
    const r = parsePrometheusText(text, names);
    assert.deepEqual(r.values, { app_errors_total: 21, app_up: 1 });
    assert.deepEqual(r.errors, []);
  });

  it('skips NaN and ±Inf samples; a sum beyond the bound is dropped', () => {
    const text = [
      'app_errors_total{a="1"} NaN',
      'app_errors_total{a="2"} +Inf',
      'app_errors_total{a="3"} 4',
      'app_up -Inf',
      'latency_seconds{a="1"} 9e14',
      'latency_seconds{a="2"} 9e14',
    ].join('\n');
    const r = parsePrometheusText(text, names);
    assert.deepEqual(r.values, { app_errors_total: 4 });
    assert.match(r.errors.join('\n'), /latency_seconds: beyond/);
  });

  it('reports malformed lines of configured names and keeps the rest; exemplars are ignored', () => {
    const text = [
      'app_errors_total{route="/a} 3', // unterminated label value
      'app_errors_total{route=/a} 3', // unquoted value
      'app_errors_total{route="/a"}3', // no space before the value
      'app_errors_total 3 12 13', // too many fields
      'app_errors_total{route="/ok"} 2 # {trace_id="abc"} 1.0',
      'app_up one',
      '{"dotted.name"} 5',
    ].join('\n');
    const r = parsePrometheusText(text, names);
    assert.deepEqual(r.values, { app_errors_total: 2 });
    assert.equal(r.errors.length, 5, r.errors.join('\n'));
    assert.match(r.errors.join('\n'), /malformed labels/);
    assert.match(r.errors.join('\n'), /app_up: not a number: "one"/);
  });

  it('oversize text: only the first 1 MiB is read', () => {
    const text = `app_up 1\n${'# pad\n'.repeat(200_000)}app_errors_total 1\n`;
    const r = parsePrometheusText(text, names);
    assert.deepEqual(r.values, { app_up: 1 });
    assert.match(r.errors[0], /longer than 1048576 characters/);
  });
});

describe('signals: properties', () => {
  const name = fc.stringMatching(/^[a-z_][a-z0-9_]{0,10}$/);
  // Names, valid or not, sometimes more than MAX_SIGNALS of them.
  const names = fc.array(fc.oneof(name, fc.string({ maxLength: 8 })), { maxLength: 24 });
  const number = fc.oneof(
    fc.double().map(String),
    fc.integer().map(String),
    fc.constantFrom('NaN', '+Inf', '-Inf', 'Infinity', '1e400', '-0', '0x1f', '', '1e15', '1e16'),
  );
  // Lines shaped like each format, so the parsers reach their value paths, mixed with noise.
  const kvText = fc
    .array(
      fc.oneof(
        fc.tuple(name, fc.constantFrom('=', ' = ', '= '), number).map((t) => t.join('')),
        fc.string(),
      ),
    )
    .map((l) => l.join('\n'));
  const label = fc.tuple(name, fc.string({ maxLength: 6 })).map(([k, v]) => `${k}=${JSON.stringify(v)}`);
  const promText = fc
    .array(
      fc.oneof(
        fc
          .tuple(name, fc.array(label, { maxLength: 3 }), number, fc.option(fc.integer()))
          .map(([n, ls, v, ts]) => `${n}{${ls.join(',')}} ${v}${ts === null ? '' : ` ${ts}`}`),
        fc.tuple(name, number).map(([n, v]) => `${n} ${v}`),
        fc.string(),
      ),
    )
    .map((l) => l.join('\n'));
  const jsonText = fc
    .dictionary(name, fc.oneof(fc.double(), fc.integer(), fc.string(), fc.constant(null)))
    .map((o) => JSON.stringify(o));

  for (const [what, parse, text] of [
    ['name=value', parseSignalText, kvText],
    ['JSON', parseSignalText, jsonText],
    ['Prometheus', parsePrometheusText, promText],
    ['Prometheus on name=value', parsePrometheusText, kvText],
    ['name=value on Prometheus', parseSignalText, promText],
  ] as const) {
    it(`${what}: never throws; only configured names, finite bounded numbers, at most ${MAX_SIGNALS}`, () => {
      fc.assert(
        fc.property(names, fc.oneof(text, fc.string(), fc.string({ unit: 'binary' })), (ns, t) => {
          const r = parse(t, ns);
          assertSound(r.values, ns);
          assert.ok(r.errors.length <= 6);
        }),
        { numRuns: 500, seed: 16 },
      );
    });
  }

  it('a configured name printed with a plain number is read back exactly', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(name, { minLength: 1, maxLength: MAX_SIGNALS }),
        fc.integer({ min: -1e9, max: 1e9 }),
        (ns, v) => {
          const kv = parseSignalText(ns.map((n) => `${n}=${v}`).join('\n'), ns);
          const prom = parsePrometheusText(ns.map((n) => `${n}{a="x"} ${v}\n${n} ${v}`).join('\n'), ns);
          for (const n of ns) {
            assert.equal(kv.values[n], v);
            assert.equal(prom.values[n], 2 * v);
          }
        },
      ),
      { numRuns: 200, seed: 16 },
    );
  });
});

describe('signals: configuration', () => {
  const file = join(tmpdir(), 'rf-signals-cfg', 'agent.yaml');
  const load = (signals: string) => parseAgentConfig(configText(signals), file);

  it('applies the defaults, resolves a relative file like health files; absent means no sampling', () => {
    const c = load(
      [
        'signals:',
        '  sources:',
        '    - { exec: /usr/local/bin/app-signals, names: [restarts, crashes] }',
        '    - { file: ./run/boot-seconds, names: [boot_seconds] }',
        '    - { http: "http://127.0.0.1:9100/metrics", names: [app_errors_total], timeout: 2s }',
      ].join('\n'),
    ).components[0];
    assert.equal(c.signals?.interval, 60_000);
    assert.deepEqual(c.signals?.sources, [
      { kind: 'exec', exec: '/usr/local/bin/app-signals', names: ['restarts', 'crashes'], timeout: 5000 },
      {
        kind: 'file',
        file: join(tmpdir(), 'rf-signals-cfg', 'run', 'boot-seconds'),
        names: ['boot_seconds'],
      },
      { kind: 'http', http: 'http://127.0.0.1:9100/metrics', names: ['app_errors_total'], timeout: 2000 },
    ]);
    assert.equal(parseAgentConfig(configText(''), file).components[0].signals, undefined);
  });

  it('agent init writes a commented-out signals example that is valid once uncommented', () => {
    const text = renderAgentConfig(
      {
        server: 'http://127.0.0.1:8080',
        labels: [],
        stateDir: './state',
        component: 'app',
        backend: 'dir',
        target: './app',
      },
      { command: 'ringfence agent init', version: '0', at: new Date(0) },
    );
    assert.match(text, /\n {4}# signals: /);
    const c = parseAgentConfig(text.replace(/^( {4})# (signals:)/m, '$1$2'), file).components[0];
    assert.deepEqual(c.signals, {
      interval: 60_000,
      sources: [
        { kind: 'exec', exec: '/usr/local/bin/app-signals', names: ['restarts', 'crashes'], timeout: 5000 },
      ],
    });
  });

  const refusals: Array<[string, string, RegExp]> = [
    [
      'a bad name',
      'signals:\n  sources:\n    - exec: x\n      names: [ok, Bad-Name]',
      /agent\.yaml:8: components\.0\.signals\.sources\.0\.names\.1: expected a signal name/,
    ],
    [
      'a name in two sources',
      'signals:\n  sources:\n    - exec: x\n      names: [restarts]\n    - file: f\n      names: [a, restarts]',
      /agent\.yaml:10: components\.0\.signals\.sources\.1\.names\.1: restarts is named twice \(also in sources\.0\)/,
    ],
    [
      'too many names',
      `signals:\n  sources:\n    - exec: x\n      names: [${Array.from({ length: 10 }, (_, i) => `a${i}`).join(', ')}]\n    - exec: y\n      names: [${Array.from({ length: 7 }, (_, i) => `b${i}`).join(', ')}]`,
      /agent\.yaml:10: components\.0\.signals\.sources\.1\.names\.6: more than 16 signal names in one component/,
    ],
    [
      'more than 16 names in one source',
      `signals:\n  sources:\n    - exec: x\n      names: [${Array.from({ length: 17 }, (_, i) => `a${i}`).join(', ')}]`,
      /components\.0\.signals\.sources\.0\.names: Too big/i,
    ],
    [
      'an interval under 5s',
      'signals:\n  interval: 2s\n  sources: [{ exec: x, names: [a] }]',
      /signals\.interval: at least 5s/,
    ],
    ['no source', 'signals:\n  sources: []', /signals\.sources: Too small/i],
    ['no names', 'signals:\n  sources: [{ exec: x, names: [] }]', /sources\.0\.names: Too small/i],
    ['names missing', 'signals:\n  sources: [{ exec: x }]', /sources\.0\.names: /],
    [
      'two kinds in one source',
      'signals:\n  sources: [{ exec: x, file: y, names: [a] }]',
      /sources\.0: expected exactly one of exec, file or http \(got 2\)/,
    ],
    [
      'no kind',
      'signals:\n  sources: [{ names: [a] }]',
      /sources\.0: expected exactly one of exec, file or http \(got 0\)/,
    ],
    [
      'a timeout on a file',
      'signals:\n  sources: [{ file: y, names: [a], timeout: 1s }]',
      /sources\.0\.timeout: a file source has no timeout/,
    ],
    [
      'a timeout over 60s',
      'signals:\n  sources: [{ exec: y, names: [a], timeout: 2m }]',
      /sources\.0\.timeout: at most 60s/,
    ],
    [
      'a non-http URL',
      'signals:\n  sources: [{ http: "ftp://x/metrics", names: [a] }]',
      /sources\.0\.http: expected an http/,
    ],
    [
      'an unknown field',
      'signals:\n  sources: [{ exec: y, names: [a], every: 1s }]',
      /sources\.0: Unrecognized key/i,
    ],
  ];
  for (const [what, yaml, re] of refusals)
    it(`refuses ${what}, naming the file, line and field`, () => {
      assert.throws(() => load(yaml), re);
    });
});

describe('signals: sources against real processes, files and HTTP', () => {
  let dir: string;
  let http: Server;
  let url: string;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'rf-signals-'));
    http = createServer((req, res) => {
      if (req.url === '/metrics')
        return res.writeHead(200).end('# TYPE app_errors_total counter\napp_errors_total{code="500"} 2\n');
      if (req.url === '/big') {
        // 2 MiB in chunks: the agent must stop reading at 1 MiB.
        res.writeHead(200);
        const chunk = `${'# padding'.padEnd(1023, '.')}\n`.repeat(64);
        for (let i = 0; i < 32; i++) res.write(chunk);
        return res.end('app_errors_total 1\n');
      }
      if (req.url === '/slow') {
        res.writeHead(200);
        res.write('app_errors_total 1\n'); // headers and a part, then nothing
        return;
      }
      if (req.url === '/hang') return; // no answer at all
      res.writeHead(500).end('down');
    });
    await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(http.address() as { port: number }).port}`;
  });
  after(() => {
    http.closeAllConnections();
    http.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('exec: stdout is read; a non-zero exit fails the source', async () => {
    const out = await runExecSource('echo restarts=2; echo noise >&2', {
      cwd: dir,
      env: {},
      timeout: 10_000,
    });
    assert.equal(out, 'restarts=2\n');
    await assert.rejects(
      runExecSource('echo restarts=2; echo broken >&2; exit 3', { cwd: dir, env: {}, timeout: 10_000 }),
      /exit 3: broken/,
    );
  });

  it('exec: past the timeout the whole process group is killed', async () => {
    const pidFile = join(dir, 'sleeper.pid');
    const started = Date.now();
    await assert.rejects(
      runExecSource(`sleep 30 & echo $! > ${pidFile}; wait`, { cwd: dir, env: {}, timeout: 500 }),
      /timed out after 500 ms/,
    );
    assert.ok(Date.now() - started < 5000, 'fails at its timeout');
    const pid = Number(readFileSync(pidFile, 'utf8'));
    await until(
      async () => processAlive(pid),
      (a) => !a,
      10_000,
      'the sleeping child killed',
    );
  });

  it('exec: past 64 KiB of output the process is killed and the source fails', async () => {
    const pidFile = join(dir, 'writer.pid');
    const started = Date.now();
    await assert.rejects(
      runExecSource(`echo $$ > ${pidFile}; while :; do echo restarts=1; done`, {
        cwd: dir,
        env: {},
        timeout: 30_000,
      }),
      /output larger than 65536 bytes/,
    );
    assert.ok(Date.now() - started < 20_000, 'stopped at the limit, not at the timeout');
    const pid = Number(readFileSync(pidFile, 'utf8'));
    await until(
      async () => processAlive(pid),
      (a) => !a,
      10_000,
      'the writer killed',
    );
    // Exactly at the limit is fine.
    const exact = await runExecSource(`head -c ${MAX_EXEC_OUTPUT} /dev/zero | tr '\\0' 'x'`, {
      cwd: dir,
      env: {},
      timeout: 10_000,
    });
    assert.equal(exact.length, MAX_EXEC_OUTPUT);
  });

  it('file: a regular file up to 64 KiB; larger files and FIFOs fail', async () => {
    const f = join(dir, 'boot-seconds');
    writeFileSync(f, 'boot_seconds=41.5\n');
    assert.equal(await readFileSource(f), 'boot_seconds=41.5\n');
    writeFileSync(f, 'x'.repeat(64 * 1024 + 1));
    await assert.rejects(readFileSource(f), /larger than 65536 bytes/);
    await assert.rejects(readFileSource(join(dir, 'missing')), /ENOENT/);
    const fifo = join(dir, 'fifo');
    assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
    await assert.rejects(readFileSource(fifo), /not a regular file/);
  });

  it('http: reads the answer; oversize, non-2xx, slow and silent answers fail within the timeout', async () => {
    assert.match(await fetchHttpSource(`${url}/metrics`, 5000), /app_errors_total\{code="500"\} 2/);
    await assert.rejects(fetchHttpSource(`${url}/big`, 10_000), /larger than 1048576 bytes/);
    await assert.rejects(fetchHttpSource(`${url}/down`, 5000), /HTTP 500/);
    for (const path of ['/slow', '/hang']) {
      const started = Date.now();
      await assert.rejects(fetchHttpSource(`${url}${path}`, 400), /timed out after 400 ms/, path);
      const took = Date.now() - started;
      assert.ok(took >= 390 && took < 5000, `${path}: took ${took} ms`);
    }
  });

  it('sampler: sources at once, with the checks cwd and env; failures logged and left out', async () => {
    const cfgDir = join(dir, 'device');
    mkdirSync(join(cfgDir, 'app'), { recursive: true });
    writeFileSync(join(cfgDir, 'boot'), '{"boot_seconds": 7}');
    const text = configText(
      [
        'signals:',
        '  interval: 5s',
        '  sources:',
        // cwd is the component folder; RINGFENCE_COMPONENT is set.
        `    - exec: 'test "$(pwd)" = "${join(cfgDir, 'app')}" && echo "restarts=$RINGFENCE_COMPONENT_DIR" | sed "s|.*/app$|restarts=4|"'`,
        '      names: [restarts]',
        '    - exec: \'echo "crashes=1"; [ "$RINGFENCE_COMPONENT" = app ] && echo "named=1"\'',
        '      names: [crashes, named]',
        '    - file: ./boot',
        '      names: [boot_seconds]',
        `    - http: "${url}/metrics"`,
        '      names: [app_errors_total]',
        '    - exec: "sleep 5"',
        '      names: [slow_one]',
        '      timeout: 300ms',
        `    - http: "${url}/down"`,
        '      names: [down_one]',
      ].join('\n'),
    );
    const comp = parseAgentConfig(text, join(cfgDir, 'agent.yaml')).components[0];
    assert.equal(checkCwd(comp, componentEnv(comp)), join(cfgDir, 'app'));
    const warnings: Array<{ obj: Record<string, unknown>; msg: string }> = [];
    const sampler = new SignalSampler(
      { warn: (obj, msg) => warnings.push({ obj: obj as Record<string, unknown>, msg }) },
      componentEnv,
    );
    const t0 = Date.now();
    const s = await sampler.sample(comp, t0);
    assert.ok(Date.now() - t0 < 4000, 'sources run in parallel, the slow one cut at its timeout');
    assert.deepEqual(s, {
      at: t0,
      values: { restarts: 4, crashes: 1, named: 1, boot_seconds: 7, app_errors_total: 2 },
    });
    assert.deepEqual(
      warnings.map((w) => [w.obj.source, w.obj.err]),
      [
        ['exec sleep 5', 'timed out after 300 ms'],
        [`http ${url}/down`, 'HTTP 500'],
      ],
    );
    // Sent once: pending until a check-in with it succeeded.
    assert.equal(sampler.pending('app'), s);
    assert.equal(await sampler.sample(comp, t0 + 4999), null, 'not due before the interval');
    assert.equal(sampler.pending('app'), s);
    sampler.sent('app', s!);
    assert.equal(sampler.pending('app'), null);
    // A newer sample taken while an older one was in flight is not cleared by the older one's success.
    const s2 = await sampler.sample(comp, t0 + 5000);
    assert.ok(s2);
    const s3 = await sampler.sample(comp, t0 + 5001, true);
    sampler.sent('app', s2);
    assert.equal(sampler.pending('app'), s3);
    // No signals configured: never sampled.
    const plain = parseAgentConfig(configText(''), join(cfgDir, 'agent.yaml')).components[0];
    assert.equal(await sampler.sample(plain, t0, true), null);
    assert.equal(sampler.pending('x'), null);
  });

  it('probation samples at every round, beside the checks, and a failing sample never fails it', async () => {
    const cfgDir = join(dir, 'probation');
    mkdirSync(join(cfgDir, 'app'), { recursive: true });
    const counter = join(cfgDir, 'rounds');
    writeFileSync(counter, '0');
    const text = [
      'state_dir: ./state',
      'components:',
      '  - name: app',
      '    backend: { type: dir, path: ./app }',
      '    health: [{ name: ok, exec: "true" }]',
      '    probation: { window: 600ms, interval: 200ms }',
      '    signals:',
      '      interval: 1h',
      '      sources:',
      `        - exec: 'n=$(($(cat ${counter}) + 1)); echo $n > ${counter}; echo "rounds=$n"'`,
      '          names: [rounds]',
      '        - exec: "exit 1"',
      '          names: [broken]',
    ].join('\n');
    const comp: ComponentConfig = parseAgentConfig(text, join(cfgDir, 'agent.yaml')).components[0];
    const warnings: string[] = [];
    const sampler = new SignalSampler({ warn: (_o, msg) => warnings.push(msg) }, componentEnv);
    await sampler.sample(comp, Date.now()); // the interval (1h) is not what decides in probation
    const r = await probation(
      comp,
      componentEnv(comp),
      (ms) => new Promise((res) => setTimeout(res, ms)),
      () => sampler.sample(comp, Date.now(), true),
    );
    assert.equal(r.ok, true);
    const rounds = Number(readFileSync(counter, 'utf8'));
    assert.ok(rounds >= 3, `sampled ${rounds} times (one before, at least two rounds)`);
    assert.deepEqual(sampler.pending('app')?.values, { rounds });
    assert.ok(warnings.length >= rounds, 'the broken source is logged each time');
    // A sample that throws does not fail probation either.
    const r2 = await probation(
      comp,
      componentEnv(comp),
      async () => {},
      () => Promise.reject(new Error('boom')),
    );
    assert.equal(r2.ok, true);
  });
});
