// A bounded, seeded fuzzer for the HTTP API: fast-check generates requests for every route of the server's own
// OpenAPI document and mutates them (URL spellings, methods, tokens, query strings, bodies), they go to a real
// server over raw node:http (and a raw TCP socket for targets node:http will not send), and three oracles judge
// every answer: no 5xx, no success on an admin route without the admin token, no success on a device route
// without a device token. Used by test/fuzz-api.test.ts (CI-sized) and scripts/fuzz.ts (long runs).
import { type ChildProcess, fork } from 'node:child_process';
import { rmSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { connect } from 'node:net';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import pino from 'pino';
import { api } from '../../src/cli/client.ts';
import { TufRepository } from '../../src/trust/signer/tuf-repository.ts';
import { track } from './processes.ts';
import { enrollDevices, type ProtocolDevice, release } from './protocol-device.ts';
import { startTestServer, type TestServer } from './server.ts';

// ------------------------------------------------------------------------------------------------ the world

type JsonSchema = Record<string, unknown>;

/** One operation of the OpenAPI document. */
export interface Operation {
  method: string;
  /** The path as published, e.g. /v1/admin/devices/{id}. */
  template: string;
  params: string[];
  body?: JsonSchema;
}

/** What the server process knows and sends to the fuzzer once it is ready (plain data, over IPC). */
export interface WorldData {
  url: string;
  /** The server's temporary folder (removed by the fuzzer when the server crashed and could not). */
  dir: string;
  adminToken: string;
  devices: ProtocolDevice[];
  operations: Operation[];
  known: {
    deviceIds: string[];
    deviceNames: string[];
    refs: string[];
    components: string[];
    versions: string[];
    rolloutIds: string[];
    planNames: string[];
    enrollTokenIds: string[];
    enrollTokens: string[];
    shas: string[];
    tufNames: string[];
    targets: string[];
  };
}

/**
 * The server under test — a real `startTestServer` in a child process of its own, so that a request that
 * crashes the server is a finding rather than the end of the test run — and the real things requests can name
 * (so mutations reach deep code, not just 404s). Mutable: a crashed server is replaced in place.
 */
export interface FuzzWorld extends WorldData {
  host: string;
  port: number;
  /** Errors the server logged (level >= error), for the report. */
  serverErrors: ServerLogError[];
  /** Set when the server process exited on its own: how, and the end of its stderr. */
  crashed: { code: number | null; signal: string | null; stderr: string } | null;
  /** Starts a fresh server in place of a crashed one. */
  restart(): Promise<void>;
  /** Stops the server process (and waits for it to be gone). */
  close(): Promise<void>;
}

export interface ServerLogError {
  msg: string;
  type: string;
  message: string;
  where: string;
}

/** The operations of an OpenAPI document (HEAD is not listed; the fuzzer sends it anyway). */
export function operationsOf(doc: { paths: Record<string, Record<string, unknown>> }): Operation[] {
  const ops: Operation[] = [];
  for (const [template, methods] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      const o = op as {
        parameters?: Array<{ name: string; in: string }>;
        requestBody?: { content?: Record<string, { schema?: JsonSchema }> };
      };
      ops.push({
        method: method.toUpperCase(),
        template,
        params: (o.parameters ?? []).filter((p) => p.in === 'path').map((p) => p.name),
        body: o.requestBody?.content?.['application/json']?.schema,
      });
    }
  }
  return ops;
}

const PLAN = `name: fuzz
waves:
  - name: canary
    select: ring=canary
    size: 1
    bake: 1h
  - name: all
    size: 100%
`;

/** Error entries (level >= 50) of a pino log line, summarised for the report. */
function logErrors(text: string): ServerLogError[] {
  const out: ServerLogError[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    try {
      const e = JSON.parse(line) as {
        level: number;
        msg?: string;
        err?: { type?: string; message?: string; stack?: string };
      };
      if (e.level < 50) continue;
      const where =
        e.err?.stack
          ?.split('\n')
          .find((l) => l.includes('/src/') || l.includes('node_modules'))
          ?.trim()
          .replace(/^at /, '')
          .replace(/\/[^ ]*\/(src|node_modules)\//, '$1/') ?? '';
      out.push({
        msg: e.msg ?? '',
        type: e.err?.type ?? '',
        message: (e.err?.message ?? '').slice(0, 300),
        where,
      });
    } catch {}
  }
  return out;
}

/**
 * In the server process: starts a server with TUF keys, a few enrolled devices that checked in, approved
 * releases, a plan and a rollout; reads its OpenAPI document. Limits that would turn most requests into 429 are
 * raised, so requests reach the routes.
 */
async function buildWorld(
  onLog: (e: ServerLogError[]) => void,
): Promise<{ ts: TestServer; data: WorldData }> {
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      const errors = logErrors(chunk.toString('utf8'));
      if (errors.length) onLog(errors);
      done();
    },
  });
  const ts = await startTestServer({
    logger: pino({ level: 'error' }, sink),
    limits: {
      checkinsPerDevicePerMinute: 1e9,
      checkinBurst: 1e9,
      enrollmentsPerIpPerMinute: 1e9,
      enrollmentBurst: 1e9,
      failedAuthPerIpPerMinute: 1e9,
      failedAuthBurst: 1e9,
      connectionsPerIp: 1024,
    },
  });
  try {
    TufRepository.init(join(ts.dir, 'server'), { rootKeys: 1, rootThreshold: 1 });
    const conn = ts.conn;
    const enrolled = await enrollDevices(conn, [
      { ring: 'canary', env: 'prod', tier: 'A' },
      { ring: 'main', env: 'prod', tier: 'B' },
      { ring: 'main', env: 'staging', tier: 'C' },
      { ring: 'main', env: 'dev', tier: 'C' },
      { ring: 'main', env: 'dev', tier: 'A' },
      { ring: 'main', env: 'dev', tier: 'B' },
    ]);
    // The first four sign device requests; only the last two are named in paths (so `retire` can only take
    // those, and device tokens stay valid all run).
    const devices = enrolled.slice(0, 4);
    const named = enrolled.slice(4);
    for (const d of enrolled) {
      const res = await fetch(new URL('/v1/checkin', conn.server), {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${d.token}` },
        body: JSON.stringify({ components: [{ name: 'app', version: '1.0', state: 'idle' }] }),
      });
      await res.arrayBuffer();
    }
    await release(conn, 'app', '1.0');
    await release(conn, 'app', '2.0');
    await release(conn, 'db', '1.0');
    await api(conn, 'POST', '/v1/admin/plans', { source: PLAN, file: 'fuzz.yaml' });
    const rollout = await api<{ id: number | string }>(conn, 'POST', '/v1/admin/rollouts', {
      release: 'app@2.0',
      plan: 'fuzz',
    });
    // One enrollment token for request bodies, another (whose id paths name, so it may be revoked) for paths.
    const enroll = await api<{ id: string; token: string }>(conn, 'POST', '/v1/admin/enroll-tokens', {
      uses: null,
    });
    const revocable = await api<{ id: string; token: string }>(conn, 'POST', '/v1/admin/enroll-tokens', {
      uses: null,
    });
    const releases = await api<
      Array<{ component: string; version: string; artifacts: Array<{ sha256: string; name: string }> }>
    >(conn, 'GET', '/v1/admin/releases');
    const repo = TufRepository.open(join(ts.dir, 'server'));
    // As served: <dir>/<sha256>.<name> (consistent snapshots), and the plain path too.
    const targets = repo
      ? Object.entries(repo.targets().signed.targets).flatMap(([path, t]) => {
          const i = path.lastIndexOf('/');
          return [`${path.slice(0, i + 1)}${t.hashes.sha256}.${path.slice(i + 1)}`, path];
        })
      : [];
    const doc = (await (await fetch(new URL('/v1/openapi.json', conn.server))).json()) as {
      paths: Record<string, Record<string, unknown>>;
    };
    return {
      ts,
      data: {
        url: conn.server,
        dir: ts.dir,
        adminToken: conn.token,
        devices,
        operations: operationsOf(doc),
        known: {
          deviceIds: named.map((d) => d.id),
          deviceNames: named.map((d) => d.name),
          refs: releases.map((r) => `${r.component}@${r.version}`),
          components: ['app', 'db'],
          versions: ['1.0', '2.0'],
          rolloutIds: [String(rollout.id)],
          planNames: ['fuzz'],
          enrollTokenIds: [revocable.id],
          enrollTokens: [enroll.token],
          shas: releases.flatMap((r) => r.artifacts.map((a) => a.sha256)),
          tufNames: ['root.json', '1.root.json', 'timestamp.json', '1.snapshot.json', '1.targets.json'],
          targets,
        },
      },
    };
  } catch (e) {
    await ts.close();
    throw e;
  }
}

type ChildMessage =
  | { type: 'ready'; data: WorldData }
  | { type: 'log'; errors: ServerLogError[] }
  | { type: 'failed'; message: string };

const CHILD_ENV = 'RINGFENCE_FUZZ_SERVER';

/** The server process's side: build the world, report it, serve until told to close (or orphaned). */
async function serveChild(): Promise<void> {
  const send = (m: ChildMessage) => process.send?.(m);
  let ts: TestServer | null = null;
  const stop = async () => {
    await ts?.close().catch(() => {});
    process.exit(0);
  };
  process.on('disconnect', () => void stop());
  process.on('message', (m: { type?: string }) => {
    if (m?.type === 'close') void stop();
  });
  try {
    const built = await buildWorld((errors) => send({ type: 'log', errors }));
    ts = built.ts;
    send({ type: 'ready', data: built.data });
  } catch (e) {
    send({ type: 'failed', message: (e as Error).stack ?? String(e) });
    process.exit(1);
  }
}

if (process.env[CHILD_ENV] === '1' && typeof process.send === 'function') await serveChild();

interface ServerProcess {
  proc: ChildProcess;
  data: WorldData;
  stderr: () => string;
}

/** Forks this module as the server process and waits until its world is ready. */
function forkServer(
  onLog: (e: ServerLogError[]) => void,
  onExit: (p: ServerProcess) => void,
): Promise<ServerProcess> {
  const proc = track(
    fork(fileURLToPath(import.meta.url), [], {
      execArgv: ['--import', 'tsx'],
      // Not a test process itself (node --test marks its children with NODE_TEST_CONTEXT).
      env: { ...process.env, NODE_TEST_CONTEXT: undefined, [CHILD_ENV]: '1' },
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    }),
  );
  let stderr = '';
  proc.stderr?.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString('utf8')).slice(-20_000);
  });
  return new Promise((resolve, reject) => {
    let ready: ServerProcess | null = null;
    proc.on('message', (m: ChildMessage) => {
      if (m.type === 'log') onLog(m.errors);
      else if (m.type === 'failed') reject(new Error(`fuzz server failed to start: ${m.message}`));
      else if (m.type === 'ready') {
        ready = { proc, data: m.data, stderr: () => stderr };
        resolve(ready);
      }
    });
    proc.once('exit', (code, signal) => {
      if (ready) onExit(ready);
      else
        reject(
          new Error(`fuzz server exited (${code ?? signal}) before it was ready: ${stderr.slice(-2000)}`),
        );
    });
  });
}

/** Starts the server process and returns the world the fuzzer works in. */
export async function startFuzzWorld(): Promise<FuzzWorld> {
  const serverErrors: ServerLogError[] = [];
  const onLog = (errors: ServerLogError[]) => {
    for (const e of errors) if (serverErrors.length < 5000) serverErrors.push(e);
  };
  let current: ServerProcess;
  const onExit = (p: ServerProcess) => {
    if (p !== current || w.closing) return;
    w.crashed = { code: p.proc.exitCode, signal: p.proc.signalCode, stderr: p.stderr().slice(-4000) };
  };
  const stopProc = async (p: ServerProcess) => {
    if (p.proc.exitCode === null && p.proc.signalCode === null) {
      const gone = new Promise((r) => p.proc.once('exit', r));
      p.proc.send({ type: 'close' }, () => {});
      const timer = setTimeout(() => p.proc.kill('SIGKILL'), 10_000);
      await gone;
      clearTimeout(timer);
    }
    // A server that closed removed its folder itself; a crashed one could not.
    rmSync(p.data.dir, { recursive: true, force: true });
  };
  const adopt = (p: ServerProcess) => {
    current = p;
    const url = new URL(p.data.url);
    Object.assign(w, p.data, { host: url.hostname, port: Number(url.port), crashed: null });
  };
  const w = {
    closing: false,
    serverErrors,
    crashed: null,
    async restart() {
      await stopProc(current);
      adopt(await forkServer(onLog, onExit));
    },
    async close() {
      w.closing = true;
      await stopProc(current);
    },
  } as unknown as FuzzWorld & { closing: boolean };
  adopt(await forkServer(onLog, onExit));
  return w;
}

// ------------------------------------------------------------------------------------------------ requests

export type AuthKind = 'none' | 'wrong' | 'device' | 'admin' | 'admin-mangled' | 'admin-in-query';

export type BodySpec =
  | { kind: 'none' }
  | { kind: 'json'; value: unknown }
  | { kind: 'text'; text: string }
  | { kind: 'bytes'; hex: string }
  | { kind: 'proto'; value: unknown }
  | { kind: 'deep'; depth: number; style: 'array' | 'object' | 'mixed' | 'in-field' }
  | { kind: 'huge'; bytes: number; style: 'string' | 'array' | 'keys' };

export interface FuzzRequest {
  /** The operation it was made from, e.g. "POST /v1/admin/plans". */
  op: string;
  method: string;
  /** The request-target exactly as sent. */
  target: string;
  /** Spelling mutations applied to the path. */
  spelling: string[];
  auth: AuthKind;
  /** Which mangling of the admin token, for admin-mangled. */
  mangle: number;
  contentType: string | null;
  body: BodySpec;
  /** Send over a raw TCP socket (absolute-form, "*", bytes node:http refuses, lower-case methods). */
  raw: boolean;
}

const NASTY = [
  '',
  ' ',
  '.',
  '..',
  '...',
  '%',
  '%00',
  '\u0000',
  '\u001b[2J',
  'null',
  'undefined',
  'NaN',
  'Infinity',
  '-1',
  '0',
  '1e400',
  '-1e400',
  '0.5',
  '__proto__',
  'constructor',
  'prototype',
  "' OR 1=1 --",
  '"; DROP TABLE devices; --',
  '../../../../etc/passwd',
  '..%2f..%2fetc%2fpasswd',
  '%2e%2e',
  '😀',
  '\ud800',
  'x@',
  '@',
  'app@',
  '@1.0',
  'app@1.0@2',
  '*',
  // biome-ignore lint/suspicious/noTemplateCurlyInString: a log4shell-style string, on purpose.
  '${jndi:ldap://x/a}',
  '{{7*7}}',
  '<script>alert(1)</script>',
  '\\',
  '/',
  '//',
  '?',
  '#',
  '&',
  '=',
  'a'.repeat(129),
  'a'.repeat(1001),
  'true',
  '[]',
  '{}',
];

const SELECTORS = [
  '*',
  'env=prod',
  'tier in (A,B)',
  'ring!=canary',
  'env=prod,tier=A',
  '',
  'env=',
  '=x',
  '(((',
  'a in ()',
];

function known(w: FuzzWorld): string[] {
  const k = w.known;
  return [
    ...k.deviceIds,
    ...k.deviceNames,
    ...k.refs,
    ...k.components,
    ...k.versions,
    ...k.rolloutIds,
    ...k.planNames,
    ...k.enrollTokenIds,
    ...k.shas,
    ...k.tufNames,
  ];
}

/**
 * One of a list read when the value is generated, not when the arbitrary is built: after a crashed server is
 * replaced, requests name the new server's devices and tokens.
 */
function live(get: () => string[]): fc.Arbitrary<string> {
  return fc.nat({ max: 1_000_000 }).map((i) => {
    const xs = get();
    return xs.length ? xs[i % xs.length] : 'x';
  });
}

/** Strings: real names (so requests get past lookups), hostile constants, and random text of every kind. */
function stringArb(w: FuzzWorld): fc.Arbitrary<string> {
  return fc.oneof(
    { weight: 4, arbitrary: live(() => known(w)) },
    { weight: 3, arbitrary: fc.constantFrom(...NASTY) },
    { weight: 2, arbitrary: fc.string({ maxLength: 40 }) },
    { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 20 }) },
    { weight: 1, arbitrary: fc.integer({ min: 1, max: 5000 }).map((n) => 'x'.repeat(n)) },
  );
}

const numberArb = fc.oneof(
  fc.integer(),
  fc.constantFrom(0, -0, -1, 1, 2 ** 31, 2 ** 53, 2 ** 53 + 2, -(2 ** 53), 1e308, -1e308, 0.5, -0.5, 1e-300),
  fc.double({ noNaN: true }),
);

/** Any JSON value, small. */
const anyJson = fc.jsonValue({ maxDepth: 3 });

/** Values a field should never hold: the wrong type for almost any schema. */
const wrongArb = fc.oneof(
  anyJson,
  fc.constantFrom(null, true, false, 0, -1, 1e308, '', [], {}, [[[]]], { $gt: '' }, ['a', 1, null]),
);

/** Field names with known meaning get real values most of the time. */
function hintFor(name: string, w: FuzzWorld, strict: boolean): fc.Arbitrary<unknown> | null {
  const s = stringArb(w);
  const mix = (xs: () => string[]) =>
    strict ? live(xs) : fc.oneof({ weight: 3, arbitrary: live(xs) }, { weight: 1, arbitrary: s });
  switch (name) {
    case 'release':
      return mix(() => w.known.refs);
    case 'plan':
      return mix(() => w.known.planNames);
    case 'selector':
      return mix(() => SELECTORS);
    case 'component':
      return mix(() => w.known.components);
    case 'version':
      return mix(() => w.known.versions);
    case 'token':
      return mix(() => [...w.known.enrollTokens, ...w.devices.map((d) => d.token)]);
    case 'sha256':
      return mix(() => w.known.shas);
    case 'source':
      if (strict) return fc.constantFrom(PLAN, PLAN.replace('fuzz', 'fuzz2'));
      return fc.oneof(
        fc.constantFrom(
          PLAN,
          PLAN.replace('fuzz', 'fuzz2'),
          'name: x\nwaves: [',
          `name: lol\n${billionLaughs()}`,
          `name: deep\nwaves: ${'['.repeat(5000)}`,
          'name: a\nwaves:\n  - name: w\n    size: 200%\n',
          '!!js/function "function(){}"',
          '---\na: 1\n---\nb: 2\n',
          'name: &a x\nwaves: *a\n',
        ),
        s,
      );
    case 'channel':
      return mix(() => ['early', 'general']);
    case 'labels':
      if (strict) return fc.constantFrom({ env: 'prod' }, { env: 'dev', tier: 'A', ring: 'canary' }, {});
      return fc.oneof(
        {
          weight: 3,
          arbitrary: fc.constantFrom({ env: 'prod' }, { env: 'dev', tier: 'A', ring: 'canary' }, {}),
        },
        { weight: 1, arbitrary: fc.dictionary(s, s, { maxKeys: 4 }) },
      );
    case 'state':
      return mix(() => ['idle', 'staged', 'probation', 'committed', 'rolled-back', 'failed']);
    default:
      return null;
  }
}

/** The classic YAML alias bomb: ten anchors, each nine aliases of the previous one (10^9 strings expanded). */
export function billionLaughs(prefix = ''): string {
  const lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'];
  for (let i = 1; i <= 9; i++)
    lines.push(
      `l${i}: &l${i} [${Array(9)
        .fill(`*l${i - 1}`)
        .join(', ')}]`,
    );
  return `${prefix}${lines.join('\n')}\n`;
}

/** Strings a schema's `pattern` accepts (short ones), or short printable text without a pattern. */
function matching(pattern: unknown, max: number): fc.Arbitrary<string> {
  if (typeof pattern === 'string') {
    try {
      return fc.stringMatching(new RegExp(pattern)).map((x) => x.slice(0, max));
    } catch {}
  }
  return fc.string({ minLength: 1, maxLength: Math.max(1, Math.min(max, 24)) });
}

/** A value for a JSON schema, usually valid-looking, sometimes at or just past its bounds. */
function schemaArb(
  schema: JsonSchema | undefined,
  w: FuzzWorld,
  depth = 0,
  name = '',
  strict = false,
): fc.Arbitrary<unknown> {
  const hint = name ? hintFor(name, w, strict) : null;
  if (hint) return hint;
  if (!schema || depth > 5) return anyJson;
  if (Array.isArray(schema.enum) && schema.enum.length && strict)
    return fc.constantFrom(...(schema.enum as unknown[]));
  if (Array.isArray(schema.enum) && schema.enum.length)
    return fc.oneof(
      { weight: 4, arbitrary: fc.constantFrom(...(schema.enum as unknown[])) },
      { weight: 1, arbitrary: stringArb(w) },
    );
  const types = (Array.isArray(schema.type) ? schema.type : [schema.type]) as Array<string | undefined>;
  const arbs: fc.Arbitrary<unknown>[] = types.map((t) => {
    switch (t) {
      case 'object': {
        const props = (schema.properties ?? {}) as Record<string, JsonSchema>;
        const required = (schema.required ?? []) as string[];
        const model: Record<string, fc.Arbitrary<unknown>> = {};
        for (const [k, v] of Object.entries(props)) model[k] = schemaArb(v, w, depth + 1, k, strict);
        const rec = fc.record(model, { requiredKeys: required.filter((r) => r in model) });
        const extra = schema.additionalProperties;
        if (extra && typeof extra === 'object') {
          const names = (schema.propertyNames ?? {}) as JsonSchema;
          const key = strict
            ? matching(names.pattern, 24)
            : fc.oneof(
                { weight: 3, arbitrary: matching(names.pattern, 24) },
                { weight: 1, arbitrary: stringArb(w) },
              );
          const maxKeys = Math.min(Number(schema.maxProperties ?? 6), 6);
          return fc
            .tuple(
              rec,
              fc.dictionary(key, schemaArb(extra as JsonSchema, w, depth + 1, '', strict), { maxKeys }),
            )
            .map(([a, b]) => ({ ...b, ...a }));
        }
        return rec;
      }
      case 'array':
        return fc.array(schemaArb(schema.items as JsonSchema, w, depth + 1, '', strict), {
          maxLength: Math.min(Number(schema.maxItems ?? 6), strict ? 3 : 6),
        });
      case 'string': {
        const max = typeof schema.maxLength === 'number' ? schema.maxLength : null;
        // Valid most of the time (matching the pattern, within the length), so requests reach the handlers.
        const valid = matching(schema.pattern, max ?? 64);
        if (strict) return valid;
        const arbs = [
          { weight: 4, arbitrary: valid },
          { weight: 3, arbitrary: stringArb(w) },
        ];
        // Boundary strings for small limits; big ones are the 'huge' bodies' business.
        if (max !== null && max <= 5000)
          arbs.push({ weight: 1, arbitrary: fc.constantFrom('a'.repeat(max), 'a'.repeat(max + 1)) });
        return fc.oneof(...arbs);
      }
      case 'integer':
      case 'number': {
        if (!strict) return numberArb;
        const min = typeof schema.minimum === 'number' ? schema.minimum : 0;
        const max = typeof schema.maximum === 'number' ? schema.maximum : min + 1000;
        return fc.integer({ min: Math.ceil(min), max: Math.floor(Math.min(max, min + 1_000_000)) });
      }
      case 'boolean':
        return fc.boolean();
      case 'null':
        return fc.constant(null);
      default:
        return anyJson;
    }
  });
  return arbs.length === 1 ? arbs[0] : fc.oneof(...arbs);
}

/** A body for an operation: from its schema, then mutated. */
function bodyArb(op: Operation, w: FuzzWorld): fc.Arbitrary<BodySpec> {
  const valid = schemaArb(op.body, w);
  // Valid in every field: reaches the handler. Mutated in one field: probes exactly that field.
  const strict = schemaArb(op.body, w, 0, '', true);
  const fieldMutated = fc.tuple(strict, stringArb(w), wrongArb, fc.boolean()).map(([v, key, bad, known]) => {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return bad;
    const keys = Object.keys(v as object);
    const k = known && keys.length ? keys[key.length % keys.length] : key;
    return { ...(v as object), [k]: bad };
  });
  return fc.oneof(
    { weight: 16, arbitrary: strict.map((value): BodySpec => ({ kind: 'json', value })) },
    { weight: 12, arbitrary: valid.map((value): BodySpec => ({ kind: 'json', value })) },
    { weight: 12, arbitrary: fieldMutated.map((value): BodySpec => ({ kind: 'json', value })) },
    { weight: 8, arbitrary: wrongArb.map((value): BodySpec => ({ kind: 'json', value })) },
    { weight: 8, arbitrary: fc.constant<BodySpec>({ kind: 'none' }) },
    { weight: 4, arbitrary: strict.map((value): BodySpec => ({ kind: 'proto', value })) },
    {
      weight: 3,
      arbitrary: fc.record({
        kind: fc.constant('deep' as const),
        depth: fc.constantFrom(33, 200, 10_001, 20_000, 100_000),
        style: fc.constantFrom('array' as const, 'object' as const, 'mixed' as const, 'in-field' as const),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        kind: fc.constant('huge' as const),
        bytes: fc.constantFrom(100_000, 900_000, 1_100_000, 2_000_000),
        style: fc.constantFrom('string' as const, 'array' as const, 'keys' as const),
      }),
    },
    {
      weight: 4,
      arbitrary: fc
        .constantFrom(
          '{',
          '[1,2',
          '{"a":1}{"b":2}',
          '',
          'null',
          '"str"',
          '1e400',
          '-0',
          '\u0000',
          '\ufeff{}',
          '{"a":1,"a":2}',
          '{"__proto__":{"admin":true}}',
          '{"constructor":{"prototype":{"admin":true}}}',
          `[${'1,'.repeat(1000)}1]`,
          '{"a":"\\ud800"}',
          '{"a":"\\u0000"}',
          `{"n":${'9'.repeat(400)}}`,
          '{"n":1e400}',
        )
        .map((text): BodySpec => ({ kind: 'text', text })),
    },
    {
      weight: 3,
      arbitrary: fc
        .uint8Array({ maxLength: 64 })
        .map((b): BodySpec => ({ kind: 'bytes', hex: Buffer.from(b).toString('hex') })),
    },
  );
}

/** Encodes a path parameter the way a client would, sometimes not at all. */
function paramArb(name: string, w: FuzzWorld): fc.Arbitrary<string> {
  const pools: Record<string, () => string[]> = {
    id: () => [
      ...w.known.deviceIds,
      ...w.known.deviceNames,
      ...w.known.rolloutIds,
      ...w.known.enrollTokenIds,
    ],
    ref: () => w.known.refs,
    name: () => w.known.tufNames,
    vendor: () => ['acme', 'vendor-1'],
    sha: () => w.known.shas,
    sha256: () => w.known.shas,
  };
  const pool = pools[name] ?? (() => known(w));
  const value = fc.oneof({ weight: 3, arbitrary: live(pool) }, { weight: 2, arbitrary: stringArb(w) });
  return fc
    .tuple(value, fc.constantFrom('encode', 'encode', 'encode', 'raw'))
    .map(([v, how]) => (how === 'encode' ? encodeURIComponent(safeText(v)) : v.replace(/[?#]/g, '')));
}

/** Text encodeURIComponent accepts (a lone surrogate throws). */
function safeText(s: string): string {
  return s.replace(/[\ud800-\udfff]/g, (c, i: number, all: string) => {
    const code = c.charCodeAt(0);
    if (code <= 0xdbff) {
      const next = all.charCodeAt(i + 1);
      return next >= 0xdc00 && next <= 0xdfff ? c : '\ufffd';
    }
    const prev = all.charCodeAt(i - 1);
    return prev >= 0xd800 && prev <= 0xdbff ? c : '\ufffd';
  });
}

const SPELLINGS = [
  'pct-char',
  'pct-segment',
  'pct-slash',
  'double-encode',
  'double-slash',
  'leading-double-slash',
  'trailing-slash',
  'trailing-dot',
  'dot-segment',
  'dotdot',
  'pct-dotdot',
  'upper-case',
  'semicolon',
  'backslash',
  'fragment',
  'absolute',
  'absolute-self',
  'nul',
  'long-segment',
  'space',
  'tab',
  'non-latin1',
] as const;

const pct = (c: string) => `%${c.charCodeAt(0).toString(16).padStart(2, '0')}`;

/** Applies one spelling mutation to a path (the part before any query string). */
function spell(path: string, how: string, at: number, w: FuzzWorld): string {
  const segs = path.split('/'); // ['', 'v1', 'admin', ...]
  const i = 1 + (at % Math.max(1, segs.length - 1));
  const seg = segs[i] ?? '';
  const setSeg = (s: string) => {
    const c = segs.slice();
    c[i] = s;
    return c.join('/');
  };
  switch (how) {
    case 'pct-char': {
      if (!seg) return path;
      const j = at % seg.length;
      return setSeg(seg.slice(0, j) + (at % 2 ? pct(seg[j]).toUpperCase() : pct(seg[j])) + seg.slice(j + 1));
    }
    case 'pct-segment':
      return setSeg([...seg].map((c) => (c.charCodeAt(0) < 128 ? pct(c) : c)).join(''));
    case 'pct-slash':
      return i < segs.length - 1
        ? `${segs.slice(0, i + 1).join('/')}${at % 2 ? '%2F' : '%2f'}${segs.slice(i + 1).join('/')}`
        : path;
    case 'double-encode':
      return seg ? setSeg(`%25${seg.charCodeAt(0).toString(16)}${seg.slice(1)}`) : path;
    case 'double-slash':
      return `${segs.slice(0, i).join('/')}//${segs.slice(i).join('/')}`;
    case 'leading-double-slash':
      return `/${path}`;
    case 'trailing-slash':
      return `${path}/`;
    case 'trailing-dot':
      return setSeg(`${seg}.`);
    case 'dot-segment':
      return `${segs.slice(0, i).join('/')}/./${segs.slice(i).join('/')}`;
    case 'dotdot':
      return `${segs.slice(0, i).join('/')}/x/../${segs.slice(i).join('/')}`;
    case 'pct-dotdot':
      return `${segs.slice(0, i).join('/')}/x/${at % 2 ? '%2e%2e' : '.%2E'}/${segs.slice(i).join('/')}`;
    case 'upper-case':
      return setSeg(seg.toUpperCase());
    case 'semicolon':
      return setSeg(`${seg};x=1`);
    case 'backslash':
      return i > 1 ? `${segs.slice(0, i).join('/')}\\${segs.slice(i).join('/')}` : path;
    case 'fragment':
      return `${path}#frag`;
    case 'absolute':
      return `http://x${path}`;
    case 'absolute-self':
      return `http://${w.host}:${w.port}${path}`;
    case 'nul':
      return setSeg(`${seg}%00`);
    case 'long-segment':
      return setSeg(`${seg}${'a'.repeat(at % 2 ? 5000 : 70_000)}`);
    case 'space':
      return setSeg(`${seg} x`);
    case 'tab':
      return setSeg(`${seg}\t`);
    case 'non-latin1':
      return setSeg(`${seg}ü名`);
    default:
      return path;
  }
}

const QUERY_NAMES = [
  'limit',
  'subject',
  'state',
  'since',
  'offset',
  'cursor',
  'page',
  'sort',
  'q',
  'component',
  'device',
  '__proto__',
  '__proto__[admin]',
  'constructor[prototype][admin]',
  'a[]',
  'a[b][c]',
  'limit[]',
  '',
];
const QUERY_VALUES = [
  '1',
  '10',
  '-1',
  '0',
  '-0',
  '0.5',
  '-0.0001',
  '1e400',
  '-1e400',
  '1e-400',
  'NaN',
  'Infinity',
  '-Infinity',
  '99999999999999999999999',
  '9007199254740993',
  '0x10',
  '1_000',
  ' 5',
  '',
  '%zz',
  '%00',
  '[]',
  '{}',
  'true',
  'null',
  '%27%20OR%201%3D1',
];

function queryArb(w: FuzzWorld): fc.Arbitrary<string> {
  const name = fc.oneof(
    { weight: 4, arbitrary: fc.constantFrom(...QUERY_NAMES) },
    { weight: 1, arbitrary: fc.string({ maxLength: 8 }) },
  );
  const value = fc.oneof(
    { weight: 24, arbitrary: fc.constantFrom(...QUERY_VALUES) },
    { weight: 8, arbitrary: live(() => known(w)) },
    { weight: 4, arbitrary: fc.string({ maxLength: 12 }) },
    { weight: 2, arbitrary: fc.constantFrom('1'.repeat(400), '9'.repeat(5000)) },
    // Past the server's header size limit (16 KiB): a 431, nothing worse.
    { weight: 1, arbitrary: fc.constant('x'.repeat(20_000)) },
  );
  const pair = fc
    .tuple(name, value)
    .map(
      ([n, v]) =>
        `${encodeURIComponent(safeText(n)).replace(/%5B/g, '[').replace(/%5D/g, ']')}=${/^%/.test(v) ? v : encodeURIComponent(safeText(v))}`,
    );
  return fc.oneof(
    { weight: 6, arbitrary: fc.constant('') },
    { weight: 6, arbitrary: fc.array(pair, { minLength: 1, maxLength: 6 }).map((ps) => `?${ps.join('&')}`) },
    // The same key many times.
    {
      weight: 1,
      arbitrary: fc
        .tuple(fc.constantFrom('limit', 'subject', 'state'), fc.integer({ min: 2, max: 1000 }))
        .map(([n, k]) => `?${Array.from({ length: k }, (_, j) => `${n}=${j}`).join('&')}`),
    },
    { weight: 1, arbitrary: fc.constantFrom('?', '??', '?&&', '?=', '?a', '?a=1&', '?limit=1#x') },
  );
}

const METHODS_OTHER = ['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'HEAD', 'OPTIONS'];

/** The whole request: an operation of the document, then its mutations. */
export function requestArb(w: FuzzWorld): fc.Arbitrary<FuzzRequest> {
  const perOp = w.operations.map((op) => {
    const names = [...op.template.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]);
    const params = fc.tuple(...names.map((n) => paramArb(n, w)));
    const wildcard = fc.oneof(
      live(() => w.known.targets),
      stringArb(w).map((s) => encodeURIComponent(safeText(s))),
    );
    return fc
      .record({
        params,
        wildcard,
        method: fc.oneof(
          { weight: 12, arbitrary: fc.constant(op.method) },
          { weight: 2, arbitrary: fc.constantFrom('HEAD', 'OPTIONS') },
          { weight: 2, arbitrary: fc.constantFrom(...METHODS_OTHER) },
          { weight: 1, arbitrary: fc.constantFrom('TRACE', 'PROPFIND', 'get', 'Post', 'CONNECT') },
        ),
        spelling: fc.oneof(
          { weight: 5, arbitrary: fc.constant([] as Array<[string, number]>) },
          {
            weight: 4,
            arbitrary: fc.array(fc.tuple(fc.constantFrom(...SPELLINGS), fc.nat({ max: 1000 })), {
              minLength: 1,
              maxLength: 3,
            }),
          },
        ),
        query: queryArb(w),
        auth: fc.oneof(
          { weight: 6, arbitrary: fc.constant<AuthKind>('admin') },
          { weight: 2, arbitrary: fc.constant<AuthKind>('device') },
          {
            weight: 4,
            arbitrary: fc.constantFrom<AuthKind>('none', 'wrong', 'admin-mangled', 'admin-in-query'),
          },
        ),
        mangle: fc.nat({ max: 7 }),
        contentType: fc.oneof(
          { weight: 10, arbitrary: fc.constant('application/json') },
          {
            weight: 3,
            arbitrary: fc.constantFrom(
              null,
              'text/plain',
              'application/octet-stream',
              'application/json; charset=utf-16le',
              'application/json; charset=latin1',
              'application/x-www-form-urlencoded',
              'multipart/form-data; boundary=x',
              'application/JSON',
              'application/json, text/plain',
              'application/merge-patch+json',
            ),
          },
        ),
        body: bodyArb(op, w),
        star: fc.integer({ min: 0, max: 199 }),
      })
      .map((r): FuzzRequest => {
        let k = 0;
        let path = op.template
          .replace('*', () => r.wildcard)
          .replace(/\{[^}]+\}[A-Za-z0-9_]*/g, () => r.params[k++] ?? 'x');
        const applied: string[] = [];
        for (const [how, at] of r.spelling) {
          // Absolute-form keeps its scheme and host; later spellings apply to the path only.
          const abs = /^[a-z]+:\/\/[^/]*/i.exec(path)?.[0] ?? '';
          path = abs + spell(path.slice(abs.length), how, at, w);
          applied.push(how);
        }
        let target = `${path}${r.query}`;
        if (r.auth === 'admin-in-query')
          target += `${target.includes('?') ? '&' : '?'}token=${w.adminToken}&access_token=${w.adminToken}`;
        let method = r.method;
        // Now and then the asterisk-form, which only OPTIONS may use.
        if (r.star === 0) {
          target = '*';
          method = 'OPTIONS';
          applied.push('asterisk');
        }
        // The admin token stays valid for the whole run: rotating it would turn every later admin request
        // into a 401. The rotation route is still fuzzed with every other kind of token.
        const auth: AuthKind =
          r.auth === 'admin' && op.template.endsWith('/token/rotate') ? 'admin-mangled' : r.auth;
        const raw =
          method === 'CONNECT' ||
          method !== method.toUpperCase() ||
          target === '*' ||
          /^[a-z]+:\/\//i.test(target) ||
          /[^\u0021-\u00ff]/.test(target);
        return {
          op: `${op.method} ${op.template}`,
          method,
          target,
          spelling: applied,
          auth,
          mangle: r.mangle,
          contentType: r.body.kind === 'none' ? null : r.contentType,
          body: r.body,
          raw,
        };
      });
  });
  return fc.oneof(...perOp);
}

// ------------------------------------------------------------------------------------------------ sending

// Deep and huge bodies come in a few shapes only: made once each.
const bigBodies = new Map<string, Buffer>();

/** The bytes of a body spec (big ones are made only when sent, and once). */
export function bodyBytes(b: BodySpec): Buffer | null {
  if (b.kind !== 'deep' && b.kind !== 'huge') return makeBody(b);
  const key = JSON.stringify(b);
  let buf = bigBodies.get(key);
  if (!buf) {
    buf = makeBody(b) as Buffer;
    bigBodies.set(key, buf);
  }
  return buf;
}

function makeBody(b: BodySpec): Buffer | null {
  switch (b.kind) {
    case 'none':
      return null;
    case 'json':
      return Buffer.from(JSON.stringify(b.value) ?? 'null');
    case 'text':
      return Buffer.from(b.text);
    case 'bytes':
      return Buffer.from(b.hex, 'hex');
    case 'proto': {
      // A literal "__proto__" key: JSON.stringify cannot write one (it would set the prototype instead).
      const rest =
        b.value && typeof b.value === 'object' && !Array.isArray(b.value)
          ? JSON.stringify(b.value).slice(1, -1)
          : '';
      return Buffer.from(
        `{"__proto__":{"admin":true,"isAdmin":true,"role":"admin"},"constructor":{"prototype":{"admin":true}}${rest ? `,${rest}` : ''}}`,
      );
    }
    case 'deep': {
      const d = b.depth;
      if (b.style === 'array') return Buffer.from(`${'['.repeat(d)}${']'.repeat(d)}`);
      if (b.style === 'object') return Buffer.from(`${'{"a":'.repeat(d)}1${'}'.repeat(d)}`);
      if (b.style === 'in-field')
        return Buffer.from(`{"selector":"*","source":"x","detail":${'['.repeat(d)}${']'.repeat(d)}}`);
      const half = Math.ceil(d / 2);
      return Buffer.from(`${'[{"a":'.repeat(half)}0${'}]'.repeat(half)}`);
    }
    case 'huge': {
      const n = b.bytes;
      if (b.style === 'string') return Buffer.from(`{"selector":"${'x'.repeat(n)}","source":"a"}`);
      if (b.style === 'array') return Buffer.from(`[${'1,'.repeat(Math.floor(n / 2))}1]`);
      const parts: string[] = [];
      for (let i = 0; parts.length * 12 < n; i++) parts.push(`"k${i}":${i}`);
      return Buffer.from(`{${parts.join(',')}}`);
    }
  }
}

function authHeader(r: FuzzRequest, w: FuzzWorld): string | null {
  const admin = w.adminToken;
  switch (r.auth) {
    case 'none':
    case 'admin-in-query':
      return null;
    case 'wrong':
      return `Bearer rfadm_${'A'.repeat(32)}${r.mangle}`;
    case 'device':
      return `Bearer ${w.devices[r.mangle % w.devices.length].token}`;
    case 'admin':
      return `Bearer ${admin}`;
    case 'admin-mangled':
      return [
        `Bearer ${admin}x`,
        `Bearer ${admin.slice(0, -1)}`,
        `Basic ${Buffer.from(`admin:${admin}`).toString('base64')}`,
        `Bearer ${admin.toUpperCase() === admin ? admin.toLowerCase() : admin.toUpperCase()}`,
        admin,
        `Bearer`,
        `Bearer ${admin.slice(0, 8)}`,
        `Token ${admin}`,
      ][r.mangle % 8];
  }
}

export interface FuzzResult {
  status: number | null;
  /** `error` and `message` of a JSON error answer, or the start of the body. */
  error: string;
  message: string;
  /** Why no status arrived (connection reset, timeout). */
  failure?: string;
  /** A first attempt on a reused keep-alive connection failed like this and was sent again on a new one. */
  retried?: string;
  bodyBytes: number;
}

const TIMEOUT_MS = 60_000;
const QUIET = Symbol('fuzz-quiet-socket');

function summarise(status: number | null, body: Buffer): Pick<FuzzResult, 'error' | 'message'> {
  const text = body.toString('utf8', 0, Math.min(body.length, 4000));
  try {
    const j = JSON.parse(text) as { error?: unknown; message?: unknown };
    return { error: String(j.error ?? ''), message: String(j.message ?? '').slice(0, 300) };
  } catch {
    return { error: '', message: status && status >= 400 ? text.slice(0, 200) : '' };
  }
}

/**
 * Sends one request with node:http over the shared keep-alive agent. A reset on a reused connection (the server
 * closed it between two requests: the keep-alive race every HTTP client has) is retried once on a new one.
 */
async function sendHttp(
  r: FuzzRequest,
  w: FuzzWorld,
  agent: Agent,
  body: Buffer | null,
): Promise<FuzzResult> {
  const first = await sendHttpOnce(r, w, agent, body);
  // Also retried: a reset on a fresh connection. A server that answers early (404, 415) and closes while the
  // body is still unread makes the kernel send RST, which can overtake the answer on a loaded machine; a
  // server that really hangs up on this request does it again.
  if (first.status !== null || !(first.reused || /^(ECONNRESET|EPIPE)$/.test(first.failure ?? '')))
    return first;
  const again = await sendHttpOnce(r, w, false, body);
  return { ...again, retried: first.failure };
}

function sendHttpOnce(
  r: FuzzRequest,
  w: FuzzWorld,
  agent: Agent | false,
  body: Buffer | null,
): Promise<FuzzResult & { reused?: boolean }> {
  return new Promise((resolve) => {
    const headers: Record<string, string> = { host: `${w.host}:${w.port}` };
    const auth = authHeader(r, w);
    if (auth !== null) headers.authorization = auth;
    if (r.contentType) headers['content-type'] = r.contentType;
    if (body) headers['content-length'] = String(body.length);
    let settled = false;
    const done = (res: FuzzResult & { reused?: boolean }) => {
      if (settled) return;
      settled = true;
      resolve(res);
    };
    let req: ReturnType<typeof request>;
    try {
      req = request({ agent, host: w.host, port: w.port, method: r.method, path: r.target, headers });
    } catch (e) {
      // node:http refused to send it (its own validation): not the server's doing.
      done({
        status: null,
        error: '',
        message: '',
        failure: `client:${(e as Error & { code?: string }).code}`,
        bodyBytes: 0,
      });
      return;
    }
    // A server may answer (413, 400) and close before the body is written: the write then fails on a socket
    // the finished request no longer listens to, which would be an unhandled 'error' in this process.
    req.on('socket', (sock) => {
      if (!(sock as { [QUIET]?: boolean })[QUIET]) {
        (sock as { [QUIET]?: boolean })[QUIET] = true;
        sock.on('error', () => {});
      }
    });
    req.setTimeout(TIMEOUT_MS, () => {
      req.destroy(new Error('timeout'));
    });
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      let n = 0;
      res.on('data', (c: Buffer) => {
        n += c.length;
        if (n <= 8192) chunks.push(c);
      });
      res.on('end', () =>
        done({
          status: res.statusCode ?? null,
          ...summarise(res.statusCode ?? null, Buffer.concat(chunks)),
          bodyBytes: n,
        }),
      );
      res.on('error', (e) =>
        done({ status: res.statusCode ?? null, error: '', message: '', failure: e.message, bodyBytes: n }),
      );
    });
    req.on('error', (e: Error & { code?: string }) =>
      done({
        status: null,
        error: '',
        message: '',
        failure: e.code ?? e.message,
        bodyBytes: 0,
        reused: (req as { reusedSocket?: boolean }).reusedSocket === true,
      }),
    );
    if (body) req.end(body);
    else req.end();
  });
}

/** Sends one request as raw bytes over its own TCP connection (Connection: close) and reads the status line. */
function sendRaw(r: FuzzRequest, w: FuzzWorld, body: Buffer | null): Promise<FuzzResult> {
  return new Promise((resolve) => {
    const lines = [`${r.method} ${r.target} HTTP/1.1`, `Host: ${w.host}:${w.port}`, 'Connection: close'];
    const auth = authHeader(r, w);
    if (auth !== null) lines.push(`Authorization: ${auth}`);
    if (r.contentType) lines.push(`Content-Type: ${r.contentType}`);
    lines.push(`Content-Length: ${body?.length ?? 0}`);
    const head = Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'utf8');
    const sock = connect({ host: w.host, port: w.port });
    const chunks: Buffer[] = [];
    let n = 0;
    let settled = false;
    const finish = (failure?: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      const all = Buffer.concat(chunks);
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(all.toString('latin1', 0, 64));
      const split = all.indexOf('\r\n\r\n');
      const payload = split >= 0 ? all.subarray(split + 4) : Buffer.alloc(0);
      const status = m ? Number(m[1]) : null;
      resolve({
        status,
        ...summarise(status, payload),
        ...(status === null ? { failure: failure ?? 'no status line' } : {}),
        bodyBytes: n,
      });
    };
    const timer = setTimeout(() => finish('timeout'), TIMEOUT_MS);
    sock.on('connect', () => {
      sock.write(head);
      if (body) sock.write(body);
    });
    sock.on('data', (c: Buffer) => {
      n += c.length;
      if (n <= 16_384) chunks.push(c);
    });
    sock.on('end', () => finish());
    sock.on('close', () => finish());
    sock.on('error', (e: Error & { code?: string }) => finish(e.code ?? e.message));
  });
}

// ------------------------------------------------------------------------------------------------ oracles

/** Decodes a path the ways a router or proxy might, to decide what route a request-target names. */
export function pathInterpretations(target: string): string[][] {
  let t = target;
  const abs = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*/i.exec(t);
  if (abs) t = t.slice(abs[0].length) || '/';
  const path = t.split(/[?#]/)[0];
  const out: string[][] = [];
  const decode = (s: string) => {
    let cur = s;
    for (let i = 0; i < 3; i++) {
      try {
        const next = decodeURIComponent(cur);
        if (next === cur) break;
        cur = next;
      } catch {
        break;
      }
    }
    return cur;
  };
  const raw = path.split('/');
  const decoded = raw.map(decode).join('/').split(/[/\\]/);
  for (const segs of [raw, decoded]) {
    const cleaned = segs.map((s) =>
      s
        .replace(/;.*$/, '')
        .replace(/\.+$/, (m) => (m === s ? m : ''))
        .toLowerCase(),
    );
    const resolved: string[] = [];
    for (const s of cleaned) {
      if (s === '' || s === '.') continue;
      if (s === '..') resolved.pop();
      else resolved.push(s);
    }
    out.push(
      segs.filter((s) => s !== ''),
      resolved,
    );
  }
  return out;
}

export function isAdminTarget(target: string): boolean {
  return pathInterpretations(target).some(
    (s) => s[0]?.toLowerCase() === 'v1' && s[1]?.toLowerCase() === 'admin',
  );
}

export function isDeviceTarget(target: string): boolean {
  return pathInterpretations(target).some(
    (s) =>
      s[0]?.toLowerCase() === 'v1' && (s[1]?.toLowerCase() === 'checkin' || s[1]?.toLowerCase() === 'blobs'),
  );
}

export interface Finding {
  oracle: 'status>=500' | 'admin-without-token' | 'device-without-token' | 'no-response' | 'server-crash';
  request: FuzzRequest;
  result: FuzzResult;
  /** For a crash: whether replaying `request` alone crashed a fresh server, and how many were in flight. */
  crash?: { confirmed: boolean; suspects: number; stderr: string };
}

/** Judges one answer; null when it is acceptable. */
export function judge(r: FuzzRequest, res: FuzzResult, bodyLength: number): Finding | null {
  if (res.status === null) {
    // node:http refusing to send it is the client's business; a reset while a big body was still being sent
    // is how a server refuses a body past its limit.
    if (res.failure?.startsWith('client:')) return null;
    // node:http hands CONNECT to a 'connect' listener; with none (not a proxy) it closes the connection.
    if (r.method.toUpperCase() === 'CONNECT') return null;
    // A HEAD whose request line the server could not parse gets an error answer with a body (the server cannot
    // know it was HEAD); node's client then fails to parse that body as the next response.
    if (r.method === 'HEAD' && res.failure?.startsWith('HPE_')) return null;
    if (bodyLength > 1024 * 1024) return null;
    // A server that refuses a request early (e.g. an unparseable request line: 400, then close) resets a
    // connection whose client is still writing a large body; the client sees the reset, not the answer.
    if (bodyLength > 64 * 1024 && /ECONNRESET|EPIPE/.test(res.failure ?? '')) return null;
    if (r.target.length > 16_000) return null;
    return { oracle: 'no-response', request: r, result: res };
  }
  if (res.status >= 500) return { oracle: 'status>=500', request: r, result: res };
  const ok = res.status >= 200 && res.status < 400;
  if (ok && r.auth !== 'admin' && isAdminTarget(r.target))
    return { oracle: 'admin-without-token', request: r, result: res };
  if (ok && r.auth !== 'admin' && r.auth !== 'device' && isDeviceTarget(r.target))
    return { oracle: 'device-without-token', request: r, result: res };
  return null;
}

// ------------------------------------------------------------------------------------------------ running

export interface FuzzReport {
  seed: number;
  sent: number;
  raw: number;
  /** The run stopped early after too many server crashes. */
  aborted: boolean;
  /** Per operation: requests sent and 2xx answers (how deep the fuzz got). */
  coverage: Record<string, { sent: number; ok: number }>;
  statuses: Record<string, number>;
  findings: Finding[];
  /** Distinct failure classes, first example each, most frequent first. */
  classes: Array<{ key: string; count: number; example: Finding }>;
  serverErrors: Array<{ key: string; count: number }>;
  ms: number;
}

/** A failure class: what went wrong, on which operation, with which answer (ids and numbers blurred). */
export function classOf(f: Finding): string {
  if (f.oracle === 'server-crash')
    return `server-crash ${f.request.method} ${f.request.op}${f.crash?.confirmed ? '' : ' (unconfirmed: one of the requests in flight)'} -> ${f.result.failure}: ${f.result.message}`;
  const how = f.request.raw ? 'raw' : 'http';
  if (f.oracle === 'admin-without-token' || f.oracle === 'device-without-token') {
    // One class per way in (the URL spelling), whatever the route: that is what a fix addresses.
    const ways = [...new Set(f.request.spelling.map(family))].sort().join('+') || 'plain URL';
    return `${f.oracle} via ${ways} -> ${Math.floor((f.result.status ?? 0) / 100)}xx (${how})`;
  }
  const msg = (f.result.message || f.result.failure || '')
    .replace(/[0-9a-f]{16,}/gi, '<hex>')
    .replace(/\d+/g, '<n>')
    .slice(0, 120);
  return `${f.oracle} ${f.request.method} ${f.request.op} -> ${f.result.status ?? 'none'} ${f.result.error} ${msg} (${how})`;
}

/** Spelling mutations grouped by what a router would have to get right. */
function family(spelling: string): string {
  if (spelling.startsWith('absolute')) return 'absolute-form';
  if (spelling.startsWith('pct-') || spelling === 'double-encode') return 'percent-encoding';
  if (spelling === 'dot-segment' || spelling === 'dotdot') return 'dot-segments';
  if (spelling.includes('slash')) return 'slashes';
  return spelling;
}

/** Sends one request the way the fuzzer does (for replaying an example). */
export function sendOne(r: FuzzRequest, w: FuzzWorld, agent: Agent): Promise<FuzzResult> {
  const body = bodyBytes(r.body);
  return r.raw ? sendRaw(r, w, body) : sendHttp(r, w, agent, body);
}

/** Bounded concurrency over an array. */
export async function pool<T>(items: T[], width: number, fn: (x: T) => Promise<void>): Promise<void> {
  let next = 0;
  const workers = Array.from({ length: Math.min(width, items.length) }, async () => {
    while (next < items.length) {
      const i = next++;
      await fn(items[i]);
    }
  });
  await Promise.all(workers);
}

/**
 * Sends `runs` generated requests (seeded) with `concurrency` in flight and judges every answer. fast-check
 * drives generation: each property run is a batch of requests, so the run is reproducible from the seed.
 */
export async function fuzz(
  w: FuzzWorld,
  opts: {
    seed: number;
    runs: number;
    concurrency?: number;
    batch?: number;
    /** Crashes after which the run stops (each one restarts the server). */
    maxCrashes?: number;
    progress?: (sent: number) => void;
  },
): Promise<FuzzReport> {
  const t0 = Date.now();
  const batch = opts.batch ?? 500;
  const width = opts.concurrency ?? 16;
  const maxCrashes = opts.maxCrashes ?? 10;
  let agent = new Agent({ keepAlive: true, maxSockets: width });
  const findings: Finding[] = [];
  const statuses: Record<string, number> = {};
  const coverage: Record<string, { sent: number; ok: number }> = {};
  const errorsBefore = w.serverErrors.length;
  let sent = 0;
  let raw = 0;
  let crashes = 0;
  let aborted = false;
  const inflight = new Set<FuzzRequest>();
  const recent: FuzzRequest[] = [];
  const noAnswerAt = new Map<Finding, number>();
  // While a crash is handled, workers wait here before taking their next request.
  let gate: Promise<void> | null = null;

  /** A crashed server: find the request that did it, restart, and go on (or stop after maxCrashes). */
  const recover = async (suspects: FuzzRequest[]) => {
    const crash = w.crashed ?? { code: null, signal: null, stderr: '' };
    while (inflight.size) await new Promise((r) => setTimeout(r, 20));
    // Requests that got no answer shortly before the crash was noticed were its casualties, not findings.
    const since = Date.now() - 3000;
    for (let i = findings.length - 1; i >= 0; i--)
      if (findings[i].oracle === 'no-response' && (noAnswerAt.get(findings[i]) ?? 0) >= since)
        findings.splice(i, 1);
    crashes++;
    agent.destroy();
    agent = new Agent({ keepAlive: true, maxSockets: width });
    let culprit: FuzzRequest | null = null;
    await w.restart();
    for (const r of suspects) {
      await sendOne(r, w, agent);
      // The crash may come a moment after the answer (it did: on the response's 'finish').
      for (let i = 0; i < 10 && !w.crashed; i++) await new Promise((res) => setTimeout(res, 20));
      if (!w.crashed) {
        const h = await sendOne(healthz, w, agent);
        if (h.status === 200 && !w.crashed) continue;
      }
      culprit = r;
      await w.restart();
      break;
    }
    const first = culprit ?? suspects[0];
    findings.push({
      oracle: 'server-crash',
      request: first,
      result: {
        status: null,
        error: '',
        message: crashLine(crash.stderr),
        failure: `server exited (${crash.code ?? crash.signal})`,
        bodyBytes: 0,
      },
      crash: { confirmed: culprit !== null, suspects: suspects.length, stderr: crash.stderr.slice(-1500) },
    });
    if (crashes >= maxCrashes) aborted = true;
  };

  const arb = fc.array(requestArb(w), { minLength: batch, maxLength: batch });
  try {
    await fc.assert(
      fc.asyncProperty(arb, async (reqs) => {
        const todo = reqs.slice(0, Math.max(0, opts.runs - sent));
        await pool(todo, width, async (r) => {
          while (gate) await gate;
          if (aborted) return;
          inflight.add(r);
          const body = bodyBytes(r.body);
          const res = r.raw ? await sendRaw(r, w, body) : await sendHttp(r, w, agent, body);
          inflight.delete(r);
          recent.push(r);
          if (recent.length > 64) recent.shift();
          sent++;
          if (r.raw) raw++;
          const key = res.status === null ? `none:${res.failure}` : String(res.status);
          statuses[key] = (statuses[key] ?? 0) + 1;
          coverage[r.op] = coverage[r.op] ?? { sent: 0, ok: 0 };
          const cov = coverage[r.op];
          cov.sent++;
          if (res.status !== null && res.status >= 200 && res.status < 300) cov.ok++;
          // No answer at all may be the server dying: give its exit a moment to be noticed.
          if (
            res.status === null &&
            !w.crashed &&
            r.method !== 'CONNECT' &&
            /^(ECONNRESET|ECONNREFUSED|EPIPE|timeout|no status line)/.test(res.failure ?? '')
          )
            await new Promise((r2) => setTimeout(r2, 150));
          if (w.crashed) {
            // Answers from a dying server say nothing; find the request that killed it (once).
            if (!gate) {
              // The crash came after an answer went out (most likely the latest ones), or with one in flight.
              const suspects = [...recent.slice().reverse(), ...inflight];
              gate = recover(suspects).finally(() => {
                gate = null;
              });
            }
            return;
          }
          const f = judge(r, res, body?.length ?? 0);
          if (f && findings.length < 100_000) {
            findings.push(f);
            if (f.oracle === 'no-response') noAnswerAt.set(f, Date.now());
          }
        });
        while (gate) await gate;
        opts.progress?.(sent);
      }),
      { seed: opts.seed, numRuns: Math.ceil(opts.runs / batch), endOnFailure: true },
    );
  } finally {
    agent.destroy();
  }
  const byClass = new Map<string, { key: string; count: number; example: Finding }>();
  for (const f of findings) {
    const key = classOf(f);
    const c = byClass.get(key);
    if (c) c.count++;
    else byClass.set(key, { key, count: 1, example: f });
  }
  const errs = new Map<string, number>();
  for (const e of w.serverErrors.slice(errorsBefore)) {
    const key = `${e.type}: ${e.message.replace(/\d+/g, '<n>').slice(0, 160)} @ ${e.where}`;
    errs.set(key, (errs.get(key) ?? 0) + 1);
  }
  return {
    seed: opts.seed,
    sent,
    raw,
    aborted,
    coverage,
    statuses,
    findings,
    classes: [...byClass.values()].sort((a, b) => b.count - a.count),
    serverErrors: [...errs.entries()]
      .map(([key, count]) => ({ key, count }))
      .sort((a, b) => b.count - a.count),
    ms: Date.now() - t0,
  };
}

const healthz: FuzzRequest = {
  op: 'GET /healthz',
  method: 'GET',
  target: '/healthz',
  spelling: [],
  auth: 'none',
  mangle: 0,
  contentType: null,
  body: { kind: 'none' },
  raw: false,
};

/** The error line of a crashed process's stderr (e.g. "TypeError: Cannot read properties of undefined"). */
function crashLine(stderr: string): string {
  const lines = stderr.split('\n');
  const i = lines.findIndex((l) => /^\w*(Error|Exception)\b|^\s*\w+Error: /.test(l));
  if (i < 0) return lines.filter(Boolean).slice(-1)[0]?.slice(0, 200) ?? '';
  const at = lines.slice(i + 1).find((l) => /^\s+at /.test(l));
  return `${lines[i].trim().slice(0, 160)}${at ? ` ${at.trim()}` : ''}`;
}

/** How to send the example again by hand. */
function describeRequest(r: FuzzRequest): string {
  const target = r.target.length > 200 ? `${r.target.slice(0, 200)}…(${r.target.length} chars)` : r.target;
  const b = r.body;
  const body =
    b.kind === 'none'
      ? ''
      : b.kind === 'json' || b.kind === 'proto'
        ? ` body(${b.kind})=${(JSON.stringify(b.value) ?? '').slice(0, 160)}`
        : b.kind === 'text'
          ? ` body(text)=${JSON.stringify(b.text.slice(0, 120))}`
          : ` body=${JSON.stringify(b).slice(0, 120)}`;
  return `${r.method} ${JSON.stringify(target)} auth=${r.auth}${r.contentType ? ` content-type=${r.contentType}` : ''}${body}${r.raw ? ' (raw socket)' : ''}`;
}

/** A compact report: the first `max` distinct failure classes with one example each, and server log errors. */
export function formatReport(rep: FuzzReport, max = 20): string {
  const lines = [
    `fuzz seed ${rep.seed}: ${rep.sent} requests (${rep.raw} raw) in ${(rep.ms / 1000).toFixed(1)} s; ${rep.findings.length} failing answers in ${rep.classes.length} classes`,
    `statuses: ${Object.entries(rep.statuses)
      .sort((a, b) => b[1] - a[1])
      .map(([s, n]) => `${s}×${n}`)
      .join(' ')}`,
  ];
  const never = Object.entries(rep.coverage)
    .filter(([, c]) => c.ok === 0)
    .map(([op]) => op);
  if (never.length) lines.push(`operations never answered 2xx: ${never.join(', ')}`);
  if (rep.aborted) lines.push('the run stopped early: the server crashed too often');
  for (const c of rep.classes.slice(0, max)) {
    lines.push(`- ${c.count}× ${c.key}`);
    lines.push(`    e.g. ${describeRequest(c.example.request)}`);
  }
  if (rep.classes.length > max) lines.push(`… and ${rep.classes.length - max} more classes`);
  if (rep.serverErrors.length) {
    lines.push('server log errors:');
    for (const e of rep.serverErrors.slice(0, max)) lines.push(`- ${e.count}× ${e.key}`);
  }
  return lines.join('\n');
}
