#!/usr/bin/env node
// The `ringfence` command. An installed package runs the compiled CLI (dist/cli/ringfence.js) on plain node.
// A development checkout (src/ beside bin/, tsx installed) runs the TypeScript sources through tsx, so the
// tests and `npm run ringfence` never run a stale build; RINGFENCE_DIST=1 makes a checkout run its build.
import { existsSync } from 'node:fs';

const source = new URL('../src/cli/main.ts', import.meta.url);
let tsx = null;
if (process.env.RINGFENCE_DIST !== '1' && existsSync(source)) {
  tsx = await import('tsx/esm/api').catch(() => null);
}
if (tsx) {
  tsx.register();
  await import(source.href);
} else {
  await import('../dist/cli/ringfence.js');
}
