// Downloads of offered artifacts into STATE/downloads/<sha256>: resumed with Range after an interruption,
// retried with backoff while the failure is transient, and checked against the offered sha256 and length.
import { createHash } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { discard, type HttpResponse, request } from '../net/http.ts';
import { hashFile, hashInto } from './backend-dir.ts';
import type { AgentConfig } from './config.ts';
import { collectYoung } from './gc.ts';
import type { FailureClass } from './journal.ts';
import { SHA256_RE, show, within } from './offer.ts';
import { backoff, sleep, TRANSIENT } from './retry.ts';
import { StepError } from './step-error.ts';

/**
 * Every socket read is a fresh 64 KiB buffer that is garbage once written, and V8 collects such buffers only
 * after tens of MB of them (its external-memory limit): a young-generation collection after every 512 KiB
 * keeps a download to about that much garbage (docs/agent.md, "Memory").
 */
const GC_EVERY_BYTES = 512 * 1024;

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
  /** The device's own verified download (blob cache or verified folder): the backend may move it, not copy it. */
  move?: boolean;
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
  // Hashed while it streams to disk (a resumed file's first part from the disk first): one pass, never the
  // whole artifact in memory, and never more than the offered length, so endless data cannot fill the disk.
  const hash = createHash('sha256');
  if (have > 0) await hashInto(hash, part, have);
  let got = have;
  let sinceGc = 0;
  const out = openSync(part, have ? 'a' : 'w');
  try {
    // 'data' events and synchronous writes: a socket read is written to the page cache in microseconds, far
    // less than a promise and a thread-pool round trip per chunk, and with nothing queued there is no backpressure.
    await new Promise<void>((resolve, reject) => {
      const body = res.body;
      let failed = false;
      body.on('data', (chunk: Buffer) => {
        if (failed) return; // destroyed: nothing more is written
        try {
          got += chunk.length;
          if (got > a.length)
            throw new StepError(
              'verify',
              `${a.name}: the server sent more than the offered ${a.length} bytes`,
            );
          hash.update(chunk);
          for (let off = 0; off < chunk.length; ) off += writeSync(out, chunk, off);
          sinceGc += chunk.length;
          if (sinceGc >= GC_EVERY_BYTES) {
            sinceGc = 0;
            collectYoung();
          }
        } catch (e) {
          failed = true;
          body.destroy();
          reject(e);
        }
      });
      body.once('end', resolve);
      body.once('error', reject);
      body.once('close', () => reject(new Error('connection closed before the end of the body')));
    });
  } catch (e) {
    closeSync(out);
    if (e instanceof StepError) {
      rmSync(part, { force: true });
      throw e;
    }
    throw new StepError('download', `GET ${a.url}: ${(e as Error).message}`); // resumed next time by Range
  }
  closeSync(out);
  const sha256 = hash.digest('hex');
  if (got !== a.length || sha256 !== a.sha256) {
    rmSync(part, { force: true });
    throw new StepError(
      'verify',
      `${a.name}: expected sha256 ${a.sha256} (${a.length} bytes), got ${sha256} (${got} bytes)`,
    );
  }
  renameSync(part, file);
  return file;
}
