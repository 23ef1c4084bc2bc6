// The layering of the code base, checked on the import graph of src/ (static, type-only, re-exports and dynamic
// imports alike): the device agent never loads the CLI or the server, the device verifier never loads the signer,
// and the neutral primitives (files, net, terminal) depend on none of the programs.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const SRC = join(ROOT, 'src');

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    if (e.isDirectory()) return sources(p);
    return /\.tsx?$/.test(e.name) ? [p] : [];
  });
}

// `from '…'` (imports and re-exports, type-only included), `import '…'` and `import('…')`.
const SPECIFIER = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)['"](\.{1,2}\/[^'"]+)['"]/g;

/** Every relative import of a file, as paths relative to the repository root. */
function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  return [...text.matchAll(SPECIFIER)].map((m) => relative(ROOT, resolve(dirname(file), m[1])));
}

const graph = new Map(sources(SRC).map((f) => [relative(ROOT, f), importsOf(f)]));

/** The imports of every file under `folder` that lead into any of `forbidden`. */
function crossings(folder: string, forbidden: string[]): string[] {
  const out: string[] = [];
  for (const [file, deps] of graph) {
    if (!file.startsWith(folder)) continue;
    for (const d of deps) if (forbidden.some((f) => d.startsWith(f))) out.push(`${file} → ${d}`);
  }
  return out;
}

/** Every file reachable from `entry` through the import graph. */
function closure(entry: string): Set<string> {
  const seen = new Set<string>();
  const todo = [entry];
  while (todo.length) {
    const f = todo.pop() as string;
    if (seen.has(f)) continue;
    seen.add(f);
    for (const d of graph.get(f) ?? []) todo.push(d);
  }
  return seen;
}

describe('architecture: layers', () => {
  test('the import scan sees static, type-only and dynamic imports', () => {
    assert.ok(graph.get('src/agent/main.ts')?.includes('src/agent/commands.ts'));
    assert.ok(graph.get('src/agent/offline.ts')?.includes('src/trust/verifier/bundle-reader.ts'));
    assert.ok(graph.get('src/agent/step-error.ts')?.includes('src/trust/verifier/device-verifier.ts'));
    assert.ok(graph.get('src/cli/program.ts')?.includes('src/agent/commands.ts'));
  });

  test('nothing under src/agent/ imports src/cli/ or src/server/', () => {
    assert.deepEqual(crossings('src/agent/', ['src/cli/', 'src/server/']), []);
  });

  test('the device build (src/agent/main.ts) reaches no CLI or server file, however indirectly', () => {
    const reached = [...closure('src/agent/main.ts')];
    assert.ok(
      reached.includes('src/trust/verifier/device-verifier.ts'),
      'the closure follows dynamic imports',
    );
    assert.deepEqual(
      reached.filter((f) => f.startsWith('src/cli/') || f.startsWith('src/server/')),
      [],
    );
  });

  test('the device verifier imports no signer, operations, agent, server or CLI code', () => {
    assert.deepEqual(
      crossings('src/trust/verifier/', [
        'src/trust/signer/',
        'src/trust/ops/',
        'src/agent/',
        'src/server/',
        'src/cli/',
      ]),
      [],
    );
  });

  test('nothing under src/trust/ imports the agent or the CLI', () => {
    assert.deepEqual(crossings('src/trust/', ['src/agent/', 'src/cli/']), []);
  });

  test('the neutral primitives (files, net, terminal) import none of the programs', () => {
    const programs = ['src/agent/', 'src/trust/', 'src/server/', 'src/cli/', 'src/engine/', 'src/sim/'];
    for (const folder of ['src/files/', 'src/net/', 'src/terminal/'])
      assert.deepEqual(crossings(folder, programs), [], folder);
  });
});
