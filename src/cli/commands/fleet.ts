// `ringfence fleet …` and `ringfence audit …`.
import type { Command } from 'commander';
import { parseDuration } from '../../engine/duration.ts';
import type { AuditEntry } from '../../server/db/audit.ts';
import type { DeviceSummary } from '../../server/routes/admin-fleet.ts';
import { api, CliError, type Conn } from '../client.ts';
import { ago, printJson, printLine, printTable } from '../output.ts';

export function fleetCommands(program: Command, conn: () => Conn): void {
  const fleet = program.command('fleet').description('devices, enrollment, holds and pins');
  fleet
    .command('list')
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
  fleet
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
  fleet
    .command('show')
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
  fleet
    .command('enroll-token')
    .description('create an enrollment token for agents (shown once)')
    .option('--uses <n>', 'how many devices may use it (default 1; 0 = unlimited)', '1')
    .option('--expires <seconds>', 'lifetime in seconds')
    .option('--json', 'machine-readable output')
    .action(async (o: { uses: string; expires?: string; json?: boolean }) => {
      const uses = Number(o.uses);
      if (!Number.isInteger(uses) || uses < 0) throw new CliError('--uses must be a whole number ≥ 0');
      const r = await api<{ id: string; token: string }>(conn(), 'POST', '/v1/admin/enroll-tokens', {
        uses: uses === 0 ? null : uses,
        ...(o.expires ? { expires_in_s: Number(o.expires) } : {}),
      });
      if (o.json) printJson(r);
      else printLine(r.token);
    });
  for (const [name, desc] of [
    ['hold', 'hold devices matching SELECTOR: no rollout offers them anything'],
    ['unhold', 'release a hold'],
  ] as const) {
    fleet
      .command(name)
      .description(desc)
      .argument('<selector>')
      .option('--allow-empty', 'accept a selector that matches no device (otherwise an error: a typo?)')
      .option('--reason <text>')
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
  }
  fleet
    .command('defer')
    .description(
      'defer devices matching SELECTOR: nothing is offered to them for DURATION (e.g. 7d), or "off"',
    )
    .argument('<selector>')
    .option('--allow-empty', 'accept a selector that matches no device (otherwise an error: a typo?)')
    .argument('<duration>', 'e.g. 12h, 7d; "off" clears the deferral')
    .option('--reason <text>')
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
            throw new CliError((e as Error).message);
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
  fleet
    .command('channel')
    .description('put devices matching SELECTOR on the early or the general channel')
    .argument('<selector>')
    .option('--allow-empty', 'accept a selector that matches no device (otherwise an error: a typo?)')
    .argument('<channel>', 'early or general')
    .option('--json', 'machine-readable output')
    .action(async (selector: string, channel: string, o: { json?: boolean; allowEmpty?: boolean }) => {
      if (channel !== 'early' && channel !== 'general')
        throw new CliError('channel must be early or general');
      const r = await api<{ devices: string[] }>(conn(), 'POST', '/v1/admin/fleet/channel', {
        selector,
        channel,
        allow_empty: !!o.allowEmpty,
      });
      if (o.json) printJson(r);
      else printLine(`${r.devices.length} devices on the ${channel} channel`);
    });
  fleet
    .command('pin')
    .description('pin devices matching SELECTOR to NAME@V (wins over every rollout)')
    .argument('<selector>')
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
  fleet
    .command('unpin')
    .argument('<selector>')
    .option('--allow-empty', 'accept a selector that matches no device (otherwise an error: a typo?)')
    .argument('<component>')
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

  const audit = program.command('audit').description('the hash-chained audit log');
  audit
    .command('list')
    .option('--limit <n>', 'entries', '50')
    .option('--actor <name>', 'only what this operator did (NAME and its named tokens NAME/…), or device/ID')
    .option('--json', 'machine-readable output')
    .action(async (o: { limit: string; actor?: string; json?: boolean }) => {
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
  audit
    .command('verify')
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
}
