// The HTTP API under a bounded, seeded fuzz: every route of /v1/openapi.json, with and without tokens, odd URL
// spellings (percent-encoding, absolute-form, dot segments, double slashes), hostile query strings and mutated
// bodies (wrong types, 10,000+ levels of nesting, huge strings, __proto__ keys). No answer may be a 5xx, no
// admin route may succeed without the admin token, the server process must not crash, and it must still be
// healthy afterwards. The server (startTestServer) runs in a child process so that a crash is a finding.
//
// CI: a fixed seed (FUZZ_SEED, default 20261130) for FUZZ_RUNS requests (default 20,000) plus one random seed for
// FUZZ_RANDOM_RUNS (default 2,000). A failure message names the seed; rerun it with FUZZ_SEED=<seed>.
// Long runs: `npm run fuzz` (scripts/fuzz.ts).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  type FuzzWorld,
  formatReport,
  fuzz,
  isAdminTarget,
  isDeviceTarget,
  startFuzzWorld,
} from './helpers/fuzz.ts';
import { guardProcesses } from './helpers/processes.ts';

const FIXED_SEED = Number(process.env.FUZZ_SEED ?? 20261130);
const RUNS = Number(process.env.FUZZ_RUNS ?? 20_000);
const RANDOM_RUNS = Number(process.env.FUZZ_RANDOM_RUNS ?? 2_000);

describe('the fuzz oracle reads a request-target as a router would', () => {
  it('sees the admin API behind every spelling', () => {
    for (const t of [
      '/v1/admin/devices',
      '/v1/%61dmin/devices',
      '/%76%31/admin/devices',
      '/v1%2Fadmin/devices',
      '/v1/%2561dmin/devices',
      'http://x/v1/admin/devices',
      'HTTP://127.0.0.1:8080/v1/admin/devices?x=1',
      '//v1//admin/devices',
      '/v1/admin./devices',
      '/v1/tuf/../admin/devices',
      '/v1/x/%2e%2e/admin/devices',
      '/v1/./admin/devices',
      '/V1/ADMIN/devices',
      '/v1;x=1/admin/devices',
      '/v1\\admin/devices',
    ])
      assert.ok(isAdminTarget(t), t);
    for (const t of ['/healthz', '/v1/tuf/root.json', '/v1/enroll', '/v1/administrator', '/admin/v1', '*'])
      assert.ok(!isAdminTarget(t), t);
    assert.ok(isDeviceTarget('/v1/%63heckin'));
    assert.ok(isDeviceTarget('http://x/v1/blobs/ab'));
    assert.ok(!isDeviceTarget('/v1/enroll'));
  });
});

describe('HTTP API fuzz', { timeout: 900_000 }, () => {
  let w: FuzzWorld | undefined;
  before(async () => {
    w = await startFuzzWorld();
  });
  after(async () => {
    await w?.close();
  });

  const run = async (seed: number, runs: number) => {
    assert.ok(w);
    const rep = await fuzz(w, { seed, runs, concurrency: 16 });
    const text = formatReport(rep, Number(process.env.FUZZ_REPORT_MAX ?? 20));
    if (process.env.FUZZ_VERBOSE) console.log(text);
    const again = `reproduce: FUZZ_SEED=${seed} FUZZ_RUNS=${runs} node --import tsx --test test/fuzz-api.test.ts`;
    assert.equal(rep.findings.length, 0, `${text}\n${again}`);
    assert.equal(rep.sent, runs, `seed ${seed}: only ${rep.sent} of ${runs} requests sent\n${text}`);
  };

  it(`fixed seed ${FIXED_SEED}: ${RUNS} requests`, async () => {
    await run(FIXED_SEED, RUNS);
  });

  it(`one random seed: ${RANDOM_RUNS} requests`, async () => {
    const seed = Number(process.env.FUZZ_RANDOM_SEED ?? (Date.now() ^ (Math.random() * 0x7fffffff)) >>> 0);
    await run(seed, RANDOM_RUNS);
  });

  it('the server is still up and answers /healthz with 200', async () => {
    assert.ok(w);
    assert.equal(w.crashed, null, `the server process exited: ${JSON.stringify(w.crashed)}`);
    const res = await fetch(new URL('/healthz', w.url));
    assert.equal(res.status, 200);
    assert.equal(((await res.json()) as { ok: boolean }).ok, true);
  });
});

// Last of the file's top-level hooks: no child of this file may outlive its tests.
guardProcesses();
