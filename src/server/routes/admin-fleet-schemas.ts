// The request schemas of the fleet admin API, as TypeBox schemas: each is the JSON schema the route validates
// with and, through the type provider, the type of its handler's input.
import Type, { type Static } from 'typebox';

/** Nullable values are one `type: [T, null]` schema (see src/protocol/device.ts: no anyOf under coercion). */
const nullableInteger = (min: number) =>
  Type.Unsafe<number | null>({ type: ['integer', 'null'], minimum: min });

export const EnrollTokenBody = Type.Unsafe<{
  uses?: number | null;
  expires_in_s?: number;
  labels?: Record<string, string>;
} | null>({
  type: ['object', 'null'],
  additionalProperties: false,
  properties: {
    uses: { type: ['integer', 'null'], minimum: 1 },
    expires_in_s: { type: 'integer', minimum: 1 },
    labels: { type: 'object', additionalProperties: { type: 'string' } },
  },
});

export const RetireBody = Type.Unsafe<{ reason?: string } | null>({
  type: ['object', 'null'],
  additionalProperties: false,
  properties: { reason: { type: 'string', maxLength: 1000 } },
});

/** A device to retire: an id or a name. */
export const IdParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 200 }) });
/** An id in the path, as Fastify parsed it (no limits of its own: unknown ids answer 404). */
export const PathId = Type.Object({ id: Type.String() });

/** The body of every selector route (hold, pin, defer, channel, …); each uses the fields it needs. */
export const SelectorBody = Type.Object(
  {
    selector: Type.String({ maxLength: 1000 }),
    release: Type.Optional(Type.String({ maxLength: 260 })),
    component: Type.Optional(Type.String({ maxLength: 128 })),
    reason: Type.Optional(Type.String({ maxLength: 1000 })),
    channel: Type.Optional(Type.Enum(['early', 'general'])),
    until: Type.Optional(nullableInteger(0)),
    allow_empty: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);
export type SelectorBody = Static<typeof SelectorBody>;

export const AuditQuery = Type.Object(
  {
    limit: Type.Integer({ minimum: 1, maximum: 1000, default: 200 }),
    subject: Type.Optional(Type.String({ minLength: 1, maxLength: 300 })),
    /** An actor: NAME matches `NAME` and `NAME/…` (an operator through any of its tokens). */
    actor: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
  },
  { additionalProperties: false },
);
