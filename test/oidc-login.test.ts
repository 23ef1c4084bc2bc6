// The client sides of single sign-on, end to end against a real OpenID provider (oidc-provider on loopback) and
// a real server with `oidc:` configured: `ringfence login --sso` as a real process (device flow; Chromium enters
// the code and signs in at the provider) and the dashboard's "Sign in with SSO" (code flow; the token comes back
// in the URL fragment, which the page takes and removes from the address bar).
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer as netServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import pino from 'pino';
import type { Browser, Page } from 'playwright-core';
import { api, type Conn } from '../src/cli/client.ts';
import { BIN } from '../src/demo/fleet.ts';
import { createServer, type RunningServer } from '../src/server/app.ts';
import { DEFAULT_WEB_DIR } from '../src/server/routes/web.ts';
import { launchChromium, NO_CHROMIUM } from './helpers/browser.ts';
import {
  completeLogin,
  offline,
  oidcOptions,
  type RunningIdp,
  startIdp,
  verifyDevice,
} from './helpers/oidc.ts';
import { guardProcesses, killProcess, spawnGroup } from './helpers/processes.ts';
import { startTestServer } from './helpers/server.ts';

const run = promisify(execFile);
const ROOT = new URL('..', import.meta.url).pathname;
const SESSION_HOURS = 8;

/** Whether the built dashboard has the SSO sign-in (a build from before it is rebuilt). */
function builtWithSso(): boolean {
  if (!existsSync(join(DEFAULT_WEB_DIR, 'index.html'))) return false;
  const assets = join(DEFAULT_WEB_DIR, 'assets');
  return readdirSync(assets).some(
    (f) => f.endsWith('.js') && readFileSync(join(assets, f), 'utf8').includes('/v1/auth/oidc/login'),
  );
}

/** A free loopback port: the server's callback URL must be known before the provider (its redirect URI) starts. */
function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = netServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => res(port));
    });
  });
}

describe('single sign-on clients: ringfence login --sso and the dashboard (real IdP, real server, Chromium)', {
  skip: NO_CHROMIUM,
  timeout: 300_000,
}, () => {
  let idp: RunningIdp;
  let srv: RunningServer;
  let url: string;
  let dir: string;
  let admin: Conn;
  let browser: Browser;
  const procs: ChildProcess[] = [];
  const errors: string[] = [];

  before(async () => {
    if (!builtWithSso()) execFileSync('npm', ['run', 'build:web'], { cwd: ROOT, stdio: 'pipe' });
    const port = await freePort();
    url = `http://127.0.0.1:${port}`;
    const callback = `${url}/v1/auth/oidc/callback`;
    idp = await startIdp({
      accounts: {
        alice: ['staff', 'ringfence-approvers'],
        vera: ['ringfence-viewers'],
        bob: ['staff'],
        admin: ['ringfence-admins'],
      },
      redirectUris: [callback],
    });
    const oidc = oidcOptions(idp.issuer, callback, idp.clientId, SESSION_HOURS);
    // As test/helpers/server.ts does, but on the port the provider already knows as the redirect URI.
    dir = mkdtempSync(join(tmpdir(), 'rf-oidc-login-'));
    srv = await createServer({
      dataDir: join(dir, 'server'),
      logger: pino({ level: 'silent' }),
      pollSeconds: 1,
      tickMs: 50,
      governance: { fourEyes: false },
      oidc,
    });
    await srv.app.listen({ host: '127.0.0.1', port });
    admin = { server: url, token: srv.newAdminToken! };
    browser = await launchChromium();
  });

  after(async () => {
    for (const p of procs) await killProcess(p);
    await browser?.close();
    await srv?.close();
    await idp?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const text = (page: Page, sel: string) =>
    // biome-ignore lint/performance/useDomNodeTextContent: what a person sees is what is under test
    page.locator(sel).innerText();

  async function newPage(): Promise<Page> {
    const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
    await offline(page);
    page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
    return page;
  }

  /**
   * `ringfence login --sso` as its own process: waits for "Open URI and enter code CODE" on its stderr, lets
   * Chromium complete the verification as `login`, and returns how the process ended.
   */
  async function cliLogin(
    login: string,
    extra: string[] = [],
  ): Promise<{ code: number | null; stdout: string; stderr: string }> {
    const p = spawnGroup(process.execPath, [BIN, 'login', '--sso', '--server', url, ...extra], {
      env: { ...process.env, RINGFENCE_TOKEN: '', RINGFENCE_SERVER: '' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    procs.push(p);
    let stdout = '';
    let stderr = '';
    const exited = new Promise<number | null>((res) => p.once('exit', (code) => res(code)));
    p.stdout!.on('data', (d) => (stdout += d));
    const prompt = new Promise<{ uri: string; code: string }>((res, rej) => {
      p.stderr!.on('data', (d) => {
        stderr += d;
        // The prompt ends with the "Waiting" line.
        const m = /^Open (\S+) and enter code (\S+)$[\s\S]*^Waiting for the sign-in/m.exec(stderr);
        if (m) res({ uri: m[1], code: m[2] });
      });
      void exited.then((c) => rej(new Error(`login exited ${c} before prompting: ${stdout}${stderr}`)));
    });
    const { uri, code } = await prompt;
    assert.match(code, /^[A-Z]{4}-[A-Z]{4}$/);
    assert.match(stderr, new RegExp(`^\\(or open ${uri}\\?user_code=${code}\\)$`, 'm'));
    const page = await newPage();
    try {
      await verifyDevice(page, uri, code, login);
    } finally {
      await page.close();
    }
    return { code: await exited, stdout, stderr };
  }

  async function whoami(token: string) {
    const r = await run(process.execPath, [BIN, 'whoami', '--json'], {
      env: { ...process.env, RINGFENCE_SERVER: url, RINGFENCE_TOKEN: token },
    });
    return JSON.parse(r.stdout) as { name: string; role: string; token: string; actor: string };
  }

  const operators = () =>
    api<{ operators: Array<{ name: string; role: string; created_by: string }> }>(
      admin,
      'GET',
      '/v1/admin/operators',
    );

  it('the server answers what the clients rely on', async () => {
    const info = await (await fetch(`${url}/v1/auth/oidc`)).json();
    assert.equal(info.enabled, true);
    assert.equal(info.issuer, idp.issuer);
    assert.equal(info.client_id, 'ringfence');
    assert.equal(info.device_flow, true);
    assert.equal(info.dashboard, true);
  });

  it('ringfence login --sso --json: the device flow as alice yields a working approver token', async () => {
    const before = Date.now();
    const r = await cliLogin('alice', ['--json']);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { name: string; role: string; token: string; expires_at: number };
    assert.deepEqual(Object.keys(out).sort(), ['expires_at', 'name', 'role', 'token']);
    assert.equal(out.name, 'alice');
    assert.equal(out.role, 'approver');
    assert.match(out.token, /^rfop_/);
    const lifetime = out.expires_at - before;
    assert.ok(lifetime > (SESSION_HOURS - 0.1) * 3_600_000 && lifetime <= SESSION_HOURS * 3_600_000 + 60_000);
    assert.doesNotMatch(r.stderr, new RegExp(out.token), 'the token goes to stdout only');

    const me = await whoami(out.token);
    assert.equal(me.name, 'alice');
    assert.equal(me.role, 'approver');
    assert.equal(me.token, 'oidc');
    assert.equal(me.actor, 'alice/oidc');
    const alice = (await operators()).operators.find((o) => o.name === 'alice');
    assert.deepEqual([alice?.role, alice?.created_by], ['approver', 'oidc']);
  });

  it('without --json the token is alone on stdout; a user with no mapped group exits 3 with one line', async () => {
    // Two independent logins side by side: each waits for the provider's polling interval.
    const [plain, bob] = await Promise.all([cliLogin('alice'), cliLogin('bob')]);
    assert.equal(plain.code, 0, plain.stderr);
    assert.match(plain.stdout, /^rfop_\S+\n$/, 'export RINGFENCE_TOKEN=$(ringfence login --sso) works');
    assert.match(plain.stderr, /signed in as alice \(role approver\)/);
    assert.equal((await whoami(plain.stdout.trim())).actor, 'alice/oidc');

    assert.equal(bob.code, 3, `${bob.stdout}${bob.stderr}`);
    assert.equal(bob.stdout, '', 'nothing on stdout when refused');
    const last = bob.stderr.trim().split('\n').at(-1) ?? '';
    assert.match(last, /^ringfence: .*403 no Ringfence role for bob \(claim groups: staff\)$/);
    assert.ok(!(await operators()).operators.some((o) => o.name === 'bob'), 'nothing created for bob');
  });

  it('a server without oidc: login --sso exits 1 with one line, and no SSO button', async () => {
    const plain = await startTestServer();
    try {
      const r = await run(process.execPath, [BIN, 'login', '--sso', '--server', plain.url]).then(
        () => assert.fail('login --sso succeeded without SSO'),
        (e: { code: number; stdout: string; stderr: string }) => e,
      );
      assert.equal(r.code, 1);
      assert.equal(r.stdout, '');
      assert.match(
        r.stderr,
        /^ringfence: single sign-on is not configured on http:\S+ \(oidc: in server\.yaml\)\n$/,
      );
      const page = await newPage();
      // The page asks the server whether it offers SSO, and is told no.
      const asked = page.waitForResponse((res) => new URL(res.url()).pathname === '/v1/auth/oidc');
      await page.goto(`${plain.url}/`);
      assert.deepEqual(await (await asked).json(), { enabled: false });
      await page.locator('input[name=token]').waitFor();
      assert.equal(await page.locator('#sso-login').count(), 0);
      await page.close();
    } finally {
      await plain.close();
    }
  });

  it('the dashboard: "Sign in with SSO" as vera lands signed in as a viewer who cannot approve', async () => {
    // Something waiting for an approver, imported by admin.
    const up = await fetch(`${url}/v1/admin/blobs`, {
      method: 'POST',
      headers: { authorization: `Bearer ${admin.token}`, 'content-type': 'application/octet-stream' },
      body: 'sensor 3\n',
    });
    assert.equal(up.status, 200);
    await api(admin, 'POST', '/v1/admin/releases', {
      component: 'sensor',
      version: '3',
      artifacts: [{ name: 'c.txt', ...((await up.json()) as object) }],
    });

    const page = await newPage();
    await page.goto(`${url}/`);
    await page.getByRole('button', { name: 'Sign in with SSO', exact: true }).click();
    await completeLogin(page, 'vera');
    await page.locator('#whoami').waitFor();
    assert.equal(await text(page, '#whoami-name'), 'vera');
    assert.equal(await text(page, '#whoami-role'), 'viewer');
    // The token came in the fragment and is gone from the address bar; it lives in sessionStorage.
    const where = await page.evaluate(() => ({
      href: window.location.href,
      saved: sessionStorage.getItem('ringfence.adminToken'),
    }));
    assert.doesNotMatch(where.href, /token=/);
    assert.match(where.saved ?? '', /^rfop_/);
    assert.equal((await whoami(where.saved!)).actor, 'vera/oidc');

    await page.getByRole('link', { name: 'Rollouts', exact: true }).click();
    const row = page.locator('#releases tr[data-release="sensor@3"]');
    await row.waitFor();
    const approve = row.getByRole('button', { name: 'Approve' });
    assert.equal(await approve.isDisabled(), true, 'a viewer cannot press Approve');
    assert.match((await approve.getAttribute('title')) ?? '', /Needs role approver or admin/);
    await page.close();
  });

  it('the dashboard: a refused SSO sign-in comes back as #sso_error and is shown on the sign-in page', async () => {
    let page = await newPage();
    await page.goto(`${url}/`);
    await page.getByRole('button', { name: 'Sign in with SSO', exact: true }).click();
    // admin is a local operator: SSO may not take it over.
    await completeLogin(page, 'admin');
    const shown = page.locator('#sso-error');
    await shown.waitFor();
    const said = await text(page, '#sso-error');
    assert.equal(said, 'Single sign-on failed: operator admin exists locally; SSO may not take it over');
    assert.doesNotMatch(page.url(), /sso_error/, 'the fragment is removed from the address bar');
    assert.equal(await page.locator('#whoami').count(), 0, 'not signed in');

    await page.close();

    // A fragment as the server writes it, opened directly (a fresh page: the same page would only change its
    // hash, not load): shown as one line, and gone from the address.
    page = await newPage();
    await page.goto(
      `${url}/#sso_error=${encodeURIComponent('no Ringfence role for bob (claim groups: staff)')}`,
    );
    await page.locator('#sso-error').waitFor();
    assert.match(await text(page, '#sso-error'), /no Ringfence role for bob \(claim groups: staff\)$/);
    assert.equal(new URL(page.url()).hash, '');
    // Shown once: after a reload the error is gone.
    await page.reload();
    await page.getByRole('button', { name: 'Sign in with SSO', exact: true }).waitFor();
    assert.equal(await page.locator('#sso-error').count(), 0);
    await page.close();
    assert.deepEqual(errors, []);
  });
});

guardProcesses();
