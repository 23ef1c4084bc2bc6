// Where Ringfence's own files are (bin/, dist/web): found by walking up to the package.json that names ringfence,
// so the same code finds them from the TypeScript sources (src/…) and from the compiled build (dist/cli/chunks/…).
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let cached: string | undefined;

/** The folder holding Ringfence's package.json (the checkout, or the installed package). */
export function packageRoot(): string {
  if (cached) return cached;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (
      existsSync(pkg) &&
      (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'ringfence'
    ) {
      cached = dir;
      return dir;
    }
    const up = dirname(dir);
    if (up === dir)
      throw new Error(`cannot find Ringfence's package.json above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
}
