// Label selectors: "tier in (B,C), env=prod, !canary, role!=primary, site notin (x), ring" — all terms must hold.
export type Labels = Readonly<Record<string, string>>;

export type Term =
  | { op: 'eq' | 'ne'; key: string; value: string }
  | { op: 'in' | 'notin'; key: string; values: string[] }
  | { op: 'exists' | 'absent'; key: string };

export interface Selector {
  source: string;
  terms: Term[];
}

const KEY = /^[A-Za-z0-9_.\-/]+$/;
const VALUE = /^[A-Za-z0-9_.\-:@/]*$/;

function splitTerms(src: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of src) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (depth < 0) throw new Error(`unbalanced ")" in selector "${src}"`);
    if (ch === ',' && depth === 0) {
      out.push(cur);
      cur = '';
    } else cur += ch;
  }
  if (depth !== 0) throw new Error(`unbalanced "(" in selector "${src}"`);
  out.push(cur);
  return out.map((t) => t.trim()).filter((t) => t.length > 0);
}

function checkKey(key: string, src: string): string {
  if (!KEY.test(key)) throw new Error(`invalid label key "${key}" in selector "${src}"`);
  return key;
}

function checkValue(value: string, src: string): string {
  if (!VALUE.test(value)) throw new Error(`invalid label value "${value}" in selector "${src}"`);
  return value;
}

/** Parses a selector; "" and "*" select every device. Throws a one-line error naming the bad term. */
export function parseSelector(source: string): Selector {
  const src = source.trim();
  if (src === '' || src === '*') return { source: src || '*', terms: [] };
  const terms: Term[] = splitTerms(src).map((t): Term => {
    let m = /^([^\s!=()]+)\s+(in|notin)\s*\((.*)\)$/.exec(t);
    if (m) {
      const values = m[3]
        .split(',')
        .map((v) => v.trim())
        .filter(Boolean)
        .map((v) => checkValue(v, src));
      if (values.length === 0) throw new Error(`empty set in selector term "${t}"`);
      return { op: m[2] as 'in' | 'notin', key: checkKey(m[1], src), values };
    }
    m = /^([^\s!=]+)\s*(==|=|!=)\s*(\S*)$/.exec(t);
    if (m) return { op: m[2] === '!=' ? 'ne' : 'eq', key: checkKey(m[1], src), value: checkValue(m[3], src) };
    m = /^!\s*([^\s!=]+)$/.exec(t);
    if (m) return { op: 'absent', key: checkKey(m[1], src) };
    if (KEY.test(t)) return { op: 'exists', key: t };
    throw new Error(
      `cannot parse selector term "${t}" (use key=value, key!=value, key in (a,b), key notin (a), key, !key)`,
    );
  });
  return { source: src, terms };
}

function holds(term: Term, labels: Labels): boolean {
  const v = Object.hasOwn(labels, term.key) ? labels[term.key] : undefined;
  switch (term.op) {
    case 'eq':
      return v === term.value;
    case 'ne':
      return v !== term.value;
    case 'in':
      return v !== undefined && term.values.includes(v);
    case 'notin':
      return v === undefined || !term.values.includes(v);
    case 'exists':
      return v !== undefined && v !== 'false';
    case 'absent':
      return v === undefined || v === 'false';
  }
}

/** True when every term of the selector holds for these labels. */
export function matches(selector: Selector, labels: Labels): boolean {
  for (const term of selector.terms) if (!holds(term, labels)) return false;
  return true;
}
