/**
 * The peer server: every node serves the blobs it holds to the other nodes, read-only.
 *
 *   GET|HEAD /v1/blobs/sha256:<hex>   a blob (bearer token; ETag, If-None-Match, Range, If-Range)
 *   GET      /healthz                 200 while the process is alive
 *   GET      /readyz                  200 when ready() says so, else 503
 *   GET      /metrics                 Prometheus text from the node's registry
 *
 * The request target is checked against an exact pattern before anything touches the file
 * system: the digest is the only variable part and must be 64 lowercase hex digits, so no
 * traversal, encoding or normalisation trick can name another file. At most `uploadCap` blob
 * bodies are sent at once (more get 503 and Retry-After, so pullers go to another holder), and
 * an optional token bucket shared by all uploads bounds the node's upload bandwidth.
 *
 * One wrapper logs and meters every request — route, status, bytes, duration — so handlers
 * only answer.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { open, type FileHandle } from "node:fs/promises";
import { createServer, type IncomingMessage, type OutgoingHttpHeaders, type Server, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { pipeline } from "node:stream/promises";
import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "../runtime/log.ts";
import { errnoCode } from "../util/fsx.ts";
import type { PeerMetrics, PeerRoute } from "./metrics.ts";

/** Where the server finds blobs: only those the node is willing to serve. */
export interface BlobSource {
  open(sha256: string): Promise<{ path: string; size: number } | undefined>;
}

export interface PeerServerOptions {
  blobs: BlobSource;
  /** Shared bearer token every blob request must carry. */
  token: string;
  /** Blob bodies sent at once; more requests get 503 with Retry-After. */
  uploadCap: number;
  /** Upload bandwidth of the whole node (all uploads share it); unlimited when absent. */
  maxUploadBytesPerSec?: number;
  metrics: PeerMetrics;
  log: Logger;
  /**
   * Asked before each blob body is sent (after the cap): false answers 503 so the puller goes to
   * another holder. The node agent uses it to stop a hot holder from serving every copy.
   */
  admit?: (sha256: string) => Promise<boolean>;
  /** Told when a body reaching the blob's last byte was sent in full: the puller now has a copy. */
  delivered?: (sha256: string) => void;
  /** Readiness for /readyz; ready when absent. */
  ready?: () => Promise<boolean>;
}

export const BLOB_ROUTE = "/v1/blobs/";
const BLOB_PATH = /^\/v1\/blobs\/sha256:([0-9a-f]{64})$/;
const OPS: Record<string, PeerRoute> = { "/healthz": "healthz", "/readyz": "readyz", "/metrics": "metrics" };
/** A socket that neither sends nor accepts a byte for this long is closed (a puller that stopped reading frees its upload slot). */
const IDLE_MS = 120_000;
const READ_CHUNK = 1 << 20;

export type Target = { kind: "blob"; sha256: string } | { kind: "ops"; route: PeerRoute } | { kind: "malformed"; reason: string } | { kind: "unknown" };

/**
 * Classifies a raw request target (never decoded or normalised). Anything under /v1/blobs that is
 * not exactly /v1/blobs/sha256:<64 lowercase hex> is malformed, and so is any path with
 * percent-encoding, backslashes, dot or empty segments, whatever it names.
 */
export function classifyTarget(raw: string): Target {
  if (raw.length > 2048) return { kind: "malformed", reason: "request target too long" };
  if (!raw.startsWith("/")) return { kind: "malformed", reason: "request target must be an absolute path" };
  if (!/^[\x21-\x7e]*$/.test(raw)) return { kind: "malformed", reason: "request target must be printable ASCII" };
  const q = raw.indexOf("?");
  const path = q < 0 ? raw : raw.slice(0, q);
  const ops = OPS[path];
  if (ops) return { kind: "ops", route: ops };
  if (path === "/") return { kind: "unknown" };
  if (/[%\\#]/.test(path) || path.split("/").some((s, i) => i > 0 && (s === "" || s === "." || s === ".."))) {
    return { kind: "malformed", reason: "path must not hold encoded characters, backslashes, dot or empty segments" };
  }
  if (path === "/v1/blobs" || path.startsWith(BLOB_ROUTE)) {
    if (q >= 0) return { kind: "malformed", reason: "blob requests take no query" };
    const m = BLOB_PATH.exec(path);
    if (!m) return { kind: "malformed", reason: "expected /v1/blobs/sha256:<64 lowercase hex digits>" };
    return { kind: "blob", sha256: m[1]! };
  }
  return { kind: "unknown" };
}

/**
 * One `Range` header against a body of `size` bytes: a range, "unsatisfiable" (416), or
 * undefined to send the whole body — no header, or one that is invalid or asks for several
 * ranges (RFC 9110 lets a server ignore those).
 */
export function parseRange(header: string | undefined, size: number): { start: number; end: number } | "unsatisfiable" | undefined {
  if (header === undefined) return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m) return undefined;
  const a = m[1]!;
  const b = m[2]!;
  if (a === "" && b === "") return undefined;
  if (a === "") {
    const n = Number(b);
    if (n === 0 || size === 0) return "unsatisfiable";
    return { start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(a);
  if (b !== "" && Number(b) < start) return undefined;
  if (start >= size) return "unsatisfiable";
  return { start, end: b === "" ? size - 1 : Math.min(Number(b), size - 1) };
}

/**
 * A token bucket (as virtual scheduling, GCRA): `reserve(n)` says how long to wait before
 * sending n bytes so that everything reserved stays within `bytesPerSec` plus a small burst.
 * Shared by all uploads of a node; reservations are served in the order they were made.
 */
export class TokenBucket {
  readonly bytesPerSec: number;
  /** Largest piece one reservation should ask for, so uploads interleave smoothly. */
  readonly pieceBytes: number;
  private readonly burstMs: number;
  private readonly now: () => number;
  private tat = 0;

  constructor(bytesPerSec: number, now: () => number = () => performance.now()) {
    if (!(bytesPerSec > 0)) throw new RangeError(`bandwidth limit must be positive, got ${bytesPerSec}`);
    this.bytesPerSec = bytesPerSec;
    this.pieceBytes = Math.min(1 << 20, Math.max(16 << 10, Math.floor(bytesPerSec / 20)));
    this.burstMs = ((2 * this.pieceBytes) / bytesPerSec) * 1000;
    this.now = now;
  }

  /** Reserves `n` bytes; returns the milliseconds to wait before sending them. */
  reserve(n: number): number {
    const t = this.now();
    this.tat = Math.max(this.tat, t) + (n / this.bytesPerSec) * 1000;
    return Math.max(0, this.tat - this.burstMs - t);
  }
}

interface Ctx {
  route: PeerRoute;
  bytes: number;
  start: number;
  error?: string;
}

/** The peer server; call `listen()` on it. */
export function createPeerServer(opts: PeerServerOptions): Server {
  if (!opts.token) throw new Error("the peer server needs a non-empty token: there are no anonymous reads");
  if (!Number.isInteger(opts.uploadCap) || opts.uploadCap < 1) throw new RangeError(`uploadCap must be a positive integer, got ${opts.uploadCap}`);
  const expected = sha256(opts.token);
  const bucket = opts.maxUploadBytesPerSec ? new TokenBucket(opts.maxUploadBytesPerSec) : undefined;
  const uploads = { active: 0 };
  const deps: Deps = { opts, expected, bucket, uploads };

  const server = createServer((req, res) => {
    const ctx: Ctx = { route: "other", bytes: 0, start: performance.now() };
    res.once("close", () => record(opts, ctx, req, res));
    handle(deps, ctx, req, res).catch((err: unknown) => {
      ctx.error = err instanceof Error ? err.message : String(err);
      opts.log.error("peer request failed", { method: req.method, path: printable(req.url ?? ""), error: ctx.error });
      if (res.headersSent) res.destroy();
      else sendJson(req, res, ctx, 500, "internal error");
    });
  });
  server.timeout = IDLE_MS;
  server.requestTimeout = 30_000;
  server.headersTimeout = 15_000;
  server.on("clientError", (err: NodeJS.ErrnoException, socket: Socket) => {
    // Requests the HTTP parser rejects never reach the handler: answer, log and meter them here.
    if (err.code === "ECONNRESET" || !socket.writable) {
      socket.destroy();
      return;
    }
    const status = err.code === "HPE_HEADER_OVERFLOW" ? 431 : err.code === "ERR_HTTP_REQUEST_TIMEOUT" ? 408 : 400;
    const body = JSON.stringify({ error: status === 400 ? "malformed request" : status === 431 ? "headers too large" : "request timeout" }) + "\n";
    socket.end(`HTTP/1.1 ${status} ${status === 400 ? "Bad Request" : "Error"}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
    opts.metrics.requests.inc({ route: "other", status: String(status) });
    opts.log.info("peer request", { method: null, path: null, status, bytes: Buffer.byteLength(body), ms: 0, error: err.code });
  });
  return server;
}

interface Deps {
  opts: PeerServerOptions;
  expected: Buffer;
  bucket: TokenBucket | undefined;
  uploads: { active: number };
}

async function handle(deps: Deps, ctx: Ctx, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const target = classifyTarget(req.url ?? "");
  switch (target.kind) {
    case "malformed":
      return sendJson(req, res, ctx, 400, target.reason);
    case "unknown":
      return sendJson(req, res, ctx, 404, "not found");
    case "ops":
      ctx.route = target.route;
      if (!readMethod(req, res, ctx)) return;
      return ops(deps.opts, target.route, req, res, ctx);
    case "blob":
      ctx.route = "blob";
      if (!readMethod(req, res, ctx)) return;
      if (!authorized(req.headers.authorization, deps.expected)) {
        return sendJson(req, res, ctx, 401, "a bearer token is required", { "WWW-Authenticate": "Bearer" });
      }
      return blob(deps, target.sha256, req, res, ctx);
  }
}

function readMethod(req: IncomingMessage, res: ServerResponse, ctx: Ctx): boolean {
  if (req.method === "GET" || req.method === "HEAD") return true;
  sendJson(req, res, ctx, 405, "method not allowed", { Allow: "GET, HEAD" });
  return false;
}

async function ops(opts: PeerServerOptions, route: PeerRoute, req: IncomingMessage, res: ServerResponse, ctx: Ctx): Promise<void> {
  if (route === "metrics") {
    const text = await opts.metrics.registry.metrics();
    return send(req, res, ctx, 200, { "Content-Type": opts.metrics.registry.contentType }, text);
  }
  let ok = true;
  if (route === "readyz" && opts.ready) ok = await opts.ready().catch(() => false);
  return send(req, res, ctx, ok ? 200 : 503, { "Content-Type": "text/plain; charset=utf-8" }, ok ? "ok\n" : "not ready\n");
}

/** Constant time: both sides are sha256 digests, so equal length whatever the token. */
function authorized(header: string | undefined, expected: Buffer): boolean {
  const m = /^Bearer +(\S+) *$/i.exec(header ?? "");
  if (!m) return false;
  return timingSafeEqual(sha256(m[1]!), expected);
}

async function blob(deps: Deps, hex: string, req: IncomingMessage, res: ServerResponse, ctx: Ctx): Promise<void> {
  const found = await deps.opts.blobs.open(hex);
  if (!found) return sendJson(req, res, ctx, 404, "no such blob");
  let fh: FileHandle;
  try {
    fh = await open(found.path, "r");
  } catch (err) {
    if (errnoCode(err) === "ENOENT") return sendJson(req, res, ctx, 404, "no such blob"); // removed since
    throw err;
  }
  try {
    const st = await fh.stat();
    if (!st.isFile() || st.size !== found.size) throw new Error(`blob sha256:${hex} at ${found.path} has ${st.size} bytes, its source says ${found.size}`);
    await sendBlob(deps, fh, hex, st.size, req, res, ctx);
  } finally {
    await fh.close();
  }
}

async function sendBlob(deps: Deps, fh: FileHandle, hex: string, size: number, req: IncomingMessage, res: ServerResponse, ctx: Ctx): Promise<void> {
  const etag = `"sha256:${hex}"`;
  const headers: OutgoingHttpHeaders = { ETag: etag, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream" };
  if (noneMatch(req.headers["if-none-match"], etag)) return send(req, res, ctx, 304, { ETag: etag }, "");
  // If-Range: the Range applies only to the representation named; a date or another tag gets it all.
  const ifRange = req.headers["if-range"];
  const range = ifRange === undefined || (typeof ifRange === "string" && ifRange.trim() === etag) ? parseRange(req.headers.range, size) : undefined;
  if (range === "unsatisfiable") return sendJson(req, res, ctx, 416, "range not satisfiable", { "Content-Range": `bytes */${size}` });
  const start = range?.start ?? 0;
  const end = range?.end ?? size - 1;
  headers["Content-Length"] = end - start + 1;
  if (range) headers["Content-Range"] = `bytes ${start}-${end}/${size}`;
  const status = range ? 206 : 200;
  if (req.method === "HEAD" || size === 0) return send(req, res, ctx, status, headers, "");

  const { uploads, opts } = deps;
  if (uploads.active >= opts.uploadCap) {
    opts.metrics.uploadsRejected.inc();
    return sendJson(req, res, ctx, 503, "upload cap reached, try another holder", { "Retry-After": "1" });
  }
  // The slot is held while admit() runs, so uploads started meanwhile cannot overshoot the cap.
  uploads.active++;
  const admitted = await Promise.resolve(!opts.admit || opts.admit(hex)).catch((err: unknown) => {
    uploads.active--;
    throw err;
  });
  if (!admitted) {
    uploads.active--;
    opts.metrics.uploadsRejected.inc();
    return sendJson(req, res, ctx, 503, "this holder has served its share of this blob, try another holder", { "Retry-After": "1" });
  }
  opts.metrics.uploadsActive.inc();
  opts.metrics.notePeakUploads(uploads.active);
  try {
    res.writeHead(status, headers);
    const body = fh.createReadStream({ start, end, autoClose: false, highWaterMark: READ_CHUNK });
    await pipeline(body, (src: AsyncIterable<Buffer>) => meter(src, ctx, opts.metrics, deps.bucket), res);
    if (end === size - 1) opts.delivered?.(hex);
  } catch (err) {
    // The puller went away or the socket timed out: nothing to answer, the wrapper logs it.
    ctx.error = errnoCode(err) ?? (err instanceof Error ? err.message : String(err));
    res.destroy();
  } finally {
    uploads.active--;
    opts.metrics.uploadsActive.dec();
  }
}

/** Counts bytes as they go out and, with a bandwidth limit, paces them through the shared bucket. */
async function* meter(src: AsyncIterable<Buffer>, ctx: Ctx, metrics: PeerMetrics, bucket: TokenBucket | undefined): AsyncGenerator<Buffer> {
  for await (const chunk of src) {
    if (!bucket) {
      ctx.bytes += chunk.length;
      metrics.bytesServed.inc(chunk.length);
      yield chunk;
      continue;
    }
    for (let off = 0; off < chunk.length; off += bucket.pieceBytes) {
      const piece = chunk.subarray(off, off + bucket.pieceBytes);
      const wait = bucket.reserve(piece.length);
      if (wait > 0) await sleep(wait);
      ctx.bytes += piece.length;
      metrics.bytesServed.inc(piece.length);
      yield piece;
    }
  }
}

function noneMatch(header: string | undefined, etag: string): boolean {
  if (header === undefined) return false;
  return header.split(",").some((t) => {
    const tag = t.trim();
    return tag === "*" || tag.replace(/^W\//, "") === etag;
  });
}

function send(req: IncomingMessage, res: ServerResponse, ctx: Ctx, status: number, headers: OutgoingHttpHeaders, body: string): void {
  const buf = Buffer.from(body);
  const withLength = status === 304 || "Content-Length" in headers ? headers : { ...headers, "Content-Length": buf.length };
  res.writeHead(status, withLength);
  if (req.method === "HEAD" || status === 304 || buf.length === 0) {
    res.end();
    return;
  }
  ctx.bytes += buf.length;
  res.end(buf);
}

function sendJson(req: IncomingMessage, res: ServerResponse, ctx: Ctx, status: number, error: string, headers: OutgoingHttpHeaders = {}): void {
  send(req, res, ctx, status, { ...headers, "Content-Type": "application/json" }, JSON.stringify({ error }) + "\n");
}

/** The one place every request is logged and metered, when its response is over. */
function record(opts: PeerServerOptions, ctx: Ctx, req: IncomingMessage, res: ServerResponse): void {
  const ms = performance.now() - ctx.start;
  const status = res.headersSent ? res.statusCode : 0;
  opts.metrics.requests.inc({ route: ctx.route, status: String(status) });
  opts.metrics.requestSeconds.observe({ route: ctx.route }, ms / 1000);
  const fields = {
    method: req.method,
    path: printable(req.url ?? ""),
    status,
    bytes: ctx.bytes,
    ms: Math.round(ms * 10) / 10,
    remote: req.socket.remoteAddress,
    ...(res.writableFinished ? {} : { aborted: true }),
    ...(ctx.error ? { error: ctx.error } : {}),
  };
  // Probes and scrapes come every few seconds: keep them out of the default log level.
  if (ctx.route === "healthz" || ctx.route === "readyz" || ctx.route === "metrics") opts.log.debug("peer request", fields);
  else opts.log.info("peer request", fields);
}

/** A request target as it can safely go into a log line: bounded, control characters escaped. */
function printable(raw: string): string {
  return JSON.stringify(raw.slice(0, 256)).slice(1, -1);
}

function sha256(s: string): Buffer {
  return createHash("sha256").update(s).digest();
}
