// The shipped device build, dist/ringfence-agent.mjs on plain node (no tsx): built here, then driven as a device
// would run it: local commands with no server, and the daemon against a real server with a TUF root, enrolling,
// checking in and applying a verified release. Guards the bundle (lazy-loaded TUF code, node:http transport,
// server left out) against breaking silently.
import assert from 'node:assert/strict';
import { type ChildProcess, spawnSync } from 'node:child_process';
import { openSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { buildAgent } from '../scripts/build-agent.ts';
import { api } from '../src/cli/client.ts';
import { json, request, text } from '../src/net/http.ts';
import { TufRepository } from '../src/trust/signer/tuf-repository.ts';
import {
  activeRelease,
  enrollToken,
  GOOD,
  OLD,
  pin,
  publishReleases,
  report,
  seededDevice,
  settled,
  waitEnrolled,
} from './agent-harness.ts';
import { guardProcesses, killProcess, spawnGroup } from './helpers/processes.ts';
import { startTestServer, type TestServer, until } from './helpers/server.ts';

describe('device build: dist/ringfence-agent.mjs', { timeout: 300_000 }, () => {
  let bundle: string;
  let ts: TestServer;
  let content: string;
  let proc: ChildProcess | undefined;

  const run = (args: string[]) => {
    const r = spawnSync(process.execPath, [bundle, ...args], { encoding: 'utf8', timeout: 120_000 });
    return { code: r.status ?? -1, out: `${r.stdout}${r.stderr}` };
  };

  before(async () => {
    [bundle, ts] = await Promise.all([buildAgent({ quiet: true }), startTestServer()]);
    TufRepository.init(join(ts.dir, 'server'), { rootKeys: 1, rootThreshold: 1 });
    content = await publishReleases(ts, [OLD, GOOD]);
  });
  after(async () => {
    await killProcess(proc);
    await ts?.close();
  });

  it('is one self-contained ESM file with a node shebang and no server inside', () => {
    const text = readFileSync(bundle, 'utf8');
    assert.ok(text.startsWith('#!/usr/bin/env node\n'));
    // Checked with ok(), not doesNotMatch(): a failure would print the whole megabyte of bundle.
    const pkgImport = /(^|;)import\s*(\{[^}]*\}|[\w$]+|\*\s*as\s*[\w$]+)\s*from\s*["'](?!node:)[^"']+["']/m;
    assert.ok(!pkgImport.test(text), `imports a package: ${text.match(pkgImport)?.[0]}`);
    assert.ok(/(^|;)import\{[^}]*\}from"node:fs"/m.test(text), 'the import check sees static imports');
    assert.ok(!/fastify/i.test(text), 'the server is not bundled');
    const r = run(['--help']);
    assert.equal(r.code, 0, r.out);
    for (const c of ['status', 'boot-guard', 'rollback', 'pin', 'hold', 'apply-bundle'])
      assert.match(r.out, new RegExp(c));
  });

  it('runs the local commands and the daemon: enroll, check in, apply a TUF-verified release, stop on SIGTERM', async () => {
    const d = seededDevice(ts, content, 'shipped', await enrollToken(ts, 1), { probationMs: 300 });
    let r = run(['status', '--json', '--config', d.config]);
    assert.equal(r.code, 0, r.out);
    const st = JSON.parse(r.out) as { identity: string | null; components: Array<{ active: string }> };
    assert.equal(st.identity, null);
    assert.equal(st.components[0].active, OLD);
    r = run(['boot-guard', '--config', d.config]);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /sensor-content: nothing to guard; running 1\.0\.0/);
    r = run(['nope', '--config', d.config]);
    assert.notEqual(r.code, 0, 'an unknown command fails');

    const log = openSync(join(d.dir, 'agent.log'), 'a');
    proc = spawnGroup(process.execPath, [bundle, '--config', d.config], {
      stdio: ['ignore', log, log],
      env: { ...process.env, RINGFENCE_LOG_LEVEL: 'info' },
    });
    const id = await waitEnrolled(ts, d);
    // One check-in reached the server: it knows what the device runs, and that it verifies releases.
    const dev = await until(
      () =>
        api<{ components: Array<{ version: string; state: string; health: { trust?: string } }> }>(
          ts.conn,
          'GET',
          `/v1/admin/devices/${d.name}`,
        ),
      (v) => v.components.length > 0,
      120_000,
      'first check-in',
    );
    assert.equal(dev.components[0].version, OLD);
    assert.equal(dev.components[0].state, 'idle');
    assert.equal(dev.components[0].health.trust, 'verified', 'the TUF root was pinned at enrollment');

    await pin(ts, d, GOOD);
    const j = await settled(ts, d, id, GOOD);
    assert.equal(j.current, GOOD, readFileSync(join(d.dir, 'agent.log'), 'utf8').slice(-2000));
    assert.equal(activeRelease(d), GOOD);
    assert.equal((await report(ts, id, GOOD))[0].outcome, 'succeeded');

    const exited = new Promise<number | null>((res) => proc!.once('exit', (code) => res(code)));
    proc.kill('SIGTERM');
    assert.equal(await exited, 0, 'a clean stop on SIGTERM');
  });

  it('the node:http client follows redirects like fetch, drops credentials across origins, times out', async () => {
    const listen = async (h: Parameters<typeof createServer>[1]) => {
      const srv = createServer(h);
      await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
      return { srv, url: `http://127.0.0.1:${(srv.address() as { port: number }).port}` };
    };
    const other = await listen((req, res) =>
      res.end(JSON.stringify({ auth: req.headers.authorization ?? null })),
    );
    const servers: Server[] = [other.srv];
    try {
      const main = await listen((req, res) => {
        if (req.url === '/same') return res.writeHead(302, { location: '/echo' }).end();
        if (req.url === '/away') return res.writeHead(307, { location: `${other.url}/x` }).end();
        if (req.url === '/post') return res.writeHead(303, { location: '/echo' }).end();
        if (req.url === '/slow') return; // never answers
        let body = '';
        req.on('data', (c) => (body += c));
        req.on('end', () =>
          res.end(JSON.stringify({ method: req.method, auth: req.headers.authorization ?? null, body })),
        );
      });
      servers.push(main.srv);
      const auth = { authorization: 'Bearer secret' };
      assert.deepEqual(await json(await request(`${main.url}/same`, { headers: auth })), {
        method: 'GET',
        auth: 'Bearer secret',
        body: '',
      });
      assert.deepEqual(await json(await request(`${main.url}/away`, { headers: auth })), { auth: null });
      const posted = await json<{ method: string }>(
        await request(`${main.url}/post`, { method: 'POST', body: '{}', headers: auth }),
      );
      assert.equal(posted.method, 'GET', '303 continues as GET');
      const echoed = await request(`${main.url}/echo`, { method: 'POST', body: 'hello' });
      assert.equal(echoed.status, 200);
      assert.match(await text(echoed), /"body":"hello"/);
      await assert.rejects(request(`${main.url}/slow`, { timeoutMs: 200 }), /timed out/);
      await assert.rejects(request('http://127.0.0.1:1/'), /ECONNREFUSED/);
    } finally {
      for (const s of servers) {
        s.closeAllConnections();
        s.close();
      }
    }
  });
});

// Last of the file's top-level hooks: no child of this file may outlive its tests.
guardProcesses();
