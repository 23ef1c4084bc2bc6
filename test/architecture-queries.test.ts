// The data layer holds every SQL query: outside src/server/db/ no file calls Kysely's query builder
// (`selectFrom`, `insertInto`, `updateTable`, `deleteFrom`, `replaceInto`) or writes raw SQL with Kysely's `sql`.
// Code elsewhere calls the named functions of the table modules, so a newcomer finds every query of a table in
// one file.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const SRC = join(ROOT, 'src');
const DATA_LAYER = 'src/server/db/';

/** Every TypeScript file under `dir`. */
function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    if (e.isDirectory()) return sources(p);
    return /\.tsx?$/.test(e.name) && !e.name.endsWith('.d.ts') ? [p] : [];
  });
}

// A query-builder call (a chain may break the line before the dot) and a raw-SQL template or helper.
const BUILDER = /\.\s*(selectFrom|insertInto|updateTable|deleteFrom|replaceInto)\s*[<(]/g;
const RAW_SQL = /(?<![\w$.])sql\s*(`|\.\s*(raw|ref|id|lit|val|join|table)\s*\()/g;
// `import { …sql… } from 'kysely'` as a value (not `type sql`).
const SQL_IMPORT = /import\s*\{([^}]*)\}\s*from\s*['"]kysely['"]/g;

/** The 1-based line of `offset` in `text`. */
function lineOf(text: string, offset: number): number {
  let n = 1;
  for (let i = 0; i < offset; i++) if (text.charCodeAt(i) === 10) n++;
  return n;
}

// String literals (kept: a `//` or `/*` inside one starts no comment), then block and line comments.
const STRINGS_OR_COMMENTS =
  /'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*"|`(?:\\.|[^`\\])*`|\/\*[\s\S]*?\*\/|\/\/[^\n]*/g;

/** Blanks out comments (keeping offsets and newlines) so prose about queries is not taken for one. */
function withoutComments(text: string): string {
  return text.replace(STRINGS_OR_COMMENTS, (c) => (c.startsWith('/') ? c.replace(/[^\n]/g, ' ') : c));
}

/** Every query outside the data layer in one file's text, as `file:line: what`. */
export function queriesIn(file: string, source: string): string[] {
  const text = withoutComments(source);
  const found: string[] = [];
  for (const m of text.matchAll(BUILDER)) found.push(`${file}:${lineOf(text, m.index)}: .${m[1]}(`);
  for (const m of text.matchAll(SQL_IMPORT)) {
    const names = m[1].split(',').map((s) => s.trim());
    if (names.some((n) => /^sql(\s+as\s+\w+)?$/.test(n)))
      found.push(`${file}:${lineOf(text, m.index)}: imports sql from kysely`);
  }
  if (/from\s*['"]kysely['"]/.test(text))
    for (const m of text.matchAll(RAW_SQL)) found.push(`${file}:${lineOf(text, m.index)}: raw sql`);
  return found;
}

describe('architecture: every SQL query lives in src/server/db/', () => {
  test('the scan finds builder calls, chained calls and raw sql, and skips comments', () => {
    const sample = [
      "import { sql } from 'kysely';",
      "await db.selectFrom('devices').selectAll().execute();",
      'await tx',
      "  .deleteFrom('desired')",
      '  .execute();',
      "// db.updateTable('x') in a comment is prose",
      "const glob = 'src/**/*.ts'; await db.insertInto('x'); // */",
      'await sql`select 1`.execute(db);',
    ].join('\n');
    assert.deepEqual(queriesIn('x.ts', sample), [
      'x.ts:2: .selectFrom(',
      'x.ts:4: .deleteFrom(',
      'x.ts:7: .insertInto(',
      'x.ts:1: imports sql from kysely',
      'x.ts:8: raw sql',
    ]);
    assert.deepEqual(
      queriesIn('y.ts', "import type { Selectable } from 'kysely';\nconst sqlText = 'a';"),
      [],
    );
  });

  test('no file outside src/server/db/ queries the database itself', () => {
    const found = sources(SRC)
      .map((f) => relative(ROOT, f))
      .filter((f) => !f.startsWith(DATA_LAYER))
      .flatMap((f) => queriesIn(f, readFileSync(join(ROOT, f), 'utf8')));
    assert.deepEqual(found, [], `move these queries into a table module under ${DATA_LAYER}`);
  });
});
