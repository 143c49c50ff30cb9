/**
 * The node agent's local API, for the node's workloads and tools (loopback or a Unix socket,
 * with the node token): ask for a key and get local paths once it is present and verified.
 *
 *   POST /v1/ensure   {"key": "…"}, {"ref": "…"} or {"build": {…}}  →  200 {key, source, from, ms, archive, layout, javaToolOptions, launch}
 *   GET  /v1/archives                                             →  200 [{key, mode, kind, hitRate, …}]
 *
 * It is no signing or exec service for whoever holds the token: it binds no ref (a ref is
 * looked up, never bound, here), and a build runs only with a JDK the agent was configured with
 * (`--jdk`), a catalog profile, and JVM options that neither load code nor run commands.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { timingSafeEqual } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { join } from "node:path";
import { fillRoot, launchArgs } from "../jvm/launch.ts";
import { toJavaToolOptions, withMemorySharing } from "../jvm/options.ts";
import { ClasscacheError } from "../runtime/errors.ts";
import { openBinding, openBuild, openGrant, SignatureError } from "../archive/signing.ts";
import { HEX64 } from "../util/hash.ts";
import type { Manifest } from "../archive/manifest.ts";
import { admitManifest, refusedRuntimeOption } from "../archive/admit.ts";
import { catalogNames } from "../archive/profile.ts";
import { createWriteStream } from "node:fs";
import { realpath, stat } from "node:fs/promises";
import { pipeline } from "node:stream/promises";
import { nodeArch, type BuildSpec, type NodeAgent } from "./agent.ts";

const STATUS: Record<string, number> = { usage: 400, input: 400, "not-found": 404, verification: 502, training: 503, store: 507 };

export function tokenMatches(header: string | undefined, token: string): boolean {
  const m = /^Bearer (.+)$/.exec(header ?? "");
  if (!m) return false;
  const a = Buffer.from(m[1]!);
  const b = Buffer.from(token);
  return a.length === b.length && timingSafeEqual(a, b);
}

async function text(req: IncomingMessage, limit = 1 << 20): Promise<string> {
  let size = 0;
  const parts: Buffer[] = [];
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > limit) throw new ClasscacheError("usage", "request body too large");
    parts.push(c as Buffer);
  }
  return Buffer.concat(parts).toString("utf8");
}

async function body(req: IncomingMessage, limit = 1 << 20): Promise<unknown> {
  try {
    return JSON.parse((await text(req, limit)) || "{}");
  } catch (err) {
    if (err instanceof ClasscacheError) throw err;
    throw new ClasscacheError("usage", "request body is not JSON");
  }
}

function send(res: ServerResponse, status: number, data: unknown): void {
  const text = JSON.stringify(data);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

export interface ApiOptions {
  token: string;
  /** The JDKs (JAVA_HOME directories) builds may use; none: this node builds nothing asked of it here. */
  jdks?: string[];
}

export function createApiServer(agent: NodeAgent, opts: ApiOptions): Server {
  return createServer((req, res) => {
    handle(agent, opts, req, res).catch((err: unknown) => {
      const code = err instanceof ClasscacheError ? err.code : "internal";
      const e = err instanceof ClasscacheError ? err : undefined;
      send(res, STATUS[code] ?? 500, { error: err instanceof Error ? err.message : String(err), code, hint: e?.hint, details: e?.details });
    });
  });
}

/**
 * A build spec from a caller, checked: the JDK must be one the agent was configured with, the
 * profile a catalog one, the paths absolute, the JVM options free of agents and commands.
 */
export async function checkBuildSpec(v: unknown, jdks: string[]): Promise<BuildSpec> {
  const b = v as Record<string, unknown>;
  const bad = (what: string, hint?: string) => new ClasscacheError("usage", `build: ${what}`, hint ? { hint } : {});
  if (!b || typeof b !== "object" || Array.isArray(b)) throw bad("must be an object");
  const known = new Set(["app", "classPath", "mainClass", "appArgs", "jvmOptions", "java", "agent", "profile", "training"]);
  for (const k of Object.keys(b)) if (!known.has(k)) throw bad(`unknown field ${JSON.stringify(k)}`);
  const strings = (x: unknown, what: string): string[] => {
    if (x === undefined) return [];
    if (!Array.isArray(x) || !x.every((s) => typeof s === "string")) throw bad(`${what} must be a list of strings`);
    return x;
  };
  const absolute = (x: unknown, what: string): string | undefined => {
    if (x === undefined) return undefined;
    if (typeof x !== "string" || !x.startsWith("/")) throw bad(`${what} must be an absolute path`);
    return x;
  };
  if (typeof b.java !== "string") throw bad("java is required: one of the JDKs this agent was started with (--jdk)");
  const allowed = await Promise.all(jdks.map((j) => realpath(j).catch(() => j)));
  const java = await realpath(b.java).catch(() => b.java as string);
  if (!allowed.includes(java)) throw bad(`java ${JSON.stringify(b.java)} is not a JDK this agent builds with`, allowed.length ? `use one of: ${allowed.join(", ")}` : "this agent was started without --jdk, so it builds nothing asked of it");
  const jvmOptions = strings(b.jvmOptions, "jvmOptions");
  for (const o of jvmOptions) {
    const why = refusedRuntimeOption(o);
    if (why) throw bad(`JVM option ${JSON.stringify(o).slice(0, 200)} ${why}`);
  }
  if (b.profile !== undefined && (typeof b.profile !== "string" || !catalogNames().includes(b.profile))) throw bad(`profile must be one of the catalog's: ${catalogNames().join(", ")}`);
  const t = b.training as Record<string, unknown> | undefined;
  if (!t || typeof t !== "object") throw bad("training is required");
  return {
    app: absolute(b.app, "app"),
    classPath: b.classPath === undefined ? undefined : strings(b.classPath, "classPath").map((p) => absolute(p, "classPath")!),
    mainClass: typeof b.mainClass === "string" ? b.mainClass : undefined,
    appArgs: strings(b.appArgs, "appArgs"),
    jvmOptions,
    java,
    agent: absolute(b.agent, "agent"),
    profile: b.profile,
    training: {
      readyUrl: typeof t.readyUrl === "string" ? t.readyUrl : undefined,
      readyLog: typeof t.readyLog === "string" ? t.readyLog : undefined,
      warmupUrls: strings(t.warmupUrls, "training.warmupUrls"),
      timeoutMs: typeof t.timeoutMs === "number" && t.timeoutMs > 0 ? Math.min(t.timeoutMs, 3600_000) : 300_000,
    },
  };
}

async function handle(agent: NodeAgent, opts: ApiOptions, req: IncomingMessage, res: ServerResponse): Promise<void> {
  if (!tokenMatches(req.headers.authorization, opts.token)) {
    res.writeHead(401, { "www-authenticate": "Bearer" }).end();
    return;
  }
  const { store, root } = agent.opts;
  if (req.method === "POST" && req.url === "/v1/ensure") {
    const input = (await body(req)) as { key?: unknown; build?: unknown; ref?: unknown; shareMemory?: unknown };
    if (input.key !== undefined && typeof input.key !== "string") throw new ClasscacheError("usage", "key must be a string");
    if (input.ref !== undefined && typeof input.ref !== "string") throw new ClasscacheError("usage", "ref must be a string");
    const ac = new AbortController();
    res.on("close", () => {
      if (!res.writableFinished) ac.abort();
    });
    const build = input.build === undefined ? undefined : await checkBuildSpec(input.build, opts.jdks ?? []);
    const r = await agent.ensure({ key: input.key, build, ref: input.ref }, ac.signal);
    const m = r.manifest;
    const jvmOptions = (input.shareMemory ? withMemorySharing(m.runtime.jvmOptions) : m.runtime.jvmOptions).map((o) => fillRoot(o, root));
    send(res, 200, {
      key: r.key,
      source: r.source,
      from: r.from,
      ms: r.ms,
      archive: join(store.dir, m.archive.file),
      layout: store.layoutPath(m.layout.id),
      javaToolOptions: toJavaToolOptions(jvmOptions),
      launch: launchArgs(m.runtime.launch, root),
      hitRate: m.verification.hitRate,
      instrumented: m.verification.instrumented,
      kind: m.archive.kind,
      size: m.archive.size,
      layoutSize: m.layout.files.reduce((a, f) => a + f.size, 0),
      mode: m.mode,
    });
    return;
  }
  if (req.method === "GET" && req.url === "/v1/archives") {
    const out = [];
    for (const key of await store.keys()) {
      const m = await store.getManifest(key);
      if (m) out.push({ key, mode: m.mode, kind: m.archive.kind, size: m.archive.size, hitRate: m.verification.hitRate, app: m.app.source, createdAt: m.createdAt });
    }
    send(res, 200, out);
    return;
  }
  send(res, 404, { error: "not found" });
}

/**
 * Refs that pods on this node asked for. A ref is tried at once and again every `retryMs` (a
 * single directory read while nothing is bound) until the node holds it, for `ttlMs` at most:
 * a pod that started before its archive was built gets it for its next start.
 *
 * A want that came through a scope's socket (a pod of that scope) carries the scope, and is
 * pulled only if the directory's signed binding of the ref is of that scope: a pod can make its
 * node fetch its own scope's archives, not another tenant's. (The ref is a digest over the scope,
 * and the binding is verified again by `ensure`, which records the ref in the binding's scope's
 * view only.) Wants of different scopes for one ref are kept apart, so one cannot cancel another.
 */
export class Wants {
  readonly #agent: NodeAgent;
  readonly #ttlMs: number;
  readonly #refs = new Map<string, { ref: string; scope: string | undefined; expires: number }>();
  readonly #inflight = new Map<string, Promise<boolean>>();

  constructor(agent: NodeAgent, opts: { ttlMs?: number } = {}) {
    this.#agent = agent;
    this.#ttlMs = opts.ttlMs ?? 60 * 60_000;
  }

  /**
   * `scope`: the scope whose socket the want came through; none for the store's own socket.
   * Resolves true once this attempt has put the ref on the node, false when it has not (nothing
   * bound yet, another scope's, a failed pull: the want stays and is tried again).
   */
  add(ref: string, scope?: string): Promise<boolean> {
    const id = `${scope ?? "*"}/${ref}`;
    if (!this.#refs.has(id) && this.#refs.size >= 10_000) return Promise.resolve(false); // bounded: the sockets are open to every pod
    this.#refs.set(id, { ref, scope, expires: Date.now() + this.#ttlMs });
    return this.#try(id);
  }

  /** Tries every wanted ref again; call it on a timer. */
  tick(): void {
    const now = Date.now();
    for (const [id, w] of this.#refs) {
      if (w.expires < now) this.#refs.delete(id);
      else void this.#try(id);
    }
  }

  get size(): number {
    return this.#refs.size;
  }

  #try(id: string): Promise<boolean> {
    const w = this.#refs.get(id);
    if (!w) return Promise.resolve(false);
    const running = this.#inflight.get(id);
    if (running) return running;
    const { log } = this.#agent.opts;
    const attempt = this.#fetch(w.ref, w.scope)
      .then(
        (done) => {
          if (!done) log.warn("want refused", { ref: w.ref.slice(0, 12), scope: w.scope, reason: "the ref is bound for another scope" });
          this.#refs.delete(id);
          return done;
        },
        (err: unknown) => {
          log.debug("a wanted ref is not available yet", { ref: w.ref.slice(0, 12), scope: w.scope, error: err instanceof Error ? err.message : String(err) });
          return false;
        },
      )
      .finally(() => this.#inflight.delete(id));
    this.#inflight.set(id, attempt);
    return attempt;
  }

  /** Ensures the ref; false, without fetching anything, when its binding is of another scope than the want's. */
  async #fetch(ref: string, scope: string | undefined): Promise<boolean> {
    if (scope !== undefined) {
      const { directory, trust } = this.#agent.opts;
      const text = await directory.binding(`${ref}.${nodeArch()}`);
      if (!text) throw new ClasscacheError("not-found", `nothing has been built for ref ${ref.slice(0, 12)} on ${nodeArch()} yet`);
      let bound: string | undefined;
      try {
        bound = openBinding(text, trust, ref, nodeArch()).scope;
      } catch (err) {
        if (!(err instanceof SignatureError)) throw err; // else ensure refuses it, and counts the refusal
      }
      if (bound !== undefined && bound !== scope) return false;
    }
    await this.#agent.ensure({ ref });
    return true;
  }
}

/** The longest a want may wait for its pull: a pod's start is never held up for longer. */
export const MAX_WANT_WAIT_MS = 5000;

/**
 * A want: `POST /v1/want {"ref": "<64 hex>", "waitMs"?: n}` → 202, or 200 {"held": true} when
 * `waitMs` is given and the ref is on this node within it (at most MAX_WANT_WAIT_MS). A pod on a
 * node that lacks a bound archive so waits for a pull from a peer (well under a second on a pod
 * network), never for a build: nothing bound answers at once.
 */
async function want(wants: Wants, req: IncomingMessage, res: ServerResponse, scope?: string): Promise<void> {
  const input = (await body(req, 4096)) as { ref?: unknown; waitMs?: unknown };
  if (typeof input.ref !== "string" || !/^[0-9a-f]{64}$/.test(input.ref)) throw new ClasscacheError("usage", "ref must be 64 lowercase hex digits");
  const waitMs = typeof input.waitMs === "number" && input.waitMs > 0 ? Math.min(input.waitMs, MAX_WANT_WAIT_MS) : 0;
  const attempt = wants.add(input.ref, scope);
  if (waitMs === 0) return send(res, 202, { ref: input.ref });
  // The timer goes with the answer: a want answered at once leaves nothing pending for seconds.
  const timer = new AbortController();
  const held = await Promise.race([attempt, sleep(waitMs, false, { signal: timer.signal })]).finally(() => timer.abort());
  send(res, held ? 200 : 202, { ref: input.ref, held });
}

/**
 * The socket in one scope's view (see node/sockets.ts): the pods of that scope say what they
 * want, and nothing else is served here.
 *
 *   POST /v1/want {"ref": "<64 hex>"}  →  202 {"ref"}
 */
export function createScopeSocketServer(wants: Wants, scope: string): Server {
  return createServer((req, res) => {
    void (async () => {
      if (req.method === "POST" && req.url === "/v1/want") return want(wants, req, res, scope);
      send(res, 404, { error: "not found" });
    })().catch((err: unknown) => {
      const code = err instanceof ClasscacheError ? err.code : "internal";
      if (!res.headersSent) send(res, STATUS[code] ?? 500, { error: err instanceof Error ? err.message : String(err), code });
      else res.destroy();
    });
  });
}

/**
 * The node's Unix socket in the store (`run/agent.sock`), for build Jobs, which mount its
 * directory alone, read-only (connecting to a socket needs no write access to the mount).
 * Workload pods reach the agent through their scope's socket instead (createScopeSocketServer).
 *
 *   POST /v1/want {"ref": "<64 hex>"}              →  202 {"ref"}
 *   PUT  /v1/builds/<ref>/blobs/<sha256>  (bytes)   →  201 {"sha256"}
 *   POST /v1/builds/<ref>/manifest  (build offer) →  202 {"key", "status": "offered"}
 *
 * "want" needs no credentials: the agent then only fetches what a signed binding and a signed
 * manifest name, so a caller cannot choose any bytes. Uploading a build needs the operator's
 * build grant for that ref (see BuildGrant), verified with the trusted public key: the blobs are
 * kept only under their verified sha256; the manifest, signed with the grant's one-time build
 * key, is admitted (archive/admit.ts: its key recomputed and of the grant's scope, its runtime
 * derived) and left in the directory as an offer, which the operator alone signs, publishes and
 * binds (operator/publish.ts); this node then adopts it through its want for the ref.
 */
export function createSocketServer(wants: Wants, opts: { agent?: NodeAgent } = {}): Server {
  return createServer((req, res) => {
    void (async () => {
      if (req.method === "POST" && req.url === "/v1/want") return want(wants, req, res);
      const m = /^\/v1\/builds\/([0-9a-f]{64})\/(?:blobs\/([0-9a-f]{64})|(manifest))$/.exec(req.url ?? "");
      if (m && opts.agent) {
        const ref = m[1]!;
        const agent = opts.agent;
        const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? "")?.[1] ?? "";
        let grant;
        try {
          grant = openGrant(token, agent.opts.trust, ref, Date.now());
        } catch (err) {
          if (!(err instanceof SignatureError)) throw err;
          agent.opts.log.warn("upload refused", { ref: ref.slice(0, 12), reason: err.message });
          res.writeHead(401, { "www-authenticate": "Bearer" }).end();
          return;
        }
        if (req.method === "PUT" && m[2]) {
          const store = agent.opts.store;
          const { tempPath } = await store.receive((path) => pipeline(req, createWriteStream(path, { flags: "wx" })), "upload");
          const blob = await store.importBlob(tempPath, m[2]);
          send(res, 201, { sha256: blob.sha256 });
          return;
        }
        if (req.method === "POST" && m[3]) {
          const build = await text(req, 16 << 20);
          let manifest;
          try {
            const offered = openBuild(build, grant);
            manifest = admitManifest(offered, { scope: grant.scope, blobSize: await blobSizes(agent, offered) });
          } catch (err) {
            agent.opts.log.warn("upload refused", { ref: ref.slice(0, 12), scope: grant.scope, classcache: grant.classCache, reason: err instanceof Error ? err.message : String(err) });
            if (err instanceof SignatureError) throw new ClasscacheError("input", `the uploaded build was refused: ${err.message}`, { hint: "the build signs its manifest with the one-time key of its grant (the Job's Secret)" });
            throw err;
          }
          await agent.offer(ref, manifest.jvm.arch, { grant: token, build });
          void wants.add(ref);
          agent.opts.log.info("build offered", { ref: ref.slice(0, 12), scope: grant.scope, classcache: grant.classCache, key: manifest.key.slice(0, 12) });
          send(res, 202, { key: manifest.key, status: "offered" });
          return;
        }
      }
      send(res, 404, { error: "not found" });
    })().catch((err: unknown) => {
      const code = err instanceof ClasscacheError ? err.code : "internal";
      if (!res.headersSent) send(res, STATUS[code] ?? 500, { error: err instanceof Error ? err.message : String(err), code, hint: err instanceof ClasscacheError ? err.hint : undefined });
      else res.destroy();
    });
  });
}

/** The sizes of the blobs an offered manifest names, as this node holds them. */
async function blobSizes(agent: NodeAgent, m: Manifest): Promise<(sha: string) => number | undefined> {
  const sizes = new Map<string, number>();
  for (const { sha256 } of [m.archive, ...m.layout.files]) {
    if (sizes.has(sha256) || !HEX64.test(sha256)) continue;
    const s = await stat(agent.opts.store.blobPath(sha256)).catch(() => undefined);
    if (s?.isFile()) sizes.set(sha256, s.size);
  }
  return (sha) => sizes.get(sha);
}
