// Offline bundles, the reading side (a device applying one, and the server importing one): the container format
// and its check. Container (simple, streamable, no dependencies):
//   "RFBUNDLE 1\n"
//   per entry:  <JSON header {"name","length","sha256"}>"\n" <length raw bytes>
//   last entry: MANIFEST.json (every other entry's name, length, sha256; releases; created; expires)
//   "RFBUNDLE-END <sha256 of all preceding bytes>\n"        <- the completion marker
// Writing bundles is ops/bundle.ts.
import { createHash } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readFileSync, readSync, statSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';

export const BUNDLE_MAGIC = 'RFBUNDLE 1\n';
export const BUNDLE_END = 'RFBUNDLE-END ';
const MAX_HEADER = 4096;

export interface BundleRelease {
  component: string;
  version: string;
  /** `mode`: the file mode signed in the target's `custom.mode` (absent for releases signed without one). */
  artifacts: Array<{ name: string; sha256: string; length: number; mode?: number }>;
}

export interface BundleManifest {
  format: 'ringfence-bundle/1';
  created: string;
  expires: string;
  releases: BundleRelease[];
  entries: Array<{ name: string; length: number; sha256: string }>;
}

/** Unpacks and checks the container: magic, every entry's length and sha256, the manifest, the end marker. */
export function unpack(file: string, into: string): BundleManifest {
  const fd = openSync(file, 'r');
  const total = createHash('sha256');
  const size = statSync(file).size;
  let pos = 0;
  const buf = Buffer.alloc(1 << 20);
  const readLine = (): string => {
    const b = Buffer.alloc(MAX_HEADER);
    const n = readSync(fd, b, 0, MAX_HEADER, pos);
    const i = b.subarray(0, n).indexOf(0x0a);
    if (i < 0) throw new Error('bundle is truncated or corrupt (no header line)');
    return b.subarray(0, i + 1).toString('utf8');
  };
  try {
    const magic = readLine();
    if (magic !== BUNDLE_MAGIC) throw new Error('not a Ringfence bundle');
    total.update(magic);
    pos += magic.length;
    const seen: BundleManifest['entries'] = [];
    let manifest: BundleManifest | null = null;
    for (;;) {
      if (pos >= size) throw new Error('bundle is incomplete: no completion marker (interrupted copy?)');
      const line = readLine();
      if (line.startsWith(BUNDLE_END)) {
        const want = line.slice(BUNDLE_END.length).trim();
        if (pos + Buffer.byteLength(line) !== size)
          throw new Error('bundle has bytes after its completion marker');
        if (total.digest('hex') !== want)
          throw new Error('bundle checksum does not match its completion marker');
        break;
      }
      const h = JSON.parse(line) as { name: string; length: number; sha256: string };
      if (
        typeof h.name !== 'string' ||
        h.name.startsWith('/') ||
        h.name.split('/').some((p) => p === '..' || p === '' || p === '.') ||
        !Number.isInteger(h.length) ||
        h.length < 0 ||
        pos + Buffer.byteLength(line) + h.length > size
      )
        throw new Error(`bundle entry "${String(h.name).slice(0, 80)}" is malformed or truncated`);
      total.update(line);
      pos += Buffer.byteLength(line);
      const out = join(into, h.name);
      mkdirSync(dirname(out), { recursive: true });
      const ofd = openSync(out, 'w');
      const eh = createHash('sha256');
      try {
        let left = h.length;
        while (left > 0) {
          const n = readSync(fd, buf, 0, Math.min(buf.length, left), pos);
          if (n <= 0) throw new Error('bundle is truncated');
          const chunk = buf.subarray(0, n);
          eh.update(chunk);
          total.update(chunk);
          writeSync(ofd, chunk);
          pos += n;
          left -= n;
        }
      } finally {
        closeSync(ofd);
      }
      if (eh.digest('hex') !== h.sha256) throw new Error(`bundle entry ${h.name} fails its checksum`);
      if (h.name === 'MANIFEST.json') manifest = JSON.parse(readFileSync(out, 'utf8'));
      else seen.push(h);
    }
    if (!manifest) throw new Error('bundle has no manifest');
    const listed = new Map(manifest.entries.map((e) => [e.name, e]));
    if (listed.size !== seen.length || seen.some((e) => listed.get(e.name)?.sha256 !== e.sha256))
      throw new Error('bundle entries do not match its manifest');
    return manifest;
  } finally {
    closeSync(fd);
  }
}
