// The web dashboard in a real browser (Chromium via playwright-core) against a real server with a real fleet:
// sign-in, overview figures, per-wave counts, pause from the page (and the server agrees), and a refused token.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Fastify from 'fastify';
import type { Browser, Page } from 'playwright-core';
import { api } from '../src/cli/client.ts';
import type { RolloutView } from '../src/server/routes/admin-rollouts.ts';
import { DEFAULT_WEB_DIR, webRoutes } from '../src/server/routes/web.ts';
import { matchesFilter, overview } from '../src/web/fleet-stats.ts';
import { launchChromium, NO_CHROMIUM } from './helpers/browser.ts';
import { guardProcesses } from './helpers/processes.ts';
import { cycle, enrollDevices, type ProtocolDevice, release } from './helpers/protocol-device.ts';
import { startTestServer, type TestServer, until } from './helpers/server.ts';

const ROOT = new URL('..', import.meta.url).pathname;
const SHOT = process.env.RINGFENCE_SCREENSHOT ?? join(tmpdir(), 'ringfence-dashboard.png');

// Two canary devices, then everyone else; a long bake keeps the rollout in wave 1 while the test looks at it.
const PLAN = `name: web-test
first_wave_cap: 100%
waves:
  - name: canary
    select: ring=canary
    size: 100%
    bake: 1h
  - name: rest
    select: env=prod
    size: 100%
`;

describe('web dashboard (served by the server)', () => {
  it('serves the page without a token while the API still needs one', async () => {
    const ts = await startTestServer();
    try {
      const page = await fetch(`${ts.url}/`);
      assert.ok(page.status === 200 || page.status === 503, `GET / answered ${page.status}`);
      assert.match(page.headers.get('content-type') ?? '', /text\/html/);
      assert.match(page.headers.get('content-security-policy') ?? '', /frame-ancestors 'none'/);
      assert.equal((await fetch(`${ts.url}/v1/admin/devices`)).status, 401);
      assert.equal((await fetch(`${ts.url}/assets/..%2Fpackage.json`)).status, 404, 'no path escapes assets');
      assert.equal((await fetch(`${ts.url}/assets/nope.js`)).status, 404);
    } finally {
      await ts.close();
    }
  });

  it('without built assets, GET / says how to build them', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rf-web-missing-'));
    const app = Fastify();
    webRoutes(app, join(dir, 'web'));
    try {
      const url = await app.listen({ host: '127.0.0.1', port: 0 });
      const res = await fetch(`${url}/`);
      assert.equal(res.status, 503);
      assert.match(await res.text(), /npm run build:web/);
    } finally {
      await app.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('overview figures and the fleet filter are computed from the API shapes', () => {
    const now = 10_000_000;
    const dev = (name: string, seen: number, held = false) => ({
      id: `id-${name}`,
      name,
      labels: { env: 'prod', site: name === 'a' ? 'ams' : 'fra' },
      agent_version: '1',
      last_seen_at: seen,
      held,
      pins: {},
      channel: 'general',
      deferred_until: null,
      components: [{ name: 'sensor', version: '2', state: 'idle', health: null, quarantined: [] }],
    });
    const devices = [dev('a', now - 1000), dev('b', now - 3_600_000, true), dev('c', now)];
    const ro = (id: number, status: string, exposed: number) =>
      ({ id, component: 'sensor', version: '3', status, wave: 'canary', exposed }) as RolloutView;
    const o = overview(devices, [ro(1, 'completed', 3), ro(2, 'baking', 1)], now);
    assert.deepEqual(
      { fleet: o.fleet, recent: o.recent, stale: o.stale, held: o.held },
      { fleet: 3, recent: 2, stale: 1, held: 1 },
    );
    assert.deepEqual(
      o.active.map((r) => [r.id, r.share]),
      [[2, 1 / 3]],
    );
    assert.deepEqual(
      devices.filter((d) => matchesFilter(d, 'site=fra HELD')).map((d) => d.name),
      ['b'],
    );
    assert.equal(devices.filter((d) => matchesFilter(d, 'sensor@2')).length, 3);
  });
});

describe('web dashboard in Chromium', {
  skip: NO_CHROMIUM,
}, () => {
  let ts: TestServer;
  let browser: Browser;
  let devs: ProtocolDevice[];
  let rolloutId: number;
  const errors: string[] = [];

  before(async () => {
    // Build once if missing (CI's `npm test` builds first); a stale build is the developer's to refresh.
    if (!existsSync(join(DEFAULT_WEB_DIR, 'index.html'))) {
      execFileSync('npm', ['run', 'build:web'], { cwd: ROOT, stdio: 'pipe' });
    }
    ts = await startTestServer();
    devs = await enrollDevices(
      ts.conn,
      [
        { env: 'prod', ring: 'canary' },
        { env: 'prod', ring: 'canary' },
        { env: 'prod', tier: 'B' },
        { env: 'prod', tier: 'B' },
        { env: 'prod', tier: 'A' },
        { env: 'dev' },
      ],
      'sensor',
    );
    await release(ts.conn, 'sensor', '2');
    await api(ts.conn, 'POST', '/v1/admin/plans', { source: PLAN });
    const r = await api<RolloutView>(ts.conn, 'POST', '/v1/admin/rollouts', {
      release: 'sensor@2',
      plan: 'web-test',
    });
    rolloutId = r.id;
    // The two canaries install it for real over the device protocol; the others report their state too.
    const cycled = Date.now();
    for (const d of devs) await cycle(ts.conn, d, 'sensor');
    await until(
      () => api<RolloutView>(ts.conn, 'GET', `/v1/admin/rollouts/${rolloutId}`),
      (v) => v.status === 'baking' && v.waves[0].succeeded === 2,
      120_000,
      'canary wave done and baking',
    );
    await api(ts.conn, 'POST', '/v1/admin/fleet/hold', { selector: 'tier=A', reason: 'quarter end' });
    // One device went quiet an hour ago (the real column the server keeps from check-ins). The server writes
    // check-in times a moment later (src/server/checkin.ts): once its write of this device's check-in is in,
    // nothing overwrites the hour-old time.
    await until(
      () =>
        ts.srv.ctx.store.db
          .selectFrom('devices')
          .select('last_seen_at')
          .where('id', '=', devs[5].id)
          .executeTakeFirstOrThrow(),
      (r) => (r.last_seen_at ?? 0) >= cycled,
      60_000,
      "the server's write of the last check-in time",
    );
    await ts.srv.ctx.store.db
      .updateTable('devices')
      .set({ last_seen_at: Date.now() - 3_600_000 })
      .where('id', '=', devs[5].id)
      .execute();

    browser = await launchChromium();
  });

  after(async () => {
    await browser?.close();
    await ts?.close();
  });

  async function open(): Promise<Page> {
    const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
    page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
    page.on('console', (m) => {
      // A refused token is an expected 401 in the network log; anything else is a fault.
      if (m.type() === 'error' && !/401/.test(m.text())) errors.push(`console: ${m.text()}`);
    });
    await page.goto(`${ts.url}/`);
    return page;
  }

  async function signIn(page: Page, token: string): Promise<void> {
    await page.locator('input[name=token]').fill(token);
    await page.getByRole('button', { name: 'Sign in' }).click();
  }

  const text = (page: Page, sel: string) =>
    // biome-ignore lint/performance/useDomNodeTextContent: what a person sees is what is under test
    page.locator(sel).innerText();

  it('a wrong token is refused with a clear message and nothing is stored', async () => {
    const page = await open();
    await signIn(page, 'rfadm_not-the-token');
    await page.locator('#login-error').waitFor();
    assert.match(await text(page, '#login-error'), /operator token was refused \(401/);
    assert.equal(await page.evaluate(() => sessionStorage.length), 0);
    await page.close();
  });

  it('signs in, shows the overview, the rollout waves, pauses it, and the server agrees', async () => {
    const page = await open();
    await signIn(page, ts.conn.token);
    await page.locator('#kpi-fleet').waitFor();
    assert.equal(await text(page, '#kpi-fleet'), '6');
    assert.equal(await text(page, '#kpi-recent'), '5');
    assert.equal(await text(page, '#kpi-stale'), '1');
    assert.equal(await text(page, '#kpi-held'), '1');
    assert.equal(await text(page, '#kpi-active'), '1');
    const row = page.locator(`#active-rollouts tr[data-rollout="${rolloutId}"]`);
    const rowText = await text(page, `#active-rollouts tr[data-rollout="${rolloutId}"]`);
    assert.match(rowText, /sensor@2\s+baking\s+canary\s+2/);
    assert.match(rowText, /33% of the fleet/);

    // The token stays for this tab only.
    assert.equal(await page.evaluate(() => sessionStorage.getItem('ringfence.adminToken')), ts.conn.token);

    await row.getByRole('link', { name: 'sensor@2' }).click();
    await page.locator('#waves').waitFor();
    const wave = (name: string, col: string) => text(page, `#waves tr[data-wave="${name}"] td.n-${col}`);
    assert.deepEqual(
      await Promise.all(
        ['selected', 'offered', 'succeeded', 'failed', 'rolled-back', 'reverted', 'unconfirmed'].map((c) =>
          wave('canary', c),
        ),
      ),
      ['2', '2', '2', '0', '0', '0', '0'],
    );
    assert.equal(await wave('rest', 'offered'), '0');
    assert.match(await text(page, '#rollout-status'), /baking/);
    assert.match(await text(page, '#rollout-wave'), /1 of 2: canary/);

    await page.screenshot({ path: SHOT, fullPage: true });
    assert.ok(statSync(SHOT).size > 10_000, 'the screenshot has content');

    assert.equal(await page.locator('#btn-resume').isDisabled(), true);
    await page.locator('#btn-pause').click();
    await page.locator('#rollout-status', { hasText: 'paused' }).waitFor({ timeout: 60_000 });
    const server = await api<RolloutView>(ts.conn, 'GET', `/v1/admin/rollouts/${rolloutId}`);
    assert.equal(server.status, 'paused', 'the server agrees');
    assert.equal(await page.locator('#btn-resume').isEnabled(), true);

    // Abort asks first; cancelling changes nothing.
    await page.locator('#btn-abort').click();
    await page.getByRole('dialog').getByRole('button', { name: 'Cancel' }).click();
    assert.equal(
      (await api<RolloutView>(ts.conn, 'GET', `/v1/admin/rollouts/${rolloutId}`)).status,
      'paused',
    );

    // The fleet table and its filter.
    await page.getByRole('link', { name: 'Fleet' }).click();
    await page.locator('#devices').waitFor();
    assert.equal(await page.locator('#devices tbody tr').count(), 6);
    await page.locator('#fleet-filter').fill('ring=canary sensor@2');
    assert.equal(await page.locator('#devices tbody tr').count(), 2);
    assert.match(await text(page, '#fleet-count'), /2 of 6 devices/);

    // The audit log shows the pause and a verified chain.
    await page.getByRole('link', { name: 'Audit' }).click();
    await page.locator('#audit-verify').waitFor();
    assert.match(await text(page, '#audit-verify'), /Hash chain intact: \d+ entries verified/);
    assert.match(await text(page, '#audit'), /fleet\.hold/);

    // A token revoked under a running page (here: replaced in the tab) sends the operator back to sign in.
    await page.evaluate(() => sessionStorage.setItem('ringfence.adminToken', 'rfadm_stale'));
    await page.getByRole('link', { name: 'Overview' }).click();
    await page.locator('#login-error').waitFor({ timeout: 60_000 });
    assert.match(await text(page, '#login-error'), /refused/);

    assert.deepEqual(errors, []);
    await page.close();
  });
});

// Last of the file's top-level hooks: no child of this file may outlive its tests.
guardProcesses();
