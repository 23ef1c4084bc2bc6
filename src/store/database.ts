// Opens the database (embedded SQLite in WAL mode, or PostgreSQL) behind one Kysely query layer and migrates it.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import SQLite from 'better-sqlite3';
import { Kysely, Migrator, PostgresDialect, SqliteDialect } from 'kysely';
import pg from 'pg';
import { type Dialect, migrations } from './migrations.ts';
import type { Database } from './schema.ts';

export type Db = Kysely<Database>;

export interface Store {
  db: Db;
  dialect: Dialect;
  close(): Promise<void>;
}

// PostgreSQL returns int8 as text by default; our int8 columns are millisecond times that fit a double.
pg.types.setTypeParser(20, (v: string) => Number.parseInt(v, 10));

/** Opens (and migrates) the store: `url` selects PostgreSQL, otherwise SQLite at DIR/ringfence.db. */
export async function openStore(opts: { dataDir: string; url?: string }): Promise<Store> {
  let db: Db;
  let dialect: Dialect;
  if (opts.url && /^postgres(ql)?:\/\//.test(opts.url)) {
    dialect = 'postgres';
    db = new Kysely<Database>({
      dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: opts.url, max: 10 }) }),
    });
  } else if (opts.url && !opts.url.startsWith('sqlite:')) {
    throw new Error(`unsupported database URL "${opts.url}": use postgres://… or sqlite:PATH`);
  } else {
    dialect = 'sqlite';
    mkdirSync(opts.dataDir, { recursive: true });
    const file = opts.url ? opts.url.slice('sqlite:'.length) : join(opts.dataDir, 'ringfence.db');
    const sqlite = new SQLite(file);
    sqlite.pragma('journal_mode = WAL');
    sqlite.pragma('synchronous = NORMAL');
    sqlite.pragma('busy_timeout = 5000');
    sqlite.pragma('foreign_keys = ON');
    db = new Kysely<Database>({ dialect: new SqliteDialect({ database: sqlite }) });
  }
  const migrator = new Migrator({ db, provider: migrations(dialect) });
  const { error } = await migrator.migrateToLatest();
  if (error) {
    await db.destroy();
    throw new Error(`database migration failed: ${error instanceof Error ? error.message : String(error)}`);
  }
  return { db, dialect, close: () => db.destroy() };
}
