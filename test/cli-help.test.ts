// Every command and subcommand of `ringfence` explains itself: a one-line description and at least one example
// in its `--help` (issue 13). The whole tree is walked, so a command added later without them fails here.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import type { Command } from 'commander';
import { buildProgram } from '../src/cli/program.ts';

const CLI = new URL('../bin/ringfence.js', import.meta.url).pathname;

/** Every command below the root, depth first, with its path of names (`fleet list`). */
function walk(cmd: Command, path: string[] = []): Array<{ path: string[]; cmd: Command }> {
  return cmd.commands.flatMap((c) => {
    const p = [...path, c.name()];
    return [{ path: p, cmd: c }, ...walk(c, p)];
  });
}

/** The full help of a command as `--help` prints it, the "after" text (examples) included. */
function helpText(cmd: Command): string {
  let out = '';
  cmd.configureOutput({
    writeOut: (s) => {
      out += s;
    },
    writeErr: (s) => {
      out += s;
    },
  });
  cmd.outputHelp();
  return out;
}

/** The example lines of a help text: `  $ ringfence …` under "Examples:". */
function examples(help: string): string[] {
  const at = help.indexOf('\nExamples:\n');
  if (at < 0) return [];
  return help
    .slice(at)
    .split('\n')
    .filter((l) => /^\s+\$ ringfence /.test(l));
}

describe('ringfence --help', () => {
  const program = buildProgram();
  const all = walk(program);

  it('finds the whole tree', () => {
    const names = all.map((c) => c.path.join(' '));
    // A sample of every level, so a walk that stops early cannot pass.
    for (const n of ['release import', 'fleet list', 'rollout watch', 'operator token add', 'bundle export'])
      assert.ok(names.includes(n), `${n} is in the tree`);
    assert.ok(all.length > 50, `${all.length} commands`);
  });

  it('gives every command a one-line description', () => {
    const bad = all
      .filter(({ cmd }) => {
        const d = cmd.description();
        return !d.trim() || d.includes('\n');
      })
      .map((c) => c.path.join(' '));
    assert.deepEqual(bad, [], `commands without a one-line description: ${bad.join(', ')}`);
  });

  it('shows at least one example in every help', () => {
    const bad = all.filter(({ cmd }) => examples(helpText(cmd)).length === 0).map((c) => c.path.join(' '));
    assert.deepEqual(bad, [], `no "Examples:" with a \`$ ringfence …\` line in --help: ${bad.join(', ')}`);
  });

  it('shows examples in the root help too (`ringfence --help`)', () => {
    assert.ok(program.description().trim() && !program.description().includes('\n'));
    assert.ok(examples(helpText(program)).length > 0, 'no "Examples:" in ringfence --help');
  });

  it('gives examples that name their own command', () => {
    // An example copied from a neighbour (`fleet hold` showing `fleet pin`) misleads: each command's examples
    // start with its own path (a parent's may show its children).
    const bad: string[] = [];
    for (const { path, cmd } of all) {
      const own = examples(helpText(cmd)).filter((l) =>
        ` ${l.trim().slice('$ ringfence '.length)} `.startsWith(` ${path.join(' ')} `),
      );
      if (own.length === 0) bad.push(path.join(' '));
    }
    assert.deepEqual(bad, [], `no example starts with the command itself: ${bad.join(', ')}`);
  });

  it('prints the examples through the real entry, with exit code 0', () => {
    for (const path of [['fleet', 'list'], ['release', 'import'], ['bundle', 'export'], ['rehearse']]) {
      const r = spawnSync(process.execPath, [CLI, ...path, '--help'], {
        encoding: 'utf8',
        env: { ...process.env, CI: 'true' },
        stdio: ['ignore', 'pipe', 'pipe'],
        timeout: 60_000,
      });
      assert.equal(r.status, 0, `${path.join(' ')} --help: ${r.stderr}`);
      assert.match(r.stdout, new RegExp(`^Usage: ringfence ${path.join(' ')} `, 'm'));
      assert.match(r.stdout, /\nExamples:\n( {2}\$ ringfence .*\n)+/);
      assert.match(r.stdout, new RegExp(`  \\$ ringfence ${path.join(' ')}[ \\n]`));
    }
  });
});
