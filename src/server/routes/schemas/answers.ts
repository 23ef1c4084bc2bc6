// The JSON schemas of the admin API's answers, shared by the routes. Fastify serialises every answer with its
// route's schema (fast-json-stringify drops what a schema does not declare), and /v1/openapi.json publishes the
// same schemas, so each mirrors one view type exactly: a field missing here would vanish from the API.

/** An object schema requiring every property given (optional ones are added beside, unrequired). */
export function objectOf(
  properties: Record<string, unknown>,
  optional: Record<string, unknown> = {},
): { type: 'object'; required: string[]; properties: Record<string, unknown> } {
  return { type: 'object', required: Object.keys(properties), properties: { ...properties, ...optional } };
}

export const nullable = (type: string) => ({ type: [type, 'null'] }) as const;
export const arrayOf = (items: unknown) => ({ type: 'array', items }) as const;
const string = { type: 'string' } as const;
const integer = { type: 'integer' } as const;
const boolean = { type: 'boolean' } as const;
const strings = arrayOf(string);
/** Any JSON value (a device's health result, an audit entry's detail): passed through as it is. */
const anyJson = {} as const;
/** A free-form object, every property kept. */
export const looseObject = { type: 'object', additionalProperties: true } as const;
const stringMap = { type: 'object', additionalProperties: string } as const;

/** The body of every error answer (errors.ts errorAnswer). */
export const ErrorBody = objectOf({ error: string, message: string });

/** An empty answer (redirects, 304, the FleetLock 200). */
export const noBody = (description: string) => ({ description }) as const;

/** A raw answer of `type` (blobs, targets, TUF metadata bytes, metrics text). */
export const rawBody = (description: string, type: string, schema: unknown = { type: 'string' }) => ({
  description,
  content: { [type]: { schema } },
});

/** DeviceSummary (admin-fleet.ts). */
export const DeviceSummarySchema = objectOf({
  id: string,
  name: string,
  labels: stringMap,
  agent_version: string,
  last_seen_at: integer,
  held: boolean,
  pins: stringMap,
  channel: string,
  deferred_until: nullable('integer'),
  components: arrayOf(
    objectOf({
      name: string,
      version: nullable('string'),
      state: string,
      health: anyJson,
      quarantined: strings,
    }),
  ),
});

/** AuditEntry (db/audit.ts). */
export const AuditEntrySchema = objectOf({
  seq: integer,
  at: integer,
  actor: string,
  action: string,
  subject: string,
  detail: anyJson,
  prev_hash: string,
  hash: string,
});

/** The devices a selector route changed. */
export const SelectedDevices = objectOf({ devices: strings });

/** AwaitingApproval (services/rollout-rules.ts), or null. */
const awaitingApproval = {
  anyOf: [{ type: 'null' }, objectOf({ what: string, by_anyone_but: nullable('string') })],
} as const;

/** ReleaseView (services/releases.ts). */
export const ReleaseViewSchema = objectOf({
  component: string,
  version: string,
  artifacts: arrayOf(
    objectOf({ name: string, sha256: string, length: integer }, { mode: { type: 'integer' } }),
  ),
  created_at: integer,
  approved: boolean,
  approved_at: nullable('integer'),
  approved_by: nullable('string'),
  imported_by: nullable('string'),
  awaiting_approval: awaitingApproval,
  provenance: looseObject,
});

/** WaveCounts (services/rollout-view.ts). */
const waveCounts = objectOf({
  name: string,
  selected: integer,
  offered: integer,
  succeeded: integer,
  failed: integer,
  rolled_back: integer,
  reverted: integer,
  unconfirmed: integer,
  skipped: integer,
});

/** RolloutView (services/rollout-view.ts); `state` is the engine's state, passed through whole. */
export const RolloutViewSchema = objectOf(
  {
    id: integer,
    component: string,
    version: string,
    plan: string,
    channel: nullable('string'),
    status: string,
    wave: nullable('string'),
    wave_index: integer,
    waves: arrayOf(waveCounts),
    exposed: integer,
    state: looseObject,
    created_at: integer,
    updated_at: integer,
    started_by: nullable('string'),
    awaiting_approval: awaitingApproval,
  },
  // Metric gates and their last readings (added by the metric-gates work): objects passed through whole.
  // Evidence gates: each signal of each wave's latest look.
  {
    metric_gates: arrayOf(looseObject),
    evidence: arrayOf(
      objectOf({
        wave: string,
        look: integer,
        at: integer,
        final: boolean,
        verdict: string,
        signal: string,
        signal_verdict: string,
        critical: boolean,
        u: nullable('number'),
        p: nullable('number'),
        effect: nullable('number'),
        n_treatment: integer,
        n_control: integer,
        attributed_to: nullable('string'),
        reason: string,
      }),
    ),
  },
);

/** DryRun (services/rollout-dry-run.ts): what a rollout would select, wave by wave. */
export const DryRunSchema = objectOf({
  dry_run: boolean,
  plan: string,
  component: string,
  fleet: integer,
  runs_component: integer,
  waves: arrayOf(
    objectOf({
      wave: string,
      selected: integer,
      excluded: objectOf({
        held: integer,
        pinned: integer,
        busy: integer,
        deferred: integer,
        no_component: integer,
      }),
    }),
  ),
  problems: strings,
});

/**
 * A plan (engine/plan.ts Plan) as stored: its waves, windows and gates are passed through whole (the plan
 * file's reference is docs/plans.md), `updated_at` present when listed.
 */
export const PlanSchema = {
  type: 'object',
  required: ['name', 'waves'],
  properties: { name: string, waves: arrayOf(looseObject), updated_at: integer },
  additionalProperties: true,
} as const;

/** The answer with a token shown once, and what it belongs to. */
export const OperatorToken = objectOf({ name: string, role: string, token: string });

/** VendorStoreResult (trust/signer/vendor-store.ts). */
export const VendorStoreSchema = objectOf({
  stored: boolean,
  timestamp_version: integer,
  root_version: integer,
  pinned: boolean,
  root_keyids: strings,
  ignored: strings,
});

export { boolean, integer, string, strings };
