// Opens the database (embedded SQLite in WAL mode, or PostgreSQL) behind one Kysely query layer and migrates it.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import SQLite from 'better-sqlite3';
import {
  Kysely,
  Migrator,
  PostgresDialect,
  type SqliteDatabase,
  SqliteDialect,
  type SqliteStatement,
} from 'kysely';
import {
  ensurePrivateDir,
  ensurePrivateFile,
  type PermissionLog,
  tightenMode,
} from '../../files/atomic-file.ts';
import { tightenKeyDir } from '../../trust/signer/keys.ts';
import { type Dialect, migrations } from './migrations.ts';
import type { Database } from './schema.ts';

export type Db = Kysely<Database>;

export interface Store {
  db: Db;
  dialect: Dialect;
  close(): Promise<void>;
}

/**
 * Opens (and migrates) the store: `url` selects PostgreSQL, otherwise SQLite at DIR/ringfence.db.
 *
 * The data folder holds the database (device token hashes, the audit log), blobs and the TUF signing keys, so
 * it is made private whatever created it first (`server`, `keys init`, an older version, a restore from
 * backup): the folder and the key folder 0700; the database, its -wal and -shm files and the keys 0600.
 * Anything looser is tightened and reported through `log` (the server's logger; stderr when none is given).
 */
export async function openStore(opts: {
  dataDir: string;
  url?: string;
  log?: PermissionLog;
}): Promise<Store> {
  let db: Db;
  let dialect: Dialect;
  if (opts.url && /^postgres(ql)?:\/\//.test(opts.url)) {
    dialect = 'postgres';
    // Blobs and keys still live in the data folder.
    if (existsSync(opts.dataDir)) ensurePrivateDir(opts.dataDir, opts.log);
    tightenKeyDir(join(opts.dataDir, 'tuf', 'keys'), opts.log);
    // Loaded only for PostgreSQL: a server on SQLite starts without the driver.
    const { default: pg } = await import('pg');
    // PostgreSQL returns int8 as text by default; our int8 columns are millisecond times that fit a double.
    pg.types.setTypeParser(20, (v: string) => Number.parseInt(v, 10));
    db = new Kysely<Database>({
      dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: opts.url, max: 10 }) }),
    });
  } else if (opts.url && !opts.url.startsWith('sqlite:')) {
    throw new Error(`unsupported database URL "${opts.url}": use postgres://… or sqlite:PATH`);
  } else {
    dialect = 'sqlite';
    ensurePrivateDir(opts.dataDir, opts.log);
    // The TUF signing keys (`keys init` may have run first, or under a looser umask).
    tightenKeyDir(join(opts.dataDir, 'tuf', 'keys'), opts.log);
    const file = opts.url ? opts.url.slice('sqlite:'.length) : join(opts.dataDir, 'ringfence.db');
    // Created 0600 before SQLite opens it: SQLite would create it 0644, and it gives the -wal and -shm files
    // it creates later the mode of the database file.
    const memory = file === ':memory:' || file === '';
    if (!memory) ensurePrivateFile(file, opts.log);
    const sqlite = new SQLite(file);
    sqlite.pragma('journal_mode = WAL');
    // Left over from an earlier run with a looser mode (SQLite reuses them as they are).
    if (!memory) for (const f of [`${file}-wal`, `${file}-shm`]) tightenMode(f, opts.log);
    sqlite.pragma('synchronous = NORMAL');
    sqlite.pragma('busy_timeout = 5000');
    sqlite.pragma('foreign_keys = ON');
    db = new Kysely<Database>({
      dialect: new SqliteDialect({ database: cachingStatements(sqlite) }),
    });
  }
  const migrator = new Migrator({ db, provider: migrations(dialect) });
  const { error } = await migrator.migrateToLatest();
  if (error) {
    await db.destroy();
    throw new Error(`database migration failed: ${error instanceof Error ? error.message : String(error)}`);
  }
  return { db, dialect, close: () => db.destroy() };
}

/** Prepared statements kept per SQL text; beyond this many the least recently used is dropped. */
const STATEMENT_CACHE = 512;

/**
 * better-sqlite3 behind a bounded cache of prepared statements. Kysely prepares every query it runs, and preparing
 * (parsing and planning the SQL) cost more than running the check-in batch's small queries (measured: the largest
 * single cost of a check-in). A statement is reusable once `all` or `run` returned; `iterate` (a stream, which
 * may be interleaved with other queries) gets a statement of its own.
 */
function cachingStatements(sqlite: SQLite.Database): SqliteDatabase {
  const cache = new Map<string, SqliteStatement>();
  return {
    close: () => sqlite.close(),
    prepare(sql: string): SqliteStatement {
      const hit = cache.get(sql);
      if (hit) {
        // Most recently used last, so the first key is the one to drop.
        cache.delete(sql);
        cache.set(sql, hit);
        return hit;
      }
      const stmt = sqlite.prepare(sql);
      const ddl = /^\s*(create|alter|drop)\b/i.test(sql);
      const entry: SqliteStatement = {
        reader: stmt.reader,
        all: stmt.reader ? rowsAsObjects(stmt) : (params) => stmt.all(params),
        run: ddl
          ? (params) => {
              // The schema changed: statements prepared before may now read other columns.
              const r = stmt.run(params);
              cache.clear();
              return r;
            }
          : (params) => stmt.run(params),
        iterate: (params) => sqlite.prepare(sql).iterate(params),
      };
      cache.set(sql, entry);
      if (cache.size > STATEMENT_CACHE) cache.delete(cache.keys().next().value as string);
      return entry;
    },
  };
}

/**
 * A reading statement's `all`, with rows fetched as arrays and made objects here: better-sqlite3 builds an object
 * row through one native call per column, which cost a quarter of the check-in's device read (measured). Same
 * rows as its own object mode (a repeated column name keeps the last value).
 */
function rowsAsObjects(stmt: SQLite.Statement): SqliteStatement['all'] {
  const names = stmt.columns().map((c) => c.name);
  stmt.raw(true);
  return (params) =>
    (stmt.all(params) as unknown[][]).map((values) => {
      const row: Record<string, unknown> = {};
      for (let i = 0; i < names.length; i++) row[names[i]] = values[i];
      return row;
    });
}

/** True for PostgreSQL's answer when it aborted this transaction to break a deadlock or a serialisation conflict. */
function isConflictAbort(e: unknown): boolean {
  return typeof e === 'object' && e !== null && 'code' in e && (e.code === '40P01' || e.code === '40001');
}

/**
 * Runs `fn` in one transaction. On PostgreSQL, two transactions that lock the same rollouts in a different order
 * (stop-all pausing every rollout while a check-in marks two of them dirty) can deadlock; the database aborts one,
 * which is then run again here, up to `attempts` times in all. `fn` must have no effect outside the transaction.
 */
export async function inTransaction<T>(store: Store, fn: (tx: Db) => Promise<T>, attempts = 4): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await store.db.transaction().execute(fn);
    } catch (e) {
      if (attempt >= attempts || !isConflictAbort(e)) throw e;
      await new Promise((r) => setTimeout(r, 5 * attempt + Math.random() * 20 * attempt));
    }
  }
}
