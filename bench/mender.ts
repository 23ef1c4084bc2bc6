// Mender 3.4 as the reference for `npm run bench:agent`: Debian's `mender-client` in standalone mode
// (`mender install ARTIFACT` then `mender commit`) applying a signed single-file artifact (the `single-file`
// update module Debian ships), the artifacts made at run time with Debian's `mender-artifact` and an ECDSA
// P-256 key made by openssl; nothing of it is kept in the repository. Wall time covers both commands (process
// start included); peak RSS is the larger of the two, from GNU time's %M. Mender reads the running artifact's
// name from /etc/mender/artifact_info until its first install: the bench writes that file when it is missing.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface MenderRun {
  ms: number;
  peakRssMb: number;
}

export interface Mender {
  /** Installs and commits the next artifact of this size (two alternate, so each install changes the file). */
  apply(bytes: number): Promise<MenderRun>;
}

const TOOLS = ['/usr/bin/mender', '/usr/bin/mender-artifact', '/usr/bin/time', '/usr/bin/openssl'];
const MODULE = '/usr/share/mender/modules/v3/single-file';
const ARTIFACT_INFO = '/etc/mender/artifact_info';

/** Why Mender cannot be measured here, or null when it can. */
export function menderMissing(): string | null {
  const gone = [...TOOLS, MODULE].filter((t) => !existsSync(t));
  if (gone.length)
    return `missing ${gone.join(', ')} (apt-get install -y mender-client mender-artifact time openssl)`;
  if (!existsSync(ARTIFACT_INFO) && process.getuid?.() !== 0)
    return `${ARTIFACT_INFO} is missing and only root may create it`;
  return null;
}

/** Runs a command under GNU time; resolves with its wall time and peak RSS, rejects when it fails. */
function timed(cmd: string, args: string[]): Promise<MenderRun> {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const p = spawn('/usr/bin/time', ['-f', 'RF-PEAK-KB %M', cmd, ...args], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let err = '';
    p.stderr.on('data', (c: Buffer) => {
      err = (err + c.toString()).slice(-8192);
    });
    p.on('error', reject);
    p.on('close', (code) => {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      const kb = Number(/RF-PEAK-KB (\d+)/.exec(err)?.[1]);
      if (code !== 0) reject(new Error(`${cmd} ${args.join(' ')}: exit ${code}: ${err.trim().slice(-600)}`));
      else resolve({ ms, peakRssMb: kb / 1024 });
    });
  });
}

/** Sets up a standalone Mender in `dir` with signed single-file artifacts of each size (payload: random bytes). */
export function setUpMender(dir: string, sizes: Array<{ bytes: number; payload: string }>): Mender {
  mkdirSync(join(dir, 'data'), { recursive: true });
  mkdirSync(join(dir, 'work'), { recursive: true });
  mkdirSync(join(dir, 'dest'), { recursive: true });
  if (!existsSync(ARTIFACT_INFO)) writeFileSync(ARTIFACT_INFO, 'artifact_name=bench-initial\n');
  const key = join(dir, 'key.pem');
  const pub = join(dir, 'pub.pem');
  execFileSync('openssl', ['ecparam', '-genkey', '-name', 'prime256v1', '-noout', '-out', key]);
  execFileSync('openssl', ['ec', '-in', key, '-pubout', '-out', pub], { stdio: 'ignore' });
  writeFileSync(join(dir, 'data', 'device_type'), 'device_type=rf-bench\n');
  const conf = join(dir, 'mender.conf');
  writeFileSync(
    conf,
    JSON.stringify({
      ArtifactVerifyKey: pub,
      ModulesWorkPath: join(dir, 'work'),
      ServerURL: 'https://mender.invalid', // never contacted: standalone mode
    }),
  );
  const meta = (name: string, value: string) => {
    const f = join(dir, name);
    writeFileSync(f, `${value}\n`);
    return f;
  };
  const files = [
    meta('dest_dir', join(dir, 'dest')),
    meta('filename', 'payload.bin'),
    meta('permissions', '644'),
  ];
  const artifacts = new Map<number, string[]>();
  for (const s of sizes) {
    const pair: string[] = [];
    for (const tag of ['a', 'b']) {
      // Each artifact carries its own bytes: the payload with one byte changed, so every install writes a new file.
      const payload = join(dir, `payload.bin`);
      const bytes = readFileSync(s.payload);
      bytes[0] = tag.charCodeAt(0);
      writeFileSync(payload, bytes);
      const out = join(dir, `${s.bytes}-${tag}.mender`);
      // No compression: the payload is random bytes, and gzip would only slow Mender down.
      execFileSync('mender-artifact', [
        'write',
        'module-image',
        '-T',
        'single-file',
        '-n',
        `rf-bench-${s.bytes}-${tag}`,
        '-t',
        'rf-bench',
        '-o',
        out,
        '--compression',
        'none',
        ...files.flatMap((f) => ['-f', f]),
        '-f',
        payload,
        '-k',
        key,
      ]);
      pair.push(out);
    }
    artifacts.set(s.bytes, pair);
  }
  const global = ['--config', conf, '--fallback-config', join(dir, 'none.conf'), '--data', join(dir, 'data')];
  let turn = 0;
  return {
    async apply(bytes) {
      const pair = artifacts.get(bytes);
      if (!pair) throw new Error(`no Mender artifact of ${bytes} bytes`);
      const artifact = pair[turn++ % 2];
      const started = process.hrtime.bigint();
      const install = await timed('mender', [...global, '--no-syslog', 'install', artifact]);
      const commit = await timed('mender', [...global, '--no-syslog', 'commit']);
      return {
        ms: Number(process.hrtime.bigint() - started) / 1e6,
        peakRssMb: Math.max(install.peakRssMb, commit.peakRssMb),
      };
    },
  };
}
