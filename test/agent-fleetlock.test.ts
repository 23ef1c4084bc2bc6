// Reboot coordination with real agent processes: components marked `reboot: true` activate only while the device
// holds a FleetLock slot. The FleetLock server is written here (node:http, the protocol exactly: pre-reboot and
// steady-state, `fleet-lock-protocol: true`, a shared secret header); the Ringfence server is the real one.
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, request, type ServerResponse } from 'node:http';
import { join } from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import type { SpawnedDevice } from '../src/demo/fleet.ts';
import {
  activeRelease,
  BAD,
  enrollToken,
  GOOD,
  journalOf,
  kill,
  OLD,
  pausedAt,
  pin,
  publishReleases,
  report,
  ringfence,
  seededDevice,
  settled,
  start,
  waitEnrolled,
} from './agent-harness.ts';
import { allSettled, killTracked } from './helpers/processes.ts';
import { startTestServer, type TestServer, until } from './helpers/server.ts';

const GROUP = 'rack-7';
const SECRET = 'lock-s3cret';

interface LockEvent {
  at: number;
  kind: 'grant' | 'refuse' | 'release';
  id: string;
  group: string;
}

/** A FleetLock server: `slots` per group; every answer is recorded with its time. */
async function startFleetLock(slots: number) {
  const holders = new Map<string, Set<string>>();
  const events: LockEvent[] = [];
  const rejected: string[] = []; // requests refused for a missing header or secret
  const held = (g: string) => {
    if (!holders.has(g)) holders.set(g, new Set());
    return holders.get(g)!;
  };
  const handler = (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const send = (status: number, body: unknown) => {
        const b = Buffer.from(JSON.stringify(body));
        res.writeHead(status, { 'content-type': 'application/json', 'content-length': b.length }).end(b);
      };
      if (req.method !== 'POST') return send(405, { kind: 'method', value: 'POST only' });
      if (req.headers['fleet-lock-protocol'] !== 'true') {
        rejected.push('header');
        return send(400, { kind: 'missing_header', value: 'fleet-lock-protocol: true required' });
      }
      if (req.headers['x-lock-secret'] !== SECRET) {
        rejected.push('secret');
        return send(403, { kind: 'forbidden', value: 'bad secret' });
      }
      let p: { client_params?: { id?: unknown; group?: unknown } };
      try {
        p = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch {
        return send(400, { kind: 'bad_body', value: 'not JSON' });
      }
      const id = p.client_params?.id;
      const group = p.client_params?.group;
      if (typeof id !== 'string' || typeof group !== 'string')
        return send(400, { kind: 'bad_body', value: 'client_params.id and .group required' });
      const h = held(group);
      if (req.url === '/v1/pre-reboot') {
        if (h.has(id) || h.size < slots) {
          h.add(id);
          events.push({ at: Date.now(), kind: 'grant', id, group });
          return send(200, {});
        }
        events.push({ at: Date.now(), kind: 'refuse', id, group });
        return send(409, { kind: 'failed_lock', value: `all ${slots} semaphore slots are locked` });
      }
      if (req.url === '/v1/steady-state') {
        if (h.delete(id)) events.push({ at: Date.now(), kind: 'release', id, group });
        return send(200, {});
      }
      send(404, { kind: 'not_found', value: String(req.url) });
    });
  };
  const srv = createServer(handler);
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(srv.address() as { port: number }).port}`,
    events,
    rejected,
    holders: held,
    close: () =>
      new Promise<void>((r) => {
        srv.closeAllConnections();
        srv.close(() => r());
      }),
  };
}

/**
 * A proxy in front of the Ringfence server that rewrites check-in answers: `pass` as is, `drop` without this
 * component's offer, `dup` with it twice (an erroneous offer). `seen` counts the answers sent in each mode.
 */
async function startCheckinProxy(target: string, component: string) {
  const state = { mode: 'pass' as 'pass' | 'drop' | 'dup', seen: { pass: 0, drop: 0, dup: 0 } };
  const srv = createServer((req, res) => {
    const up = request(new URL(req.url ?? '/', target), { method: req.method, headers: req.headers }, (r) => {
      if ((req.url ?? '').split('?')[0] !== '/v1/checkin' || r.statusCode !== 200) {
        res.writeHead(r.statusCode ?? 502, r.headers);
        r.pipe(res);
        return;
      }
      const chunks: Buffer[] = [];
      r.on('data', (c: Buffer) => chunks.push(c));
      r.on('end', () => {
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { desired?: unknown[] };
        const mode = state.mode;
        const mine = (body.desired ?? []).filter(
          (o) => (o as { component?: string }).component === component,
        );
        if (mode === 'drop') body.desired = (body.desired ?? []).filter((o) => !mine.includes(o));
        if (mode === 'dup') body.desired = [...(body.desired ?? []), ...mine];
        state.seen[mode]++;
        const b = Buffer.from(JSON.stringify(body));
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': b.length }).end(b);
      });
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return Object.assign(state, {
    url: `http://127.0.0.1:${(srv.address() as { port: number }).port}`,
    close: () =>
      new Promise<void>((r) => {
        srv.closeAllConnections();
        srv.close(() => r());
      }),
  });
}

/** A seeded device whose component reboots: hooks log when activation starts and ends (wall-clock ms). */
function rebootDevice(
  ts: TestServer,
  content: string,
  name: string,
  token: string,
  lockUrl: string,
  maxAttempts = 3,
  server?: string,
): SpawnedDevice {
  const d = seededDevice(ts, content, name, token, {
    edit: (cfg) => {
      if (server) cfg.server = server;
      const log = join(ts.dir, 'devices', name, 'activations.log');
      (cfg.labels as Record<string, string>)['fleet-lock-group'] = GROUP;
      cfg.fleet_lock = {
        url: lockUrl,
        secret_header: { name: 'X-Lock-Secret', value_file: './lock-secret' },
      };
      const [comp] = cfg.components as Array<Record<string, unknown>>;
      comp.reboot = true;
      comp.max_attempts = maxAttempts;
      comp.hooks = {
        // The "reboot" takes a while: another device activating meanwhile would show as overlap.
        before_activate: `echo "start $(date +%s%3N)" >> ${log}; sleep 0.3`,
        after_activate: `echo "end $(date +%s%3N)" >> ${log}`,
      };
    },
  });
  writeFileSync(join(d.dir, 'lock-secret'), `${SECRET}\n`);
  return d;
}

function activations(d: SpawnedDevice): Array<{ kind: string; at: number }> {
  const f = join(d.dir, 'activations.log');
  if (!existsSync(f)) return [];
  return readFileSync(f, 'utf8')
    .trim()
    .split('\n')
    .map((l) => {
      const [kind, at] = l.split(' ');
      return { kind, at: Number(at) };
    });
}

describe('agent FleetLock (reboot: true)', () => {
  let ts: TestServer;
  let content: string;
  let lock: Awaited<ReturnType<typeof startFleetLock>>;

  before(async () => {
    ts = await startTestServer();
    content = await publishReleases(ts);
    lock = await startFleetLock(1);
  });
  after(async () => {
    await lock.close();
    await ts.close();
  });
  afterEach(async () => {
    await killTracked();
    lock.holders(GROUP).clear(); // a failed test's stand-in holder must not starve the next one
  });

  it('waits staged while no slot is free, then activates one device at a time', async () => {
    // An operator's maintenance holds the only slot: both devices must wait, staged, without activating.
    lock.holders(GROUP).add('maintenance');
    const token = await enrollToken(ts, 2);
    const devices = [
      rebootDevice(ts, content, 'fl-a', token, lock.url),
      rebootDevice(ts, content, 'fl-b', token, lock.url),
    ];
    for (const d of devices) start(d);
    const ids = await Promise.all(devices.map((d) => waitEnrolled(ts, d)));
    for (const d of devices) await pin(ts, d, GOOD);
    for (const [i, d] of devices.entries())
      await until(
        async () => ({ j: journalOf(d), refusals: lock.events.filter((e) => e.id === ids[i]).length }),
        (v) => v.j.txn?.phase === 'staged' && !!v.j.slotWait && v.refusals >= 2,
        120_000,
        `${d.name} waiting for a slot (asked twice)`,
      );
    for (const d of devices) {
      assert.deepEqual(activations(d), [], `${d.name} activated without a slot`);
      const s = ringfence(['agent', 'status', '--config', d.config, '--json']);
      assert.equal(s.code, 0, s.out);
      const c = (JSON.parse(s.out) as { components: Array<{ waiting: string | null; active: string }> })
        .components[0];
      assert.match(c.waiting ?? '', /waiting for a reboot slot .*failed_lock/);
      assert.equal(c.active, OLD);
    }
    // The server sees why too: the component's health in the check-in says it waits for a slot.
    await until(
      () =>
        ts.srv.ctx.store.db
          .selectFrom('device_components')
          .select(['device_id', 'health'])
          .where('component', '=', 'sensor-content')
          .where('device_id', 'in', ids)
          .execute(),
      (rows) => rows.filter((r) => /waiting for a reboot slot/.test(String(r.health))).length === 2,
      60_000,
      'the server seeing both devices wait for a slot',
    );

    lock.holders(GROUP).delete('maintenance');
    await allSettled(devices.map((d, i) => settled(ts, d, ids[i], GOOD)));
    assert.deepEqual(lock.rejected, [], 'every request carried the protocol header and the secret');
    // Each device's activation lies inside its own slot, and the slots (one at a time) never overlap.
    const spans = devices.map((d, i) => {
      const grant = lock.events.find((e) => e.id === ids[i] && e.kind === 'grant');
      const release = lock.events.find((e) => e.id === ids[i] && e.kind === 'release');
      assert.ok(grant && release, `${d.name}: granted and released (${JSON.stringify(lock.events)})`);
      assert.equal(grant.group, GROUP);
      const acts = activations(d);
      assert.deepEqual(
        acts.map((a) => a.kind),
        ['start', 'end'],
        `${d.name} activated once`,
      );
      assert.ok(acts[0].at >= grant.at, `${d.name} started activating before its slot was granted`);
      assert.ok(acts[1].at <= release.at, `${d.name} finished activating after giving the slot back`);
      assert.equal(journalOf(d).slot ?? null, null, `${d.name}: journal still records a slot`);
      return { start: acts[0].at, end: release.at };
    });
    const [x, y] = spans.sort((p, q) => p.start - q.start);
    assert.ok(x.end <= y.start, `activations overlap: ${JSON.stringify(spans)}`);
    assert.equal(lock.holders(GROUP).size, 0, 'every slot given back');
  });

  it('gives the slot back after a failing health check rolls the release back', async () => {
    const token = await enrollToken(ts, 1);
    const d = rebootDevice(ts, content, 'fl-bad', token, lock.url);
    start(d);
    const id = await waitEnrolled(ts, d);
    const before = lock.events.length;
    await pin(ts, d, BAD);
    const j = await settled(ts, d, id, BAD);
    assert.equal(j.current, OLD);
    assert.ok(j.quarantined.includes(BAD));
    await until(
      async () => lock.events.slice(before).map((e) => `${e.kind} ${e.id}`),
      (ev) => ev.includes(`release ${id}`),
      60_000,
      'slot released after the rollback',
    );
    const ev = lock.events.slice(before).filter((e) => e.id === id);
    assert.deepEqual(
      ev.map((e) => e.kind),
      ['grant', 'release'],
    );
    assert.equal(lock.holders(GROUP).has(id), false);
    assert.equal(journalOf(d).slot ?? null, null);
  });

  it('a slot held when the agent is SIGKILLed is kept across the crash and given back after it finishes', async () => {
    const token = await enrollToken(ts, 1);
    const d = rebootDevice(ts, content, 'fl-crash', token, lock.url);
    start(d, 'probation');
    const id = await waitEnrolled(ts, d);
    await pin(ts, d, GOOD);
    await pausedAt(d, 'probation');
    assert.equal(journalOf(d).slot?.state, 'held', 'the journal records the slot across the reboot');
    await kill(d);
    assert.ok(lock.holders(GROUP).has(id), 'the slot is still held after the crash');
    start(d);
    const j = await settled(ts, d, id, GOOD);
    assert.equal(j.current, GOOD);
    await until(
      async () => lock.holders(GROUP).has(id),
      (h) => !h,
      60_000,
      'slot released after the restart finished the transaction',
    );
    assert.equal(journalOf(d).slot ?? null, null);
  });

  it('SIGKILLed on probation while its slot expired and went to another node: judged only, never re-activated', async () => {
    const token = await enrollToken(ts, 1);
    const d = rebootDevice(ts, content, 'fl-expired', token, lock.url);
    start(d, 'probation');
    const id = await waitEnrolled(ts, d);
    await pin(ts, d, GOOD);
    await pausedAt(d, 'probation');
    await kill(d);
    assert.deepEqual(
      activations(d).map((a) => a.kind),
      ['start', 'end'],
    );
    // The lease ran out while the device was down, and the only slot went to another node.
    lock.holders(GROUP).delete(id);
    lock.holders(GROUP).add('other-node');
    const before = lock.events.length;
    start(d);
    const j = await settled(ts, d, id, GOOD);
    assert.equal(j.current, GOOD);
    assert.equal(activeRelease(d), GOOD);
    // Re-running activation (with `activate: systemctl reboot`: rebooting) without the slot would put two
    // nodes of a one-slot group mid-reboot at once; the release was already active, so it was only judged.
    assert.deepEqual(
      activations(d).map((a) => a.kind),
      ['start', 'end'],
      'activation re-run after the crash without a slot',
    );
    assert.deepEqual(
      lock.events.slice(before).filter((e) => e.id === id && e.kind === 'grant'),
      [],
      'no slot taken from the other node',
    );
    assert.deepEqual([...lock.holders(GROUP)], ['other-node']);
  });

  it('SIGKILLed before the switch while its slot went to another node: asks again, waits, activates once free', async () => {
    const token = await enrollToken(ts, 1);
    const d = rebootDevice(ts, content, 'fl-regrant', token, lock.url);
    start(d, 'activating');
    const id = await waitEnrolled(ts, d);
    await pin(ts, d, GOOD);
    await pausedAt(d, 'activating');
    await kill(d);
    assert.deepEqual(activations(d), []);
    lock.holders(GROUP).delete(id);
    lock.holders(GROUP).add('other-node');
    const before = lock.events.length;
    const mine = () => lock.events.slice(before).filter((e) => e.id === id);
    start(d);
    // Recovery asks before activating again, is refused, and waits in its phase; a check-in asks again.
    await until(
      async () => ({ j: journalOf(d), refused: mine().filter((e) => e.kind === 'refuse').length }),
      (v) => v.j.txn?.phase === 'activating' && !!v.j.slotWait && v.refused >= 2,
      120_000,
      `${d.name} waiting for the slot after recovery (asked twice)`,
    );
    assert.deepEqual(activations(d), [], 'activated while another node held the only slot');
    assert.equal(activeRelease(d), OLD);
    const s = ringfence(['agent', 'status', '--config', d.config, '--json']);
    assert.equal(s.code, 0, s.out);
    const c = (JSON.parse(s.out) as { components: Array<{ waiting: string | null }> }).components[0];
    assert.match(c.waiting ?? '', /waiting for a reboot slot .*failed_lock/);

    lock.holders(GROUP).delete('other-node');
    const j = await settled(ts, d, id, GOOD);
    assert.equal(j.current, GOOD);
    const grant = mine().find((e) => e.kind === 'grant');
    const release = mine().find((e) => e.kind === 'release');
    assert.ok(grant && release, JSON.stringify(mine()));
    const acts = activations(d);
    assert.deepEqual(
      acts.map((a) => a.kind),
      ['start', 'end'],
    );
    assert.ok(acts[0].at >= grant.at, 'activation started before the slot was granted again');
    assert.ok(acts[1].at <= release.at, 'slot given back before activation ended');
    assert.equal(journalOf(d).slot ?? null, null);
  });

  it('a check-in without the offer (or with an erroneous one) keeps the staged release and asks for no slot', async () => {
    const proxy = await startCheckinProxy(ts.url, 'sensor-content');
    try {
      lock.holders(GROUP).add('maintenance');
      const token = await enrollToken(ts, 1);
      const d = rebootDevice(ts, content, 'fl-glitch', token, lock.url, 3, proxy.url);
      start(d);
      const id = await waitEnrolled(ts, d);
      await pin(ts, d, GOOD);
      const waiting = await until(
        async () => journalOf(d),
        (j) => j.txn?.phase === 'staged' && !!j.slotWait,
        120_000,
        `${d.name} staged, waiting for a slot`,
      );
      const txn = waiting.txn!.id;
      // Check-ins are sequential: two answers in the new mode mean none from before is still being handled.
      const answers = async (mode: 'drop' | 'dup', n: number) => {
        const from = proxy.seen[mode];
        await until(
          async () => proxy.seen[mode],
          (k) => k >= from + n,
          60_000,
          `${n} check-in answers in mode ${mode}`,
        );
      };
      proxy.mode = 'drop';
      await answers('drop', 2);
      // The slot is free now: a check-in that lacks the offer must still not take it.
      lock.holders(GROUP).delete('maintenance');
      const before = lock.events.length;
      await answers('drop', 3);
      proxy.mode = 'dup';
      await answers('dup', 3);
      const j = journalOf(d);
      assert.equal(j.txn?.id, txn, 'the staged release was dropped (it would be downloaded again)');
      assert.equal(j.txn?.phase, 'staged');
      assert.deepEqual(
        lock.events.slice(before).filter((e) => e.id === id),
        [],
        'asked for a slot with no offer in the answer',
      );
      assert.deepEqual(activations(d), []);
      proxy.mode = 'pass';
      const done = await settled(ts, d, id, GOOD);
      assert.equal(done.current, GOOD);
      const reports = await report(ts, id, GOOD);
      assert.deepEqual(
        reports.map((r) => [r.txn_id, r.outcome]),
        [[txn, 'succeeded']],
        'the release staged before the glitch is the one that activated',
      );
    } finally {
      await proxy.close();
    }
  });

  it('after a boot-guard rollback (no network at boot) the next agent start gives the slot back', async () => {
    const token = await enrollToken(ts, 1);
    const d = rebootDevice(ts, content, 'fl-guard', token, lock.url, 1);
    start(d, 'probation');
    const id = await waitEnrolled(ts, d);
    await pin(ts, d, BAD);
    await pausedAt(d, 'probation');
    await kill(d);
    const g = ringfence(['agent', 'boot-guard', '--config', d.config, '--json']);
    assert.equal(g.code, 0, g.out);
    assert.match(g.out, /rollback/);
    const after = journalOf(d);
    assert.equal(after.current, OLD, 'the guard rolled back');
    assert.equal(after.txn, null);
    assert.equal(after.slot?.state, 'held', 'the guard leaves the slot to the agent');
    assert.ok(lock.holders(GROUP).has(id), 'still held after the guard');
    start(d);
    await until(
      async () => lock.holders(GROUP).has(id),
      (h) => !h,
      60_000,
      'slot released by the agent after the guard rollback',
    );
    await until(
      async () => journalOf(d).slot ?? null,
      (s) => s === null,
      30_000,
      'journal slot cleared',
    );
  });
});

describe('agent FleetLock against the Ringfence server (fleet_lock enabled, secret header)', () => {
  let ts: TestServer;
  let content: string;
  const SERVER_SECRET = 'srv-lock-secret';

  before(async () => {
    ts = await startTestServer({
      fleetLock: { enabled: true, secretHeader: { name: 'X-Fleetlock-Secret', value: SERVER_SECRET } },
    });
    content = await publishReleases(ts, [OLD, GOOD]);
  });
  after(() => ts.close());
  afterEach(() => killTracked());

  /** Holders of the group "default" on the server (a device with no group label is in it). */
  const holders = async () =>
    (
      await ts.srv.ctx.store.db.selectFrom('lock_holders').select(['group_name', 'holder_id']).execute()
    ).filter((h) => h.group_name === 'default');

  const ask = async (endpoint: 'pre-reboot' | 'steady-state', id: string) => {
    const res = await fetch(`${ts.url}/fleetlock/v1/${endpoint}`, {
      method: 'POST',
      headers: { 'fleet-lock-protocol': 'true', 'x-fleetlock-secret': SERVER_SECRET },
      body: JSON.stringify({ client_params: { id, group: 'default' } }),
    });
    await res.arrayBuffer();
    return res.status;
  };

  it('uses <server>/fleetlock/ by default, waits while the slot is taken, and gives it back after commit', async () => {
    assert.equal(await ask('pre-reboot', 'maintenance'), 200);
    const token = await enrollToken(ts, 1);
    const d = seededDevice(ts, content, 'fl-real', token, {
      edit: (cfg) => {
        cfg.fleet_lock = { secret_header: { name: 'X-Fleetlock-Secret', value_file: './lock-secret' } };
        (cfg.components as Array<Record<string, unknown>>)[0].reboot = true;
      },
    });
    writeFileSync(join(d.dir, 'lock-secret'), `${SERVER_SECRET}\n`);
    start(d);
    const id = await waitEnrolled(ts, d);
    await pin(ts, d, GOOD);
    const waiting = await until(
      async () => journalOf(d),
      (j) => j.txn?.phase === 'staged' && (j.slotWait?.attempts ?? 0) >= 1,
      120_000,
      `${d.name} waiting for the server's slot`,
    );
    assert.match(waiting.slotWait?.reason ?? '', /^HTTP \d+/);
    assert.equal(activeRelease(d), OLD, 'not activated while the slot is taken');
    assert.equal(await ask('steady-state', 'maintenance'), 200);
    const j = await settled(ts, d, id, GOOD);
    assert.equal(j.current, GOOD);
    await until(holders, (h) => h.length === 0, 60_000, 'the device gave its slot back');
    // The server's audit log shows this device took the slot and gave it back (the maintenance holder apart).
    const audit = await ts.srv.ctx.store.db
      .selectFrom('audit')
      .select(['action', 'detail'])
      .where('action', 'like', 'fleetlock.%')
      .orderBy('seq')
      .execute();
    const mine = audit.filter((a) => String(a.detail).includes(`"id":"${id}"`)).map((a) => a.action);
    assert.deepEqual(mine, ['fleetlock.locked', 'fleetlock.unlocked'], JSON.stringify(audit)); // steady-state
  });
});
