// Explicit limits on what one client can cost the server: rates (token buckets), hourly quotas and sizes.
// In memory, per server process: with several replicas each enforces its own share (docs/security.md).
// Maps are bounded, so an attacker who rotates keys (tokens, addresses) cannot grow them without limit.

/** The limits a server enforces; every one is in server.yaml under `limits:`. */
export interface ServerLimits {
  /** Check-ins one device may make: a burst, then this many per minute. */
  checkinsPerDevicePerMinute: number;
  checkinBurst: number;
  /** Enrollments from one address: a burst, then this many per minute. */
  enrollmentsPerIpPerMinute: number;
  enrollmentBurst: number;
  /** Requests with a missing or wrong token from one address: a burst, then this many per minute. */
  failedAuthPerIpPerMinute: number;
  failedAuthBurst: number;
  /** Report rows and audit rows stored for one device per hour; beyond that they are acknowledged, not kept. */
  reportsPerDevicePerHour: number;
  auditPerDevicePerHour: number;
  /** The label map a device may carry (enrollment labels included). */
  labelsMaxEntries: number;
  labelsMaxBytes: number;
  /** A device's health or report detail object, as stored (bigger ones are replaced by a marker). */
  detailMaxBytes: number;
  /** JSON nesting accepted in any request body. */
  jsonMaxDepth: number;
  /** Open connections from one address. */
  connectionsPerIp: number;
  /** Seconds: whole request received, headers received, idle keep-alive connection. */
  requestTimeoutS: number;
  headersTimeoutS: number;
  idleTimeoutS: number;
  /** Wake-ups (POST /v1/wait): offered at all, waits held at once by this process, longest hold (seconds). */
  wakeEnabled: boolean;
  wakeMaxHeld: number;
  wakeMaxHoldS: number;
  /** Wait requests one device may make: a burst, then this many per minute (a device cannot spin on it). */
  waitsPerDevicePerMinute: number;
  waitBurst: number;
  /**
   * Assignments the rollout driver keeps in memory between steps, over all active rollouts (about 0.4 kB each):
   * a kept rollout's step reads only what changed. 0 keeps none (every step reads all of its rollout's rows).
   */
  stepCacheAssignments: number;
}

export const DEFAULT_LIMITS: ServerLimits = {
  checkinsPerDevicePerMinute: 60,
  checkinBurst: 30,
  enrollmentsPerIpPerMinute: 600,
  enrollmentBurst: 200,
  failedAuthPerIpPerMinute: 60,
  failedAuthBurst: 60,
  reportsPerDevicePerHour: 600,
  auditPerDevicePerHour: 200,
  labelsMaxEntries: 64,
  labelsMaxBytes: 8192,
  detailMaxBytes: 16_384,
  jsonMaxDepth: 32,
  connectionsPerIp: 256,
  requestTimeoutS: 300,
  headersTimeoutS: 15,
  idleTimeoutS: 75,
  wakeEnabled: true,
  wakeMaxHeld: 20_000,
  wakeMaxHoldS: 25,
  waitsPerDevicePerMinute: 30,
  waitBurst: 10,
  stepCacheAssignments: 2_000_000,
};

/**
 * How long a wait may really be held: the configured maximum, but always below the idle timeout (the server
 * would otherwise close the quiet connection under the held request) and the whole-request timeout.
 */
export function wakeHoldS(l: ServerLimits): number {
  return Math.max(1, Math.min(l.wakeMaxHoldS, l.idleTimeoutS - 5, l.requestTimeoutS - 5));
}

const MAX_KEYS = 200_000;

/** Keyed token buckets: `take(key)` spends one token if one is left, refilling at a steady rate. */
export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  private readonly perMs: number;

  constructor(
    private readonly burst: number,
    perMinute: number,
    private readonly clock: () => number = Date.now,
  ) {
    this.perMs = perMinute / 60_000;
  }

  private level(key: string, now: number): { tokens: number; at: number } {
    const b = this.buckets.get(key);
    if (!b) return { tokens: this.burst, at: now };
    return { tokens: Math.min(this.burst, b.tokens + (now - b.at) * this.perMs), at: now };
  }

  /** Spends one token; false when the key is over its rate. */
  take(key: string): boolean {
    const now = this.clock();
    const b = this.level(key, now);
    if (b.tokens < 1) {
      this.buckets.set(key, b);
      return false;
    }
    b.tokens -= 1;
    if (b.tokens >= this.burst - 1e-9) this.buckets.delete(key);
    else this.store(key, b);
    return true;
  }

  /** True when the key has no token left (without spending one). */
  exhausted(key: string): boolean {
    return this.level(key, this.clock()).tokens < 1;
  }

  /** Seconds until the key has a token again (for Retry-After). */
  retryAfter(key: string): number {
    const b = this.level(key, this.clock());
    return b.tokens >= 1 ? 0 : Math.ceil((1 - b.tokens) / this.perMs / 1000);
  }

  private store(key: string, b: { tokens: number; at: number }): void {
    // Full: drop the oldest entries (Map keeps insertion order); those keys simply start with a full bucket.
    if (!this.buckets.has(key) && this.buckets.size >= MAX_KEYS) {
      const drop = this.buckets.keys();
      for (let i = 0; i < MAX_KEYS / 10; i++) this.buckets.delete(drop.next().value as string);
    }
    this.buckets.set(key, b);
  }
}

/** Counts per key in fixed hourly windows; `spend` says whether the key is still within its quota. */
export class HourlyQuota {
  private window = -1;
  private readonly used = new Map<string, number>();

  constructor(
    private readonly perHour: number,
    private readonly clock: () => number = Date.now,
  ) {}

  /**
   * Spends one unit. Returns 'ok' within the quota, 'first-over' for the first unit past it in this hour (the
   * moment to record that the key was throttled, once) and 'over' afterwards.
   */
  spend(key: string): 'ok' | 'first-over' | 'over' {
    const w = Math.floor(this.clock() / 3_600_000);
    if (w !== this.window) {
      this.window = w;
      this.used.clear();
    }
    const n = (this.used.get(key) ?? 0) + 1;
    if (n <= this.perHour + 1 && (this.used.has(key) || this.used.size < MAX_KEYS)) this.used.set(key, n);
    if (n <= this.perHour) return 'ok';
    return n === this.perHour + 1 ? 'first-over' : 'over';
  }
}

/** Bytes of a value as JSON, or Infinity when it cannot be serialised. */
export function jsonBytes(v: unknown): number {
  try {
    return Buffer.byteLength(JSON.stringify(v) ?? '');
  } catch {
    return Number.POSITIVE_INFINITY;
  }
}

/** A device-supplied object as stored: within the size limit, or a marker saying how big it was. */
export function boundedDetail(v: Record<string, unknown> | undefined, max: number): Record<string, unknown> {
  const n = jsonBytes(v ?? {});
  return n <= max ? (v ?? {}) : { truncated: true, bytes: n };
}

/**
 * How deeply a JSON text nests, scanning once without parsing (strings skipped), stopping past `max`. Lets a
 * body be refused before JSON.parse and before any code walks it recursively.
 */
export function jsonDepthExceeds(text: string, max: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 92 /* \ */) i++;
      else if (c === 34 /* " */) inString = false;
    } else if (c === 34) inString = true;
    else if (c === 123 /* { */ || c === 91 /* [ */) {
      if (++depth > max) return true;
    } else if (c === 125 /* } */ || c === 93 /* ] */) depth--;
  }
  return false;
}

/** The live limiters of one server process, built from its limits. */
export class Guards {
  readonly checkins: RateLimiter;
  readonly enrollments: RateLimiter;
  readonly failedAuth: RateLimiter;
  readonly waits: RateLimiter;
  readonly reports: HourlyQuota;
  readonly audit: HourlyQuota;
  /** Token hashes that recently authenticated: they pass an address's failed-auth block (never auth itself). */
  readonly knownDevices = new Set<string>();

  constructor(
    readonly limits: ServerLimits,
    clock: () => number = Date.now,
  ) {
    this.checkins = new RateLimiter(limits.checkinBurst, limits.checkinsPerDevicePerMinute, clock);
    this.enrollments = new RateLimiter(limits.enrollmentBurst, limits.enrollmentsPerIpPerMinute, clock);
    this.failedAuth = new RateLimiter(limits.failedAuthBurst, limits.failedAuthPerIpPerMinute, clock);
    this.waits = new RateLimiter(limits.waitBurst, limits.waitsPerDevicePerMinute, clock);
    this.reports = new HourlyQuota(limits.reportsPerDevicePerHour, clock);
    this.audit = new HourlyQuota(limits.auditPerDevicePerHour, clock);
  }

  rememberDevice(hash: string): void {
    if (this.knownDevices.size >= MAX_KEYS) this.knownDevices.clear();
    this.knownDevices.add(hash);
  }
}
