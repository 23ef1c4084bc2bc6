// `ringfence lock …`: the reboot semaphore Zincati (FleetLock) asks before rebooting: groups with slots and a
// lease, who holds a slot and for how long yet, and releasing a slot by hand.
import type { Command } from 'commander';
import { formatDuration, parseDuration } from '../../engine/duration.ts';
import { withExamples } from '../../terminal/help.ts';
import { api, type Conn, usageError as usage } from '../client.ts';
import { printJson, printLine, printTable } from '../output.ts';

// The server checks these too; checking here turns a typo into a usage error before any request.
const GROUP = /^[a-zA-Z0-9.-]{1,256}$/;
const ID = /^[a-zA-Z0-9._:@-]{1,256}$/;
const MAX_LEASE_MS = 7 * 86_400_000;

interface LockGroupInfo {
  name: string;
  slots: number;
  lease_ms: number;
  updated_at: number | null;
  updated_by: string | null;
  holders: Array<{ id: string; acquired_at: number; expires_at: number }>;
}

function checkGroup(group: string): string {
  if (!GROUP.test(group)) throw usage(`invalid group "${group}": 1 to 256 letters, digits, "." or "-"`);
  return group;
}

function checkId(id: string): string {
  if (!ID.test(id))
    throw usage(`invalid node id "${id}": 1 to 256 letters, digits, ".", "_", ":", "@" or "-"`);
  return id;
}

function checkSlots(s: string): number {
  if (!/^\d+$/.test(s) || Number(s) < 1 || Number(s) > 100_000)
    throw usage(`invalid --slots "${s}": a whole number from 1 to 100000`);
  return Number(s);
}

function checkLease(s: string): number {
  let ms: number;
  try {
    ms = parseDuration(s);
  } catch (e) {
    throw usage(`invalid --lease: ${(e as Error).message}`);
  }
  if (ms < 1000 || ms > MAX_LEASE_MS) throw usage(`invalid --lease "${s}": from 1s to 7d`);
  return ms;
}

/** Registers `ringfence lock …`. */
export function lockCommands(program: Command, conn: () => Conn): void {
  const lock = program
    .command('lock')
    .description('reboot slots for Zincati nodes (FleetLock): groups, holders, leases');
  withExamples(lock, ['lock list', 'lock set workers --slots 2 --lease 30m', 'lock release workers node-7']);

  const set = lock
    .command('set')
    .description("create or change a group's slots and lease (holders keep the lease they were given)")
    .argument('<group>', 'reboot group, as the nodes send it (Zincati: "default" unless configured)')
    .requiredOption('--slots <n>', 'how many nodes of the group may reboot at once')
    .requiredOption('--lease <duration>', 'how long a node may hold a slot before it loses it (e.g. 30m, 2h)')
    .option('--json', 'machine-readable output')
    .action(async (group: string, o: { slots: string; lease: string; json?: boolean }) => {
      const body = { slots: checkSlots(o.slots), lease_ms: checkLease(o.lease) };
      const r = await api<{ name: string; slots: number; lease_ms: number }>(
        conn(),
        'PUT',
        `/v1/admin/locks/${encodeURIComponent(checkGroup(group))}`,
        body,
      );
      if (o.json) return printJson({ name: r.name, slots: r.slots, lease_ms: r.lease_ms });
      printLine(`lock group ${group}: ${r.slots} slot(s), lease ${formatDuration(r.lease_ms)}`);
    });
  withExamples(set, [
    'lock set default --slots 1 --lease 30m',
    'lock set workers --slots 3 --lease 1h --json',
  ]);

  const list = lock
    .command('list')
    .description('every group with its slots and lease, and who holds a slot, since when, for how long yet')
    .option('--json', 'machine-readable output')
    .action(async (o: { json?: boolean }) => {
      const r = await api<{ now: number; groups: LockGroupInfo[] }>(conn(), 'GET', '/v1/admin/locks');
      if (o.json)
        return printJson({
          groups: r.groups.map((g) => ({
            name: g.name,
            slots: g.slots,
            lease_ms: g.lease_ms,
            holders: g.holders.map((h) => ({
              id: h.id,
              acquired_at: h.acquired_at,
              expires_at: h.expires_at,
              left_ms: Math.max(0, h.expires_at - r.now),
            })),
          })),
        });
      const rows: Array<Record<string, unknown>> = [];
      for (const g of r.groups) {
        const base = {
          group: g.name,
          slots: `${g.holders.length}/${g.slots}`,
          lease: formatDuration(g.lease_ms),
        };
        if (g.holders.length === 0) rows.push({ ...base, holder: null, since: null, left: null });
        for (const h of g.holders)
          rows.push({
            ...base,
            holder: h.id,
            since: new Date(h.acquired_at).toISOString(),
            // The server's clock, not ours: the lease runs there.
            left: formatDuration(Math.max(0, h.expires_at - r.now)),
          });
      }
      printTable(rows, ['group', 'slots', 'lease', 'holder', 'since', 'left']);
    });
  withExamples(list, ['lock list', 'lock list --json']);

  const release = lock
    .command('release')
    .description("free a node's slot (it will not reach steady state: died, reinstalled); audited")
    .argument('<group>', 'reboot group')
    .argument('<id>', 'node id as the node sent it (see lock list)')
    .option('--reason <text>', 'why, for the audit log')
    .option('--json', 'machine-readable output')
    .action(async (group: string, id: string, o: { reason?: string; json?: boolean }) => {
      if (o.reason !== undefined && (o.reason.length < 1 || o.reason.length > 500))
        throw usage('--reason: 1 to 500 characters');
      const q = o.reason ? `?reason=${encodeURIComponent(o.reason)}` : '';
      const path = `/v1/admin/locks/${encodeURIComponent(checkGroup(group))}/holders/${encodeURIComponent(checkId(id))}${q}`;
      await api(conn(), 'DELETE', path);
      if (o.json) return printJson({ group, id, released: true });
      printLine(`released ${id}'s slot in lock group ${group}`);
    });
  withExamples(release, [
    'lock release workers e0f3745b108f471cbd4883c6fbed8cdd --reason "node reinstalled"',
  ]);
}
