// The agent's YAML configuration: where the server is, who the device is, and how each component is applied
// and checked. Everything about *how* to apply and check lives here, on the device, never on the server.
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { LineCounter, parseDocument } from 'yaml';
import { z } from 'zod';
import { parseDuration } from '../engine/duration.ts';

const duration = z.union([z.string(), z.number()]).transform((v, ctx) => {
  try {
    return parseDuration(v);
  } catch (e) {
    ctx.addIssue({ code: 'custom', message: (e as Error).message });
    return z.NEVER;
  }
});

const healthCheck = z
  .object({
    name: z.string().min(1),
    exec: z.string().min(1),
    timeout: duration.default(10_000),
  })
  .strict();

const component = z
  .object({
    name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.+-]*$/),
    backend: z
      .object({
        type: z.literal('dir'),
        path: z.string().min(1),
        keep: z.number().int().min(1).default(3),
      })
      .strict(),
    health: z.array(healthCheck).default([]),
    probation: z
      .object({ window: duration.default(0), interval: duration.default(5000) })
      .strict()
      .default({ window: 0, interval: 5000 }),
    max_attempts: z.number().int().min(1).default(3),
  })
  .strict();

const configSchema = z
  .object({
    server: z.string().url().optional(),
    enroll_token: z.string().optional(),
    name: z.string().optional(),
    state_dir: z.string().min(1),
    labels: z.record(z.string(), z.string()).default({}),
    poll_interval: duration.optional(),
    retry: z
      .object({ base: duration.default(1000), max: duration.default(300_000) })
      .strict()
      .default({ base: 1000, max: 300_000 }),
    components: z.array(component).min(1),
  })
  .strict();

export type AgentConfig = z.infer<typeof configSchema> & { file: string };
export type ComponentConfig = AgentConfig['components'][number];

/** Reads and validates the agent config; relative paths resolve against the config's folder. */
export function loadAgentConfig(file: string): AgentConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(`${file}: cannot read agent config: ${(e as Error).message}`);
  }
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc });
  if (doc.errors.length)
    throw new Error(
      `${file}:${lc.linePos(doc.errors[0].pos[0]).line}: invalid YAML: ${doc.errors[0].message.split('\n')[0]}`,
    );
  const res = configSchema.safeParse(doc.toJS());
  if (!res.success) {
    const issue = res.error.issues[0];
    const path = issue.path.filter((p): p is string | number => typeof p !== 'symbol');
    const node = doc.getIn(path, true) as { range?: [number, number, number] } | undefined;
    const line = node?.range ? lc.linePos(node.range[0]).line : 1;
    throw new Error(`${file}:${line}: ${path.join('.') || '(config)'}: ${issue.message}`);
  }
  const base = dirname(resolve(file));
  const cfg = res.data;
  return {
    ...cfg,
    file: resolve(file),
    state_dir: resolve(base, cfg.state_dir),
    components: cfg.components.map((c) => ({
      ...c,
      backend: { ...c.backend, path: resolve(base, c.backend.path) },
    })),
  };
}
