// The server's own configuration file, DATA/server.yaml: written with defaults on first start, read on every
// start; command-line flags override it. Errors name the file, line and field.
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { LineCounter, parseDocument } from 'yaml';
import { z } from 'zod';
import { writeFileAtomicSync } from '../store/atomic-file.ts';

const schema = z
  .object({
    host: z.string().min(1).default('127.0.0.1'),
    port: z.number().int().min(0).max(65535).default(8080),
    poll_seconds: z.number().int().min(1).max(86_400).default(30),
    database: z
      .string()
      .regex(/^(postgres(ql)?:\/\/|sqlite:)/, 'use postgres://… or sqlite:PATH')
      .nullable()
      .default(null),
  })
  .strict();

export type ServerConfig = z.infer<typeof schema>;

const TEMPLATE = `# Ringfence server configuration, created on first start. Command-line flags override these values.
# Address and port to listen on.
host: 127.0.0.1
port: 8080
# Seconds between check-ins that agents are told to use (devices add jitter; larger fleets, larger values).
poll_seconds: 30
# null: SQLite in this folder (the embedded default). For scale-out: postgres://user@host/db
database: null
`;

/** Reads DATA/server.yaml, creating it with defaults on first start. */
export function loadServerConfig(dataDir: string): { config: ServerConfig; file: string; created: boolean } {
  mkdirSync(dataDir, { recursive: true });
  const file = join(dataDir, 'server.yaml');
  let created = false;
  if (!existsSync(file)) {
    writeFileAtomicSync(file, TEMPLATE, 0o600);
    created = true;
  }
  const text = readFileSync(file, 'utf8');
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc });
  if (doc.errors.length) {
    throw new Error(
      `${file}:${lc.linePos(doc.errors[0].pos[0]).line}: invalid YAML: ${doc.errors[0].message.split('\n')[0]}`,
    );
  }
  const res = schema.safeParse(doc.toJS() ?? {});
  if (!res.success) {
    const issue = res.error.issues[0];
    const path = issue.path.filter((p): p is string | number => typeof p !== 'symbol');
    const node = doc.getIn(path, true) as { range?: [number, number, number] } | undefined;
    const line = node?.range ? lc.linePos(node.range[0]).line : 1;
    throw new Error(`${file}:${line}: ${path.join('.') || '(config)'}: ${issue.message}`);
  }
  return { config: res.data, file, created };
}
