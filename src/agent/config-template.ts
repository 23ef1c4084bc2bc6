// `agent init`: a commented agent configuration written from a few flags. The text is made here, by a pure
// function, and checked with the agent's own loader (parseAgentConfig), so init can only write a file the agent
// accepts. Every value from a flag is written as a YAML double-quoted scalar with everything but plain printable
// text escaped: a label such as `a: b # c` or one holding a newline stays one string and cannot add keys.
// No static imports: the commands mount `agent init` from this file, and `--help` must not load zod or yaml.

export const BACKENDS = ['dir', 'file', 'exec'] as const;
export type BackendType = (typeof BACKENDS)[number];

/** Where init writes by default: the file the packaged systemd units start the agent with. */
export const DEFAULT_CONFIG_FILE = '/etc/ringfence/agent.yaml';
/** The state folder the packaged unit creates (StateDirectory=ringfence). */
export const DEFAULT_STATE_DIR = '/var/lib/ringfence';

/** What the configuration says, from the flags (already checked by initOptions). */
export interface AgentInitOptions {
  server: string;
  enrollToken?: string;
  name?: string;
  /** In the order given; pairs, not an object, so a key like "1" keeps its place. */
  labels: Array<[string, string]>;
  stateDir: string;
  poll?: string;
  component: string;
  backend: BackendType;
  /** backend.path: the folder (dir), the file (file) or the staging folder (exec). */
  target: string;
  /** The exec backend's commands; activate and rollback are required by it. */
  exec?: { stage?: string; activate?: string; commit?: string; rollback?: string };
  /** An exec health check, run in probation after every switch. */
  healthCheck?: string;
}

/** Who wrote the file and when, for its header. */
export interface TemplateOrigin {
  /** The command that wrote it, e.g. `ringfence agent init`. */
  command: string;
  version: string;
  at: Date;
}

/** A bad flag: the message starts with the flag, e.g. `--label: expected KEY=VALUE, got "env"`. */
export class InitFlagError extends Error {
  constructor(
    readonly flag: string,
    message: string,
  ) {
    super(`${flag}: ${message}`);
  }
}

// Characters written as escapes: C0 and C1 controls, DEL, the line and paragraph separators, the byte order mark,
// the two non-characters, the bidirectional overrides and isolates (a reader of the file must see what the agent
// reads) and lone surrogates (not encodable in UTF-8).
const ESCAPED =
  // biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is the point.
  /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff\ufffe\uffff]|\p{Surrogate}/gu;
const SHORT: Record<string, string> = { '\n': '\\n', '\t': '\\t', '\r': '\\r' };

/** A YAML double-quoted scalar that parses back to exactly `s`, whatever it holds. */
export function yamlString(s: string): string {
  const body = s
    .replace(/[\\"]/g, (c) => `\\${c}`)
    .replace(ESCAPED, (c) => SHORT[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  return `"${body}"`;
}

/** The text of a commented agent configuration. Pure: the same options and origin give the same text. */
export function renderAgentConfig(o: AgentInitOptions, origin: TemplateOrigin): string {
  const q = yamlString;
  const at = origin.at.toISOString().replace(/\.\d+Z$/, 'Z');
  const L: string[] = [];
  const add = (...lines: string[]) => L.push(...lines);

  add(
    `# Ringfence agent configuration, written by \`${origin.command}\` (Ringfence ${origin.version})`,
    `# on ${at}. Edit it freely: the agent reads it at start. Reference: docs/agent.md.`,
    '# Everything about how updates are applied and checked is defined here, on the device: the server can only',
    '# offer signed content. Relative paths are taken from the folder of this file. Durations: 500ms, 30s, 5m, 2h.',
    '# Lines starting with "# " show optional settings with their defaults; remove the "# " to change one.',
    '',
    '# The patch server the agent pulls from (http:// or https://).',
    `server: ${q(o.server)}`,
    '# For an https server whose certificate is not from a CA the system trusts: that CA (PEM file).',
    '# ca: /etc/ringfence/ca.pem',
    '',
  );
  if (o.enrollToken !== undefined)
    add(
      '# Used once, to enroll; the device then keeps its own token in state_dir. Keep this file private (0600).',
      `enroll_token: ${q(o.enrollToken)}`,
    );
  else
    add(
      '# Needed once, to enroll (from `ringfence fleet enroll-token`); not needed once state_dir holds an identity.',
      '# enroll_token: rfenr_...',
    );
  add('', '# The device name in the fleet, unique (default: the server names it dev-<id>).');
  add(o.name !== undefined ? `name: ${q(o.name)}` : '# name: edge-017');
  add(
    '',
    '# The journal, the device identity, the pinned TUF root and the download cache.',
    `state_dir: ${q(o.stateDir)}`,
    '',
    '# Labels plans select devices by (env, tier A/B/C, role, site, ring ...); sent at enrollment.',
  );
  if (o.labels.length) {
    add('labels:');
    for (const [k, v] of o.labels) add(`  ${q(k)}: ${q(v)}`);
  } else add('labels: {}', '# labels: { env: prod, tier: B, site: fra1 }');
  add(
    '',
    '# How often to check in (default: as often as the server says, with jitter).',
    o.poll !== undefined ? `poll_interval: ${q(o.poll)}` : '# poll_interval: 60s',
    '# Between check-ins, wait on the server for news and check in at once (long-poll, the default) or not (off).',
    '# wake: long-poll',
    '# Download retries within one update: back-off from base doubling up to max, attempts per update.',
    '# retry: { base: 1s, max: 5m, attempts: 4 }',
    '# The largest artifact accepted from the server (default: 16 GiB).',
    '# limits: { max_artifact_bytes: 17179869184 }',
    "# The organisation's TUF root, installed with the device: trusted from the first boot (default: the root",
    '# received at enrollment, trust on first use) and an optional static mirror of `ringfence repo export`.',
    '# trust:',
    '#   root: /etc/ringfence/1.root.json',
    '#   mirror: http://mirror.example.internal/tuf',
    '# Offline bundles dropped into this folder are verified and applied with no server at all.',
    '# offline:',
    '#   inbox: /var/lib/ringfence/inbox',
    '',
    '# What Ringfence updates on this device, and how each is applied and checked.',
    'components:',
    `  - name: ${q(o.component)}`,
  );
  const ex = o.exec ?? {};
  if (o.backend === 'dir')
    add(
      '    # The dir backend: each release unpacked into <path>/releases/<version>/, <path>/current switched atomically.',
      '    backend:',
      '      type: dir',
      `      path: ${q(o.target)}`,
      '      # keep: 3                # older releases kept for rollback',
    );
  else if (o.backend === 'file')
    add(
      '    # The file backend: <path> replaced atomically by the release (one file); versions kept in .<file>.rf/.',
      '    backend:',
      '      type: file',
      `      path: ${q(o.target)}`,
      '      # keep: 3                # older versions kept for rollback',
    );
  else {
    add(
      '    # The exec backend: your commands drive the update (transactional-update, rpm-ostree, apt ...); the release files are',
      '    # staged under <path>. Each command gets RINGFENCE_VERSION and RINGFENCE_CURRENT (docs/examples/exec-recipes.md).',
      '    backend:',
      '      type: exec',
      `      path: ${q(o.target)}`,
    );
    add(
      ex.stage !== undefined
        ? `      stage: ${q(ex.stage)}`
        : '      # stage: /usr/local/lib/ringfence/stage.sh',
    );
    add(`      activate: ${q(ex.activate ?? '')}`);
    add(
      ex.commit !== undefined
        ? `      commit: ${q(ex.commit)}`
        : '      # commit: /usr/local/lib/ringfence/commit.sh',
    );
    add(
      `      rollback: ${q(ex.rollback ?? '')}`,
      '      # timeout: 5m             # for each command',
      '      # keep: 3',
    );
  }
  add(
    '    # Commands around the switch; a failing after_activate rolls back.',
    '    # hooks: { after_activate: systemctl restart my.service, after_rollback: systemctl restart my.service, timeout: 60s }',
    '    # Checks run after every switch, in the component folder; any failure rolls back and quarantines the',
    '    # release. Also: { name: api, http: "http://127.0.0.1:9100/health" }, { name: port, tcp: "127.0.0.1:5432" },',
    '    # { name: ready, file: /run/my/ready, contains: "^ready$" }.',
  );
  if (o.healthCheck !== undefined)
    add(
      '    health:',
      '      - name: health-check',
      `        exec: ${q(o.healthCheck)}   # exit status 0 is healthy`,
      '        # timeout: 10s',
      '        # retries: 0            # further attempts, interval apart, before it counts as failed',
      '        # interval: 1s',
    );
  else
    add(
      '    # No check yet: every release that switches is committed. Add one before a real rollout.',
      '    health: []',
    );
  add(
    '    # Run the checks every interval for window after the switch (default window 0: once).',
    '    # probation: { window: 0s, interval: 5s }',
    '    # Starts during an unfinished switch (crashes, reboots) before the boot guard rolls back.',
    '    # max_attempts: 3',
    '    # Numbers measured here and reported at check-ins and after each switch, for evidence gates: exec (name=value',
    '    # lines or JSON), file or http (Prometheus text) sources; see docs/agent.md, "Signals".',
    '    # signals: { interval: 1m, sources: [{ exec: /usr/local/bin/app-signals, names: [restarts, crashes], timeout: 5s }] }',
  );
  return `${L.join('\n')}\n`;
}

/** The flags of `agent init` as commander hands them over. */
export interface InitFlags {
  server: string;
  enrollToken?: string;
  name?: string;
  label?: string[];
  stateDir: string;
  poll?: string;
  component: string;
  backend: BackendType;
  target: string;
  stage?: string;
  activate?: string;
  commit?: string;
  rollback?: string;
  healthCheck?: string;
}

// The server's rules for what a device sends at enrollment (src/protocol/device.ts): checked here so that a
// label the server would refuse fails at init, naming the flag, rather than at every enrollment attempt.
const LABEL_KEY = /^[A-Za-z0-9][A-Za-z0-9_./-]{0,62}$/;
// biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is the point.
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
const MAX_LABELS = 64;

/** Checks what the schema cannot see (label syntax, the server's label rules, flag combinations). */
export function initOptions(f: InitFlags): AgentInitOptions {
  const labels: Array<[string, string]> = [];
  for (const l of f.label ?? []) {
    const eq = l.indexOf('=');
    if (eq <= 0) throw new InitFlagError('--label', `expected KEY=VALUE, got ${JSON.stringify(l)}`);
    const [k, v] = [l.slice(0, eq), l.slice(eq + 1)];
    if (!LABEL_KEY.test(k))
      throw new InitFlagError(
        '--label',
        `key ${JSON.stringify(k)}: letters, digits and _ . / - (a letter or digit first), at most 63`,
      );
    if (CONTROL.test(v) || v.length > 256)
      throw new InitFlagError(
        '--label',
        `${k}: the value must be printable text of at most 256 characters (no newline or control character)`,
      );
    if (labels.some(([seen]) => seen === k)) throw new InitFlagError('--label', `${k} given twice`);
    labels.push([k, v]);
  }
  if (labels.length > MAX_LABELS) throw new InitFlagError('--label', `at most ${MAX_LABELS} labels`);
  if (f.name !== undefined && (f.name === '' || CONTROL.test(f.name) || f.name.length > 200))
    throw new InitFlagError('--name', 'printable text of 1 to 200 characters');
  if (
    f.enrollToken !== undefined &&
    (f.enrollToken === '' || /\s/.test(f.enrollToken) || CONTROL.test(f.enrollToken))
  )
    throw new InitFlagError(
      '--enroll-token',
      'an enrollment token is one word (from `ringfence fleet enroll-token`)',
    );
  const execFlags = { stage: f.stage, activate: f.activate, commit: f.commit, rollback: f.rollback };
  if (f.backend === 'exec') {
    for (const k of ['activate', 'rollback'] as const)
      if (!execFlags[k])
        throw new InitFlagError(`--${k}`, `the command that does it is required with --backend exec`);
  } else {
    for (const [k, v] of Object.entries(execFlags))
      if (v !== undefined) throw new InitFlagError(`--${k}`, `only for --backend exec (not ${f.backend})`);
  }
  if (f.healthCheck !== undefined && f.healthCheck.trim() === '')
    throw new InitFlagError('--health-check', 'a command to run (exit status 0 is healthy)');
  return {
    server: f.server,
    enrollToken: f.enrollToken,
    name: f.name,
    labels,
    stateDir: f.stateDir,
    poll: f.poll,
    component: f.component,
    backend: f.backend,
    target: f.target,
    exec: f.backend === 'exec' ? execFlags : undefined,
    healthCheck: f.healthCheck,
  };
}

// Where each field of the schema comes from, to name the flag when the agent's own schema refuses a value.
const SOURCE = 'agent-init';
const FLAG_OF: Array<[RegExp, string]> = [
  [/^server$/, '--server'],
  [/^enroll_token$/, '--enroll-token'],
  [/^name$/, '--name'],
  [/^state_dir$/, '--state-dir'],
  [/^labels\b/, '--label'],
  [/^poll_interval$/, '--poll'],
  [/^components\.0\.name$/, '--component'],
  [/^components\.0\.backend\.path$/, '--target'],
  [/^components\.0\.backend\.stage$/, '--stage'],
  [/^components\.0\.backend\.activate$/, '--activate'],
  [/^components\.0\.backend\.commit$/, '--commit'],
  [/^components\.0\.backend\.rollback$/, '--rollback'],
  [/^components\.0\.health\b/, '--health-check'],
];

/**
 * Checks configuration text with the agent's own loader. A value the schema refuses becomes an InitFlagError
 * naming its flag; anything else (a template that does not parse) is a plain Error: a bug here, not the user's.
 */
export async function checkAgentConfig(text: string): Promise<void> {
  const { parseAgentConfig } = await import('./config.ts');
  try {
    parseAgentConfig(text, SOURCE);
  } catch (e) {
    const msg = (e as Error).message;
    const m = msg.startsWith(`${SOURCE}:`) ? /^[^:]+:\d+: (.+?): (.*)$/.exec(msg) : null;
    const flag = m && FLAG_OF.find(([re]) => re.test(m[1]))?.[1];
    if (m && flag) throw new InitFlagError(flag, m[2]);
    throw new Error(`the configuration written would not load: ${msg}`);
  }
}
