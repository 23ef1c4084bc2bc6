// Hot queries compiled once per shape. Building a Kysely query and compiling it to SQL cost more than SQLite takes
// to run a check-in batch's small reads (measured), so their SQL text is kept by shape (which query, how many values
// its IN list has) and run again with new parameters. Same SQL on every dialect path: only the text is reused.
import { type Compilable, CompiledQuery } from 'kysely';
import type { Db } from './database.ts';

/** Shapes kept per database (a shape is a query and an IN-list length: a few hundred at most in practice). */
const MAX_SHAPES = 2048;
const texts = new WeakMap<object, Map<string, string>>();

/** Lists longer than this are not padded (the next power of two would double a large query). */
const MAX_PADDED = 1024;

/**
 * An IN list padded (repeating its last value, which changes nothing in an IN): up to 8 values as it is, then to a
 * multiple of 8, past 64 to a power of two, past MAX_PADDED as it is. A query of any batch size then has one of a
 * few shapes, each prepared once.
 */
export function padIn<T>(values: readonly T[]): T[] {
  // Past MAX_PADDED a list is left as it is: padding must never push a query over the databases' parameter
  // limits (SQLite 32,766, PostgreSQL 65,535); such lists are rare, and MAX_SHAPES bounds what is kept.
  if (values.length <= 8 || values.length > MAX_PADDED) return [...values];
  let n = Math.ceil(values.length / 8) * 8;
  if (n > 64) for (n = 128; n < values.length; ) n *= 2;
  const out = [...values];
  while (out.length < n) out.push(values[values.length - 1]);
  return out;
}

const sameValues = (a: readonly unknown[], b: readonly unknown[]) =>
  a.length === b.length && a.every((v, i) => v === b[i]);

/**
 * Runs the query `build` makes, whose parameters are exactly `params` in order; its SQL is compiled once per
 * `shape` and database. A shape whose compiled parameters differ from `params` is run but never kept.
 */
export async function runShaped<R>(
  db: Db,
  shape: string,
  params: readonly unknown[],
  build: () => Compilable<R>,
): Promise<R[]> {
  const executor = db.getExecutor();
  let known = texts.get(executor.adapter);
  if (!known) {
    known = new Map();
    texts.set(executor.adapter, known);
  }
  const text = known.get(shape);
  if (text !== undefined) return (await db.executeQuery<R>(CompiledQuery.raw(text, [...params]))).rows;
  const compiled = build().compile();
  if (known.size < MAX_SHAPES && executor.plugins.length === 0 && sameValues(compiled.parameters, params))
    known.set(shape, compiled.sql);
  return (await db.executeQuery<R>(compiled)).rows;
}

/**
 * Runs an insert of `rows` (objects with the same keys in the same order) built by `build`: a full batch of the
 * caller's fixed size is compiled once per `shape` (Kysely's parsing and compiling of a 1,000-row insert cost
 * as much as SQLite's running it); any other size is compiled as usual, so odd tails add no shapes.
 */
export async function insertShaped<T extends object>(
  db: Db,
  shape: string,
  rows: readonly T[],
  fullSize: number,
  build: () => Compilable<unknown>,
): Promise<void> {
  if (rows.length !== fullSize) {
    await db.executeQuery(build().compile());
    return;
  }
  const params: unknown[] = [];
  for (const r of rows) for (const v of Object.values(r)) params.push(v);
  await runShaped(db, `${shape}:${fullSize}`, params, build);
}
