// `npm run build:agent`: the device build, dist/ringfence-agent.mjs: one plain-JS ESM file with every
// dependency inside, run by plain node (no tsx, no TypeScript transform, no node_modules on the device).
// The server and the CLI are not in it because nothing under src/agent/ imports them
// (test/architecture-layers.test.ts), so no plugin is needed to cut them out.
import { statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const AGENT_BUNDLE = `${ROOT}dist/ringfence-agent.mjs`;

/** Builds the agent into `outfile` (default dist/ringfence-agent.mjs); a package build uses its own path so it
 * never rewrites the file a running test's agent is loading. */
export async function buildAgent(opts: { quiet?: boolean; outfile?: string } = {}): Promise<string> {
  const outfile = opts.outfile ?? AGENT_BUNDLE;
  await build({
    entryPoints: [`${ROOT}src/agent/main.ts`],
    outfile,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    // Smaller source means less for V8 to keep; names are kept so stack traces and class names stay readable.
    minifyWhitespace: true,
    minifySyntax: true,
    legalComments: 'none',
    logLevel: opts.quiet ? 'error' : 'warning',
    banner: {
      // CommonJS dependencies (pino, commander) call require() for node built-ins.
      js: "#!/usr/bin/env node\nimport{createRequire as __rfRequire}from'node:module';const require=__rfRequire(import.meta.url);",
    },
  });
  return outfile;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const out = await buildAgent();
  console.log(`${out} (${(statSync(out).size / 1024).toFixed(0)} KiB)`);
}
