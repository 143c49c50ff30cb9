/**
 * The node agent's local API, for the node's workloads and tools (loopback or a Unix socket,
 * with the node token): ask for a key and get local paths once it is present and verified.
 *
 *   POST /v1/ensure   {"key": "…"} or {"build": {…}}  →  200 {key, source, from, ms, archive, layout, javaToolOptions, launch}
 *   GET  /v1/archives                                 →  200 [{key, mode, kind, hitRate, …}]
 */
import { timingSafeEqual } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { join } from "node:path";
import { fillRoot, launchArgs } from "../jvm/launch.ts";
import { toJavaToolOptions, withMemorySharing } from "../jvm/options.ts";
import { ClasscacheError } from "../runtime/errors.ts";
import { layoutId } from "../store/store.ts";
import { buildToken } from "../archive/signing.ts";
import type { Manifest } from "../archive/manifest.ts";
import { createWriteStream } from "node:fs";
import { pipeline } from "node:stream/promises";
import type { NodeAgent } from "./agent.ts";

const STATUS: Record<string, number> = { usage: 400, input: 400, "not-found": 404, verification: 502, training: 503, store: 507 };

export function tokenMatches(header: string | undefined, token: string): boolean {
  const m = /^Bearer (.+)$/.exec(header ?? "");
  if (!m) return false;
  const a = Buffer.from(m[1]!);
  const b = Buffer.from(token);
  return a.length === b.length && timingSafeEqual(a, b);
}

async function body(req: IncomingMessage, limit = 1 << 20): Promise<unknown> {
  let size = 0;
  const parts: Buffer[] = [];
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > limit) throw new ClasscacheError("usage", "request body too large");
    parts.push(c as Buffer);
  }
  try {
    return JSON.parse(Buffer.concat(parts).toString("utf8") || "{}");
  } catch {
    throw new ClasscacheError("usage", "request body is not JSON");
  }
}

function send(res: ServerResponse, status: number, data: unknown): void {
  const text = JSON.stringify(data);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

export function createApiServer(agent: NodeAgent, opts: { token: string }): Server {
  return createServer((req, res) => {
    handle(agent, opts.token, req, res).catch((err: unknown) => {
      const code = err instanceof ClasscacheError ? err.code : "internal";
      const e = err instanceof ClasscacheError ? err : undefined;
      send(res, STATUS[code] ?? 500, { error: err instanceof Error ? err.message : String(err), code, hint: e?.hint, details: e?.details });
    });
  });
}

async function handle(agent: NodeAgent, token: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
  if (!tokenMatches(req.headers.authorization, token)) {
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
    const r = await agent.ensure({ key: input.key, build: input.build as never, ref: input.ref }, ac.signal);
    const m = r.manifest;
    const opts = (input.shareMemory ? withMemorySharing(m.runtime.jvmOptions) : m.runtime.jvmOptions).map((o) => fillRoot(o, root));
    send(res, 200, {
      key: r.key,
      source: r.source,
      from: r.from,
      ms: r.ms,
      archive: join(store.dir, m.archive.file),
      layout: store.layoutPath(m.layout.id),
      javaToolOptions: toJavaToolOptions(opts),
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
 */
export class Wants {
  readonly #agent: NodeAgent;
  readonly #ttlMs: number;
  readonly #refs = new Map<string, number>();
  readonly #inflight = new Set<string>();

  constructor(agent: NodeAgent, opts: { ttlMs?: number } = {}) {
    this.#agent = agent;
    this.#ttlMs = opts.ttlMs ?? 60 * 60_000;
  }

  add(ref: string): void {
    if (!this.#refs.has(ref) && this.#refs.size >= 10_000) return; // bounded: the socket is open to every pod
    this.#refs.set(ref, Date.now() + this.#ttlMs);
    this.#try(ref);
  }

  /** Tries every wanted ref again; call it on a timer. */
  tick(): void {
    const now = Date.now();
    for (const [ref, expires] of this.#refs) {
      if (expires < now) this.#refs.delete(ref);
      else this.#try(ref);
    }
  }

  get size(): number {
    return this.#refs.size;
  }

  #try(ref: string): void {
    if (this.#inflight.has(ref)) return;
    this.#inflight.add(ref);
    this.#agent
      .ensure({ ref })
      .then(
        () => this.#refs.delete(ref),
        (err: unknown) => this.#agent.opts.log.debug("a wanted ref is not available yet", { ref: ref.slice(0, 12), error: err instanceof Error ? err.message : String(err) }),
      )
      .finally(() => this.#inflight.delete(ref));
  }
}

/**
 * The node's Unix socket for pods (inside the store, which pods mount read-only; connecting to
 * a socket needs no write access to the mount).
 *
 *   POST /v1/want {"ref": "<64 hex>"}              →  202 {"ref"}
 *   PUT  /v1/builds/<ref>/blobs/<sha256>  (bytes)   →  201 {"sha256"}
 *   POST /v1/builds/<ref>/manifest  (manifest JSON) →  200 {"key", "source"}
 *
 * "want" needs no credentials: the agent then only fetches what a signed binding and a signed
 * manifest name, so a caller cannot choose any bytes. Uploading a build needs the build token
 * of that ref (see buildToken): the blobs are kept only under their verified sha256, the
 * manifest is checked, and the agent signs and publishes it like one of its own builds.
 */
export function createSocketServer(wants: Wants, opts: { agent?: NodeAgent; buildKey?: string } = {}): Server {
  return createServer((req, res) => {
    void (async () => {
      if (req.method === "POST" && req.url === "/v1/want") {
        const input = (await body(req, 4096)) as { ref?: unknown };
        if (typeof input.ref !== "string" || !/^[0-9a-f]{64}$/.test(input.ref)) throw new ClasscacheError("usage", "ref must be 64 lowercase hex digits");
        wants.add(input.ref);
        send(res, 202, { ref: input.ref });
        return;
      }
      const m = /^\/v1\/builds\/([0-9a-f]{64})\/(?:blobs\/([0-9a-f]{64})|(manifest))$/.exec(req.url ?? "");
      if (m && opts.agent && opts.buildKey) {
        const ref = m[1]!;
        if (!tokenMatches(req.headers.authorization, buildToken(opts.buildKey, ref))) {
          res.writeHead(401, { "www-authenticate": "Bearer" }).end();
          return;
        }
        if (req.method === "PUT" && m[2]) {
          const store = opts.agent.opts.store;
          const { tempPath } = await store.receive((path) => pipeline(req, createWriteStream(path, { flags: "wx" })), "upload");
          const blob = await store.importBlob(tempPath, m[2]);
          send(res, 201, { sha256: blob.sha256 });
          return;
        }
        if (req.method === "POST" && m[3]) {
          const manifest = checkUploadedManifest(await body(req, 16 << 20));
          const r = await opts.agent.ensure({ imported: manifest, ref });
          send(res, 200, { key: r.key, source: r.source });
          return;
        }
      }
      send(res, 404, { error: "not found" });
    })().catch((err: unknown) => {
      const code = err instanceof ClasscacheError ? err.code : "internal";
      if (!res.headersSent) send(res, STATUS[code] ?? 500, { error: err instanceof Error ? err.message : String(err), code });
      else res.destroy();
    });
  });
}

/** The parts of an uploaded manifest that name paths and digests in the store: all must be safe. */
export function checkUploadedManifest(v: unknown): Manifest {
  const m = v as Manifest;
  const hex = (x: unknown): boolean => typeof x === "string" && /^[0-9a-f]{64}$/.test(x);
  const bad = (what: string) => new ClasscacheError("input", `the uploaded manifest is malformed: ${what}`);
  if (!m || typeof m !== "object" || !hex(m.key)) throw bad("key");
  if (!m.archive || !hex(m.archive.sha256) || m.archive.file !== `blobs/sha256/${m.archive.sha256}`) throw bad("archive");
  if (!m.layout || !Array.isArray(m.layout.files) || !m.layout.files.every((f) => f && hex(f.sha256) && typeof f.path === "string" && Number.isInteger(f.size))) throw bad("layout files");
  if (m.layout.id !== layoutId(m.layout.files)) throw bad("layout id does not match its files");
  if (!m.runtime || !Array.isArray(m.runtime.jvmOptions) || !m.runtime.launch || !m.verification || !m.jvm) throw bad("runtime, verification or jvm");
  return m;
}
