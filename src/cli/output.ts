// Output for people and scripts: the terminal-safe printers live in src/terminal/output.ts (shared with the
// agent's commands, which never load the CLI); tables and ages for people are the CLI's own.
import { terminalSafe } from '../terminal/output.ts';

export { printErrorLine, printJson, printJsonLine, printLine, terminalSafe } from '../terminal/output.ts';

/** Prints rows as an aligned table with a header; every cell (and header) is made terminal-safe. */
export function printTable(rows: Array<Record<string, unknown>>, columns: string[]): void {
  const cells = rows.map((r) =>
    columns.map((c) => (r[c] === null || r[c] === undefined ? '-' : terminalSafe(r[c]))),
  );
  const header = columns.map((c) => terminalSafe(c.toUpperCase()));
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((row) => row[i].length)));
  const line = (vals: string[]) =>
    vals
      .map((v, i) => v.padEnd(widths[i]))
      .join('  ')
      .trimEnd();
  process.stdout.write(`${line(header)}\n`);
  for (const row of cells) process.stdout.write(`${line(row)}\n`);
}

/** How long ago an instant was, for people ("42s ago", "3h ago"). */
export function ago(ms: number, now = Date.now()): string {
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  if (s < 86400) return `${Math.round(s / 3600)}h ago`;
  return `${Math.round(s / 86400)}d ago`;
}
