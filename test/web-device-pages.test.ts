// The dashboard's per-device views in Chromium (playwright-core) against a real server and devices speaking the
// real protocol: from the rollout list to a rollout's devices, filtered to the failed one, its failing checks'
// output, and through to the device's page (labels, components, quarantine, history across rollouts).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Browser, Locator, Page } from 'playwright-core';
import { api, type Conn } from '../src/cli/client.ts';
import type { RolloutView } from '../src/server/routes/admin-rollouts.ts';
import { DEFAULT_WEB_DIR } from '../src/server/routes/web.ts';
import { launchChromium, NO_CHROMIUM } from './helpers/browser.ts';
import { guardProcesses } from './helpers/processes.ts';
import {
  checkin,
  cycle,
  cycleUntil,
  enrollDevices,
  type ProtocolDevice,
  release,
  startRollout,
} from './helpers/protocol-device.ts';
import { startTestServer, type TestServer, until } from './helpers/server.ts';

// Screenshots of the two views, for people (and docs): the rollout's failed device, and its device page.
const SHOT_DIR = process.env.RINGFENCE_SCREENSHOT_DIR ?? tmpdir();
const ROOT = new URL('..', import.meta.url).pathname;

const PLAN = `name: web-devices
first_wave_cap: 100
waves:
  - name: canary
    select: ring=canary
    size: 100%
    max_failures: 1
  - name: rest
    select: ring=main
    size: 100%
    bake: 1h
`;

const ESC = '\u001b';
// Device-written output that a careless page would turn into markup or hide: it must read as plain text.
const OUTPUT = `starting sensor 2\n<img id="injected" src=x onerror="window.__pwned=1">\n${ESC}[31mFATAL${ESC}[0m port 8443 in use\n`;

/** Whether the built dashboard has the device pages (a build from before them is rebuilt). */
function builtWithDevicePages(): boolean {
  if (!existsSync(join(DEFAULT_WEB_DIR, 'index.html'))) return false;
  const assets = join(DEFAULT_WEB_DIR, 'assets');
  return readdirSync(assets).some(
    (f) => f.endsWith('.js') && readFileSync(join(assets, f), 'utf8').includes('rollout-devices'),
  );
}

/** A check-in with the component's health and quarantine list, as the agent sends it. */
async function rawCheckin(conn: Conn, d: ProtocolDevice, body: unknown): Promise<void> {
  const res = await fetch(new URL('/v1/checkin', conn.server), {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${d.token}` },
    body: JSON.stringify(body),
  });
  assert.equal(res.status, 200, await res.text());
}

describe('dashboard device pages in Chromium', {
  skip: NO_CHROMIUM,
  timeout: 300_000,
}, () => {
  let ts: TestServer;
  let browser: Browser;
  let devs: ProtocolDevice[];
  let r1: number;
  let r2: number;
  const errors: string[] = [];

  before(async () => {
    // Build when missing, as web-dashboard.test.ts does (CI's `npm test` builds first), or when the build
    // predates these pages.
    if (!builtWithDevicePages()) execFileSync('npm', ['run', 'build:web'], { cwd: ROOT, stdio: 'pipe' });
    ts = await startTestServer();
    devs = await enrollDevices(
      ts.conn,
      [{ ring: 'canary', site: 'hamburg' }, { ring: 'canary', site: 'berlin' }, { ring: 'main' }],
      'sensor',
      '1',
    );
    await release(ts.conn, 'sensor', '1.5');
    await release(ts.conn, 'sensor', '2');
    await api(ts.conn, 'POST', '/v1/admin/plans', { source: PLAN });

    // An earlier rollout the failing device took part in, so its history spans two rollouts.
    r1 = await startRollout(ts.conn, 'sensor@1.5', 'web-devices');
    await cycleUntil(
      ts.conn,
      devs,
      'sensor',
      r1,
      (v) => v.waves[0].succeeded === 2 && v.status === 'baking',
      'rollout 1 canaries done',
    );
    await api(ts.conn, 'POST', `/v1/admin/rollouts/${r1}/abort`, { reason: 'superseded in the test' });

    r2 = await startRollout(ts.conn, 'sensor@2', 'web-devices');
    await cycle(ts.conn, devs[0], 'sensor');
    const bad = devs[1];
    assert.deepEqual(
      (await checkin(ts.conn, bad, 'sensor')).map((o) => o.version),
      ['2'],
    );
    await rawCheckin(ts.conn, bad, {
      components: [
        {
          name: 'sensor',
          version: bad.version,
          state: 'idle',
          health: { ok: true, at: Date.now() },
          quarantined: ['2'],
        },
      ],
      reports: [
        {
          txn_id: `web-${process.pid}-bad`,
          component: 'sensor',
          version: '2',
          from_version: bad.version,
          outcome: 'rolled-back',
          class: 'health',
          reason: 'service: port 8443 in use',
          detail: {
            checks: [
              { name: 'service', ok: false, durationMs: 21, output: OUTPUT },
              { name: 'http', ok: true, durationMs: 4, output: 'HTTP 200' },
            ],
            attempts: 1,
          },
          at: Date.now(),
        },
      ],
    });
    await until(
      () => api<RolloutView>(ts.conn, 'GET', `/v1/admin/rollouts/${r2}`),
      (v) => v.waves[0].failed === 1 && v.waves[0].succeeded === 1,
      120_000,
      'rollout 2 canaries reported',
    );

    browser = await launchChromium();
  });

  after(async () => {
    await browser?.close();
    await ts?.close();
  });

  // biome-ignore lint/performance/useDomNodeTextContent: what a person sees is what is under test
  const seen = (l: Locator) => l.innerText();
  const text = (page: Page, sel: string) => seen(page.locator(sel));

  it("goes from the rollout list to the failed device's check output and its page", async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(`console: ${m.text()}`);
    });
    await page.goto(`${ts.url}/`);
    await page.locator('input[name=token]').fill(ts.conn.token);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator('#kpi-fleet').waitFor();

    // The rollout list → the rollout → its devices.
    await page.getByRole('link', { name: 'Rollouts' }).click();
    await page.locator(`#rollouts tr[data-rollout="${r2}"]`).waitFor();
    await page.locator(`#rollouts tr[data-rollout="${r2}"]`).getByRole('link', { name: 'sensor@2' }).click();
    await page.locator('#rollout-devices').waitFor();
    assert.equal(await page.locator('#rollout-devices tbody tr[data-device]').count(), 3);
    assert.match(await text(page, '#rollout-devices-count'), /1–3 of 3/);

    // Only the failed one.
    await page.locator('#device-state').selectOption('failed');
    await page.locator('#rollout-devices tbody tr[data-device]').first().waitFor();
    await until(
      () => page.locator('#rollout-devices tbody tr[data-device]').count(),
      (n) => n === 1,
      120_000,
      'the state filter',
    );
    const bad = devs[1];
    const row = page.locator(`#rollout-devices tr[data-device="${bad.name}"]`);
    const rowText = await seen(row);
    assert.match(rowText, /1: canary/);
    assert.match(rowText, /failed/);
    assert.match(rowText, /1\.5 → 2/);
    assert.match(rowText, /health/);
    assert.match(rowText, /service: port 8443 in use/);

    const checks = page.locator(`#rollout-devices tr[data-checks-of="${bad.name}"]`);
    const out = await seen(checks.locator('[data-check="service"] pre.output'));
    assert.match(out, /starting sensor 2/);
    assert.ok(
      out.includes('<img id="injected" src=x onerror="window.__pwned=1">'),
      'markup is shown as text',
    );
    assert.ok(out.includes('\\x1b[31mFATAL\\x1b[0m port 8443 in use'), 'control characters are made visible');
    assert.equal(await page.locator('#injected').count(), 0, 'device output never becomes markup');
    assert.equal(await page.evaluate(() => (window as unknown as { __pwned?: number }).__pwned), undefined);
    assert.match(await seen(checks), /passed: http/);
    await page.screenshot({ path: join(SHOT_DIR, 'ringfence-rollout-devices.png'), fullPage: true });

    // Through to the device's page.
    await row.getByRole('link', { name: bad.name }).click();
    await page.locator('#device-history').waitFor();
    assert.equal(await text(page, '#device-name'), bad.name);
    assert.match(await text(page, '#device-labels'), /ring=canary/);
    assert.match(await text(page, '#device-labels'), /site=berlin/);
    const comp = await text(page, '#device-components tr[data-component="sensor"]');
    assert.match(comp, /sensor\s+1\.5\s+idle/);
    assert.match(await text(page, '#device-components .quarantined'), /^2$/);

    // History across both rollouts, newest first, with the check output.
    const rows = page.locator('#device-history tbody tr[data-txn]');
    assert.equal(await rows.count(), 2);
    assert.match(
      await seen(rows.nth(0)),
      new RegExp(`#${r2}\\s+update, wave canary\\s+sensor@2\\s+rolled-back\\s+health`),
    );
    assert.match(
      await seen(rows.nth(1)),
      new RegExp(`#${r1}\\s+update, wave canary\\s+sensor@1\\.5\\s+succeeded`),
    );
    const hist = page.locator(`#device-history tr[data-checks-of="web-${process.pid}-bad"]`);
    assert.ok((await seen(hist.locator('[data-check="service"] pre.output'))).includes('\\x1b[31mFATAL'));
    assert.match(await seen(hist.locator('[data-check="http"]')), /ok\s+http\s+4 ms/);
    assert.match(await text(page, `#device-rollouts tr[data-rollout="${r2}"]`), /failed/);
    assert.match(await text(page, `#device-rollouts tr[data-rollout="${r1}"]`), /succeeded/);
    assert.equal(await page.locator('#injected').count(), 0);
    await page.screenshot({ path: join(SHOT_DIR, 'ringfence-device.png'), fullPage: true });

    // The device link from the fleet page leads to the same page; the hash survives a reload.
    await page.reload();
    await page.locator('#device-history').waitFor();
    assert.equal(await text(page, '#device-name'), bad.name);
    await page.getByRole('link', { name: 'Fleet', exact: true }).click();
    await page.locator('#devices').waitFor();
    await page
      .locator(`#devices tr[data-device="${devs[0].name}"]`)
      .getByRole('link', { name: devs[0].name })
      .click();
    await page.locator('#device-history').waitFor();
    assert.equal(await text(page, '#device-name'), devs[0].name);

    assert.deepEqual(errors, []);
    await page.close();
  });
});

// Last of the file's top-level hooks: no child of this file may outlive its tests.
guardProcesses();
