// CLI contexts, like kubectl's: named (server, token file) pairs in one configuration file, so operators pick a
// server with `--context lab` instead of exporting tokens in shells. The file holds paths to tokens, never tokens.
//
// connection() stays synchronous (every command calls it as `conn()`), but YAML and zod must not load at start-up
// (`--help` and completion stay light): the program's preAction hook awaits prepareContexts(), which imports the
// parser only when the file exists; connection() then reads and validates the small file synchronously.
import { closeSync, existsSync, fstatSync, mkdirSync, openSync, readFileSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, isAbsolute, join, relative, resolve } from 'node:path';
import type { Document } from 'yaml';
import { writeFileAtomicSync } from '../files/atomic-file.ts';
import { type Conn, usageError } from './client.ts';

export const DEFAULT_SERVER = 'http://127.0.0.1:8080';

/** What a Ringfence operator token looks like (server/tokens.ts newToken, or a chosen initial admin token). */
const TOKEN_SHAPE = /^rf[a-z]+_[A-Za-z0-9_-]{16,512}$/;

/** A context name: safe as a file name and in shell completion. */
export const CONTEXT_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

export interface Context {
  server: string;
  /** Relative paths are relative to the configuration file's folder; `~/` is the home folder. */
  'token-file'?: string;
}

export interface CliConfig {
  'current-context'?: string;
  contexts: Record<string, Context>;
}

/** $RINGFENCE_CONFIG, else $XDG_CONFIG_HOME/ringfence/config.yaml, else ~/.config/ringfence/config.yaml. */
export function configPath(env: NodeJS.ProcessEnv = process.env): string {
  if (env.RINGFENCE_CONFIG) return resolve(env.RINGFENCE_CONFIG);
  const base = env.XDG_CONFIG_HOME && isAbsolute(env.XDG_CONFIG_HOME) ? env.XDG_CONFIG_HOME : null;
  return join(base ?? join(homedir(), '.config'), 'ringfence', 'config.yaml');
}

type Parser = (text: string, file: string) => CliConfig;
let parser: Parser | null = null;

async function loadParser(): Promise<Parser> {
  const [{ z }, { parseValidatedYaml }] = await Promise.all([
    import('zod'),
    import('../config/validated-yaml.ts'),
  ]);
  const name = z.string().regex(CONTEXT_NAME, 'a context name is letters, digits, ".", "_" or "-"');
  const server = z
    .string()
    .refine((s) => URL.canParse(s) && /^https?:$/.test(new URL(s).protocol), 'an http:// or https:// URL');
  const context = z.strictObject({ server, 'token-file': z.string().min(1).optional() });
  const schema = z.strictObject({
    'current-context': name.optional(),
    contexts: z.record(name, context).nullish(),
  });
  // A broken configuration is a bad setting: exit 2, like a bad flag.
  const ConfigError = class extends Error {};
  return (text, file) => {
    try {
      const c = parseValidatedYaml(schema, text, file, ConfigError);
      return { 'current-context': c['current-context'], contexts: c.contexts ?? {} };
    } catch (e) {
      if (e instanceof ConfigError) throw usageError(e.message);
      throw e;
    }
  };
}

/** Loads the parser (yaml, zod) when a configuration file exists; awaited before any command's action. */
export async function prepareContexts(): Promise<void> {
  if (!parser && existsSync(configPath())) parser = await loadParser();
}

/** The configuration file and its contents; an empty configuration when the file does not exist. */
export function readCliConfig(): { file: string; config: CliConfig; exists: boolean } {
  const file = configPath();
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT')
      return { file, config: { contexts: {} }, exists: false };
    throw usageError(`cannot read ${file}: ${(e as Error).message}`);
  }
  // The file says where tokens are sent: one another user could edit would let them send this user's token
  // (or any one-line file this user can read) to a server of theirs.
  const st = statSync(file);
  if (st.uid !== process.getuid?.() || st.mode & 0o022)
    throw usageError(
      `${file} must belong to you and be writable by you alone (it says where your tokens are sent); run: chmod 600 ${file}`,
    );
  if (!parser) throw new Error(`internal: prepareContexts() was not awaited before reading ${file}`);
  return { file, config: parser(text, file), exists: true };
}

/** A context chosen by name, with where its token file is. */
interface Chosen {
  name: string;
  server: string;
  tokenFile?: string;
  file: string;
}

function choose(name: string | undefined, why: string): Chosen | null {
  const { file, config, exists } = readCliConfig();
  const wanted = name ?? config['current-context'];
  if (!wanted) return null;
  const ctx = Object.hasOwn(config.contexts, wanted) ? config.contexts[wanted] : undefined;
  if (!ctx) {
    const known = Object.keys(config.contexts);
    throw usageError(
      `unknown context "${wanted}" (${why}); ${known.length ? `known: ${known.join(', ')}` : `no contexts in ${file}${exists ? '' : ' (no such file)'}`}`,
    );
  }
  const tf = ctx['token-file'];
  return { name: wanted, server: ctx.server, file, tokenFile: tf ? tokenPath(file, tf) : undefined };
}

/** A token file path from the configuration, made absolute. */
export function tokenPath(configFile: string, p: string): string {
  if (p === '~' || p.startsWith('~/')) return join(homedir(), p.slice(1));
  return resolve(dirname(configFile), p);
}

/**
 * Reads a context's token. A token file other users can read is refused, like ssh refuses such a private key:
 * the token grants the operator's role, and a warning scrolls away while the file stays readable.
 */
function readToken(c: Chosen): string {
  const f = c.tokenFile!;
  let fd: number;
  try {
    fd = openSync(f, 'r');
  } catch (e) {
    throw usageError(`context "${c.name}": cannot read its token file ${f}: ${(e as Error).message}`);
  }
  try {
    // The file opened is the file checked (fstat, not stat then read).
    const st = fstatSync(fd);
    const mode = st.mode & 0o777;
    if (st.uid !== process.getuid?.())
      throw usageError(`context "${c.name}": token file ${f} does not belong to you`);
    if (mode & 0o077)
      throw usageError(
        `context "${c.name}": token file ${f} is readable by other users (mode 0${mode.toString(8)}); run: chmod 600 ${f}`,
      );
    if (st.size > 4096) throw usageError(`context "${c.name}": token file ${f} is not a token (too large)`);
    const token = readFileSync(fd, 'utf8').trim();
    if (!token) throw usageError(`context "${c.name}": token file ${f} is empty`);
    // Only something shaped like a Ringfence token is ever sent: a context pointed at another secret file
    // (a credentials store, a private key) is refused instead of leaking it as a bearer token.
    if (!TOKEN_SHAPE.test(token))
      throw usageError(`context "${c.name}": token file ${f} does not hold a Ringfence token (rf…_…)`);
    return token;
  } finally {
    closeSync(fd);
  }
}

/** Two server addresses are the same server when their URLs agree (a trailing slash aside). */
function sameServer(a: string, b: string): boolean {
  const norm = (s: string) => (URL.canParse(s) ? new URL(s).href.replace(/\/+$/, '') : s);
  return norm(a) === norm(b);
}

/** The program-wide flags a connection comes from. */
export interface ConnectionFlags {
  server?: string;
  token?: string;
  context?: string;
}

/**
 * Where the server and token come from, first match wins per field (docs/configuration.md, "Precedence"):
 * 1. --server / --token; 2. the context named by --context; 3. RINGFENCE_SERVER / RINGFENCE_TOKEN;
 * 4. the context named by RINGFENCE_CONTEXT, else current-context; 5. the server http://127.0.0.1:8080.
 * A context's token goes only to that context's server: a token is never sent where it was not meant to go
 * because another source (a forgotten RINGFENCE_SERVER) named another server.
 */
export function resolveConnection(flags: ConnectionFlags, needToken = true): Conn | { server: string } {
  const env = process.env;
  const envContext = env.RINGFENCE_CONTEXT || undefined;
  const flagCtx = flags.context ? choose(flags.context, 'from --context') : null;
  // The ambient context: read only when a field is still missing, or when RINGFENCE_CONTEXT names one (so a
  // misspelt name is reported rather than silently unused).
  let ambient: Chosen | null | undefined;
  const ambientCtx = () => {
    if (ambient === undefined)
      ambient = flags.context
        ? null
        : choose(envContext, envContext ? 'from RINGFENCE_CONTEXT' : 'the current-context');
    return ambient;
  };
  if (envContext) ambientCtx();

  const server =
    flags.server || flagCtx?.server || env.RINGFENCE_SERVER || ambientCtx()?.server || DEFAULT_SERVER;
  if (!needToken) return { server };

  let token = flags.token || undefined;
  let boundTo: Chosen | null = null;
  if (!token && flagCtx?.tokenFile) boundTo = flagCtx;
  else if (!token && !flagCtx?.tokenFile) {
    token = env.RINGFENCE_TOKEN || undefined;
    if (!token && ambientCtx()?.tokenFile) boundTo = ambientCtx();
    // The other way round: RINGFENCE_TOKEN goes only to a server named by a flag or RINGFENCE_SERVER (or the
    // default), never to one a context chose — a token exported for one server must not follow a context switch.
    if (token && !flags.server && !env.RINGFENCE_SERVER && server !== DEFAULT_SERVER)
      throw usageError(
        `RINGFENCE_TOKEN is not sent to ${server} (chosen by a context): give the context a token file (ringfence config set-context NAME --server URL --token-file FILE), or pass --token`,
      );
  }
  if (boundTo) {
    if (!sameServer(server, boundTo.server))
      throw usageError(
        `the token of context "${boundTo.name}" is for ${boundTo.server}, not ${server}: pass --token as well, or choose the server with --context`,
      );
    token = readToken(boundTo);
  }
  if (!token)
    throw usageError(
      'no admin token: pass --token, set RINGFENCE_TOKEN, or use a context (ringfence config set-context NAME --server URL --token-file FILE)',
    );
  return { server, token };
}

/** The server address and admin token for a command that calls the admin API. */
export function connection(flags: ConnectionFlags): Conn {
  return resolveConnection(flags) as Conn;
}

/** The server address alone (login needs no token: it is how one gets one). */
export function serverAddress(flags: ConnectionFlags): string {
  return resolveConnection(flags, false).server;
}

/** A token file path as the configuration stores it: relative when inside the configuration's folder. */
export function storedTokenPath(configFile: string, absolute: string): string {
  const rel = relative(dirname(configFile), absolute);
  return rel && !rel.startsWith('..') && !isAbsolute(rel) ? rel : absolute;
}

/**
 * Creates the configuration's folder readable by its owner only when it is missing. An existing folder is left as
 * it is: RINGFENCE_CONFIG may point into a shared one, and the files themselves are written 0600.
 */
export function ensureConfigDir(configFile: string): void {
  mkdirSync(dirname(configFile), { recursive: true, mode: 0o700 });
}

/** A change to the configuration: the document (comments kept) and the validated contents. */
export interface ConfigEdit {
  file: string;
  config: CliConfig;
  /** The yaml Document; edits made on it are what is written. */
  doc: Document;
}

/**
 * Reads the configuration for a change, applies `edit`, and writes it atomically, readable by its owner only (a
 * missing folder is created 0700). The operator's comments and layout stay: the change is made on the parsed YAML document.
 */
export async function editCliConfig<T>(edit: (e: ConfigEdit) => T): Promise<{ file: string; result: T }> {
  if (!parser) parser = await loadParser();
  const yaml = await import('yaml');
  const { file, config, exists } = readCliConfig();
  let doc: Document;
  if (exists) {
    doc = yaml.parseDocument(readFileSync(file, 'utf8'));
  } else {
    doc = new yaml.Document({ contexts: {} });
    doc.commentBefore =
      ' Ringfence CLI contexts (docs/configuration.md). Tokens live in the token files, never here.';
  }
  if (!yaml.isMap(doc.get('contexts'))) doc.set('contexts', doc.createNode({}));
  const result = edit({ file, config, doc });
  ensureConfigDir(file);
  writeFileAtomicSync(file, doc.toString(), 0o600);
  return { file, result };
}
