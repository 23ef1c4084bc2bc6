// A throwaway PostgreSQL cluster for tests: initdb + pg_ctl in a temp folder on a free loopback port,
// run as the `postgres` user when the tests run as root. Stopped and removed by stop(), or when the test
// file's process exits, whichever comes first.
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface PgCluster {
  url: string;
  stop(): void;
}

/** Finds initdb/pg_ctl on PATH or in Debian's versioned folder; null when PostgreSQL is not installed. */
export function pgBinDir(): string | null {
  for (const dir of (process.env.PATH ?? '').split(':'))
    if (dir && existsSync(join(dir, 'initdb')) && existsSync(join(dir, 'pg_ctl'))) return dir;
  const base = '/usr/lib/postgresql';
  if (!existsSync(base)) return null;
  const versions = readdirSync(base).sort((a, b) => Number(b) - Number(a));
  for (const v of versions) if (existsSync(join(base, v, 'bin', 'initdb'))) return join(base, v, 'bin');
  return null;
}

async function freePort(): Promise<number> {
  return new Promise((res) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => res(port));
    });
  });
}

function pgUid(): { uid: number; gid: number } | null {
  if (process.getuid?.() !== 0) return null;
  const out = execFileSync('id', ['-u', 'postgres']).toString().trim();
  const gid = execFileSync('id', ['-g', 'postgres']).toString().trim();
  return { uid: Number(out), gid: Number(gid) };
}

/** Starts a fresh cluster; returns its connection URL. */
export async function startPostgres(): Promise<PgCluster> {
  const bin = pgBinDir();
  if (!bin) throw new Error('PostgreSQL is not installed (apt-get install postgresql)');
  const root = mkdtempSync(join(tmpdir(), 'rf-pg-'));
  chmodSync(root, 0o755);
  const data = join(root, 'data');
  const ids = pgUid();
  if (ids) chownSync(root, ids.uid, ids.gid);
  const run = (cmd: string, args: string[]) =>
    execFileSync(join(bin, cmd), args, {
      stdio: 'pipe',
      ...(ids ? { uid: ids.uid, gid: ids.gid } : {}),
      cwd: root,
    });
  run('initdb', ['-D', data, '-U', 'ringfence', '--auth=trust', '-E', 'UTF8', '--no-sync']);
  const port = await freePort();
  run('pg_ctl', [
    '-D',
    data,
    '-l',
    join(root, 'log'),
    '-w',
    '-o',
    `-p ${port} -h 127.0.0.1 -k ${root} -c fsync=off -c full_page_writes=off -c synchronous_commit=off`,
    'start',
  ]);
  let stopped = false;
  const stop = () => {
    if (stopped) return;
    stopped = true;
    process.off('exit', stop);
    try {
      run('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop']);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  };
  // pg_ctl daemonizes the server: it is no child of the test, so a crashed test file must stop it itself.
  process.on('exit', stop);
  return { url: `postgres://ringfence@127.0.0.1:${port}/postgres`, stop };
}
