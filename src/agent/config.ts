// The agent's YAML configuration: where the server is, who the device is, and how each component is applied
// and checked. Everything about *how* to apply and check lives here, on the device, never on the server.
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { z } from 'zod';
import { parseValidatedYaml } from '../config/validated-yaml.ts';
import { parseDuration } from '../engine/duration.ts';
import { MAX_SIGNALS, SIGNAL_NAME_RE } from './signals.ts';

// The schemas are built per call, not at module scope: the agent reads its config once at start-up, and the
// zod schema objects would otherwise stay resident for the daemon's whole life (docs/agent.md, "Memory").
function schemas() {
  const duration = z.union([z.string(), z.number()]).transform((v, ctx) => {
    try {
      return parseDuration(v);
    } catch (e) {
      ctx.addIssue({ code: 'custom', message: (e as Error).message });
      return z.NEVER;
    }
  });

  // Every check has a timeout, and `retries` further attempts `interval` apart before it counts as failed.
  const checkCommon = {
    name: z.string().min(1),
    timeout: duration.default(10_000),
    interval: duration.default(1000),
    retries: z.number().int().min(0).default(0),
  };
  const healthCheck = z.union([
    z.object({ ...checkCommon, exec: z.string().min(1) }).strict(),
    z
      .object({
        ...checkCommon,
        http: z.string().url(),
        status: z.number().int().default(200),
        body: z.string().optional(), // a regular expression the body must match
      })
      .strict(),
    z.object({ ...checkCommon, tcp: z.string().regex(/^.+:\d+$/, 'expected host:port') }).strict(),
    z
      .object({
        ...checkCommon,
        file: z.string().min(1),
        contains: z.string().optional(), // a regular expression the content must match
      })
      .strict(),
  ]);
  const backend = z.discriminatedUnion('type', [
    z
      .object({ type: z.literal('dir'), path: z.string().min(1), keep: z.number().int().min(1).default(3) })
      .strict(),
    z
      .object({ type: z.literal('file'), path: z.string().min(1), keep: z.number().int().min(1).default(3) })
      .strict(),
    z
      .object({
        type: z.literal('exec'),
        path: z.string().min(1), // where files are staged
        keep: z.number().int().min(1).default(3),
        timeout: duration.default(300_000),
        stage: z.string().optional(),
        activate: z.string().min(1),
        commit: z.string().optional(),
        rollback: z.string().min(1),
      })
      .strict(),
  ]);

  // Device signals (docs/agent.md, "Signals"): each source is one of exec, file or http, and names what it takes.
  const sourceTimeout = duration.pipe(z.number().min(1).max(60_000, 'at most 60s')).optional();
  const signalSource = z
    .object({
      exec: z.string().min(1).optional(),
      file: z.string().min(1).optional(),
      http: z
        .string()
        .url()
        .refine((u) => /^https?:\/\//i.test(u), 'expected an http:// or https:// URL')
        .optional(),
      names: z
        .array(
          z
            .string()
            .regex(
              SIGNAL_NAME_RE,
              'expected a signal name: a-z, 0-9 and _, not starting with a digit, at most 64 characters',
            ),
        )
        .min(1)
        .max(MAX_SIGNALS),
      timeout: sourceTimeout,
    })
    .strict()
    .superRefine((s, ctx) => {
      const kinds = (['exec', 'file', 'http'] as const).filter((k) => s[k] !== undefined);
      if (kinds.length !== 1)
        ctx.addIssue({
          code: 'custom',
          message: `expected exactly one of exec, file or http (got ${kinds.length})`,
        });
      else if (kinds[0] === 'file' && s.timeout !== undefined)
        ctx.addIssue({ code: 'custom', path: ['timeout'], message: 'a file source has no timeout' });
    })
    .transform((s) =>
      s.exec !== undefined
        ? { kind: 'exec' as const, exec: s.exec, names: s.names, timeout: s.timeout ?? 5000 }
        : s.file !== undefined
          ? { kind: 'file' as const, file: s.file, names: s.names }
          : { kind: 'http' as const, http: s.http as string, names: s.names, timeout: s.timeout ?? 5000 },
    );
  const signals = z
    .object({
      interval: duration.pipe(z.number().min(5000, 'at least 5s')).default(60_000),
      sources: z.array(signalSource).min(1).max(8),
    })
    .strict()
    .superRefine((s, ctx) => {
      // A name is one number per component: two sources giving it would make the value depend on their order.
      const seen = new Map<string, number>();
      for (const [i, src] of s.sources.entries())
        for (const [j, n] of src.names.entries()) {
          const first = seen.get(n);
          if (first !== undefined)
            ctx.addIssue({
              code: 'custom',
              path: ['sources', i, 'names', j],
              message: `${n} is named twice (also in sources.${first})`,
            });
          else if (seen.size === MAX_SIGNALS)
            ctx.addIssue({
              code: 'custom',
              path: ['sources', i, 'names', j],
              message: `more than ${MAX_SIGNALS} signal names in one component`,
            });
          else seen.set(n, i);
        }
    });

  const component = z
    .object({
      name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.+-]*$/),
      backend,
      hooks: z
        .object({
          before_activate: z.string().optional(),
          after_activate: z.string().optional(),
          after_rollback: z.string().optional(),
          timeout: duration.default(60_000),
        })
        .strict()
        .default({ timeout: 60_000 }),
      health: z.array(healthCheck).default([]),
      probation: z
        .object({ window: duration.default(0), interval: duration.default(5000) })
        .strict()
        .default({ window: 0, interval: 5000 }),
      max_attempts: z.number().int().min(1).default(3),
      // Dual control: this component's releases must also be in this vendor's signed TUF targets (trust.vendors).
      vendor: z.string().min(1).optional(),
      // Activation reboots the machine (or otherwise needs fleet-wide coordination): it happens only while the
      // device holds a FleetLock slot of its group (fleet_lock below; docs/agent.md, "Reboot coordination").
      reboot: z.boolean().default(false),
      // Numbers measured on the device and reported at check-ins (absent: nothing is sampled).
      signals: signals.optional(),
    })
    .strict();

  const configSchema = z
    .object({
      server: z
        .string()
        .url()
        .refine((u) => /^https?:\/\//i.test(u), 'server must be an http:// or https:// URL')
        .optional(),
      // PEM file of the CA(s) trusted for an https server (instead of the system's), also for its TUF and blobs.
      ca: z.string().min(1).optional(),
      // What the agent accepts from a server at most (docs/agent.md, "What the agent accepts from a server").
      limits: z
        .object({ max_artifact_bytes: z.number().int().positive().max(Number.MAX_SAFE_INTEGER).optional() })
        .strict()
        .default({}),
      enroll_token: z.string().optional(),
      name: z.string().optional(),
      state_dir: z.string().min(1),
      labels: z.record(z.string(), z.string()).default({}),
      poll_interval: duration.optional(),
      // Wake-ups (docs/agent.md): between check-ins, hold the server's /v1/wait and check in as soon as it
      // answers that something changed. Absent: long-poll. `off`: check in at the poll interval only.
      wake: z.enum(['long-poll', 'off']).optional(),
      retry: z
        .object({
          base: duration.default(1000),
          max: duration.default(300_000),
          attempts: z.number().int().min(1).default(4), // download attempts within one transaction
        })
        .strict()
        .default({ base: 1000, max: 300_000, attempts: 4 }),
      // The organisation's TUF root, pre-provisioned (preferred over the one received at enrollment), and an
      // optional mirror (static tree from `repo export`) to fetch metadata and targets from instead of the server.
      // trust.vendors: each vendor's pinned TUF root, where it lists a release's files (prefix + artifact name,
      // `{component}` and `{version}` replaced) and where its metadata is read (default: the server's
      // /v1/vendor-tuf/<vendor>; a folder or URL otherwise).
      trust: z
        .object({
          root: z.string().min(1).optional(),
          mirror: z.string().min(1).optional(),
          vendors: z
            .record(
              z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/),
              z
                .object({
                  root: z.string().min(1),
                  target_prefix: z.string().default('{component}/{version}/'),
                  source: z.string().min(1).optional(),
                })
                .strict(),
            )
            .optional(),
        })
        .strict()
        .optional(),
      // Offline bundles dropped into this folder are verified and applied with no server at all.
      offline: z
        .object({ inbox: z.string().min(1) })
        .strict()
        .optional(),
      // The reboot semaphore for `reboot: true` components: the FleetLock protocol on the server (or `url`).
      fleet_lock: z
        .object({
          group_label: z.string().min(1).default('fleet-lock-group'), // its value names the group ("default")
          url: z
            .string()
            .url()
            .refine((u) => /^https?:\/\//i.test(u), 'fleet_lock.url must be an http:// or https:// URL')
            .optional(),
          // A shared secret the FleetLock server requires: sent as this header, its value read from the file.
          secret_header: z
            .object({
              name: z.string().regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$/, 'expected an HTTP header name'),
              value_file: z.string().min(1),
            })
            .strict()
            .optional(),
        })
        .strict()
        .default({ group_label: 'fleet-lock-group' }),
      components: z.array(component).min(1),
    })
    .strict();
  return { healthCheck, configSchema };
}
type Schemas = ReturnType<typeof schemas>;
export type HealthCheckConfig = z.infer<Schemas['healthCheck']>;

export type AgentConfig = z.infer<Schemas['configSchema']> & { file: string };
export type ComponentConfig = AgentConfig['components'][number];

/** Reads and validates the agent config; relative paths resolve against the config's folder. */
export function loadAgentConfig(file: string): AgentConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(`${file}: cannot read agent config: ${(e as Error).message}`);
  }
  return parseAgentConfig(text, file);
}

/**
 * Validates agent config text as if it were read from `file` (named in errors; relative paths resolve against
 * its folder). `agent init` checks what it writes with this, so it accepts exactly what the agent will.
 */
export function parseAgentConfig(text: string, file: string): AgentConfig {
  const cfg = parseValidatedYaml(schemas().configSchema, text, file);
  const base = dirname(resolve(file));
  for (const c of cfg.components)
    if (c.vendor && !cfg.trust?.vendors?.[c.vendor])
      throw new Error(`${file}: component ${c.name}: vendor ${c.vendor} is not in trust.vendors`);
  for (const c of cfg.components)
    if (c.reboot && !cfg.server && !cfg.fleet_lock.url)
      throw new Error(
        `${file}: component ${c.name}: reboot: true needs a FleetLock server (server: or fleet_lock.url)`,
      );
  if (cfg.ca && !/^https:\/\//i.test(cfg.server ?? ''))
    throw new Error(`${file}: ca: is for an https:// server (server is ${cfg.server ?? 'not set'})`);
  const place = (p: string) => (/^https?:/.test(p) ? p : resolve(base, p));
  return {
    ...cfg,
    file: resolve(file),
    state_dir: resolve(base, cfg.state_dir),
    ca: cfg.ca && resolve(base, cfg.ca),
    trust: cfg.trust && {
      root: cfg.trust.root && resolve(base, cfg.trust.root),
      mirror: cfg.trust.mirror && place(cfg.trust.mirror),
      vendors:
        cfg.trust.vendors &&
        Object.fromEntries(
          Object.entries(cfg.trust.vendors).map(([n, v]) => [
            n,
            { ...v, root: resolve(base, v.root), source: v.source && place(v.source) },
          ]),
        ),
    },
    fleet_lock: {
      ...cfg.fleet_lock,
      secret_header: cfg.fleet_lock.secret_header && {
        ...cfg.fleet_lock.secret_header,
        value_file: resolve(base, cfg.fleet_lock.secret_header.value_file),
      },
    },
    offline: cfg.offline && { inbox: resolve(base, cfg.offline.inbox) },
    components: cfg.components.map((c) => ({
      ...c,
      backend: { ...c.backend, path: resolve(base, c.backend.path) },
      health: c.health.map((h) => ('file' in h ? { ...h, file: resolve(base, h.file) } : h)),
      signals: c.signals && {
        ...c.signals,
        sources: c.signals.sources.map((s) =>
          s.kind === 'file' ? { ...s, file: resolve(base, s.file) } : s,
        ),
      },
    })),
  };
}
