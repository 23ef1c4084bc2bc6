// Why a transaction failed or a release was refused, as one closed union on the wire. The engine decides
// whether a failure is worth another try by this class alone, never by the prose that comes with it.
import Type, { type Static } from 'typebox';

/** Failures of a transaction on the device (the agent's journal records one of these). */
export const TransactionFailureClass = Type.Enum([
  'download',
  'verify',
  'stage',
  'activate',
  'health',
  'timeout',
  'crash-loop',
  'operator',
  'invalid', // a malformed or hostile offer, refused before anything touches the filesystem
]);
export type TransactionFailureClass = Static<typeof TransactionFailureClass>;

/** Trust refusals of the device's verifier (TUF and the vendor's own metadata), before anything is staged. */
export const TrustRefusalClass = Type.Enum([
  'unapproved',
  'mismatch',
  'rollback',
  'expired',
  'signature',
  'oversized',
  'tampered',
  'unreachable',
  'no-root',
]);
export type TrustRefusalClass = Static<typeof TrustRefusalClass>;

/** The vendor's metadata disagrees, is badly signed, expired or missing (`vendor-mismatch`, `vendor-expired`, …). */
export const VendorRefusalClass = Type.Unsafe<`vendor-${string}`>(
  Type.String({ pattern: '^vendor-[a-z][a-z-]{0,24}$', maxLength: 32 }),
);
export type VendorRefusalClass = Static<typeof VendorRefusalClass>;

/**
 * A class as the server accepts it in a report: any short class-shaped name. Agents send a `ReportClass`; one
 * this server does not know (a newer agent) is recorded as `unknown` (not retried) by `classOnWire`, never
 * refused — a refused check-in would keep the report in the device's outbox and block every later check-in.
 */
export const ClassOnWire = Type.String({ pattern: '^[a-z][a-z-]{0,31}$', maxLength: 32 });

/** Every class a device may put in a report. */
export const ReportClass = Type.Union([TransactionFailureClass, TrustRefusalClass, VendorRefusalClass]);
export type ReportClass = Static<typeof ReportClass>;

/**
 * The class the engine sees on a failed assignment: a device's class, or the server's own — `no-report` (the
 * device did not report before its deadline) and `unknown` (an older agent's report gave no class we know).
 */
export type FailureClass = ReportClass | 'no-report' | 'unknown';

const KNOWN: readonly FailureClass[] = [
  ...TransactionFailureClass.enum,
  ...TrustRefusalClass.enum,
  'no-report',
];
const VENDOR = /^vendor-([a-z][a-z-]{0,24})$/;

/**
 * Failures that did not give the release a fair chance on the device, so another try is worth it: the
 * download or the metadata fetch broke, a health check timed out, or the device never reported.
 */
const RETRYABLE: ReadonlySet<FailureClass> = new Set<FailureClass>([
  'download',
  'timeout',
  'unreachable',
  'no-report',
]);

/** True when a failure of this class may be retried (`rollout retry`, the retry budget). */
export function isRetryable(cls: FailureClass): boolean {
  return RETRYABLE.has(cls);
}

/** Narrows a string to a known class (vendor classes by their shape), or null. */
export function knownClass(s: string): FailureClass | null {
  const known = KNOWN.find((c) => c === s);
  if (known) return known;
  const vendor = VENDOR.exec(s);
  return vendor ? (`vendor-${vendor[1]}` as const) : null;
}

/** The class of a report's `class` field: a known one, else `unknown`. */
export function classOnWire(s: string): FailureClass {
  return knownClass(s) ?? 'unknown';
}

/** The reason the server records for a device that did not report before its deadline. */
export const NO_REPORT_REASON = 'no report before the deadline';

/**
 * The class of a failure recorded before classes were stored (older agents, older rows): the server wrote
 * reasons as `class: reason`, so a known class before the first colon counts; the deadline reason is
 * `no-report`; anything else is `unknown` (not retried: when in doubt, do not expose the release again).
 */
export function legacyClass(reason: string | null | undefined): FailureClass {
  if (!reason) return 'unknown';
  if (reason === NO_REPORT_REASON) return 'no-report';
  const m = /^([a-z][a-z-]{0,31}): /.exec(reason);
  return (m && knownClass(m[1])) || 'unknown';
}
