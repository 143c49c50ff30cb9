/**
 * Any Directory served over HTTP/JSON, and the client for it. This is how several node-agent
 * processes on one machine share one in-memory directory when there is no Valkey.
 *
 * Protocol: `POST /v1/<method>` with the method's arguments as a JSON object, answered with
 * `{"result": …}` (no `result` for undefined), or `{"error": {"message", "code", "hint"}}` and
 * a 4xx/5xx status. Every request needs `Authorization: Bearer <token>` (compared in constant
 * time; 401 otherwise). readEvents is a long poll: the server holds the request until an event
 * arrives or `blockMs` (capped at maxBlockMs) passes, and gives up when the client goes away.
 * When the cap cut the wait short, the answer carries `"again": true` and the client polls
 * again for the rest of its wait; an answer without it (a timeout, the server shutting down)
 * ends the client's readEvents.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { ClasscacheError, type ErrorCode } from "../runtime/errors.ts";
import { discardLogger, type Logger } from "../runtime/log.ts";
import { isBuildFailure, isDirectoryEvent, isHolder, normalizeHolder } from "./common.ts";
import type { BuildFailure, Directory, DirectoryEvent, EventRecord, Holder, Lease } from "./directory.ts";

const API = "/v1/";
const MAX_BODY_BYTES = 16 * 1024 * 1024;

export interface DirectoryServerOptions {
  /** The bearer token every request must carry. */
  token: string;
  log?: Logger;
  /** Longest a readEvents long poll is held (default 30 s); clients poll again for longer waits. */
  maxBlockMs?: number;
}

/** An http.Server (not yet listening) with a shutdown that does not wait for long polls. */
export type DirectoryServer = Server & {
  /** Ends pending long polls (they answer []), stops listening and closes every connection. */
  shutdown(): Promise<void>;
};

class BadRequest extends Error {}

type Args = Record<string, unknown>;
type Handler = (dir: Directory, a: Args, signal: AbortSignal) => Promise<unknown>;

/** A result with extra top-level fields in the answer. */
class Answer {
  readonly result: unknown;
  readonly extra: Record<string, unknown>;
  constructor(result: unknown, extra: Record<string, unknown>) {
    this.result = result;
    this.extra = extra;
  }
}

const str = (a: Args, name: string): string => {
  const v = a[name];
  if (typeof v !== "string") throw new BadRequest(`${name} must be a string`);
  return v;
};
const num = (a: Args, name: string): number => {
  const v = a[name];
  if (typeof v !== "number" || !Number.isFinite(v)) throw new BadRequest(`${name} must be a number`);
  return v;
};
const lease = (v: unknown): Lease => {
  const o = (typeof v === "object" && v !== null ? v : {}) as Args;
  if (typeof o["key"] !== "string" || typeof o["owner"] !== "string" || typeof o["token"] !== "number") {
    throw new BadRequest("lease must be {key, owner, token}");
  }
  return { key: o["key"], owner: o["owner"], token: o["token"] };
};
const holder = (v: unknown): Holder => {
  if (!isHolder(v)) throw new BadRequest("holder must be {node, url, zone}");
  return normalizeHolder(v);
};
const failure = (v: unknown): BuildFailure => {
  if (!isBuildFailure(v)) throw new BadRequest("failure must be {node, message, attempts, retryAt}");
  return { node: v.node, message: v.message, attempts: v.attempts, retryAt: v.retryAt };
};
const event = (v: unknown): DirectoryEvent => {
  if (!isDirectoryEvent(v)) throw new BadRequest("event must be a directory event {type, key, node, …}");
  return v;
};

function handlers(maxBlockMs: number): Record<string, Handler> {
  return {
    publish: (d, a) => d.publish(str(a, "key"), str(a, "envelope"), a["lease"] === undefined ? undefined : lease(a["lease"])),
    manifest: (d, a) => d.manifest(str(a, "key")),
    replaceManifest: (d, a) => d.replaceManifest(str(a, "key"), str(a, "expected"), str(a, "next")),
    keys: (d) => d.keys(),
    bind: (d, a) => d.bind(str(a, "name"), str(a, "value")),
    binding: (d, a) => d.binding(str(a, "name")),
    unbind: (d, a) => d.unbind(str(a, "name")),
    remove: (d, a) => d.remove(str(a, "key")),
    announce: (d, a) => d.announce(str(a, "key"), holder(a["holder"]), num(a, "ttlMs")),
    withdraw: (d, a) => d.withdraw(str(a, "key"), str(a, "node")),
    holders: (d, a) => d.holders(str(a, "key")),
    acquireLease: (d, a) => d.acquireLease(str(a, "key"), str(a, "owner"), num(a, "ttlMs")),
    renewLease: (d, a) => d.renewLease(lease(a["lease"]), num(a, "ttlMs")),
    releaseLease: (d, a) => d.releaseLease(lease(a["lease"])),
    leaseOwner: (d, a) => d.leaseOwner(str(a, "key")),
    recordFailure: (d, a) => d.recordFailure(str(a, "key"), failure(a["failure"]), num(a, "ttlMs")),
    failure: (d, a) => d.failure(str(a, "key")),
    clearFailure: (d, a) => d.clearFailure(str(a, "key")),
    emit: (d, a) => d.emit(event(a["event"])),
    readEvents: async (d, a, signal) => {
      const blockMs = num(a, "blockMs");
      const events = await d.readEvents(str(a, "after"), Math.min(blockMs, maxBlockMs), signal);
      return new Answer(events, events.length === 0 && blockMs > maxBlockMs && !signal.aborted ? { again: true } : {});
    },
    lastEventId: (d) => d.lastEventId(),
    ping: (d) => d.ping(),
  };
}

/** Constant-time comparison of an Authorization header with the expected bearer token. */
function tokenMatches(header: string | undefined, token: string): boolean {
  const presented = header?.startsWith("Bearer ") ? header.slice("Bearer ".length).trim() : "";
  const a = createHash("sha256").update(presented).digest();
  const b = createHash("sha256").update(token).digest();
  return timingSafeEqual(a, b) && presented !== "";
}

function send(res: ServerResponse, status: number, body: unknown, extra: Record<string, string> = {}): void {
  if (res.headersSent || res.destroyed) return;
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text), "cache-control": "no-store", ...extra });
  res.end(text);
}

async function readBody(req: IncomingMessage): Promise<Args> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new BadRequest(`request body over ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString("utf8");
  if (text.trim() === "") return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new BadRequest("request body is not JSON");
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new BadRequest("request body must be a JSON object");
  return parsed as Args;
}

/** The request handler alone, for mounting on a server of one's own. `abortAll` ends pending long polls. */
export interface DirectoryHandler {
  handle: (req: IncomingMessage, res: ServerResponse) => void;
  abortAll: () => void;
}

export function directoryHandler(dir: Directory, opts: DirectoryServerOptions): DirectoryHandler {
  if (!opts.token) throw new ClasscacheError("internal", "the directory server needs a token");
  const log = opts.log ?? discardLogger;
  const table = handlers(opts.maxBlockMs ?? 30_000);
  const pending = new Set<AbortController>();

  const serve = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    if (!tokenMatches(req.headers.authorization, opts.token)) {
      req.resume();
      send(res, 401, { error: { message: "missing or wrong bearer token", code: "input" } }, { "www-authenticate": 'Bearer realm="classcache-directory"' });
      return;
    }
    const path = (req.url ?? "").split("?")[0] ?? "";
    const method = path.startsWith(API) ? path.slice(API.length) : "";
    const handler = Object.hasOwn(table, method) ? table[method] : undefined;
    if (!handler) {
      req.resume();
      send(res, 404, { error: { message: `no such directory method: ${path}`, code: "input" } });
      return;
    }
    if (req.method !== "POST") {
      req.resume();
      send(res, 405, { error: { message: "use POST", code: "input" } }, { allow: "POST" });
      return;
    }
    const ac = new AbortController();
    pending.add(ac);
    // The client went away (or the server is shutting down) before the answer: stop waiting.
    res.on("close", () => ac.abort());
    try {
      const args = await readBody(req);
      const result = await handler(dir, args, ac.signal);
      if (result instanceof Answer) send(res, 200, { result: result.result, ...result.extra });
      else send(res, 200, result === undefined ? {} : { result });
    } catch (err) {
      if (err instanceof BadRequest) {
        send(res, 400, { error: { message: err.message, code: "input" } });
      } else {
        const e = err instanceof ClasscacheError ? err : undefined;
        log.warn("directory request failed", { method, error: err instanceof Error ? err.message : String(err) });
        send(res, 500, { error: { message: err instanceof Error ? err.message : String(err), code: e?.code ?? "internal", hint: e?.hint } });
      }
    } finally {
      pending.delete(ac);
    }
  };

  return {
    handle: (req, res) => void serve(req, res),
    abortAll: () => {
      for (const ac of pending) ac.abort();
    },
  };
}

export function createDirectoryServer(dir: Directory, opts: DirectoryServerOptions): DirectoryServer {
  const { handle, abortAll } = directoryHandler(dir, opts);
  const server = createServer(handle);
  return Object.assign(server, {
    shutdown: async (): Promise<void> => {
      abortAll();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      // Long-poll answers are on their way; give them a moment, then cut whatever is left.
      await new Promise((r) => setTimeout(r, 50));
      server.closeAllConnections();
      await closed;
    },
  });
}

export interface HttpDirectoryOptions {
  /** Base URL of a directory server, e.g. http://127.0.0.1:7070 */
  url: string;
  token: string;
  /** Timeout of ordinary requests (default 10 s). */
  timeoutMs?: number;
  /** ping() waits this long at most (default 2 s). */
  pingTimeoutMs?: number;
}

interface Answered {
  result?: unknown;
  error?: { message?: unknown; code?: unknown; hint?: unknown };
  [extra: string]: unknown;
}

const ERROR_CODES = new Set<string>(["usage", "input", "training", "verification", "store", "not-found", "internal"]);

/** The client: a Directory whose calls are requests to a directory server. */
export class HttpDirectory implements Directory {
  readonly url: string;
  private readonly token: string;
  private readonly timeoutMs: number;
  private readonly pingTimeoutMs: number;
  private readonly inflight = new Set<AbortController>();
  private closed = false;

  constructor(opts: HttpDirectoryOptions) {
    let base: URL;
    try {
      base = new URL(opts.url);
    } catch {
      throw new ClasscacheError("input", `the directory URL ${JSON.stringify(opts.url)} is not a URL`, { hint: "e.g. http://127.0.0.1:7070" });
    }
    if (base.protocol !== "http:" && base.protocol !== "https:") {
      throw new ClasscacheError("input", `the directory URL has scheme ${base.protocol} where http: or https: was expected`);
    }
    this.url = base.href.replace(/\/+$/, "");
    this.token = opts.token;
    this.timeoutMs = opts.timeoutMs ?? 10_000;
    this.pingTimeoutMs = opts.pingTimeoutMs ?? 2_000;
  }

  async publish(key: string, envelope: string, lease?: Lease): Promise<{ published: boolean; envelope: string | undefined }> {
    const r = await this.call<{ published: boolean; envelope?: string }>("publish", { key, envelope, lease });
    return { published: r.published, envelope: r.envelope };
  }
  manifest(key: string): Promise<string | undefined> {
    return this.call("manifest", { key });
  }
  replaceManifest(key: string, expected: string, next: string): Promise<boolean> {
    return this.call("replaceManifest", { key, expected, next });
  }
  keys(): Promise<string[]> {
    return this.call("keys", {});
  }
  bind(name: string, value: string): Promise<string> {
    return this.call("bind", { name, value });
  }
  binding(name: string): Promise<string | undefined> {
    return this.call("binding", { name });
  }
  unbind(name: string): Promise<void> {
    return this.call("unbind", { name });
  }
  remove(key: string): Promise<void> {
    return this.call("remove", { key });
  }
  announce(key: string, holder: Holder, ttlMs: number): Promise<void> {
    return this.call("announce", { key, holder, ttlMs });
  }
  withdraw(key: string, node: string): Promise<void> {
    return this.call("withdraw", { key, node });
  }
  holders(key: string): Promise<Holder[]> {
    return this.call("holders", { key });
  }
  acquireLease(key: string, owner: string, ttlMs: number): Promise<Lease | undefined> {
    return this.call("acquireLease", { key, owner, ttlMs });
  }
  renewLease(lease: Lease, ttlMs: number): Promise<boolean> {
    return this.call("renewLease", { lease, ttlMs });
  }
  releaseLease(lease: Lease): Promise<boolean> {
    return this.call("releaseLease", { lease });
  }
  leaseOwner(key: string): Promise<string | undefined> {
    return this.call("leaseOwner", { key });
  }
  recordFailure(key: string, failure: BuildFailure, ttlMs: number): Promise<void> {
    return this.call("recordFailure", { key, failure, ttlMs });
  }
  failure(key: string): Promise<BuildFailure | undefined> {
    return this.call("failure", { key });
  }
  clearFailure(key: string): Promise<void> {
    return this.call("clearFailure", { key });
  }
  emit(event: DirectoryEvent): Promise<string> {
    return this.call("emit", { event });
  }
  lastEventId(): Promise<string> {
    return this.call("lastEventId", {});
  }

  /**
   * A long poll, repeated while the server answers [] early (its cap on blocking is below
   * blockMs) and time remains. Resolves [] on timeout or when `signal` aborts.
   */
  async readEvents(after: string, blockMs: number, signal?: AbortSignal): Promise<EventRecord[]> {
    const deadline = Date.now() + Math.max(0, blockMs);
    for (;;) {
      if (signal?.aborted) return [];
      const wait = Math.max(0, deadline - Date.now());
      const body = await this.request("readEvents", { after, blockMs: wait }, { timeoutMs: wait + this.timeoutMs, signal });
      if (body === undefined) return []; // aborted
      const events = body.result as EventRecord[];
      if (events.length > 0 || body["again"] !== true || Date.now() >= deadline - 5) return events;
    }
  }

  async ping(): Promise<boolean> {
    try {
      return (await this.call<boolean>("ping", {}, { timeoutMs: this.pingTimeoutMs })) === true;
    } catch {
      return false;
    }
  }

  /** Aborts requests in flight (a pending readEvents resolves []); later calls fail. */
  close(): Promise<void> {
    this.closed = true;
    for (const ac of this.inflight) ac.abort();
    return Promise.resolve();
  }

  private async call<T>(method: string, args: Args, opts: { timeoutMs?: number } = {}): Promise<T> {
    return (await this.request(method, args, opts))?.result as T;
  }

  /**
   * One request, answered with the whole response body. For readEvents, an abort (by the
   * caller's signal or by close()) resolves undefined instead of failing; every other failure
   * is an error naming the server.
   */
  private async request(method: string, args: Args, opts: { timeoutMs?: number; signal?: AbortSignal | undefined } = {}): Promise<Answered | undefined> {
    if (this.closed) throw new ClasscacheError("internal", `the directory client for ${this.url} is closed`);
    const mine = new AbortController();
    this.inflight.add(mine);
    const timeout = AbortSignal.timeout(opts.timeoutMs ?? this.timeoutMs);
    const signals = [mine.signal, timeout, ...(opts.signal ? [opts.signal] : [])];
    const abortable = "readEvents" === method;
    try {
      const res = await fetch(`${this.url}${API}${method}`, {
        method: "POST",
        headers: { authorization: `Bearer ${this.token}`, "content-type": "application/json" },
        body: JSON.stringify(args),
        signal: AbortSignal.any(signals),
      });
      const body = (await res.json().catch(() => undefined)) as Answered | undefined;
      if (res.status === 401) {
        throw new ClasscacheError("input", `the directory at ${this.url} rejected the token (401)`, { hint: "the node agents and the directory server must share one token" });
      }
      if (!res.ok || body === undefined) throw this.remoteError(method, res.status, body?.error);
      return body;
    } catch (err) {
      if (abortable && (mine.signal.aborted || opts.signal?.aborted)) return undefined;
      if (err instanceof ClasscacheError) throw err;
      if (timeout.aborted) {
        throw new ClasscacheError("input", `the directory at ${this.url} did not answer ${method} in ${opts.timeoutMs ?? this.timeoutMs} ms`, { cause: err });
      }
      if (mine.signal.aborted) throw new ClasscacheError("internal", `the directory client for ${this.url} was closed during ${method}`);
      throw new ClasscacheError("input", `cannot reach the directory at ${this.url} (${method}): ${describeFetchError(err)}`, {
        hint: "is the directory server (or the node agent that embeds it) running, and is this its address?",
        cause: err,
      });
    } finally {
      this.inflight.delete(mine);
    }
  }

  private remoteError(method: string, status: number, e: { message?: unknown; code?: unknown; hint?: unknown } | undefined): ClasscacheError {
    const message = typeof e?.message === "string" ? e.message : `HTTP ${status}`;
    const code = typeof e?.code === "string" && ERROR_CODES.has(e.code) ? (e.code as ErrorCode) : "internal";
    return new ClasscacheError(code, `the directory at ${this.url} failed ${method}: ${message}`, typeof e?.hint === "string" ? { hint: e.hint } : {});
  }
}

/** "ECONNREFUSED 127.0.0.1:7070" rather than undici's bare "fetch failed". */
function describeFetchError(err: unknown): string {
  const parts: string[] = [];
  let e: unknown = err;
  while (e instanceof Error && parts.length < 4) {
    const code = (e as { code?: unknown }).code;
    parts.push(typeof code === "string" && !e.message.includes(code) ? `${code}: ${e.message}` : e.message);
    e = e.cause;
  }
  return parts.length > 0 ? parts.join(": ") : String(err);
}
