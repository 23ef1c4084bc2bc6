#!/usr/bin/env node
// The `ringfence` command. An installed package runs the compiled CLI (dist/cli/ringfence.js) on plain node.
// A development checkout (src/ beside bin/, tsx installed) runs the TypeScript sources through tsx, so the
// tests and `npm run ringfence` never run a stale build; RINGFENCE_DIST=1 makes a checkout run its build.
import { existsSync } from 'node:fs';

const source = new URL('../src/cli/main.ts', import.meta.url);
const build = new URL('../dist/cli/ringfence.js', import.meta.url);
let tsx = null;
if (process.env.RINGFENCE_DIST !== '1' && existsSync(source)) {
  try {
    tsx = await import('tsx/esm/api');
  } catch (e) {
    // Only "tsx is not installed" (npm install --omit=dev) falls back to the build; any other failure is shown.
    if (e?.code !== 'ERR_MODULE_NOT_FOUND') throw e;
  }
}
if (tsx) {
  tsx.register();
  await import(source.href);
} else if (existsSync(build)) {
  await import(build.href);
} else {
  process.stderr.write('ringfence: no compiled build in dist/cli: run `npm run build` (or `npm install` for tsx)\n');
  process.exitCode = 1;
}
