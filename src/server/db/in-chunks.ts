// Reads filtered by a list of ids that may be long (a partial engine step names thousands of devices): in chunks,
// under SQLite's (32,766) and PostgreSQL's (65,535) parameter limits.
const CHUNK = 1000;

/**
 * Runs `query` once per chunk of `ids` and concatenates the rows; with `ids` undefined, once with no filter
 * (`null`). An empty list runs nothing.
 */
export async function inChunks<R>(
  ids: readonly string[] | undefined,
  query: (chunk: string[] | null) => Promise<R[]>,
): Promise<R[]> {
  if (ids === undefined) return query(null);
  const out: R[] = [];
  for (let i = 0; i < ids.length; i += CHUNK)
    for (const r of await query(ids.slice(i, i + CHUNK))) out.push(r);
  return out;
}
