// Shell completion: the scripts `ringfence completion bash|zsh|fish` prints parse in their shells, and the bash one
// really completes (sourced in bash, its function called the way bash calls it), including context names read
// from the configuration file through the real CLI. zsh and fish are checked when installed.
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { completionScript } from '../src/cli/completion.ts';
import { buildProgram } from '../src/cli/program.ts';
import { BIN } from '../src/demo/fleet.ts';

const run = promisify(execFile);

function installed(shell: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${shell}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const HAS_ZSH = installed('zsh');
const HAS_FISH = installed('fish');

describe('shell completion', { timeout: 120_000 }, () => {
  let dir: string;
  let binDir: string;
  let cfg: string;
  const scripts: Record<string, string> = {};
  let env: Record<string, string | undefined>;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'rf-completion-'));
    cfg = join(dir, 'config', 'config.yaml');
    // `ringfence` on PATH, as an installed CLI would be: completion calls it for context names.
    binDir = join(dir, 'bin');
    execFileSync('mkdir', ['-p', binDir]);
    writeFileSync(join(binDir, 'ringfence'), `#!/bin/sh\nexec "${process.execPath}" "${BIN}" "$@"\n`);
    chmodSync(join(binDir, 'ringfence'), 0o755);
    env = { ...process.env, RINGFENCE_CONFIG: cfg, PATH: `${binDir}:${process.env.PATH}`, CI: 'true' };
    delete env.RINGFENCE_CONTEXT;
    for (const shell of ['bash', 'zsh', 'fish']) {
      const r = await run(process.execPath, [BIN, 'completion', shell], { env });
      scripts[shell] = r.stdout;
      writeFileSync(join(dir, `ringfence.${shell}`), r.stdout);
    }
    for (const [name, server] of [
      ['lab', 'http://127.0.0.1:8080'],
      ['prod-eu', 'https://patch.example:8443'],
    ]) {
      await run(process.execPath, [BIN, 'config', 'set-context', name, '--server', server], { env });
    }
  });

  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('an unknown shell is a usage error (exit 2)', async () => {
    await assert.rejects(
      run(process.execPath, [BIN, 'completion', 'tcsh'], { env }),
      (e: { code: number }) => {
        assert.equal(e.code, 2);
        return true;
      },
    );
    await assert.rejects(run(process.execPath, [BIN, 'completion'], { env }), (e: { code: number }) => {
      assert.equal(e.code, 2);
      return true;
    });
  });

  it('the bash script parses (bash -n)', () => {
    assert.match(scripts.bash, /complete -o default -F _ringfence ringfence/);
    execFileSync('bash', ['-n', join(dir, 'ringfence.bash')]);
  });

  /** What the bash completion function offers for a command line whose last word is being completed. */
  async function complete(...words: string[]): Promise<string[]> {
    const quoted = words.map((w) => `'${w.replace(/'/g, `'\\''`)}'`).join(' ');
    const prog = `source ${join(dir, 'ringfence.bash')}
COMP_WORDS=(${quoted}); COMP_CWORD=$(( \${#COMP_WORDS[@]} - 1 ))
_ringfence ringfence "\${COMP_WORDS[COMP_CWORD]}" "\${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\\n' "\${COMPREPLY[@]}"`;
    const r = await run('bash', ['--norc', '--noprofile', '-c', prog], { env });
    return r.stdout.split('\n').filter(Boolean);
  }

  it('bash completes commands, subcommands, options and choices from the command tree', async () => {
    assert.ok((await complete('ringfence', 'fle')).includes('fleet'));
    assert.deepEqual(await complete('ringfence', 'fleet', 'l'), ['list']);
    assert.deepEqual(await complete('ringfence', 'config', 'set-c'), ['set-context']);
    assert.deepEqual(await complete('ringfence', 'operator', 'token', ''), ['add', 'revoke']);
    // Program options before the subcommand, with their values, do not confuse the walk.
    assert.deepEqual(await complete('ringfence', '--server', 'http://x', 'fleet', 'l'), ['list']);
    assert.deepEqual(await complete('ringfence', 'fleet', 'list', '--j'), ['--json']);
    const importOpts = await complete('ringfence', 'release', 'import', '--version', '1.2', '--');
    for (const o of ['--component', '--vendor-sig', '--json', '--context', '--help'])
      assert.ok(importOpts.includes(o), `${o} in ${importOpts}`);
    assert.deepEqual(await complete('ringfence', 'completion', ''), ['bash', 'zsh', 'fish']);
    assert.deepEqual(await complete('ringfence', 'agent', 'init', '--backend', 'e'), ['exec']);
    // A file argument: nothing offered, so bash falls back to file names (complete -o default).
    assert.deepEqual(await complete('ringfence', 'plan', 'check', ''), []);
  });

  it('bash completes --context with the contexts of the configuration file', async () => {
    assert.deepEqual(await complete('ringfence', '--context', ''), ['lab', 'prod-eu']);
    assert.deepEqual(await complete('ringfence', 'fleet', 'list', '--context', 'p'), ['prod-eu']);
    // --context=NAME: bash splits the word at "=".
    assert.deepEqual(await complete('ringfence', '--context', '=', 'l'), ['lab']);
    assert.deepEqual(await complete('ringfence', '--context', '='), ['lab', 'prod-eu']);
    assert.deepEqual(await complete('ringfence', '--context', 'lab', 'fle'), ['fleet']);
  });

  it('a command added to the tree completes with no change to the generator', async () => {
    const program = buildProgram();
    program
      .command('zz-new')
      .description("a command's description with 'quotes' and a \\ backslash")
      .command('deeper')
      .option('--level <n>', 'how deep');
    const file = join(dir, 'extended.bash');
    writeFileSync(file, completionScript(program, 'bash'));
    execFileSync('bash', ['-n', file]);
    const prog = `source ${file}
COMP_WORDS=(ringfence zz-new deeper --level 3 --l); COMP_CWORD=5
_ringfence ringfence --l 3; printf '%s\\n' "\${COMPREPLY[@]}"
COMP_WORDS=(ringfence zz-new d); COMP_CWORD=2
_ringfence ringfence d zz-new; printf '%s\\n' "\${COMPREPLY[@]}"`;
    const r = await run('bash', ['--norc', '--noprofile', '-c', prog], { env });
    assert.deepEqual(r.stdout.split('\n').filter(Boolean), ['--level', 'deeper']);
    for (const shell of ['zsh', 'fish'] as const) {
      const text = completionScript(program, shell);
      assert.match(text, /zz-new/);
      writeFileSync(join(dir, `extended.${shell}`), text);
    }
    if (HAS_ZSH) execFileSync('zsh', ['-n', join(dir, 'extended.zsh')]);
    if (HAS_FISH) execFileSync('fish', ['--no-execute', join(dir, 'extended.fish')]);
  });

  it('the zsh script parses (zsh -n)', { skip: HAS_ZSH ? false : 'zsh is not installed' }, () => {
    assert.match(scripts.zsh, /^#compdef ringfence\n/);
    execFileSync('zsh', ['-n', join(dir, 'ringfence.zsh')]);
  });

  it('the fish script parses (fish -n) and completes', {
    skip: HAS_FISH ? false : 'fish is not installed',
  }, async () => {
    execFileSync('fish', ['--no-execute', join(dir, 'ringfence.fish')]);
    const offered = async (line: string) => {
      const r = await run(
        'fish',
        ['--no-config', '-c', `source ${join(dir, 'ringfence.fish')}; complete -C '${line}'`],
        { env },
      );
      return r.stdout.split('\n').map((l) => l.split('\t')[0]);
    };
    assert.ok((await offered('ringfence fle')).includes('fleet'));
    assert.ok((await offered('ringfence fleet l')).includes('list'));
    assert.ok((await offered('ringfence fleet list --j')).includes('--json'));
    const ctx = await offered('ringfence --context ');
    assert.ok(ctx.includes('lab') && ctx.includes('prod-eu'), ctx.join(','));
  });

  it('the scripts say how to install them', () => {
    assert.match(scripts.bash, /source <\(ringfence completion bash\)/);
    assert.match(scripts.zsh, /fpath/);
    assert.match(scripts.fish, /~\/\.config\/fish\/completions\/ringfence\.fish/);
  });
});
