// YAML documents validated by a zod schema, with errors that name the file, line and field — shared by
// plans, the agent's configuration and the server's configuration.
import { LineCounter, parseDocument } from 'yaml';
import type { z } from 'zod';

/** A one-line "FILE:LINE: field: message" error about a YAML document. */
export class YamlError extends Error {}

/** Parses YAML text and validates it; throws YamlError naming the first problem's file, line and field. */
export function parseValidatedYaml<S extends z.ZodType>(
  schema: S,
  text: string,
  file: string,
  errorClass: new (message: string) => Error = YamlError,
): z.output<S> {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false });
  if (doc.errors.length > 0) {
    const e = doc.errors[0];
    throw new errorClass(`${file}:${lc.linePos(e.pos[0]).line}: invalid YAML: ${e.message.split('\n')[0]}`);
  }
  const res = schema.safeParse(doc.toJS() ?? {});
  if (res.success) return res.data;
  const issue = res.error.issues[0];
  const path = issue.path.filter((p): p is string | number => typeof p !== 'symbol');
  // Walk up the path until a node with a position is found (a missing field points at its parent).
  let line = 1;
  for (let n = path.length; n >= 0; n--) {
    const node = doc.getIn(path.slice(0, n), true) as { range?: [number, number, number] } | undefined;
    if (node?.range) {
      line = lc.linePos(node.range[0]).line;
      break;
    }
  }
  throw new errorClass(`${file}:${line}: ${path.length ? path.join('.') : '(document)'}: ${issue.message}`);
}
