// The server's own configuration file, DATA/server.yaml: written with defaults on first start, read on every
// start; command-line flags override it. Errors name the file, line and field.
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { parseValidatedYaml } from '../config/validated-yaml.ts';
import { writeFileAtomicSync } from '../files/atomic-file.ts';
import { DEFAULT_LIMITS, type ServerLimits } from './limits.ts';

const positive = (max: number) => z.number().int().min(1).max(max);
const d = DEFAULT_LIMITS;
const limitsSchema = z
  .object({
    checkins_per_device_per_minute: positive(60_000).default(d.checkinsPerDevicePerMinute),
    checkin_burst: positive(100_000).default(d.checkinBurst),
    enrollments_per_ip_per_minute: positive(1_000_000).default(d.enrollmentsPerIpPerMinute),
    enrollment_burst: positive(1_000_000).default(d.enrollmentBurst),
    failed_auth_per_ip_per_minute: positive(1_000_000).default(d.failedAuthPerIpPerMinute),
    failed_auth_burst: positive(1_000_000).default(d.failedAuthBurst),
    reports_per_device_per_hour: positive(1_000_000).default(d.reportsPerDevicePerHour),
    audit_per_device_per_hour: positive(1_000_000).default(d.auditPerDevicePerHour),
    labels_max_entries: positive(1024).default(d.labelsMaxEntries),
    labels_max_bytes: positive(1_000_000).default(d.labelsMaxBytes),
    detail_max_bytes: positive(1_000_000).default(d.detailMaxBytes),
    json_max_depth: positive(1000).default(d.jsonMaxDepth),
    connections_per_ip: positive(1_000_000).default(d.connectionsPerIp),
    request_timeout_s: positive(86_400).default(d.requestTimeoutS),
    headers_timeout_s: positive(3600).default(d.headersTimeoutS),
    idle_timeout_s: positive(86_400).default(d.idleTimeoutS),
    wake_enabled: z.boolean().default(d.wakeEnabled),
    wake_max_held: positive(10_000_000).default(d.wakeMaxHeld),
    wake_max_hold_s: positive(3600).default(d.wakeMaxHoldS),
    waits_per_device_per_minute: positive(60_000).default(d.waitsPerDevicePerMinute),
    wait_burst: positive(100_000).default(d.waitBurst),
    step_cache_assignments: z.number().int().min(0).max(100_000_000).default(d.stepCacheAssignments),
  })
  .strict()
  // prefault, not default: zod 4 returns a default as it is, while prefault parses it, so the fields get theirs.
  .prefault({});

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
    tls: z
      .object({ cert: z.string().min(1), key: z.string().min(1) })
      .strict()
      .nullable()
      .default(null),
    limits: limitsSchema,
    governance: z
      .object({ four_eyes: z.boolean().default(true) })
      .strict()
      .default({ four_eyes: true }),
  })
  .strict();

export type ServerConfig = z.infer<typeof schema>;

/** The server-wide governance rules (server.yaml `governance:`), as the services take them. */
export interface Governance {
  /** Nobody approves what they imported or started themselves (plans may turn the rollout rule off). */
  fourEyes: boolean;
}

export const DEFAULT_GOVERNANCE: Governance = { fourEyes: true };

const TEMPLATE = `# Ringfence server configuration, created on first start. Command-line flags override these values.
# Address and port to listen on.
host: 127.0.0.1
port: 8080
# Seconds between check-ins that agents are told to use (devices add jitter; larger fleets, larger values).
poll_seconds: 30
# null: SQLite in this folder (the embedded default). For scale-out: postgres://user@host/db
database: null
# HTTPS without a proxy: PEM files (relative paths are taken from this folder). null: plain HTTP.
tls: null
#   cert: tls/server.crt
#   key: tls/server.key
# What one client may cost the server (docs/security.md). Omitted keys take these defaults.
limits:
  checkins_per_device_per_minute: ${d.checkinsPerDevicePerMinute}
  checkin_burst: ${d.checkinBurst}
  enrollments_per_ip_per_minute: ${d.enrollmentsPerIpPerMinute}
  enrollment_burst: ${d.enrollmentBurst}
  failed_auth_per_ip_per_minute: ${d.failedAuthPerIpPerMinute}
  failed_auth_burst: ${d.failedAuthBurst}
  reports_per_device_per_hour: ${d.reportsPerDevicePerHour}
  audit_per_device_per_hour: ${d.auditPerDevicePerHour}
  labels_max_entries: ${d.labelsMaxEntries}
  labels_max_bytes: ${d.labelsMaxBytes}
  detail_max_bytes: ${d.detailMaxBytes}
  json_max_depth: ${d.jsonMaxDepth}
  connections_per_ip: ${d.connectionsPerIp}
  request_timeout_s: ${d.requestTimeoutS}
  headers_timeout_s: ${d.headersTimeoutS}
  idle_timeout_s: ${d.idleTimeoutS}
  # Wake-ups: agents hold POST /v1/wait and hear of a change at once (docs/operations.md, "Wake-ups").
  # Waits held at once by this process (over it: 503 + Retry-After), the longest hold in seconds (kept below
  # idle_timeout_s), and how often one device may ask.
  wake_enabled: ${d.wakeEnabled}
  wake_max_held: ${d.wakeMaxHeld}
  wake_max_hold_s: ${d.wakeMaxHoldS}
  waits_per_device_per_minute: ${d.waitsPerDevicePerMinute}
  wait_burst: ${d.waitBurst}
  # Assignments the rollout driver keeps in memory between steps (about 0.4 kB each; 0: none). A kept rollout's
  # step reads only the rows written since its last step instead of all of them (docs/performance.md).
  step_cache_assignments: ${d.stepCacheAssignments}
# Who may approve what (docs/security.md). four_eyes: a release cannot be approved by the operator who imported
# it, nor an approval wave by the operator who started the rollout (a plan may turn the second off with
# four_eyes: false).
governance:
  four_eyes: true
`;

/** Reads DATA/server.yaml, creating it with defaults on first start. */
export function loadServerConfig(dataDir: string): { config: ServerConfig; file: string; created: boolean } {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const file = join(dataDir, 'server.yaml');
  let created = false;
  if (!existsSync(file)) {
    writeFileAtomicSync(file, TEMPLATE, 0o600);
    created = true;
  }
  const config = parseValidatedYaml(schema, readFileSync(file, 'utf8'), file);
  return { config, file, created };
}

/** The configured limits in the server's own terms. */
export function limitsOf(c: ServerConfig): ServerLimits {
  const l = c.limits;
  return {
    checkinsPerDevicePerMinute: l.checkins_per_device_per_minute,
    checkinBurst: l.checkin_burst,
    enrollmentsPerIpPerMinute: l.enrollments_per_ip_per_minute,
    enrollmentBurst: l.enrollment_burst,
    failedAuthPerIpPerMinute: l.failed_auth_per_ip_per_minute,
    failedAuthBurst: l.failed_auth_burst,
    reportsPerDevicePerHour: l.reports_per_device_per_hour,
    auditPerDevicePerHour: l.audit_per_device_per_hour,
    labelsMaxEntries: l.labels_max_entries,
    labelsMaxBytes: l.labels_max_bytes,
    detailMaxBytes: l.detail_max_bytes,
    jsonMaxDepth: l.json_max_depth,
    connectionsPerIp: l.connections_per_ip,
    requestTimeoutS: l.request_timeout_s,
    headersTimeoutS: l.headers_timeout_s,
    idleTimeoutS: l.idle_timeout_s,
    wakeEnabled: l.wake_enabled,
    wakeMaxHeld: l.wake_max_held,
    wakeMaxHoldS: l.wake_max_hold_s,
    waitsPerDevicePerMinute: l.waits_per_device_per_minute,
    waitBurst: l.wait_burst,
    stepCacheAssignments: l.step_cache_assignments,
  };
}

/** The configured governance rules in the server's own terms. */
export function governanceOf(c: ServerConfig): Governance {
  return { fourEyes: c.governance.four_eyes };
}
