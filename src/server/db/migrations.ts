// Schema migrations, kept in code so both dialects are created and upgraded by the same steps.
import type { CreateTableBuilder, Kysely, Migration, MigrationProvider } from 'kysely';
import { sql } from 'kysely';
import { legacyClass } from '../../protocol/failure-class.ts';

export type Dialect = 'sqlite' | 'postgres';

/** Builds the migration list for one dialect (the two differ only in identity columns and integer width). */
export function migrations(dialect: Dialect): MigrationProvider {
  const bigint = dialect === 'postgres' ? 'bigint' : 'integer';
  const identity = (t: CreateTableBuilder<string, never>, col: string) =>
    dialect === 'postgres'
      ? t.addColumn(col, 'serial', (c) => c.primaryKey())
      : t.addColumn(col, 'integer', (c) => c.primaryKey().autoIncrement());

  const all: Record<string, Migration> = {
    '0001_init': {
      async up(db: Kysely<unknown>) {
        await db.schema
          .createTable('meta')
          .addColumn('key', 'text', (c) => c.primaryKey())
          .addColumn('value', 'text', (c) => c.notNull())
          .execute();
        await identity(db.schema.createTable('releases'), 'id')
          .addColumn('component', 'text', (c) => c.notNull())
          .addColumn('version', 'text', (c) => c.notNull())
          .addColumn('artifacts', 'text', (c) => c.notNull())
          .addColumn('provenance', 'text', (c) => c.notNull())
          .addColumn('created_at', bigint, (c) => c.notNull())
          .addColumn('approved_at', bigint)
          .addColumn('approved_by', 'text')
          .addUniqueConstraint('releases_component_version', ['component', 'version'])
          .execute();
        await db.schema
          .createTable('devices')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('name', 'text', (c) => c.notNull())
          .addColumn('token_hash', 'text', (c) => c.notNull().unique())
          .addColumn('labels', 'text', (c) => c.notNull())
          .addColumn('agent_version', 'text', (c) => c.notNull())
          .addColumn('enrolled_at', bigint, (c) => c.notNull())
          .addColumn('last_seen_at', bigint, (c) => c.notNull())
          .addColumn('held', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('pins', 'text', (c) => c.notNull().defaultTo('{}'))
          .execute();
        await db.schema
          .createTable('device_components')
          .addColumn('device_id', 'text', (c) => c.notNull())
          .addColumn('component', 'text', (c) => c.notNull())
          .addColumn('version', 'text')
          .addColumn('state', 'text', (c) => c.notNull())
          .addColumn('health', 'text', (c) => c.notNull())
          .addColumn('quarantined', 'text', (c) => c.notNull().defaultTo('[]'))
          .addColumn('updated_at', bigint, (c) => c.notNull())
          .addPrimaryKeyConstraint('device_components_pk', ['device_id', 'component'])
          .execute();
        await db.schema
          .createTable('enroll_tokens')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('token_hash', 'text', (c) => c.notNull().unique())
          .addColumn('uses_left', 'integer')
          .addColumn('expires_at', bigint)
          .addColumn('labels', 'text', (c) => c.notNull())
          .addColumn('created_at', bigint, (c) => c.notNull())
          .addColumn('revoked', 'integer', (c) => c.notNull().defaultTo(0))
          .execute();
        await db.schema
          .createTable('plans')
          .addColumn('name', 'text', (c) => c.primaryKey())
          .addColumn('source', 'text', (c) => c.notNull())
          .addColumn('plan', 'text', (c) => c.notNull())
          .addColumn('updated_at', bigint, (c) => c.notNull())
          .execute();
        await identity(db.schema.createTable('rollouts'), 'id')
          .addColumn('component', 'text', (c) => c.notNull())
          .addColumn('version', 'text', (c) => c.notNull())
          .addColumn('plan_name', 'text', (c) => c.notNull())
          .addColumn('plan', 'text', (c) => c.notNull())
          .addColumn('status', 'text', (c) => c.notNull())
          .addColumn('state', 'text', (c) => c.notNull())
          .addColumn('wake_at', bigint)
          .addColumn('dirty', 'integer', (c) => c.notNull().defaultTo(1))
          .addColumn('created_at', bigint, (c) => c.notNull())
          .addColumn('updated_at', bigint, (c) => c.notNull())
          .execute();
        await db.schema
          .createTable('assignments')
          .addColumn('rollout_id', 'integer', (c) => c.notNull())
          .addColumn('device_id', 'text', (c) => c.notNull())
          .addColumn('wave', 'integer', (c) => c.notNull())
          .addColumn('state', 'text', (c) => c.notNull())
          .addColumn('from_version', 'text')
          .addColumn('offered_at', bigint)
          .addColumn('reported_at', bigint)
          .addColumn('reason', 'text')
          .addPrimaryKeyConstraint('assignments_pk', ['rollout_id', 'device_id'])
          .execute();
        await db.schema.createIndex('assignments_device').on('assignments').column('device_id').execute();
        await db.schema
          .createTable('desired')
          .addColumn('device_id', 'text', (c) => c.notNull())
          .addColumn('component', 'text', (c) => c.notNull())
          .addColumn('version', 'text', (c) => c.notNull())
          .addColumn('rollout_id', 'integer', (c) => c.notNull())
          .addColumn('updated_at', bigint, (c) => c.notNull())
          .addPrimaryKeyConstraint('desired_pk', ['device_id', 'component'])
          .execute();
        await db.schema
          .createTable('reports')
          .addColumn('txn_id', 'text', (c) => c.primaryKey())
          .addColumn('device_id', 'text', (c) => c.notNull())
          .addColumn('component', 'text', (c) => c.notNull())
          .addColumn('version', 'text', (c) => c.notNull())
          .addColumn('outcome', 'text', (c) => c.notNull())
          .addColumn('reason', 'text')
          .addColumn('detail', 'text', (c) => c.notNull())
          .addColumn('received_at', bigint, (c) => c.notNull())
          .execute();
        await identity(db.schema.createTable('audit'), 'seq')
          .addColumn('at', bigint, (c) => c.notNull())
          .addColumn('actor', 'text', (c) => c.notNull())
          .addColumn('action', 'text', (c) => c.notNull())
          .addColumn('subject', 'text', (c) => c.notNull())
          .addColumn('detail', 'text', (c) => c.notNull())
          .addColumn('prev_hash', 'text', (c) => c.notNull())
          .addColumn('hash', 'text', (c) => c.notNull())
          .execute();
        await sql`select 1`.execute(db);
      },
    },
    '0002_channels_and_deferral': {
      async up(db: Kysely<unknown>) {
        await db.schema
          .alterTable('devices')
          .addColumn('channel', 'text', (c) => c.notNull().defaultTo('general'))
          .execute();
        await db.schema.alterTable('devices').addColumn('deferred_until', bigint).execute();
        await db.schema.alterTable('rollouts').addColumn('channel', 'text').execute();
      },
    },
    '0003_device_trust_boundary': {
      async up(db: Kysely<unknown>) {
        // The labels the enrollment token set: they win over what the device says at every check-in.
        await db.schema
          .alterTable('devices')
          .addColumn('enroll_labels', 'text', (c) => c.notNull().defaultTo('{}'))
          .execute();
        // A retired device keeps its history but not its token, and no rollout sees it again.
        await db.schema.alterTable('devices').addColumn('retired_at', bigint).execute();
        await db.schema.createIndex('devices_name').on('devices').column('name').execute();
      },
    },
    '0004_assignment_outcome': {
      async up(db: Kysely<unknown>) {
        // The device's own verdict (succeeded, failed, rolled-back), kept when the rollout reverts it, so that
        // a wave's counts never flip as the rollout moves on.
        await db.schema.alterTable('assignments').addColumn('outcome', 'text').execute();
        await sql`update assignments set outcome = state where state in ('succeeded', 'failed')`.execute(db);
      },
    },
    '0005_assignment_failure_class': {
      async up(db: Kysely<unknown>) {
        // Why a device failed, as a class (src/protocol/failure-class.ts): the engine retries by class, never by
        // the reason's prose. Older rows get the class their `class: reason` text names, else `unknown`.
        await db.schema.alterTable('assignments').addColumn('failure_class', 'text').execute();
        const failed = await sql<{ reason: string | null }>`
          select distinct reason from assignments where state = 'failed'`.execute(db);
        for (const { reason } of failed.rows)
          await sql`update assignments set failure_class = ${legacyClass(reason)}
            where state = 'failed' and reason is not distinct from ${reason}`.execute(db);
      },
    },
    '0006_assignment_revisions': {
      async up(db: Kysely<unknown>) {
        // A rollout's assignments carry the revision that last wrote them, and the rollout its latest revision:
        // a server that keeps a rollout's assignments in memory reads only what changed since (services/
        // assignment-cache.ts) instead of every row at every step.
        await db.schema
          .alterTable('rollouts')
          .addColumn('asg_rev', bigint, (c) => c.notNull().defaultTo(0))
          .execute();
        await db.schema
          .alterTable('assignments')
          .addColumn('rev', bigint, (c) => c.notNull().defaultTo(0))
          .execute();
        await db.schema
          .createIndex('assignments_rollout_rev')
          .on('assignments')
          .columns(['rollout_id', 'rev'])
          .execute();
      },
    },
    '0007_operators': {
      async up(db: Kysely<unknown>) {
        // Named operators with a role each (src/server/roles.ts), each holding one or more API tokens, stored
        // as hashes only. The old single admin token (meta `admin_token_hash`) becomes operator `admin`'s token
        // `bootstrap`, so an existing server's token keeps working.
        await db.schema
          .createTable('operators')
          .addColumn('name', 'text', (c) => c.primaryKey())
          .addColumn('role', 'text', (c) => c.notNull())
          .addColumn('created_at', bigint, (c) => c.notNull())
          .addColumn('created_by', 'text', (c) => c.notNull())
          .addColumn('revoked_at', bigint)
          // 'local' (ringfence operator add) or 'oidc' (created by a single sign-on login).
          .addColumn('source', 'text', (c) => c.notNull().defaultTo('local'))
          .execute();
        await db.schema
          .createTable('operator_tokens')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('operator', 'text', (c) => c.notNull())
          .addColumn('name', 'text', (c) => c.notNull())
          .addColumn('token_hash', 'text', (c) => c.notNull().unique())
          .addColumn('created_at', bigint, (c) => c.notNull())
          .addColumn('expires_at', bigint)
          .addColumn('revoked_at', bigint)
          .addColumn('last_used_at', bigint)
          .execute();
        await db.schema
          .createIndex('operator_tokens_operator')
          .on('operator_tokens')
          .columns(['operator', 'name'])
          .execute();
        const old = await sql<{
          value: string;
        }>`select value from meta where key = 'admin_token_hash'`.execute(db);
        const hash = old.rows[0]?.value;
        if (hash !== undefined) {
          const now = Date.now();
          await sql`insert into operators (name, role, created_at, created_by) values ('admin', 'admin', ${now}, 'migration')`.execute(
            db,
          );
          await sql`insert into operator_tokens (id, operator, name, token_hash, created_at)
            values ('tok-bootstrap', 'admin', 'bootstrap', ${hash}, ${now})`.execute(db);
          // Nothing reads it any more; left behind, it would look like a second place the token lives.
          await sql`delete from meta where key = 'admin_token_hash'`.execute(db);
        }
        // Four eyes: who imported a release and who started a rollout (null on rows from before).
        await db.schema.alterTable('releases').addColumn('imported_by', 'text').execute();
        await db.schema.alterTable('rollouts').addColumn('started_by', 'text').execute();
      },
    },
    '0008_fleet_lock_and_webhooks': {
      async up(db: Kysely<unknown>) {
        // FleetLock (issue 14): reboot slots per group, each held for at most the group's lease.
        await db.schema
          .createTable('lock_groups')
          .addColumn('name', 'text', (c) => c.primaryKey())
          .addColumn('slots', 'integer', (c) => c.notNull())
          .addColumn('lease_ms', bigint, (c) => c.notNull())
          .addColumn('updated_at', bigint, (c) => c.notNull())
          .addColumn('updated_by', 'text', (c) => c.notNull())
          .execute();
        await db.schema
          .createTable('lock_holders')
          .addColumn('group_name', 'text', (c) => c.notNull())
          .addColumn('holder_id', 'text', (c) => c.notNull())
          .addColumn('acquired_at', bigint, (c) => c.notNull())
          .addColumn('expires_at', bigint, (c) => c.notNull())
          .addPrimaryKeyConstraint('lock_holders_pk', ['group_name', 'holder_id'])
          .execute();
        // Webhooks and their persistent outbox (at-least-once delivery across restarts).
        await db.schema
          .createTable('webhooks')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('url', 'text', (c) => c.notNull())
          .addColumn('events', 'text', (c) => c.notNull())
          .addColumn('secret', 'text')
          .addColumn('created_at', bigint, (c) => c.notNull())
          .addColumn('created_by', 'text', (c) => c.notNull())
          .execute();
        await db.schema
          .createTable('webhook_outbox')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('webhook_id', 'text', (c) => c.notNull())
          .addColumn('event', 'text', (c) => c.notNull())
          .addColumn('payload', 'text', (c) => c.notNull())
          .addColumn('created_at', bigint, (c) => c.notNull())
          .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('next_attempt_at', bigint, (c) => c.notNull())
          .addColumn('delivered_at', bigint)
          .addColumn('failed_at', bigint)
          .addColumn('last_status', 'integer')
          .addColumn('last_error', 'text')
          .execute();
        // /metrics counts devices per wave and state of active rollouts at every scrape (monitoring.ts): at a
        // million assignments, 550 ms without this index, 75 ms with it.
        await db.schema
          .createIndex('assignments_rollout_wave_state')
          .on('assignments')
          .columns(['rollout_id', 'wave', 'state'])
          .execute();
        await db.schema
          .createIndex('webhook_outbox_due')
          .on('webhook_outbox')
          .columns(['delivered_at', 'failed_at', 'next_attempt_at'])
          .execute();
      },
    },
    '0009_device_signals': {
      async up(db: Kysely<unknown>) {
        // Evidence gates (issue 16): each device's latest signal sample per component.
        await db.schema
          .createTable('device_signals')
          .addColumn('device_id', 'text', (c) => c.notNull())
          .addColumn('component', 'text', (c) => c.notNull())
          .addColumn('sampled_at', bigint, (c) => c.notNull())
          .addColumn('version', 'text')
          .addColumn('signal_values', 'text', (c) => c.notNull())
          .addColumn('received_at', bigint, (c) => c.notNull())
          .addPrimaryKeyConstraint('device_signals_pk', ['device_id', 'component'])
          .execute();
        // Cohorts read one component's samples received since a wave started.
        await db.schema
          .createIndex('device_signals_component_received')
          .on('device_signals')
          .columns(['component', 'received_at'])
          .execute();
      },
    },
  };
  return { getMigrations: async () => all };
}
