// Output for people (aligned tables and lines) or machines (--json). Every human-readable line the CLI prints
// belongs in this module, because much of it is text a device chose (names, labels, agent versions, failure
// reasons, health-check output) or a server or bundle handed us: written raw to a terminal, an ESC or C1 byte in
// it could recolour the screen, move the cursor, rewrite earlier lines, set the window title or, on some
// terminals, answer back with keystrokes. --json output stays exact JSON: it parses to exactly the data, and the
// control characters JSON.stringify leaves raw are written as \u escapes.

/**
 * Characters that must never reach a terminal raw: C0 controls (ESC, CR, BS, BEL, NUL, even LF and TAB — a
 * newline in a device name would forge table rows), DEL, C1 controls (U+0080–U+009F: CSI, OSC, ST, …), the
 * Unicode line and paragraph separators, and the bidirectional overrides and isolates that reorder what a
 * reader sees ("Trojan Source").
 */
// biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is the point.
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

/**
 * Renders untrusted text visibly and harmlessly for a terminal: every unsafe character becomes a printable
 * escape (`\x1b`, `\x9b`, `\u202e`), everything else is kept as it is.
 */
export function terminalSafe(text: unknown): string {
  const s = typeof text === 'string' ? text : String(text);
  return s.replace(UNSAFE, (c) => {
    const code = c.charCodeAt(0);
    return code <= 0xff
      ? `\\x${code.toString(16).padStart(2, '0')}`
      : `\\u${code.toString(16).padStart(4, '0')}`;
  });
}

// JSON.stringify escapes U+0000–U+001F but writes DEL, the C1 controls and the rest of UNSAFE raw.
const JSON_UNSAFE = /[\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

/**
 * Machine-readable output: one JSON document. It parses to exactly the data given; the characters JSON leaves
 * raw but a terminal would act on (DEL, C1, bidi overrides) are written as \u escapes, which only occur inside
 * JSON strings, so the document stays the same value and is safe to print.
 */
export function printJson(data: unknown): void {
  process.stdout.write(`${safeJson(data, 2)}\n`);
}

/** One JSON object on one line (JSON Lines, for streams such as `rollout watch --json`), escaped as printJson. */
export function printJsonLine(data: unknown): void {
  process.stdout.write(`${safeJson(data)}\n`);
}

function safeJson(data: unknown, indent?: number): string {
  return String(JSON.stringify(data, null, indent)).replace(
    JSON_UNSAFE,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

/** Prints one line for people on stdout; whatever it holds is made terminal-safe. */
export function printLine(text: unknown = ''): void {
  process.stdout.write(`${terminalSafe(text)}\n`);
}

/** Prints one line for people on stderr (progress, errors, the one-time admin token), terminal-safe. */
export function printErrorLine(text: unknown): void {
  process.stderr.write(`${terminalSafe(text)}\n`);
}

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

export function ago(ms: number, now = Date.now()): string {
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  if (s < 86400) return `${Math.round(s / 3600)}h ago`;
  return `${Math.round(s / 86400)}d ago`;
}
