// Text for a terminal, safe whatever it holds. Much of what Ringfence prints is text a device chose (names,
// labels, failure reasons, health-check output) or a server or bundle handed over: written raw to a terminal, an
// ESC or C1 byte in it could recolour the screen, move the cursor, rewrite earlier lines or set the window title.
// --json output stays exact JSON: it parses to exactly the data, and the control characters JSON.stringify
// leaves raw are written as \u escapes. Shared by the CLI and the device agent's commands (which never load the CLI).

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
