// JSON schemas of the per-device visibility routes (admin-history.ts): what they accept, and what they answer
// with (the shapes of ../services/history-views.ts), published in the OpenAPI document.
import { ASSIGNMENT_STATES } from '../services/history-views.ts';

/** An object schema that requires every one of its properties. */
function objectOf<P extends Record<string, unknown>>(properties: P) {
  return { type: 'object', required: Object.keys(properties), properties } as const;
}

const nullableString = { type: ['string', 'null'] } as const;
const nullableInteger = { type: ['integer', 'null'] } as const;

/** Query string: `limit` and `offset`, and `extra`; anything else is refused. */
function pageQuery(extra: Record<string, unknown> = {}) {
  return {
    type: 'object',
    additionalProperties: false,
    properties: {
      limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100 },
      offset: { type: 'integer', minimum: 0, default: 0 },
      ...extra,
    },
  } as const;
}

const pageProperties = {
  total: { type: 'integer' },
  limit: { type: 'integer' },
  offset: { type: 'integer' },
  next_offset: nullableInteger,
} as const;

const checkSchema = objectOf({
  name: { type: 'string' },
  result: { type: 'string', enum: ['ok', 'failed'] },
  duration_ms: { type: ['number', 'null'] },
  output: { type: 'string' },
  output_truncated: { type: 'boolean' },
});

const reportProperties = {
  txn_id: { type: 'string' },
  component: { type: 'string' },
  version: { type: 'string' },
  outcome: { type: 'string' },
  class: nullableString,
  reason: nullableString,
  offline: { type: 'boolean' },
  attempts: nullableInteger,
  received_at: { type: 'integer' },
  checks: { type: 'array', items: checkSchema },
  checks_omitted: { type: 'integer' },
  detail_truncated: { type: 'boolean' },
} as const;

const waveSchema = objectOf({ index: { type: 'integer' }, name: nullableString });

const rolloutSummaryProperties = {
  id: { type: 'integer' },
  component: { type: 'string' },
  version: { type: 'string' },
  plan: { type: 'string' },
  status: { type: 'string' },
} as const;

const rolloutRefProperties = {
  ...rolloutSummaryProperties,
  wave: waveSchema,
  state: { type: 'string' },
  from_version: nullableString,
  reason: nullableString,
} as const;

const errorAnswer = {
  type: 'object',
  properties: { error: { type: 'string' }, message: { type: 'string' } },
} as const;

export const rolloutDevicesSchema = {
  operationId: 'listRolloutDevices',
  summary:
    "A rollout's devices: wave, state, versions, failure class and reason, and the checks they reported",
  tags: ['rollouts'],
  params: objectOf({ id: { type: 'integer', minimum: 1 } }),
  querystring: pageQuery({ state: { type: 'string', enum: [...ASSIGNMENT_STATES] } }),
  response: {
    200: objectOf({
      rollout: objectOf(rolloutSummaryProperties),
      ...pageProperties,
      states: { type: 'object', additionalProperties: { type: 'integer' } },
      devices: {
        type: 'array',
        items: objectOf({
          device_id: { type: 'string' },
          name: { type: 'string' },
          retired: { type: 'boolean' },
          wave: waveSchema,
          state: { type: 'string' },
          from_version: nullableString,
          to_version: { type: 'string' },
          offered_at: nullableInteger,
          reported_at: nullableInteger,
          class: nullableString,
          reason: nullableString,
          report: { anyOf: [{ type: 'null' }, objectOf(reportProperties)] },
        }),
      },
    }),
    '4xx': errorAnswer,
  },
};

export const deviceHistorySchema = {
  operationId: 'getDeviceHistory',
  summary: "A device's transactions across rollouts, newest first, with the checks it reported (id or name)",
  tags: ['fleet'],
  params: objectOf({ id: { type: 'string', minLength: 1, maxLength: 200 } }),
  querystring: pageQuery(),
  response: {
    200: objectOf({
      device: objectOf({
        id: { type: 'string' },
        name: { type: 'string' },
        labels: { type: 'object', additionalProperties: { type: 'string' } },
        retired_at: nullableInteger,
      }),
      ...pageProperties,
      transactions: {
        type: 'array',
        items: objectOf({
          ...reportProperties,
          kind: { type: ['string', 'null'], enum: ['update', 'revert', null] },
          rollout: { anyOf: [{ type: 'null' }, objectOf(rolloutRefProperties)] },
        }),
      },
      assignments: {
        type: 'array',
        items: objectOf({
          ...rolloutRefProperties,
          offered_at: nullableInteger,
          reported_at: nullableInteger,
        }),
      },
    }),
    '4xx': errorAnswer,
  },
};
