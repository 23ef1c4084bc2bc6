// The server's own configuration file, DATA/server.yaml: written with defaults on first start, read on every
// start; command-line flags override it. Errors name the file, line and field.
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { z } from 'zod';
import { parseValidatedYaml } from '../config/validated-yaml.ts';
import { parseDuration } from '../engine/duration.ts';
import { writeFileAtomicSync } from '../files/atomic-file.ts';
import { DEFAULT_LIMITS, type ServerLimits } from './limits.ts';
import { ROLES, type Role } from './roles.ts';
import type { FleetLockOptions } from './services/fleet-lock.ts';
import { addressList, DEFAULT_FLEET_LOCK_RATES } from './services/fleet-lock-rules.ts';

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

/** True for a loopback host: 127.0.0.0/8, ::1, localhost. */
export function isLoopbackHost(hostname: string): boolean {
  const h = hostname.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127(\.\d{1,3}){3}$/.test(h);
}

const httpUrl = z.url({ protocol: /^https?$/, error: 'must be an http(s) URL' });
// Plain HTTP to the IdP would let anyone on the path forge its discovery and keys: only a loopback IdP (tests,
// a local proxy) may use it, and only when said so.
const oidcSchema = z
  .object({
    issuer: httpUrl,
    client_id: z.string().min(1),
    client_secret_file: z.string().min(1).nullable().default(null),
    redirect_url: httpUrl.nullable().default(null),
    role_claim: z.string().min(1).default('groups'),
    roles: z
      .record(z.string().min(1), z.enum(ROLES as [Role, ...Role[]]))
      .refine((r) => Object.keys(r).length > 0, 'map at least one claim value to a role'),
    name_claim: z.string().min(1).default('preferred_username'),
    session_hours: z.number().int().min(1).max(168).default(8),
    allow_insecure_http: z.boolean().default(false),
  })
  .strict()
  .superRefine((o, ctx) => {
    const url = new URL(o.issuer);
    if (url.protocol === 'https:') return;
    if (!o.allow_insecure_http)
      ctx.addIssue({
        code: 'custom',
        path: ['issuer'],
        message: 'must be https (allow_insecure_http: true is accepted for a loopback issuer only)',
      });
    else if (!isLoopbackHost(url.hostname))
      ctx.addIssue({
        code: 'custom',
        path: ['allow_insecure_http'],
        message: `true is accepted for a loopback issuer only (127.0.0.0/8, ::1, localhost), not ${url.hostname}`,
      });
  });

// FleetLock (issue 14): Zincati's reboot manager. Its clients send no credentials, so it is off until turned on,
// and may be limited to addresses and to requests carrying a shared secret header (docs/fleetlock.md).
const durationMs = (min: number, max: number) =>
  z.string().transform((v, ctx) => {
    let ms: number;
    try {
      ms = parseDuration(v);
    } catch (e) {
      ctx.addIssue({ code: 'custom', message: (e as Error).message });
      return z.NEVER;
    }
    if (ms < min || ms > max)
      ctx.addIssue({ code: 'custom', message: `must be between ${min / 1000}s and ${max / 86_400_000}d` });
    return ms;
  });
const fleetLockSchema = z
  .object({
    enabled: z.boolean().default(false),
    default_slots: positive(100_000).default(1),
    default_lease: durationMs(1000, 7 * 86_400_000).default(30 * 60_000),
    allow_from: z
      .array(z.string())
      .superRefine((list, ctx) => {
        try {
          addressList(list);
        } catch (e) {
          ctx.addIssue({ code: 'custom', message: (e as Error).message });
        }
      })
      .default([]),
    secret_header: z
      .object({
        name: z.string().regex(/^[A-Za-z0-9-]{1,64}$/, 'an HTTP header name (letters, digits, "-")'),
        value_file: z.string().min(1),
      })
      .strict()
      .nullable()
      .default(null),
    // Requests a minute (each also the burst): every request per address, per node id, refusals per address.
    rate_limit: z
      .object({
        per_address: positive(1_000_000).default(DEFAULT_FLEET_LOCK_RATES.perAddressPerMinute),
        per_id: positive(1_000_000).default(DEFAULT_FLEET_LOCK_RATES.perIdPerMinute),
        failures_per_address: positive(1_000_000).default(
          DEFAULT_FLEET_LOCK_RATES.failuresPerAddressPerMinute,
        ),
      })
      .strict()
      .prefault({}),
  })
  .strict()
  .prefault({});

const prometheusSchema = z
  .object({
    // No user:password@ in the URL: error messages carry the URL, and they reach the rollout's status, the audit
    // log and webhook payloads. Credentials go in headers_file.
    url: z
      .url({ protocol: /^https?$/ })
      .refine(
        (u) => !new URL(u).username && !new URL(u).password,
        'no credentials in the URL: use headers_file',
      ),
    timeout: durationMs(100, 60_000).default(5000),
    headers_file: z.string().min(1).nullable().default(null),
  })
  .strict()
  .nullable()
  .default(null);

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
      .object({
        four_eyes: z.boolean().default(true),
        pin_max_devices: z.number().int().min(0).max(100_000_000).default(10),
      })
      .strict()
      .prefault({}),
    oidc: oidcSchema.nullable().default(null),
    fleet_lock: fleetLockSchema,
    // Metric gates' Prometheus (HTTP API /api/v1/query); null: plans with metric gates are refused.
    prometheus: prometheusSchema,
    // The address people and receivers reach this server at (webhook payloads link to it); null: not sent.
    public_url: z
      .url({ protocol: /^https?$/ })
      .nullable()
      .default(null),
  })
  .strict();

export type ServerConfig = z.infer<typeof schema>;

/** The server-wide governance rules (server.yaml `governance:`), as the services take them. */
export interface Governance {
  /** Nobody approves what they imported or started themselves (plans may turn the rollout rule off). */
  fourEyes: boolean;
  /**
   * A pin reaches its devices at once, past every wave and approval: pinning more devices than this takes role
   * admin.
   */
  pinMaxDevices: number;
}

export const DEFAULT_GOVERNANCE: Governance = { fourEyes: true, pinMaxDevices: 10 };

/** Single sign-on with OpenID Connect (server.yaml `oidc:`), as the server takes it. */
export interface OidcOptions {
  issuer: string;
  clientId: string;
  /** Set: a confidential client (client_secret_basic) for the dashboard's code flow. */
  clientSecret?: string;
  /** The server's /v1/auth/oidc/callback as the browser reaches it; unset: no dashboard login. */
  redirectUrl?: string;
  /** The claim with the role information (a string or an array of strings). */
  roleClaim: string;
  /** Claim value → role; when several match, the most powerful wins. */
  roles: Record<string, Role>;
  /** The claim that names the operator. */
  nameClaim: string;
  /** Lifetime of the Ringfence token a login yields. */
  sessionHours: number;
  /** Plain HTTP to the IdP (the config accepts it for a loopback issuer only). */
  allowInsecureHttp: boolean;
}

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
# The address operators and webhook receivers reach this server at (webhook payloads carry it; docs/webhooks.md).
public_url: null
# Who may approve what (docs/security.md). four_eyes: a release cannot be approved by the operator who imported
# it, nor an approval wave by the operator who started the rollout (a plan may turn the second off with
# four_eyes: false). pin_max_devices: a pin skips every wave and approval, so pinning more devices than this at
# once takes role admin.
governance:
  four_eyes: true
  pin_max_devices: 10
# Single sign-on with OpenID Connect for the dashboard and \`ringfence login --sso\` (docs/security.md, "Single
# sign-on"). null: off. Operators signing in are created (source oidc) with the role their claims map to.
oidc: null
#   issuer: https://idp.example.com        # discovery: ISSUER/.well-known/openid-configuration
#   client_id: ringfence
#   client_secret_file: oidc-secret        # optional: a confidential client (relative: this folder)
#   redirect_url: https://ringfence.example.com/v1/auth/oidc/callback   # required for the dashboard login
#   role_claim: groups                     # a string or an array of strings
#   roles:                                 # claim value: role; when several match, the most powerful wins
#     ringfence-admins: admin
#     ringfence-approvers: approver
#     ringfence-operators: operator
#     ringfence-viewers: viewer
#   name_claim: preferred_username         # must be a valid operator name, else the login is refused
#   session_hours: 8                       # lifetime of the token a login yields (1..168)
#   allow_insecure_http: false             # true only for a loopback issuer (tests)
# FleetLock, the reboot manager Zincati (Fedora CoreOS) asks before rebooting (docs/fleetlock.md): POST
# /fleetlock/v1/pre-reboot and /fleetlock/v1/steady-state. Its clients send no credentials: limit who may call it.
# The group "default" has default_slots and default_lease; other groups are made with \`ringfence lock set\`.
fleet_lock:
  enabled: false
  default_slots: 1
  default_lease: 30m
  allow_from: []                           # CIDRs or addresses, e.g. [10.0.0.0/8, fd00::/8]; empty: any address
  secret_header: null                      # a header every request must carry (not settable in Zincati)
#   name: x-ringfence-fleetlock
#   value_file: fleetlock-secret           # relative: this folder
  rate_limit:                              # requests a minute (each also the burst), per server process
    per_address: ${DEFAULT_FLEET_LOCK_RATES.perAddressPerMinute}                        # every request from one address (behind a proxy: all clients)
    per_id: ${DEFAULT_FLEET_LOCK_RATES.perIdPerMinute}                              # every request naming one node id
    failures_per_address: ${DEFAULT_FLEET_LOCK_RATES.failuresPerAddressPerMinute}               # refused requests (address, secret, body, unknown group)
# Metric gates of plans (docs/plans.md, "Metric gates") query this Prometheus-compatible server's
# /api/v1/query. null: plans with metric gates are refused.
prometheus: null
#   url: http://127.0.0.1:9090
#   timeout: 5s
#   headers_file: prometheus-headers       # optional: "Name: value" lines sent with every query (relative: this folder)
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
  return { fourEyes: c.governance.four_eyes, pinMaxDevices: c.governance.pin_max_devices };
}

/**
 * The configured single sign-on in the server's own terms, or undefined when off. Reads the client secret file
 * (relative paths are taken from `dataDir`, like the TLS files); an unreadable or empty one is an error.
 */
export function oidcOf(c: ServerConfig, dataDir = '.'): OidcOptions | undefined {
  const o = c.oidc;
  if (!o) return undefined;
  let clientSecret: string | undefined;
  if (o.client_secret_file) {
    const file = resolve(dataDir, o.client_secret_file);
    try {
      clientSecret = readFileSync(file, 'utf8').trim();
    } catch (e) {
      throw new Error(
        `oidc.client_secret_file: cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? e}`,
      );
    }
    if (!clientSecret) throw new Error(`oidc.client_secret_file: ${file} is empty`);
  }
  return {
    issuer: o.issuer, // exactly as configured: it must equal the ID tokens' `iss`
    clientId: o.client_id,
    clientSecret,
    redirectUrl: o.redirect_url ?? undefined,
    roleClaim: o.role_claim,
    roles: o.roles,
    nameClaim: o.name_claim,
    sessionHours: o.session_hours,
    allowInsecureHttp: o.allow_insecure_http,
  };
}

/**
 * The configured FleetLock in the server's own terms. Reads the secret header's value file (relative paths are
 * taken from `dataDir`); an unreadable or empty one is an error.
 */
export function fleetLockOf(c: ServerConfig, dataDir = '.'): FleetLockOptions {
  const f = c.fleet_lock;
  let secretHeader: FleetLockOptions['secretHeader'];
  if (f.secret_header) {
    const file = resolve(dataDir, f.secret_header.value_file);
    let value: string;
    try {
      value = readFileSync(file, 'utf8').trim();
    } catch (e) {
      throw new Error(
        `fleet_lock.secret_header.value_file: cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? e}`,
      );
    }
    if (!value) throw new Error(`fleet_lock.secret_header.value_file: ${file} is empty`);
    secretHeader = { name: f.secret_header.name, value };
  }
  return {
    enabled: f.enabled,
    defaultSlots: f.default_slots,
    defaultLeaseMs: f.default_lease,
    allowFrom: f.allow_from,
    secretHeader,
    rateLimit: {
      perAddressPerMinute: f.rate_limit.per_address,
      perIdPerMinute: f.rate_limit.per_id,
      failuresPerAddressPerMinute: f.rate_limit.failures_per_address,
    },
  };
}

/** The metric gates' Prometheus (server.yaml `prometheus:`) in the server's own terms. */
export interface PrometheusOptions {
  url: string;
  timeoutMs: number;
  /** Sent with every query (e.g. Authorization); read from `headers_file`. */
  headers: Record<string, string>;
}

/**
 * The configured Prometheus, or null when there is none. Reads the headers file ("Name: value" lines; relative
 * paths are taken from `dataDir`); an unreadable file or a malformed line is an error.
 */
export function prometheusOf(c: ServerConfig, dataDir = '.'): PrometheusOptions | null {
  const p = c.prometheus;
  if (!p) return null;
  const headers: Record<string, string> = {};
  if (p.headers_file) {
    const file = resolve(dataDir, p.headers_file);
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (e) {
      throw new Error(
        `prometheus.headers_file: cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? e}`,
      );
    }
    text.split('\n').forEach((line, i) => {
      if (!line.trim() || line.trim().startsWith('#')) return;
      const m = /^([A-Za-z0-9-]{1,64}):[ \t]*(\S.*?)\s*$/.exec(line);
      if (!m) throw new Error(`prometheus.headers_file: ${file}:${i + 1}: expected "Name: value"`);
      headers[m[1]] = m[2];
    });
  }
  return { url: p.url.replace(/\/+$/, ''), timeoutMs: p.timeout, headers };
}
