// `ringfence fleet …` and `ringfence audit …`.
import type { Command } from 'commander';
import { parseDuration } from '../../engine/duration.ts';
import type { AuditEntry } from '../../server/db/audit.ts';
import type { DeviceSummary } from '../../server/routes/admin-fleet.ts';
import { withExamples } from '../../terminal/help.ts';
import { api, CliError, type Conn, usageError } from '../client.ts';
import { ago, printJson, printLine, printTable } from '../output.ts';

export function fleetCommands(program: Command, conn: () => Conn): void {
  const fleet = program.command('fleet').description('devices, enrollment, holds and pins');
  withExamples(fleet, [
    'fleet list',
    "fleet hold 'site=hamburg' --reason 'till upgrade'",
    'fleet pin tier=A sensor-content@2.0.0',
  ]);
  const list = fleet
    .command('list')
    .description('every device: labels, components and their state, held, last seen')
    .option('--json', 'machine-readable output')
    .action(async (o: { json?: boolean }) => {
      const rows = await api<DeviceSummary[]>(conn(), 'GET', '/v1/admin/devices');
      if (o.json) return printJson(rows);
      printTable(
        rows.map((d) => ({
          name: d.name,
          id: d.id,
          labels: Object.entries(d.labels)
            .map(([k, v]) => `${k}=${v}`)
            .join(','),
          components: d.components
            .map((c) => `${c.name}@${c.version ?? '-'}${c.state !== 'idle' ? `(${c.state})` : ''}`)
            .join(' '),
          held: d.held ? 'yes' : '',
          seen: ago(d.last_seen_at),
        })),
        ['name', 'id', 'labels', 'components', 'held', 'seen'],
      );
    });
  withExamples(list, ['fleet list', 'fleet list --json']);
  const retire = fleet
    .command('retire')
    .description('retire a device: its token is revoked and it leaves every rollout (history is kept)')
    .argument('<device>', 'device id or name')
    .option('--reason <text>', 'why, for the audit log')
    .option('--json', 'machine-readable output')
    .action(async (id: string, o: { reason?: string; json?: boolean; allowEmpty?: boolean }) => {
      const r = await api<{ id: string; name: string; left_rollouts: number }>(
        conn(),
        'POST',
        `/v1/admin/devices/${encodeURIComponent(id)}/retire`,
        o.reason ? { reason: o.reason } : {},
      );
      if (o.json) return printJson(r);
      printLine(
        `retired ${r.name} (${r.id}); its token is revoked; it left ${r.left_rollouts} open rollout assignment(s)`,
      );
    });
  withExamples(retire, ['fleet retire till-0042 --reason stolen']);
  const show = fleet
    .command('show')
    .description('one device: agent version, labels, pins, and each component with its state')
    .argument('<device>', 'device id or name')
    .option('--json', 'machine-readable output')
    .action(async (id: string, o: { json?: boolean }) => {
      const d = await api<DeviceSummary>(conn(), 'GET', `/v1/admin/devices/${encodeURIComponent(id)}`);
      if (o.json) return printJson(d);
      printLine(
        `${d.name} (${d.id}) agent ${d.agent_version}, last seen ${ago(d.last_seen_at)}${d.held ? ', HELD' : ''}`,
      );
      printLine(
        `labels: ${Object.entries(d.labels)
          .map(([k, v]) => `${k}=${v}`)
          .join(', ')}`,
      );
      if (Object.keys(d.pins).length)
        printLine(
          `pins: ${Object.entries(d.pins)
            .map(([k, v]) => `${k}@${v}`)
            .join(', ')}`,
        );
      printTable(
        d.components.map((c) => ({
          component: c.name,
          version: c.version,
          state: c.state,
          quarantined: c.quarantined.join(','),
        })),
        ['component', 'version', 'state', 'quarantined'],
      );
    });
  withExamples(show, ['fleet show till-0042', 'fleet show till-0042 --json']);
  const enroll = fleet
    .command('enroll-token')
    .description('create an enrollment token for agents (shown once)')
    .option('--uses <n>', 'how many devices may use it (default 1; 0 = unlimited)', '1')
    .option('--expires <seconds>', 'lifetime in seconds')
    .option('--json', 'machine-readable output')
    .action(async (o: { uses: string; expires?: string; json?: boolean }) => {
      const uses = Number(o.uses);
      if (!/^\d+$/.test(o.uses) || !Number.isSafeInteger(uses))
        throw usageError('--uses must be a whole number ≥ 0');
      const expires = o.expires === undefined ? undefined : Number(o.expires);
      if (o.expires !== undefined && (!/^\d+$/.test(o.expires) || !Number.isSafeInteger(expires) || !expires))
        throw usageError('--expires must be a whole number of seconds ≥ 1');
      const r = await api<{ id: string; token: string }>(conn(), 'POST', '/v1/admin/enroll-tokens', {
        uses: uses === 0 ? null : uses,
        ...(expires ? { expires_in_s: expires } : {}),
      });
      if (o.json) printJson(r);
      else printLine(r.token);
    });
  withExamples(enroll, [
    'fleet enroll-token --uses 50 --expires 86400   # 50 devices within a day',
    'fleet enroll-token --json',
  ]);
  for (const [name, desc, example] of [
    [
      'hold',
      'hold devices matching SELECTOR: no rollout offers them anything',
      "hold 'site=hamburg' --reason 'freeze before the audit'",
    ],
    ['unhold', 'release a hold', "unhold 'site=hamburg'"],
  ] as const) {
    const cmd = fleet
      .command(name)
      .description(desc)
      .argument('<selector>', 'device labels, e.g. tier=A or site=hamburg,role=replica')
      .option('--allow-empty', 'accept a selector that matches no device (otherwise an error: a typo?)')
      .option('--reason <text>', 'why (kept in the audit log)')
      .option('--json', 'machine-readable output')
      .action(async (selector: string, o: { reason?: string; json?: boolean; allowEmpty?: boolean }) => {
        const r = await api<{ devices: string[] }>(conn(), 'POST', `/v1/admin/fleet/${name}`, {
          selector,
          reason: o.reason,
          allow_empty: !!o.allowEmpty,
        });
        if (o.json) printJson(r);
        else printLine(`${name}: ${r.devices.length} devices`);
      });
    withExamples(cmd, [`fleet ${example}`, `fleet ${name} tier=C --allow-empty --json`]);
  }
  const defer = fleet
    .command('defer')
    .description(
      'defer devices matching SELECTOR: nothing is offered to them for DURATION (e.g. 7d), or "off"',
    )
    .argument('<selector>', 'device labels, e.g. tier=A')
    .option('--allow-empty', 'accept a selector that matches no device (otherwise an error: a typo?)')
    .argument('<duration>', 'e.g. 12h, 7d; "off" clears the deferral')
    .option('--reason <text>', 'why (kept in the audit log)')
    .option('--json', 'machine-readable output')
    .action(
      async (
        selector: string,
        duration: string,
        o: { reason?: string; json?: boolean; allowEmpty?: boolean },
      ) => {
        let until: number | null = null;
        if (duration !== 'off') {
          try {
            until = Date.now() + parseDuration(duration);
          } catch (e) {
            throw usageError((e as Error).message);
          }
        }
        const r = await api<{ devices: string[] }>(conn(), 'POST', '/v1/admin/fleet/defer', {
          selector,
          until,
          reason: o.reason,
          allow_empty: !!o.allowEmpty,
        });
        if (o.json) printJson({ ...r, until });
        else
          printLine(
            until === null
              ? `deferral cleared on ${r.devices.length} devices`
              : `deferred ${r.devices.length} devices until ${new Date(until).toISOString()}`,
          );
      },
    );
  withExamples(defer, [
    "fleet defer 'site=hamburg' 7d --reason 'quarter-end close'",
    "fleet defer 'site=hamburg' off",
  ]);
  const channel = fleet
    .command('channel')
    .description('put devices matching SELECTOR on the early or the general channel')
    .argument('<selector>', 'device labels, e.g. ring=canary')
    .option('--allow-empty', 'accept a selector that matches no device (otherwise an error: a typo?)')
    .argument('<channel>', 'early or general')
    .option('--json', 'machine-readable output')
    .action(async (selector: string, channel: string, o: { json?: boolean; allowEmpty?: boolean }) => {
      if (channel !== 'early' && channel !== 'general') throw usageError('channel must be early or general');
      const r = await api<{ devices: string[] }>(conn(), 'POST', '/v1/admin/fleet/channel', {
        selector,
        channel,
        allow_empty: !!o.allowEmpty,
      });
      if (o.json) printJson(r);
      else printLine(`${r.devices.length} devices on the ${channel} channel`);
    });
  withExamples(channel, ['fleet channel ring=canary early', 'fleet channel ring=canary general']);
  const pin = fleet
    .command('pin')
    .description('pin devices matching SELECTOR to NAME@V (wins over every rollout)')
    .argument('<selector>', 'device labels, e.g. tier=A')
    .option('--allow-empty', 'accept a selector that matches no device (otherwise an error: a typo?)')
    .argument('<ref>', 'NAME@VERSION')
    .option('--json', 'machine-readable output')
    .action(async (selector: string, ref: string, o: { json?: boolean; allowEmpty?: boolean }) => {
      const r = await api<{ devices: string[] }>(conn(), 'POST', '/v1/admin/fleet/pin', {
        selector,
        release: ref,
        allow_empty: !!o.allowEmpty,
      });
      if (o.json) printJson(r);
      else printLine(`pinned ${r.devices.length} devices to ${ref}`);
    });
  withExamples(pin, [
    'fleet pin tier=A sensor-content@2.0.0',
    "fleet pin 'site=hamburg,role=primary' pg-config@14.2",
  ]);
  const unpin = fleet
    .command('unpin')
    .description('remove the pin of COMPONENT from devices matching SELECTOR: rollouts reach them again')
    .argument('<selector>', 'device labels, e.g. tier=A')
    .option('--allow-empty', 'accept a selector that matches no device (otherwise an error: a typo?)')
    .argument('<component>', 'component name')
    .option('--json', 'machine-readable output')
    .action(async (selector: string, component: string, o: { json?: boolean; allowEmpty?: boolean }) => {
      const r = await api<{ devices: string[] }>(conn(), 'POST', '/v1/admin/fleet/unpin', {
        selector,
        component,
        allow_empty: !!o.allowEmpty,
      });
      if (o.json) printJson(r);
      else printLine(`unpinned ${component} on ${r.devices.length} devices`);
    });
  withExamples(unpin, ['fleet unpin tier=A sensor-content']);

  const audit = program.command('audit').description('the hash-chained audit log');
  withExamples(audit, ['audit list --actor alice', 'audit verify']);
  const auditList = audit
    .command('list')
    .description('the newest audit entries: who did what to which subject, when')
    .option('--limit <n>', 'entries', '50')
    .option('--actor <name>', 'only what this operator did (NAME and its named tokens NAME/…), or device/ID')
    .option('--json', 'machine-readable output')
    .action(async (o: { limit: string; actor?: string; json?: boolean }) => {
      if (!/^\d+$/.test(o.limit) || !Number(o.limit)) throw usageError('--limit must be a whole number ≥ 1');
      const q = new URLSearchParams({ limit: String(Number(o.limit)) });
      if (o.actor) q.set('actor', o.actor);
      const rows = await api<AuditEntry[]>(conn(), 'GET', `/v1/admin/audit?${q}`);
      if (o.json) return printJson(rows);
      printTable(
        rows.map((e) => ({
          seq: e.seq,
          at: new Date(e.at).toISOString(),
          actor: e.actor,
          action: e.action,
          subject: e.subject,
        })),
        ['seq', 'at', 'actor', 'action', 'subject'],
      );
    });
  withExamples(auditList, [
    'audit list --limit 20',
    'audit list --actor alice   # alice and her named tokens (alice/ci …)',
    'audit list --json',
  ]);
  const verify = audit
    .command('verify')
    .description('check the hash chain of the whole audit log: exit 1 when an entry was altered')
    .option('--json', 'machine-readable output')
    .action(async (o: { json?: boolean }) => {
      const r = await api<{ entries: number; brokenAt: number | null; ok: boolean }>(
        conn(),
        'GET',
        '/v1/admin/audit/verify',
      );
      if (o.json) printJson(r);
      else
        printLine(
          r.ok ? `audit chain intact (${r.entries} entries)` : `audit chain BROKEN at entry ${r.brokenAt}`,
        );
      if (!r.ok) throw new CliError(`audit chain broken at entry ${r.brokenAt}`);
    });
  withExamples(verify, ['audit verify', 'audit verify --json']);
}
