// The device protocol, defined once: enrollment, check-in and the transaction report. Each TypeBox schema is
// both the JSON schema the server validates with (and publishes in /v1/openapi.json) and, through `Static`, the
// TypeScript type the server and the agent share. Every length and count limit here is a security limit.
import Type, { type Static } from 'typebox';
import { ClassOnWire } from './failure-class.ts';
import { NAME_RE } from './names.ts';
import { MAX_SIGNAL_MAGNITUDE, MAX_SIGNALS, SIGNAL_NAME_RE } from './signal-limits.ts';

export { MAX_SIGNAL_MAGNITUDE, MAX_SIGNALS, SIGNAL_NAME_RE };

/** Printable text only: device-chosen strings end up in operators' terminals and pages. */
const PRINTABLE = '^[^\\u0000-\\u001f\\u007f-\\u009f]*$';
const LABEL_KEY = '^[A-Za-z0-9][A-Za-z0-9_./-]{0,62}$';

const text = (maxLength: number) => Type.String({ maxLength, pattern: PRINTABLE });
const versionText = text(128);
const componentName = Type.String({ pattern: NAME_RE.source });
/**
 * A string or null, as one `type: [string, null]` schema. Not a TypeBox Union (anyOf): Fastify's Ajv coerces
 * types, and inside anyOf the string branch would turn a null into "" before the null branch is tried.
 */
const nullableText = (maxLength: number) =>
  Type.Unsafe<string | null>({ type: ['string', 'null'], maxLength, pattern: PRINTABLE });
const nullableVersion = nullableText(128);

/** Free-form JSON objects (health results, report details): bounded by the server, not by the schema. */
const looseObject = Type.Record(Type.String(), Type.Unknown());

// Keys are checked with propertyNames, not a key pattern: Fastify's Ajv removes (rather than refuses) properties
// that additionalProperties forbids, and a device's bad label key must be refused.
export const Labels = Type.Record(Type.String(), text(256), {
  propertyNames: { pattern: LABEL_KEY },
  maxProperties: 64,
});
export type Labels = Static<typeof Labels>;

export const EnrollRequest = Type.Object(
  {
    token: Type.String({ maxLength: 200 }),
    name: Type.Optional(Type.String({ minLength: 1, maxLength: 200, pattern: PRINTABLE })),
    labels: Type.Optional(Labels),
    agent_version: Type.Optional(text(64)),
  },
  { additionalProperties: false },
);
export type EnrollRequest = Static<typeof EnrollRequest>;

/** The organisation's TUF root (root.json) for the device to pin. */
const TufRoot = Type.Object({}, { additionalProperties: true });

export const EnrollAnswer = Type.Object({
  device_id: Type.String(),
  device_token: Type.String(),
  poll_seconds: Type.Number(),
  tuf_root: Type.Optional(TufRoot),
});
export type EnrollAnswer = Static<typeof EnrollAnswer>;

/** The phases of an open transaction on the device (the agent's journal), in their usual order. */
export const PHASES = [
  'downloading',
  'staged',
  'activating',
  'probation',
  'committed',
  'rolling-back',
  'rolled-back',
] as const;
export const TransactionPhase = Type.Enum(PHASES);
export type TransactionPhase = Static<typeof TransactionPhase>;

/**
 * A component's latest signal sample (docs/evidence-gates.md): numbers measured on the device by sources its own
 * configuration names, with the device's time of sampling (ms since the epoch; shown, never trusted for ordering).
 */
export const SignalSample = Type.Object(
  {
    at: Type.Integer({ minimum: 0, maximum: 1e14 }), // stored in a bigint column
    values: Type.Record(
      Type.String(),
      Type.Number({ minimum: -MAX_SIGNAL_MAGNITUDE, maximum: MAX_SIGNAL_MAGNITUDE }),
      { propertyNames: { pattern: SIGNAL_NAME_RE.source }, maxProperties: MAX_SIGNALS },
    ),
  },
  { additionalProperties: false },
);
export type SignalSample = Static<typeof SignalSample>;

/**
 * One component as the device runs it. `phase` is the open transaction's phase (null: none); `hold` and `pin`
 * are the device's local controls. Agents before these fields sent one mixed `state` (a phase, or `held`,
 * `pinned`, `idle`); it is still accepted, and sent by current agents too for older servers.
 */
export const ComponentReport = Type.Object(
  {
    name: componentName,
    version: Type.Optional(nullableVersion),
    phase: Type.Optional(
      Type.Unsafe<TransactionPhase | null>({ type: ['string', 'null'], enum: [...PHASES, null] }),
    ),
    hold: Type.Optional(Type.Boolean()),
    pin: Type.Optional(nullableVersion),
    state: Type.Optional(text(32)),
    health: Type.Optional(looseObject),
    quarantined: Type.Optional(Type.Array(versionText, { maxItems: 100 })),
    /** The latest signal sample (absent: the component has no signals configured, or none sampled yet). */
    signals: Type.Optional(SignalSample),
  },
  { additionalProperties: false },
);
export type ComponentReport = Static<typeof ComponentReport>;

export const ReportOutcome = Type.Enum(['succeeded', 'failed', 'rolled-back', 'refused']);
export type ReportOutcome = Static<typeof ReportOutcome>;

/** The result of one transaction (or one refusal), delivered exactly once by its `txn_id`. */
export const Report = Type.Object(
  {
    txn_id: text(100),
    component: componentName,
    version: versionText,
    from_version: Type.Optional(nullableVersion),
    outcome: ReportOutcome,
    /** Why it failed or was refused (absent on success; older agents may omit it: see legacyClass). */
    class: Type.Optional(ClassOnWire),
    reason: Type.Optional(Type.String({ maxLength: 2000 })),
    detail: Type.Optional(looseObject),
    at: Type.Optional(Type.Number()),
    offline: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);
export type Report = Static<typeof Report>;

export const CheckinRequest = Type.Object(
  {
    labels: Type.Optional(Labels),
    agent_version: Type.Optional(text(64)),
    components: Type.Array(ComponentReport, { maxItems: 64 }),
    reports: Type.Optional(Type.Array(Report, { maxItems: 256 })),
  },
  { additionalProperties: false },
);
export type CheckinRequest = Static<typeof CheckinRequest>;

export const OfferedArtifact = Type.Object({
  name: Type.String(),
  sha256: Type.String(),
  length: Type.Integer(),
  /** The file mode the release records (absent for releases imported without one; devices use 0o644). */
  mode: Type.Optional(Type.Integer()),
  url: Type.String(),
});
export type OfferedArtifact = Static<typeof OfferedArtifact>;

/** A release the device should run: pins win over rollouts; nothing new while the device is held. */
export const DesiredRelease = Type.Object({
  component: Type.String(),
  version: Type.String(),
  artifacts: Type.Array(OfferedArtifact),
});
export type DesiredRelease = Static<typeof DesiredRelease>;

// Also lets Fastify serialise the answer with a compiled serializer (the check-in hot path).
export const CheckinAnswer = Type.Object({
  poll_seconds: Type.Number(),
  acked: Type.Array(Type.String()),
  desired: Type.Array(DesiredRelease),
  tuf_root: Type.Optional(TufRoot),
  /** A short hash of `desired` (its content, the same on every replica): the device hands it to /v1/wait. */
  desired_tag: Type.Optional(Type.String()),
  /** Present when the server offers wake-ups: where to hold a wait and for how long at most. */
  wake: Type.Optional(Type.Object({ path: Type.String(), max_seconds: Type.Integer() })),
  /**
   * The components of this device whose signals the server compares now (evidence gates): the agent samples only
   * these at check-ins. It names components only, never what to measure. Absent: older server, sample all.
   */
  signals_wanted: Type.Optional(Type.Array(Type.String(), { maxItems: 64 })),
});
export type CheckinAnswer = Static<typeof CheckinAnswer>;

/** A held wait: answered early when the device's desired answer differs from `tag`, else after `seconds`. */
export const WaitRequest = Type.Object(
  {
    tag: Type.String({ minLength: 1, maxLength: 64, pattern: '^[0-9a-f]+$' }),
    seconds: Type.Integer({ minimum: 1, maximum: 3600 }),
  },
  { additionalProperties: false },
);
export type WaitRequest = Static<typeof WaitRequest>;

/** `changed: true`: check in now (possibly spurious); false: the hold ended with nothing new. */
export const WaitAnswer = Type.Object({ changed: Type.Boolean() });
export type WaitAnswer = Static<typeof WaitAnswer>;
