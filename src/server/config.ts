// The server's own configuration file, DATA/server.yaml: written with defaults on first start, read on every
// start; command-line flags override it. Errors name the file, line and field.
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { parseValidatedYaml } from '../config/validated-yaml.ts';
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
  const config = parseValidatedYaml(schema, readFileSync(file, 'utf8'), file);
  return { config, file, created };
}
