// YAML documents validated by a zod schema, with errors that name the file, line and field — shared by
// plans, the agent's configuration and the server's configuration. This is the one place Ringfence parses
// YAML, so it is also where hostile documents are refused before they cost memory or time: a size cap, a
// nesting cap and alias limits (a "billion laughs" document is a few hundred bytes that expand to gigabytes).
import { type Document, isAlias, isCollection, isPair, Lexer, LineCounter, parseDocument } from 'yaml';
import type { z } from 'zod';

/** A one-line "FILE:LINE: field: message" error about a YAML document. */
export class YamlError extends Error {}

/** Limits for a YAML document. */
export interface YamlLimits {
  maxBytes: number;
  maxAliasCount: number;
  maxAliasExpansion: number;
  maxDepth: number;
}

/** The limits of every YAML document Ringfence reads (plans, agent and server configurations). */
export const YAML_LIMITS: Readonly<YamlLimits> = {
  /** Bytes of YAML text (UTF-8). Real plans and configurations are a few kilobytes. */
  maxBytes: 1024 * 1024,
  /** The yaml package's own guard against exponential alias expansion (its ToJSOptions.maxAliasCount). */
  maxAliasCount: 100,
  /** Nodes that aliases may add in total once expanded: catches linear blow-ups maxAliasCount lets through. */
  maxAliasExpansion: 10_000,
  /** Nesting depth of collections. Real documents stay under ten. */
  maxDepth: 64,
};

type Limits = Readonly<YamlLimits>;

const ALIAS_MESSAGE = (l: Limits) =>
  `too many YAML aliases: they would expand past ${l.maxAliasExpansion} nodes (a "billion laughs" document?)`;

/**
 * An upper bound of how deep a document nests, from the lexer alone (it is iterative and linear; the parser and
 * composer recurse per level, and a megabyte of "[" costs them seconds and gigabytes). Flow brackets count
 * exactly (quoted scalars are single tokens); block nesting is bounded by twice the chain of increasing
 * indentations plus the indicators ("-", "?", ":") on the line. Returns the bound and the line where it peaks.
 */
function nestingBound(text: string, cap: number): { depth: number; line: number } | null {
  let flow = 0;
  let line = 1;
  const indents: number[] = [];
  let lineStart = true;
  let indent = 0;
  let placed = false;
  let indicators = 0;
  let afterScalarMark = false;
  for (const tok of new Lexer().lex(text)) {
    if (afterScalarMark) {
      // The source of a scalar (block scalars hold whole lines): content, never structure.
      afterScalarMark = false;
      for (let i = tok.indexOf('\n'); i !== -1; i = tok.indexOf('\n', i + 1)) line++;
      continue;
    }
    const c = tok[0];
    if (tok === '\u001f') {
      afterScalarMark = true;
    } else if (c === '\n' || c === '\r') {
      line++;
      lineStart = true;
      indent = 0;
      placed = false;
      indicators = 0;
      continue;
    } else if (c === ' ' || c === '\t') {
      if (lineStart) indent = tok.length;
      for (let i = tok.indexOf('\n'); i !== -1; i = tok.indexOf('\n', i + 1)) line++;
      lineStart = false;
      continue;
    } else if (c === '#' || tok === '\u0002' || tok === '\ufeff') {
      continue;
    } else if (c === '"' || c === "'") {
      for (let i = tok.indexOf('\n'); i !== -1; i = tok.indexOf('\n', i + 1)) line++;
    } else if (tok === '[' || tok === '{') {
      flow++;
    } else if (tok === ']' || tok === '}') {
      flow = Math.max(0, flow - 1);
    } else if (flow === 0 && (tok === '-' || tok === '?' || tok === ':')) {
      indicators++;
    }
    lineStart = false;
    if (!placed && flow === 0) {
      placed = true;
      while (indents.length && indents[indents.length - 1] >= indent) indents.pop();
      indents.push(indent);
    }
    const depth = 2 * indents.length + indicators + flow;
    if (depth > cap) return { depth, line };
  }
  return null;
}

/** Start offset of a node, when the parser recorded one. */
const startOf = (n: unknown): number | undefined => (n as { range?: [number, number, number] })?.range?.[0];

/**
 * Walks the document without recursion (hostile nesting must not overflow the stack) and measures what the
 * aliases would expand to, and how deep collections nest. Returns the first problem and where it is.
 */
function checkShape(doc: Document, limits: Limits): { message: string; pos?: number } | null {
  const size = new Map<unknown, number>(); // node -> node count once every alias in it is expanded
  const height = new Map<unknown, number>(); // node -> collection levels in it, aliases expanded
  const tooDeep = (pos: number | undefined) => ({
    message: `YAML nested deeper than ${limits.maxDepth} levels`,
    pos,
  });
  const onPath = new Set<unknown>();
  let expansion = 0;
  // Iterative post-order: [node, depth, children-pushed].
  const stack: Array<[unknown, number, boolean]> = [[doc.contents, 0, false]];
  while (stack.length) {
    const top = stack[stack.length - 1];
    const [node, depth, expanded] = top;
    if (node === null || node === undefined || size.has(node)) {
      stack.pop();
      continue;
    }
    if (isAlias(node)) {
      const target = node.resolve(doc);
      if (target === undefined) {
        size.set(node, 1);
        height.set(node, 0);
        stack.pop();
      } else if (onPath.has(target)) {
        return { message: 'a YAML alias refers to a node that contains it', pos: startOf(node) };
      } else if (!size.has(target)) {
        stack.push([target, depth, false]); // measure the anchored node first, then come back
      } else {
        const n = size.get(target) ?? 1;
        expansion += n;
        if (expansion > limits.maxAliasExpansion)
          return { message: ALIAS_MESSAGE(limits), pos: startOf(node) };
        const h = height.get(target) ?? 0;
        if (depth + h > limits.maxDepth) return tooDeep(startOf(node));
        size.set(node, n);
        height.set(node, h);
        stack.pop();
      }
      continue;
    }
    const children: unknown[] = isCollection(node) ? node.items : isPair(node) ? [node.key, node.value] : [];
    if (!expanded) {
      if (isCollection(node) && depth >= limits.maxDepth) return tooDeep(startOf(node));
      top[2] = true;
      onPath.add(node);
      const childDepth = isCollection(node) ? depth + 1 : depth;
      for (let i = children.length - 1; i >= 0; i--) stack.push([children[i], childDepth, false]);
      continue;
    }
    onPath.delete(node);
    let n = isPair(node) ? 0 : 1;
    let h = 0;
    for (const c of children) {
      if (c === null || c === undefined) continue;
      n += size.get(c) ?? 1;
      h = Math.max(h, height.get(c) ?? 0);
    }
    if (isCollection(node)) h += 1;
    if (depth + h > limits.maxDepth) return tooDeep(startOf(node));
    size.set(node, n);
    height.set(node, h);
    stack.pop();
  }
  return null;
}

/** Parses YAML text and validates it; throws YamlError naming the first problem's file, line and field. */
export function parseValidatedYaml<S extends z.ZodType>(
  schema: S,
  text: string,
  file: string,
  errorClass: new (message: string) => Error = YamlError,
  limits: Limits = YAML_LIMITS,
): z.output<S> {
  const lc = new LineCounter();
  const lineOf = (pos: number | undefined) => (pos === undefined ? 1 : lc.linePos(pos).line);
  const fail = (pos: number | undefined, message: string): never => {
    throw new errorClass(`${file}:${lineOf(pos)}: ${message}`);
  };

  const bytes = Buffer.byteLength(text, 'utf8');
  if (bytes > limits.maxBytes) {
    // Name the line where the document crosses the cap (counted on the text, without parsing it).
    let line = 1;
    let seen = 0;
    for (let i = 0; i < text.length && seen <= limits.maxBytes; i++) {
      const c = text.charCodeAt(i);
      seen += c < 0x80 ? 1 : c < 0x800 ? 2 : c >= 0xd800 && c <= 0xdbff ? 2 : 3;
      if (c === 10) line++;
    }
    throw new errorClass(
      `${file}:${line}: YAML document too large (${bytes} bytes; at most ${limits.maxBytes})`,
    );
  }

  // Refuse pathological nesting before the (recursive) parser sees it; the exact check follows the parse.
  const nest = nestingBound(text, limits.maxDepth * 4);
  if (nest) throw new errorClass(`${file}:${nest.line}: YAML nested deeper than ${limits.maxDepth} levels`);

  let doc: Document;
  try {
    doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
  } catch (e) {
    // The parser recurses on nesting; a stack overflow is a hostile document, not a server fault.
    return fail(undefined, `invalid YAML: ${(e as Error).message}`);
  }
  if (doc.errors.length > 0) {
    const e = doc.errors[0];
    fail(e.pos[0], `invalid YAML: ${e.message.split('\n')[0]}`);
  }
  const shape = checkShape(doc, limits);
  if (shape) fail(shape.pos, shape.message);

  let data: unknown;
  try {
    data = doc.toJS({ maxAliasCount: limits.maxAliasCount }) ?? {};
  } catch (e) {
    // ReferenceError from the yaml package's alias guard (maxAliasCount), or an unresolvable alias.
    if (e instanceof ReferenceError && /alias/i.test(e.message))
      return fail(undefined, ALIAS_MESSAGE(limits));
    if (e instanceof RangeError) return fail(undefined, 'YAML document too complex');
    throw e;
  }
  let res: z.ZodSafeParseResult<z.output<S>>;
  try {
    res = schema.safeParse(data) as z.ZodSafeParseResult<z.output<S>>;
  } catch (e) {
    if (e instanceof RangeError) return fail(undefined, 'YAML document too complex');
    throw e;
  }
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
