// The routes a running server registered, read from Fastify's printed route tree (`printRoutes({ commonPrefix:
// false })`): for tests that check every route (roles, OpenAPI coverage).

export interface Route {
  method: string;
  url: string;
}

/** Every route in the tree; HEAD is left out (Fastify adds a copy of every GET). */
export function routesOf(tree: string): Route[] {
  const out: Route[] = [];
  const stack: Array<{ depth: number; path: string }> = [];
  for (const line of tree.split('\n')) {
    const m = /^([│ ]*)[└├]── (\S+) \(([A-Z, ]+)\)$/.exec(line);
    if (!m) continue;
    const depth = m[1].length / 4;
    while (stack.length > 0 && stack[stack.length - 1].depth >= depth) stack.pop();
    const path = (stack[stack.length - 1]?.path ?? '') + m[2];
    stack.push({ depth, path });
    for (const method of m[3].split(', ')) if (method !== 'HEAD') out.push({ method, url: path });
  }
  return out;
}
