// Downloads of offered artifacts into STATE/downloads/<sha256>: resumed with Range after an interruption,
// retried with backoff while the failure is transient, and checked against the offered sha256 and length.
import { createWriteStream, existsSync, mkdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Logger } from 'pino';
import { discard, type HttpResponse, request } from '../net/http.ts';
import { hashFile } from './backend-dir.ts';
import type { AgentConfig } from './config.ts';
import type { FailureClass } from './journal.ts';
import { SHA256_RE, show, within } from './offer.ts';
import { backoff, sleep, TRANSIENT } from './retry.ts';
import { StepError } from './step-error.ts';

/** A download that receives no byte for this long is abandoned (and resumed at the next attempt). */
const STALL_MS = 120_000;

/** A release the server wants on the device, as listed in a check-in answer (checked by offer.ts first). */
export interface Offered {
  component: string;
  version: string;
  /** `mode`: the release's file mode when it carries one (checked by offer.ts; the signed one wins with a root). */
  artifacts: Array<{ name: string; sha256: string; length: number; url: string; mode?: number }>;
}

/** A file ready for staging: its artifact name, where it was downloaded, and the mode the backend gives it. */
export interface ObtainedFile {
  name: string;
  path: string;
  mode?: number;
}

/** Where to download from, and the device's credential there. */
export interface ServerIdentity {
  server: string;
  device_token: string;
}

/** Downloads with retries: transient failures back off exponentially with jitter; bad content is not retried. */
export async function download(
  a: Offered['artifacts'][number],
  id: ServerIdentity,
  cfg: Pick<AgentConfig, 'state_dir' | 'retry'>,
  log: Logger,
): Promise<string> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await downloadOnce(a, id, cfg.state_dir);
    } catch (e) {
      const cls = e instanceof StepError ? e.cls : 'download';
      if (!TRANSIENT.has(cls as FailureClass) || attempt >= cfg.retry.attempts) throw e;
      const wait = backoff(attempt, cfg.retry.base, cfg.retry.max);
      log.warn(
        { artifact: a.name, attempt, retry_ms: wait, err: (e as Error).message },
        'download failed; retrying',
      );
      await sleep(wait);
    }
  }
}

async function downloadOnce(
  a: Offered['artifacts'][number],
  id: ServerIdentity,
  stateDir: string,
): Promise<string> {
  const dir = join(stateDir, 'downloads');
  if (!SHA256_RE.test(a.sha256)) throw new StepError('invalid', `invalid offer: sha256 ${show(a.sha256)}`);
  const file = within(dir, a.sha256); // the blob cache is named by hash: never a path from the server
  mkdirSync(dir, { recursive: true });
  if (existsSync(file)) {
    const h = await hashFile(file);
    if (h.sha256 === a.sha256 && h.length === a.length) return file;
    rmSync(file, { force: true });
  }
  const part = `${file}.part`;
  let have = existsSync(part) ? statSync(part).size : 0;
  if (have > a.length) {
    rmSync(part);
    have = 0;
  }
  if (have === a.length) {
    // Killed after the last byte but before the rename: a Range request would only get 416, every time.
    const h = await hashFile(part);
    if (h.sha256 === a.sha256) {
      renameSync(part, file);
      return file;
    }
    rmSync(part);
    have = 0;
  }
  // Resume an interrupted download with a Range request.
  const headers: Record<string, string> = { authorization: `Bearer ${id.device_token}` };
  if (have > 0) headers.range = `bytes=${have}-`;
  let res: HttpResponse;
  const url = new URL(a.url, id.server);
  if (url.origin !== new URL(id.server).origin)
    throw new StepError('invalid', `invalid offer: url ${show(a.url)} leaves the server`);
  try {
    res = await request(url, { headers, idleTimeoutMs: STALL_MS });
  } catch (e) {
    throw new StepError('download', `GET ${a.url}: ${(e as Error).message}`);
  }
  if (res.status !== 200 && res.status !== 206) {
    discard(res);
    if (res.status === 416) rmSync(part, { force: true }); // the partial file is not a prefix: start over
    throw new StepError('download', `GET ${a.url}: HTTP ${res.status}`);
  }
  if (res.status === 200) have = 0;
  // Never more than the offered length: a server streaming endless data cannot fill the disk.
  let room = a.length - have;
  const cap = new Transform({
    transform(chunk: Buffer, _enc, done) {
      room -= chunk.length;
      if (room < 0)
        done(new StepError('verify', `${a.name}: the server sent more than the offered ${a.length} bytes`));
      else done(null, chunk);
    },
  });
  try {
    await pipeline(res.body, cap, createWriteStream(part, { flags: have ? 'a' : 'w' }));
  } catch (e) {
    if (e instanceof StepError) {
      rmSync(part, { force: true });
      throw e;
    }
    throw new StepError('download', `GET ${a.url}: ${(e as Error).message}`); // resumed next time by Range
  }
  const h = await hashFile(part);
  if (h.length !== a.length || h.sha256 !== a.sha256) {
    rmSync(part, { force: true });
    throw new StepError(
      'verify',
      `${a.name}: expected sha256 ${a.sha256} (${a.length} bytes), got ${h.sha256} (${h.length} bytes)`,
    );
  }
  renameSync(part, file);
  return file;
}
