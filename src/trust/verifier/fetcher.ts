// A tuf-js fetcher for http(s) mirrors and for plain folders (file: URLs: a USB stick, an unpacked bundle).
// tuf-js treats a 404 from `N.root.json` as "no newer root", so a missing file must become DownloadHTTPError(404).
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { BaseFetcher } from 'tuf-js';
// Not re-exported by the package index; the updater checks `instanceof` against this very class.
import { DownloadHTTPError } from 'tuf-js/dist/error.js';
// node:http rather than the global fetch: undici would stay resident in the device agent (about 12 MB).
import { discard, type HttpResponse, request } from '../../net/http.ts';

export class MirrorFetcher extends BaseFetcher {
  /** The ETag of the last timestamp.json fetched over http(s), kept for the next conditional refresh. */
  timestampEtag: string | undefined;

  constructor(private readonly opts: { timeoutMs?: number; headers?: Record<string, string> } = {}) {
    super();
  }

  override async fetch(url: string): Promise<ReadableStream<Uint8Array<ArrayBuffer>>> {
    if (url.startsWith('file:')) {
      const path = fileURLToPath(url);
      try {
        if (!(await stat(path)).isFile()) throw new Error('not a file');
      } catch {
        throw new DownloadHTTPError(`no such file ${path}`, 404);
      }
      return Readable.toWeb(createReadStream(path)) as ReadableStream<Uint8Array<ArrayBuffer>>;
    }
    let res: HttpResponse;
    try {
      res = await request(url, { headers: this.opts.headers, timeoutMs: this.opts.timeoutMs ?? 30_000 });
    } catch (e) {
      throw new Error(`cannot reach ${url}: ${(e as Error).message}`);
    }
    if (res.status < 200 || res.status > 299) {
      discard(res);
      throw new DownloadHTTPError(`GET ${url}: HTTP ${res.status}`, res.status);
    }
    if (url.endsWith('/timestamp.json')) {
      const etag = res.body.headers.etag;
      this.timestampEtag = typeof etag === 'string' ? etag : undefined;
    }
    return Readable.toWeb(res.body) as ReadableStream<Uint8Array<ArrayBuffer>>;
  }
}
