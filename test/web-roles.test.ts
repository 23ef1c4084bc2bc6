// Operators and roles in the dashboard, in a real browser (Chromium via playwright-core) against a real server:
// the header names who is signed in and the role; a viewer cannot press Approve and a forced press shows the
// server's 403 reason with nothing changed; the importer / starter cannot approve its own (four eyes); an approver
// who is neither approves a release and an approval-gated wave from the page, and the server agrees.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { api, type Conn } from '../src/cli/client.ts';
import type { AuditEntry } from '../src/server/db/audit.ts';
import type { ReleaseView } from '../src/server/routes/admin-releases.ts';
import type { RolloutView } from '../src/server/routes/admin-rollouts.ts';
import { DEFAULT_WEB_DIR } from '../src/server/routes/web.ts';
import type { Governance } from '../src/web/types.ts';
import { launchChromium, NO_CHROMIUM } from './helpers/browser.ts';
import { guardProcesses } from './helpers/processes.ts';
import { enrollDevices } from './helpers/protocol-device.ts';
import { startTestServer, type TestServer, until } from './helpers/server.ts';

const ROOT = new URL('..', import.meta.url).pathname;

// One wave that needs an approval before anything is offered: the rollout waits for an approver at once.
const PLAN = `name: gated
first_wave_cap: 100%
waves:
  - name: prod
    select: env=prod
    size: 100%
    approval: true
`;

/** Whether the built dashboard knows about operators (a build from before them is rebuilt). */
function builtWithRoles(): boolean {
  if (!existsSync(join(DEFAULT_WEB_DIR, 'index.html'))) return false;
  const assets = join(DEFAULT_WEB_DIR, 'assets');
  return readdirSync(assets).some(
    (f) => f.endsWith('.js') && readFileSync(join(assets, f), 'utf8').includes('/v1/admin/whoami'),
  );
}

/** Uploads a one-file release as `conn` (the importer); not approved. */
async function importRelease(conn: Conn, component: string, version: string): Promise<void> {
  const up = await fetch(new URL('/v1/admin/blobs', conn.server), {
    method: 'POST',
    headers: { authorization: `Bearer ${conn.token}`, 'content-type': 'application/octet-stream' },
    body: `${component} ${version}\n`,
  });
  assert.equal(up.status, 200, await up.clone().text());
  const blob = (await up.json()) as { sha256: string; length: number };
  await api(conn, 'POST', '/v1/admin/releases', {
    component,
    version,
    artifacts: [{ name: 'c.txt', ...blob }],
  });
}

describe('dashboard roles in Chromium', {
  skip: NO_CHROMIUM,
  timeout: 300_000,
}, () => {
  let ts: TestServer;
  let browser: Browser;
  let admin: Conn;
  let viewer: Conn;
  let approver: Conn;
  let rolloutId: number;
  const errors: string[] = [];

  type Rollout = RolloutView & Governance;
  type Release = ReleaseView & Governance;
  const rollout = () => api<Rollout>(admin, 'GET', `/v1/admin/rollouts/${rolloutId}`);
  const releaseOf = async (ref: string) =>
    (await api<Release[]>(admin, 'GET', '/v1/admin/releases')).find(
      (r) => `${r.component}@${r.version}` === ref,
    );
  const auditAll = () => api<AuditEntry[]>(admin, 'GET', '/v1/admin/audit?limit=1000');

  before(async () => {
    if (!builtWithRoles()) execFileSync('npm', ['run', 'build:web'], { cwd: ROOT, stdio: 'pipe' });
    ts = await startTestServer({ governance: { fourEyes: true } });
    admin = ts.conn;
    const add = async (name: string, role: string): Promise<Conn> => {
      const r = await api<{ name: string; role: string; token: string }>(
        admin,
        'POST',
        '/v1/admin/operators',
        {
          name,
          role,
        },
      );
      assert.equal(r.role, role);
      return { server: ts.url, token: r.token };
    };
    viewer = await add('vera', 'viewer');
    approver = await add('alice', 'approver');

    await enrollDevices(ts.conn, [{ env: 'prod' }, { env: 'prod' }], 'sensor');
    // sensor@2: imported by admin, approved by alice (four eyes), rolled out by admin through the gated plan.
    await importRelease(admin, 'sensor', '2');
    await api(approver, 'POST', '/v1/admin/releases/sensor@2/approve', {});
    await api(admin, 'POST', '/v1/admin/plans', { source: PLAN });
    rolloutId = (
      await api<Rollout>(admin, 'POST', '/v1/admin/rollouts', { release: 'sensor@2', plan: 'gated' })
    ).id;
    await until(rollout, (r) => r.status === 'awaiting-approval', 60_000, 'the gated wave awaiting approval');
    // sensor@3: imported by admin, waiting for an approver other than admin.
    await importRelease(admin, 'sensor', '3');

    browser = await launchChromium();
  });

  after(async () => {
    await browser?.close();
    await ts?.close();
  });

  async function signIn(token: string): Promise<Page> {
    const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
    page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
    page.on('console', (m) => {
      // A refusal the test provokes (403) is expected in the network log; anything else is a fault.
      if (m.type() === 'error' && !/403/.test(m.text())) errors.push(`console: ${m.text()}`);
    });
    await page.goto(`${ts.url}/`);
    await page.locator('input[name=token]').fill(token);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator('#whoami').waitFor();
    return page;
  }

  const text = (page: Page, sel: string) =>
    // biome-ignore lint/performance/useDomNodeTextContent: what a person sees is what is under test
    page.locator(sel).innerText();

  /**
   * Presses a disabled button anyway, as someone with the browser's developer tools could: React ignores clicks on
   * a disabled button, so its click handler is called directly. The server must refuse, and the page say why.
   */
  async function forcePress(page: Page, selector: string): Promise<void> {
    await page.locator(selector).evaluate((b) => {
      const key = Object.keys(b).find((k) => k.startsWith('__reactProps$'));
      if (!key) throw new Error('no React props on the button');
      (b as unknown as Record<string, { onClick: () => void }>)[key].onClick();
    });
  }

  it('the server side this page relies on answers as the spec says', async () => {
    const who = await api<{ name: string; role: string; permissions: string[] }>(
      viewer,
      'GET',
      '/v1/admin/whoami',
    );
    assert.deepEqual([who.name, who.role, who.permissions], ['vera', 'viewer', ['read']]);
    assert.deepEqual((await rollout()).awaiting_approval?.by_anyone_but, 'admin');
    assert.deepEqual((await releaseOf('sensor@3'))?.awaiting_approval?.by_anyone_but, 'admin');
  });

  it('a viewer sees who is waiting for whom, cannot press Approve, and a forced press shows the 403', async () => {
    const page = await signIn(viewer.token);
    assert.equal(await text(page, '#whoami-name'), 'vera');
    assert.equal(await text(page, '#whoami-role'), 'viewer');

    await page.goto(`${ts.url}/#/rollouts/${rolloutId}`);
    await page.locator('#rollout-awaiting').waitFor();
    assert.match(await text(page, '#rollout-awaiting'), /needs an approver other than admin/);
    const approve = page.locator('#btn-approve');
    assert.equal(await approve.isDisabled(), true, 'a viewer cannot press Approve');
    assert.match((await approve.getAttribute('title')) ?? '', /Needs role approver or admin/);
    assert.equal(await page.locator('#btn-pause').isDisabled(), true);
    assert.match((await page.locator('#btn-pause').getAttribute('title')) ?? '', /operator or admin/);

    const auditBefore = (await auditAll()).length;
    await forcePress(page, '#btn-approve');
    await page.locator('#action-error').waitFor();
    assert.match(
      await text(page, '#action-error'),
      /^Not allowed: role viewer may not .+ \(needs approver or admin\)$/,
      "the server's one-line reason, as it said it",
    );
    // The same refusal for a request made from the page with the viewer's token, and nothing changed.
    const forced = await page.evaluate(async () => {
      const res = await fetch('/v1/admin/releases/sensor@3/approve', {
        method: 'POST',
        headers: {
          authorization: `Bearer ${sessionStorage.getItem('ringfence.adminToken')}`,
          'content-type': 'application/json',
        },
        body: '{}',
      });
      return { status: res.status, body: (await res.json()) as { error: string; message: string } };
    });
    assert.equal(forced.status, 403);
    assert.equal(forced.body.error, 'forbidden');
    assert.equal((await rollout()).status, 'awaiting-approval');
    assert.equal((await releaseOf('sensor@3'))?.approved, false);
    assert.equal((await auditAll()).length, auditBefore, 'a refusal writes nothing');

    // The release list: sensor@3 waits for someone other than admin; the viewer's Approve is disabled too.
    await page.getByRole('link', { name: 'Rollouts', exact: true }).click();
    const row = page.locator('#releases tr[data-release="sensor@3"]');
    await row.waitFor();
    assert.match(
      await text(page, '#releases tr[data-release="sensor@3"]'),
      /needs an approver other than admin/,
    );
    assert.equal(await row.getByRole('button', { name: 'Approve' }).isDisabled(), true);
    await forcePress(page, '#releases tr[data-release="sensor@3"] button');
    await page.locator('#release-error').waitFor();
    assert.match(
      await text(page, '#release-error'),
      /^Not allowed: role viewer may not .+\(needs approver or admin\)/,
    );
    assert.equal((await releaseOf('sensor@3'))?.approved, false);
    assert.equal(await page.locator('#stop-all').isDisabled(), true, 'no kill switch for a viewer');

    // Sign out forgets the token.
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.locator('input[name=token]').waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.length), 0);
    await page.close();
  });

  it('the admin who imported and started them may not approve its own (four eyes)', async () => {
    const page = await signIn(admin.token);
    assert.equal(await text(page, '#whoami-name'), 'admin');
    assert.equal(await text(page, '#whoami-role'), 'admin');
    await page.goto(`${ts.url}/#/rollouts/${rolloutId}`);
    const approve = page.locator('#btn-approve');
    await approve.waitFor();
    assert.equal(await approve.isDisabled(), true);
    assert.equal(await approve.getAttribute('data-blocked'), 'four-eyes');
    assert.match((await approve.getAttribute('title')) ?? '', /Four eyes: admin may not approve/);
    assert.equal(await page.locator('#btn-pause').isEnabled(), true, 'the admin may still pause');
    await page.getByRole('link', { name: 'Rollouts', exact: true }).click();
    const button = page.locator('#releases tr[data-release="sensor@3"] button');
    await button.waitFor();
    assert.equal(await button.isDisabled(), true);
    assert.equal(await button.getAttribute('data-blocked'), 'four-eyes');
    await page.close();
  });

  it('an approver who did not import or start them approves both from the page, and the server agrees', async () => {
    const page = await signIn(approver.token);
    assert.equal(await text(page, '#whoami-name'), 'alice');
    assert.equal(await text(page, '#whoami-role'), 'approver');

    await page.goto(`${ts.url}/#/rollouts/${rolloutId}`);
    const approve = page.locator('#btn-approve');
    await approve.waitFor();
    assert.equal(await page.locator('#btn-pause').isDisabled(), true, 'an approver does not operate');
    assert.equal(await approve.isEnabled(), true);
    await approve.click();
    await until(rollout, (r) => r.status !== 'awaiting-approval', 60_000, 'the wave approved');
    await page.locator('#rollout-awaiting').waitFor({ state: 'detached', timeout: 60_000 });
    const audit = await auditAll();
    assert.ok(
      audit.some((e) => e.actor === 'alice' && e.subject.includes(String(rolloutId))),
      `the audit log names alice: ${JSON.stringify(audit.slice(-3))}`,
    );

    await page.getByRole('link', { name: 'Rollouts', exact: true }).click();
    const button = page.locator('#releases tr[data-release="sensor@3"] button');
    await button.waitFor();
    assert.equal(await button.isEnabled(), true);
    await button.click();
    await page.locator('#release-done').waitFor();
    const rel = await releaseOf('sensor@3');
    assert.equal(rel?.approved, true, 'the server agrees');
    assert.equal(rel?.approved_by, 'alice');
    await page.locator('#releases tr[data-release="sensor@3"] button').waitFor({ state: 'detached' });

    assert.deepEqual(errors, []);
    await page.close();
  });
});

// Last of the file's top-level hooks: no child of this file may outlive its tests.
guardProcesses();
