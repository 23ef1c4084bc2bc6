// A hostile server against a REAL agent process. A fake server (node:http, in this test) answers enrollment and
// check-ins with forged offers — versions, artifact names and hashes that traverse out of the agent's folders,
// bad lengths, foreign URLs, too many artifacts or offers — once to an agent with no TUF root (sha256-only mode,
// what anyone in the middle of plain HTTP can forge) and once to an agent with a pinned root. For every offer the
// agent must refuse with class `invalid` (reported once), fetch nothing (no blob, no metadata), and leave every
// byte outside its state folder as it was: a snapshot of a sentinel tree placed around the device is compared
// after each offer. Plus property tests of the validator and `within()`, and a hostile offline bundle.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  copyFileSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import type { ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { stringify } from 'yaml';
import type { ComponentJournal, Report } from '../src/agent/journal.ts';
import {
  badArtifactName,
  badName,
  checkOffer,
  MAX_ARTIFACTS,
  MAX_OFFERS,
  offersByComponent,
  reportableVersion,
  within,
} from '../src/agent/offer.ts';
import { TufRepository } from '../src/trust/signer/tuf-repository.ts';
import { type FakeServer, ringfence, spawnAgent, startFakeServer, stopProcess } from './agent-harness.ts';
import { guardProcesses } from './helpers/processes.ts';
import { until } from './helpers/server.ts';

const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
const COMPONENT = 'sensor-content';
const RUNNING = '1.0.0';
const PAYLOAD = Buffer.from('pwned: written by a forged offer\n');
/** An offer of 1000 bytes whose blob the server streams without end (a disk-filling attack). */
const ENDLESS = { name: 'big.bin', sha256: 'e'.repeat(64), length: 1000, url: `/v1/blobs/${'e'.repeat(64)}` };
function endless(res: ServerResponse): void {
  res.writeHead(200);
  const chunk = Buffer.alloc(64 * 1024, 0x41);
  const pump = () => {
    while (!res.destroyed && res.write(chunk));
    if (!res.destroyed) res.once('drain', pump);
  };
  res.on('error', () => {});
  res.on('close', () => res.removeAllListeners('drain'));
  pump();
}
const GOOD = {
  name: 'service.conf',
  sha256: sha(PAYLOAD),
  length: PAYLOAD.length,
  url: `/v1/blobs/${sha(PAYLOAD)}`,
};

/**
 * Every file, folder and link under `root` (except the skipped relative paths): type, mode, size, mtime and, for
 * files, the sha256 of the content; for links, the target. Any write, delete, rename or touch shows up.
 */
function snapshot(root: string, skip: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (dir: string) => {
    for (const name of readdirSync(dir).sort()) {
      const full = join(dir, name);
      const rel = relative(root, full);
      if (skip.includes(rel)) continue;
      const st = lstatSync(full);
      if (st.isSymbolicLink()) out[rel] = `link -> ${readlinkSync(full)}`;
      else if (st.isDirectory()) {
        out[rel] = `dir ${st.mode.toString(8)} ${st.mtimeMs}`;
        walk(full);
      } else out[rel] = `file ${st.mode.toString(8)} ${st.size} ${st.mtimeMs} ${sha(readFileSync(full))}`;
    }
  };
  walk(root);
  return out;
}

/** A forged offer and what the agent must report for it. */
interface HostileCase {
  what: string;
  desired: (base: string, fake: FakeServer) => unknown[];
  /** The version the refusal carries (as the agent reports it). */
  version: string;
  reason: RegExp;
}

const offer = (version: unknown, artifacts: unknown = [GOOD]) => ({
  component: COMPONENT,
  version,
  artifacts,
});
const art = (over: Record<string, unknown>) => ({ ...GOOD, ...over });

function hostileCases(): HostileCase[] {
  let n = 0;
  const v = () => `2.0.${++n}`; // a fresh valid version per case where the version is not the attack
  const cases: HostileCase[] = [];
  const add = (what: string, version: unknown, desired: HostileCase['desired'], reason: RegExp) =>
    cases.push({ what, desired, version: reportableVersion(version), reason });
  const byVersion = (what: string, version: unknown) => add(what, version, () => [offer(version)], /version/);
  byVersion(
    'version ../../victim (deletes a folder outside releases/, points current at it)',
    '../../victim',
  );
  byVersion('version ..', '..');
  byVersion('version .', '.');
  byVersion('version /abs', '/abs');
  byVersion('version a/../../../x', 'a/../../../x');
  byVersion('version of 200 characters', 'a'.repeat(200));
  byVersion('version that is a number', 42);
  byVersion('version with a newline', '1.0\nforged log line');
  byVersion('version missing', undefined);
  // An absolute version into the sentinel tree: resolved per run.
  cases.push({
    what: 'version = absolute path of a sentinel folder',
    desired: (base) => [offer(join(base, 'victim'))],
    version: '',
    reason: /version/,
  });
  const byArtifacts = (what: string, artifacts: unknown, reason: RegExp) => {
    const version = v();
    add(what, version, () => [offer(version, artifacts)], reason);
  };
  byArtifacts(
    'artifact name ../../../x (writes outside the component)',
    [art({ name: '../../../x' })],
    /\.\./,
  );
  byArtifacts('artifact name a/../../../../x', [art({ name: 'a/../../../../x' })], /\.\./);
  byArtifacts('artifact name with backslashes', [art({ name: '..\\..\\..\\x' })], /backslash/);
  byArtifacts('artifact name ./x', [art({ name: './x' })], /segment/);
  byArtifacts('artifact name a//b', [art({ name: 'a//b' })], /segment/);
  byArtifacts('artifact name with NUL', [art({ name: 'a\u0000b' })], /control/);
  byArtifacts('artifact name empty', [art({ name: '' })], /characters/);
  byArtifacts('artifact name not a string', [art({ name: ['x'] })], /not a string/);
  byArtifacts('artifact name twice', [GOOD, GOOD], /twice/);
  byArtifacts(
    'artifact a and a/b',
    [art({ name: 'a' }), art({ name: 'a/b' })],
    /inside another|folder of another/,
  );
  byArtifacts('sha256 ../../../file (deletes that file)', [art({ sha256: '../../../file' })], /sha256/);
  byArtifacts('sha256 in upper case', [art({ sha256: GOOD.sha256.toUpperCase() })], /sha256/);
  byArtifacts('sha256 of 63 digits', [art({ sha256: GOOD.sha256.slice(1) })], /sha256/);
  byArtifacts('sha256 missing', [art({ sha256: undefined })], /sha256/);
  byArtifacts('length -1', [art({ length: -1 })], /length/);
  byArtifacts('length 1.5', [art({ length: 1.5 })], /length/);
  byArtifacts('length 2^53', [art({ length: 2 ** 53 })], /length/);
  byArtifacts('length 1e300', [art({ length: 1e300 })], /length/);
  byArtifacts('length as a string', [art({ length: '33' })], /length/);
  byArtifacts(
    'length of 17 GiB (above limits.max_artifact_bytes)',
    [art({ length: 17 * 1024 ** 3 })],
    /limit/,
  );
  byArtifacts(
    `${MAX_ARTIFACTS + 1} artifacts`,
    Array.from({ length: MAX_ARTIFACTS + 1 }, (_, i) => art({ name: `f/${i}` })),
    /limit of 10000/,
  );
  byArtifacts('no artifacts', [], /no artifacts/);
  byArtifacts('artifacts not a list', { 'service.conf': GOOD }, /not a list/);
  byArtifacts('artifact not an object', ['service.conf'], /not an object/);
  byArtifacts(
    'url on another origin (would get the device token)',
    [art({ url: 'http://127.0.0.1:9/steal' })],
    /url/,
  );
  byArtifacts('url //host', [art({ url: '//evil.example/x' })], /url/);
  byArtifacts('url /\\host', [art({ url: '/\\evil.example/x' })], /url/);
  byArtifacts('url not a path', [art({ url: 'v1/blobs/x' })], /url/);
  {
    const version = v();
    add(
      `${MAX_OFFERS + 1} desired entries`,
      version,
      () => [
        ...Array.from({ length: MAX_OFFERS }, (_, i) => ({ ...offer(`1.${i}`), component: `other-${i}` })),
        offer(version),
      ],
      /desired entries/,
    );
  }
  {
    const version = v();
    add('the component offered twice', version, () => [offer(version), offer(v())], /offered twice/);
  }
  return cases;
}

/** A device folder inside a sentinel tree; returns the paths the test needs. */
function prepare(base: string, fakeUrl: string, rootFile?: string) {
  // Sentinels where the known traversals land: device/victim (../../victim from releases/), device/x
  // (../../../x from a staging folder), base/file (../../../file from state/downloads), base/victim, base/x.
  const put = (p: string, text: string) => {
    mkdirSync(dirname(join(base, p)), { recursive: true });
    writeFileSync(join(base, p), text);
  };
  put('file', 'sentinel: base/file\n');
  put('x', 'sentinel: base/x\n');
  put('victim/a.txt', 'sentinel: base/victim/a.txt\n');
  put('sentinel/deep/nested/b.bin', 'sentinel: deep\n'.repeat(100));
  put('device/victim/keep.txt', 'sentinel: device/victim\n');
  put('device/x', 'sentinel: device/x\n');
  put(`device/app/releases/${RUNNING}/service.conf`, 'threads=4\n');
  put(`device/app/releases/${RUNNING}/channel-291.dat`, 'definitions 1.0.0\n');
  symlinkSync(join('releases', RUNNING), join(base, 'device/app/current'));
  const device = join(base, 'device');
  mkdirSync(join(device, 'state'));
  const journal: ComponentJournal = {
    component: COMPONENT,
    current: RUNNING,
    previous: null,
    quarantined: [],
    hold: false,
    pin: null,
    txn: null,
    lastHealth: null,
  };
  writeFileSync(join(device, 'state', `component-${COMPONENT}.json`), JSON.stringify(journal));
  if (rootFile) {
    mkdirSync(join(base, 'trust'));
    copyFileSync(rootFile, join(base, 'trust', 'root.json'));
  }
  const config = join(device, 'agent.yaml');
  writeFileSync(
    config,
    stringify({
      server: fakeUrl,
      enroll_token: 'enroll-me',
      name: 'hostile',
      state_dir: './state',
      poll_interval: '200ms',
      retry: { base: '200ms', max: '2s' },
      ...(rootFile ? { trust: { root: '../trust/root.json' } } : {}),
      components: [{ name: COMPONENT, backend: { type: 'dir', path: './app', keep: 3 } }],
    }),
  );
  writeFileSync(join(device, 'agent.log'), '');
  return { device, config, log: join(device, 'agent.log'), state: join(device, 'state') };
}

function journalIn(state: string): ComponentJournal {
  return JSON.parse(readFileSync(join(state, `component-${COMPONENT}.json`), 'utf8'));
}

for (const mode of ['sha256-only', 'pinned root'] as const) {
  describe(`hostile server, ${mode}: a real agent refuses every forged offer`, { timeout: 600_000 }, () => {
    let base: string;
    let org: string;
    let fake: FakeServer;
    let agent: ChildProcess | undefined;
    let paths: ReturnType<typeof prepare>;
    let before0: Record<string, string>;
    const skip = ['device/state', 'device/agent.log'];
    const cases = hostileCases();

    const fetched = () =>
      fake.requests.filter((r) => r.path.startsWith('/v1/blobs/') || r.path.startsWith('/v1/tuf/'));
    const refusalsOf = (version: string) =>
      fake.reports.filter((r: Report) => r.version === version && r.outcome === 'refused');
    const logTail = () => readFileSync(paths.log, 'utf8').slice(-3000);

    before(async () => {
      base = mkdtempSync(join(tmpdir(), 'rf-hostile-'));
      org = mkdtempSync(join(tmpdir(), 'rf-hostile-org-'));
      const repo = mode === 'pinned root' ? TufRepository.init(org).repo : null;
      // The blob is served: without validation an agent would download it and write it where the offer says.
      fake = await startFakeServer({
        blobs: new Map<string, Buffer | ((res: ServerResponse) => void)>([
          [GOOD.sha256, PAYLOAD],
          [ENDLESS.sha256, endless],
        ]),
        tufDir: repo?.metadataDir,
      });
      paths = prepare(base, fake.url, repo ? join(repo.metadataDir, '1.root.json') : undefined);
      before0 = snapshot(base, skip);
      agent = spawnAgent(paths.config, paths.log);
      await until(
        async () => fake.checkins,
        (c) => c >= 1,
        90_000,
        'the agent enrolled and checked in',
      );
    });

    after(async () => {
      await stopProcess(agent);
      await fake?.close();
      rmSync(base, { recursive: true, force: true });
      rmSync(org, { recursive: true, force: true });
    });

    for (const c of cases) {
      it(`refuses: ${c.what}`, async () => {
        const desired = c.desired(base, fake);
        const version = c.version || reportableVersion((desired.at(-1) as { version: unknown }).version);
        fake.desired = desired;
        const got = await until(
          async () => refusalsOf(version),
          (rows) => rows.length > 0,
          60_000,
          `a refusal of ${JSON.stringify(version).slice(0, 60)}`,
        ).catch((e) => {
          throw new Error(`${(e as Error).message}\nagent log:\n${logTail()}`);
        });
        assert.equal(got[0].class, 'invalid', `class of ${got[0].reason}`);
        assert.equal(got[0].component, COMPONENT);
        assert.equal(got[0].from_version, RUNNING);
        assert.match(got[0].reason ?? '', c.reason);
        assert.match(got[0].reason ?? '', /^invalid offer: /);
        assert.ok(
          (got[0].reason ?? '').length <= 2000 && got[0].version.length <= 128,
          'fits the server schema',
        );
        assert.deepEqual(snapshot(base, skip), before0, 'nothing outside the state folder changed');
        assert.equal(readlinkSync(join(paths.device, 'app', 'current')), join('releases', RUNNING));
        const j = journalIn(paths.state);
        assert.equal(j.current, RUNNING);
        assert.equal(j.txn, null, 'no transaction was started');
        assert.deepEqual(j.quarantined, [], 'a refusal does not quarantine');
        assert.deepEqual(fetched(), [], 'no blob or metadata was fetched');
      });
    }

    it('reports each refusal once and keeps polling at its interval (no tight loop)', async () => {
      const last = cases.at(-1)!;
      const from = fake.checkins;
      const t0 = Date.now();
      await until(
        async () => fake.checkins,
        (n) => n >= from + 5,
        60_000,
        'five more check-ins',
      );
      await new Promise((r) => setTimeout(r, 2000));
      const elapsed = Date.now() - t0;
      const rate = (fake.checkins - from) / (elapsed / 1000);
      // poll_interval 200 ms with jitter: at most ~6 check-ins a second; a busy loop would make hundreds.
      assert.ok(rate <= 8, `check-ins per second while refusing: ${rate.toFixed(1)}`);
      assert.equal(refusalsOf(last.version).length, 1, 'the same refusal is reported once');
      for (const c of cases.slice(0, -1))
        if (c.version) assert.equal(refusalsOf(c.version).length, 1, `${c.what}: reported once`);
      const downloads = join(paths.state, 'downloads');
      assert.deepEqual(existsSync(downloads) ? readdirSync(downloads) : [], [], 'nothing downloaded');
      assert.deepEqual(fetched(), []);
    });

    if (mode === 'sha256-only')
      it('control: the same fake server and agent apply a valid offer', async () => {
        fake.desired = [offer('1.1.0')];
        await until(
          async () => journalIn(paths.state),
          (j) => j.current === '1.1.0' && j.txn === null,
          60_000,
          'the valid release applied',
        );
        assert.equal(
          readFileSync(join(paths.device, 'app', 'current', 'service.conf'), 'utf8'),
          PAYLOAD.toString(),
        );
        assert.ok(
          fake.requests.some((r) => r.path === GOOD.url),
          'the blob was fetched from the server',
        );
        await until(
          async () => fake.reports.filter((r) => r.version === '1.1.0' && r.outcome === 'succeeded'),
          (rows) => rows.length === 1,
          120_000,
          'the success report',
        );
        // The sentinels around the device are still untouched.
        const now = snapshot(base, [...skip, 'device/app']);
        const want = Object.fromEntries(Object.entries(before0).filter(([k]) => !k.startsWith('device/app')));
        assert.deepEqual(now, want);
      });

    if (mode === 'sha256-only')
      it('a blob streamed past its offered length is cut off there and refused', async () => {
        fake.desired = [offer('1.2.0', [ENDLESS])];
        const got = await until(
          async () => refusalsOf('1.2.0'),
          (rows) => rows.length > 0,
          60_000,
          'the refusal of the endless blob',
        );
        assert.equal(got[0].class, 'verify');
        assert.match(got[0].reason ?? '', /more than the offered 1000 bytes/);
        const downloads = join(paths.state, 'downloads');
        for (const f of existsSync(downloads) ? readdirSync(downloads) : [])
          assert.ok(lstatSync(join(downloads, f)).size <= 1000, `${f} holds no more than the offered length`);
        assert.equal(journalIn(paths.state).current, '1.1.0', 'the running release is untouched');
      });

    if (mode === 'pinned root')
      it('an offline bundle whose manifest traverses is refused (invalid) and reported', async () => {
        await stopProcess(agent); // apply-bundle and the daemon write the same journal
        const bundle = join(org, 'hostile.bundle');
        craftBundle(bundle, [offer('../../victim')]);
        const r = ringfence(['agent', 'apply-bundle', bundle, '--config', paths.config, '--json']);
        assert.equal(r.code, 1, r.out);
        assert.match(r.out, /"outcome": "refused"/);
        assert.match(r.out, /"class": "invalid"/);
        assert.deepEqual(snapshot(base, skip), before0, 'nothing outside the state folder changed');
        const outbox = JSON.parse(readFileSync(join(paths.state, 'outbox.json'), 'utf8')) as Report[];
        const rep = outbox.find((o) => o.version === '../../victim');
        assert.equal(rep?.class, 'invalid');
        assert.equal(rep?.offline, true);
        assert.equal(journalIn(paths.state).current, RUNNING);
      });
  });
}

/** Writes a bundle container (magic, MANIFEST.json entry, completion marker) with the given releases. */
function craftBundle(file: string, releases: unknown[]): void {
  const manifest = Buffer.from(
    JSON.stringify({
      format: 'ringfence-bundle/1',
      created: new Date().toISOString(),
      expires: new Date(Date.now() + 86_400_000).toISOString(),
      releases,
      entries: [],
    }),
  );
  const head = `${JSON.stringify({ name: 'MANIFEST.json', length: manifest.length, sha256: sha(manifest) })}\n`;
  const body = Buffer.concat([Buffer.from('RFBUNDLE 1\n'), Buffer.from(head), manifest]);
  writeFileSync(file, Buffer.concat([body, Buffer.from(`RFBUNDLE-END ${sha(body)}\n`)]));
}

describe('offer validator and within() (unit, property-based)', () => {
  const base = resolve('/srv/ringfence/app/releases');
  const inside = (p: string) => {
    const rel = relative(base, p);
    return p.startsWith(base + sep) && rel !== '' && rel !== '..' && !rel.startsWith(`..${sep}`);
  };
  // Strings built from the characters and segments that make traversals.
  const hostileChar = fc.constantFrom('a', 'b', '.', '/', '\\', '\u0000', ' ', '~', ':', '\n', '%2e', 'é');
  const hostile = fc.string({ unit: hostileChar, maxLength: 24 });
  const segments = fc
    .array(fc.constantFrom('..', '.', '', 'a', 'b.c', '/abs', '\\', 'x/..', '...'), { maxLength: 6 })
    .map((a) => a.join('/'));
  const anyPath = fc.oneof(hostile, segments, fc.string({ maxLength: 20 }));

  it('within(): whatever it accepts resolves strictly inside the base folder', () => {
    fc.assert(
      fc.property(fc.array(anyPath, { minLength: 1, maxLength: 3 }), (parts) => {
        let p: string;
        try {
          p = within(base, ...parts);
        } catch {
          return true; // refused
        }
        return inside(p) && !p.includes('\0');
      }),
      { numRuns: 5000 },
    );
    for (const bad of ['..', '../x', 'a/../../x', '/etc/passwd', '', '.', 'a/..', `${base}/../x`])
      assert.throws(() => within(base, bad), /unsafe path/, bad);
    assert.equal(within(base, 'a/b'), join(base, 'a', 'b'));
  });

  it('accepted artifact names and versions never leave their folder', () => {
    fc.assert(
      fc.property(anyPath, (name) => {
        if (badArtifactName(name) !== null) return true;
        const p = resolve(base, name);
        return inside(p) && within(base, name) === p;
      }),
      { numRuns: 5000 },
    );
    fc.assert(
      fc.property(anyPath, (v) => {
        if (badName(v, 'version') !== null) return true;
        return dirname(resolve(base, v)) === base; // one folder directly in releases/
      }),
      { numRuns: 5000 },
    );
    for (const bad of ['..', '.', '../x', '/abs', 'a\\b', 'a\u0000', '', 'a'.repeat(129), ' 1', '-1'])
      assert.notEqual(badName(bad, 'version'), null, bad);
    for (const ok of ['1.0.0', '2024.07.19+build.5', 'v1_rc-2', 'a..b'])
      assert.equal(badName(ok, 'version'), null, ok);
    for (const bad of ['..', '../x', 'a/../b', '/x', 'a//b', './a', 'a/', 'a\\b', 'a\u0000b', 'a\nb', ''])
      assert.notEqual(badArtifactName(bad), null, JSON.stringify(bad));
    for (const ok of ['service.conf', 'sub/dir/file.bin', '..hidden', 'a..b', 'é.txt'])
      assert.equal(badArtifactName(ok), null, ok);
  });

  it('checkOffer: a well-formed offer passes; any one hostile field refuses it', () => {
    const server = 'http://127.0.0.1:8080';
    const good = { component: COMPONENT, version: '1.2.3', artifacts: [GOOD, art({ name: 'sub/a.bin' })] };
    const r = checkOffer(good, { component: COMPONENT, server });
    assert.ok(r.ok);
    assert.deepEqual(r.offer.artifacts[1].url, GOOD.url);
    assert.equal(
      checkOffer({ ...good, artifacts: [art({ url: undefined })] }, { component: COMPONENT }).ok,
      true,
    );
    const field = fc.constantFrom('component', 'version', 'name', 'sha256', 'length', 'url');
    const badValue = fc.oneof(
      hostile,
      segments,
      fc.constantFrom(-1, 1.5, 2 ** 53, Number.NaN, null, {}, [], true, 'http://evil/x', '//evil/x'),
    );
    fc.assert(
      fc.property(field, badValue, (f, value) => {
        const o = structuredClone(good) as Record<string, unknown> & {
          artifacts: Array<Record<string, unknown>>;
        };
        if (f === 'component' || f === 'version') o[f] = value;
        else o.artifacts[0][f] = value;
        const c = checkOffer(o, { component: COMPONENT, server });
        if (!c.ok) return c.reason.startsWith('invalid offer: ') && c.version.length <= 128;
        // Accepted: then every value is one a well-behaved server could send.
        const a = c.offer.artifacts[0];
        return (
          c.offer.component === COMPONENT &&
          badName(c.offer.version, 'version') === null &&
          badArtifactName(a.name) === null &&
          /^[0-9a-f]{64}$/.test(a.sha256) &&
          Number.isSafeInteger(a.length) &&
          a.length >= 0 &&
          new URL(a.url, server).origin === server &&
          inside(within(base, c.offer.version, a.name))
        );
      }),
      { numRuns: 3000 },
    );
  });

  it('offersByComponent: ignores foreign components, refuses duplicates and too many entries', () => {
    const m = offersByComponent(
      [offer('1'), { component: 'other', version: '../x' }, null, 'junk'],
      [COMPONENT],
    );
    assert.deepEqual([...m.keys()], [COMPONENT]);
    assert.equal(m.get(COMPONENT)?.error, undefined);
    assert.match(
      offersByComponent([offer('1'), offer('2')], [COMPONENT]).get(COMPONENT)?.error ?? '',
      /twice/,
    );
    const many = [...Array.from({ length: MAX_OFFERS }, () => ({ component: 'x' })), offer('1')];
    assert.match(offersByComponent(many, [COMPONENT]).get(COMPONENT)?.error ?? '', /limit/);
    assert.throws(() => offersByComponent({ a: 1 }, [COMPONENT]), /malformed/);
    assert.equal(offersByComponent(undefined, [COMPONENT]).size, 0);
  });
});

// Last of the file's top-level hooks: no child of this file may outlive its tests.
guardProcesses();
