// `npm run build:cli`: the CLI and server as compiled JavaScript in dist/cli/ (run by plain node; no tsx, no
// TypeScript at run time). esbuild bundles our own sources and a few many-file ES-module packages
// (BUNDLED_PACKAGES); every other npm package stays external, resolved from node_modules as usual. Code splitting keeps what a command loads with `await import()` in its own chunk, so
// `ringfence --help` and `--version` load only the command definitions and commander (test/cli-startup.test.ts).
import { readFileSync, statSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { fileURLToPath } from 'node:url';
import { build, type Metafile, type Plugin } from 'esbuild';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const CLI_DIR = `${ROOT}dist/cli`;
export const CLI_ENTRY = `${CLI_DIR}/ringfence.js`;

/**
 * Pure-JavaScript ES-module packages of many small files, bundled into the build instead of resolved at run time:
 * typebox alone opened 684 files and kysely 288 at every server start (strace), about half of the start-up time.
 * Everything else stays external: native modules (better-sqlite3), packages that load files by path at run time
 * (pino's transports, pg's optional native binding) and CommonJS packages that npm may update in place.
 */
export const BUNDLED_PACKAGES = [
  'typebox',
  '@fastify/type-provider-typebox',
  'kysely',
  'zod',
  'yaml',
  'jose',
];

/** Leaves every npm package external but BUNDLED_PACKAGES. */
const externalPackages: Plugin = {
  name: 'external-packages',
  setup(b) {
    b.onResolve({ filter: /^[^./]/ }, (args) => {
      if (args.path.startsWith('node:')) return { path: args.path, external: true };
      const name = args.path.startsWith('@')
        ? args.path.split('/').slice(0, 2).join('/')
        : args.path.split('/')[0];
      return BUNDLED_PACKAGES.includes(name) ? undefined : { path: args.path, external: true };
    });
  },
};

/** Builds dist/cli/ (removing what an earlier build left) and returns esbuild's metafile of it. */
export async function buildCli(opts: { quiet?: boolean; outdir?: string } = {}): Promise<Metafile> {
  const outdir = opts.outdir ?? CLI_DIR;
  const { rmSync } = await import('node:fs');
  rmSync(outdir, { recursive: true, force: true });
  const r = await build({
    entryPoints: { ringfence: `${ROOT}src/cli/main.ts` },
    outdir,
    bundle: true,
    splitting: true,
    plugins: [externalPackages],
    platform: 'node',
    format: 'esm',
    target: 'node20',
    chunkNames: 'chunks/[name]-[hash]',
    // Readable stack traces for operators' bug reports: names kept, only whitespace and syntax minified.
    minifyWhitespace: true,
    minifySyntax: true,
    legalComments: 'none',
    metafile: true,
    logLevel: opts.quiet ? 'error' : 'warning',
    banner: {
      // CommonJS dependencies bundled by reference still call require() for node built-ins.
      js: "import{createRequire as __rfRequire}from'node:module';const require=__rfRequire(import.meta.url);",
    },
  });
  assertExternalsDeclared(r.metafile);
  return r.metafile;
}

/**
 * Every package the build leaves external must be one of our own dependencies: one that only resolves because npm
 * happened to hoist a dependency's dependency would break the installed package when npm nests it instead.
 */
function assertExternalsDeclared(meta: Metafile): void {
  const pkg = JSON.parse(readFileSync(`${ROOT}package.json`, 'utf8')) as {
    dependencies: Record<string, string>;
  };
  const undeclared = new Set<string>();
  for (const out of Object.values(meta.outputs))
    for (const i of out.imports) {
      if (!i.external || i.path.startsWith('node:') || builtinModules.includes(i.path)) continue;
      const name = i.path.startsWith('@') ? i.path.split('/').slice(0, 2).join('/') : i.path.split('/')[0];
      if (!Object.hasOwn(pkg.dependencies, name)) undeclared.add(name);
    }
  if (undeclared.size)
    throw new Error(`the build imports packages that are not in dependencies: ${[...undeclared].join(', ')}`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const meta = await buildCli();
  const bytes = Object.keys(meta.outputs).reduce((n, f) => n + statSync(f).size, 0);
  console.log(`${CLI_ENTRY} (${Object.keys(meta.outputs).length} files, ${(bytes / 1024).toFixed(0)} KiB)`);
}
