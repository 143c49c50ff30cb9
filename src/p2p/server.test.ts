import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { request, type ClientRequest, type IncomingMessage, type Server } from "node:http";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { Metric } from "prom-client";
import { PeerMetrics } from "./metrics.ts";
import { classifyTarget, createPeerServer, parseRange, TokenBucket } from "./server.ts";
import { get, listen, mapSource, memoryLogger, randomFile, rawRequest, stop, until } from "./testing.ts";

const TOKEN = "peer-token-0123456789";
const SIZE = 20 * 1024 * 1024;
const auth = { Authorization: `Bearer ${TOKEN}` };

async function value(metric: Metric, labels: Record<string, string> = {}): Promise<number> {
  const { values } = await metric.get();
  const hit = values.find((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x));
  return hit?.value ?? 0;
}

describe("peer server", () => {
  let dir: string;
  let file: string;
  let hex: string;
  let blobPath: string;
  let content: Buffer;
  const source = { files: {} as Record<string, string> };
  let src: ReturnType<typeof mapSource>;
  let metrics: PeerMetrics;
  let logged: ReturnType<typeof memoryLogger>;
  let server: Server;
  let base: string;
  let isReady = true;
  const extra: Server[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "classcache-peer-"));
    file = join(dir, "blob");
    hex = await randomFile(file, SIZE);
    content = await readFile(file);
    blobPath = `/v1/blobs/sha256:${hex}`;
    source.files[hex] = file;
    src = mapSource(source.files);
    metrics = new PeerMetrics();
    logged = memoryLogger();
    server = createPeerServer({ blobs: src, token: TOKEN, uploadCap: 4, metrics, log: logged.log, ready: () => Promise.resolve(isReady) });
    base = await listen(server);
  });

  after(async () => {
    await stop(server);
    for (const s of extra) await stop(s);
    await rm(dir, { recursive: true, force: true });
  });

  it("answers 401 with WWW-Authenticate to blob requests without the right bearer token", async () => {
    const opensBefore = src.opens;
    const tries: Record<string, string>[] = [{}, { Authorization: "Bearer wrong" }, { Authorization: `Bearer ${TOKEN}x` }, { Authorization: `Basic ${TOKEN}` }, { Authorization: TOKEN }, { Authorization: "Bearer " }];
    for (const headers of tries) {
      for (const method of ["GET", "HEAD"]) {
        const res = await get(base, blobPath, { method, headers });
        assert.equal(res.status, 401, `${method} with ${JSON.stringify(headers)}`);
        assert.equal(res.headers["www-authenticate"], "Bearer");
      }
    }
    assert.equal(src.opens, opensBefore, "the blob source is not asked before the token is checked");
  });

  it("answers 400 to malformed and traversal paths without touching the file system", async () => {
    const bad = [
      `/v1/blobs/sha256:${hex.toUpperCase()}`,
      `/v1/blobs/sha256:${hex.slice(1)}`,
      `/v1/blobs/sha256:${hex}0`,
      `/v1/blobs/sha512:${hex}`,
      `/v1/blobs/${hex}`,
      `/v1/blobs/sha256-${hex}`,
      `/v1/blobs/sha256:${hex.slice(0, 63)}g`,
      `/v1/blobs/sha256%3A${hex}`,
      `/v1/blobs/sha256:${hex}/`,
      `/v1/blobs/sha256:${hex};x`,
      `/v1/blobs/sha256:${hex}?x=1`,
      `/v1/blobs/sha256:${hex}?`,
      `/v1/blobs/sha256:${hex}#f`,
      `/v1/blobs/sha256:${hex}/..`,
      `/v1/blobs/sha256:${hex}%2f..`,
      `/v1/blobs/../../etc/passwd`,
      `/v1/blobs/%2e%2e/%2e%2e/etc/passwd`,
      `/v1/blobs/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd`,
      `/v1/blobs/..%2f..%2fetc%2fpasswd`,
      `/v1/blobs/..\\..\\etc\\passwd`,
      `/v1//blobs/sha256:${hex}`,
      `/v1/blobs//sha256:${hex}`,
      `/v1/./blobs/sha256:${hex}`,
      `/v1/x/../blobs/sha256:${hex}`,
      `/../v1/blobs/sha256:${hex}`,
      `/%2e%2e/etc/passwd`,
      `/v1/blobs`,
      `/v1/blobs/`,
      `http://127.0.0.1/v1/blobs/sha256:${hex}`,
      `v1/blobs/sha256:${hex}`,
      `*`,
    ];
    const opensBefore = src.opens;
    for (const path of bad) {
      const res = await rawRequest(base, `GET ${path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\nConnection: close\r\n\r\n`);
      assert.equal(res.status, 400, path);
      assert.match(res.body, /^\{"error":"[^"]{1,100}"\}\n$/, path);
    }
    // Non-ASCII bytes in the request line never reach a handler either.
    const res = await rawRequest(base, `GET /v1/blobs/sha256:${hex}\u00ff HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
    assert.equal(res.status, 400);
    assert.equal(src.opens, opensBefore);
  });

  it("classifies only the exact blob path as a blob, and leaves other paths to 404", () => {
    assert.deepEqual(classifyTarget(`/v1/blobs/sha256:${hex}`), { kind: "blob", sha256: hex });
    assert.deepEqual(classifyTarget("/healthz"), { kind: "ops", route: "healthz" });
    assert.deepEqual(classifyTarget("/metrics?name[]=x"), { kind: "ops", route: "metrics" });
    assert.deepEqual(classifyTarget("/v2/blobs/x"), { kind: "unknown" });
    assert.deepEqual(classifyTarget("/"), { kind: "unknown" });
    assert.equal(classifyTarget("/a/%2e%2e/b").kind, "malformed");
  });

  it("answers 404 to an unknown digest or path and 405 to other methods", async () => {
    assert.equal((await get(base, `/v1/blobs/sha256:${"0".repeat(64)}`, { headers: auth })).status, 404);
    assert.equal((await get(base, "/v2/blobs", { headers: auth })).status, 404);
    assert.equal((await get(base, "/", { headers: auth })).status, 404);
    for (const method of ["PUT", "POST", "DELETE", "OPTIONS", "PATCH"]) {
      const res = await get(base, blobPath, { method, headers: auth });
      assert.equal(res.status, 405, method);
      assert.equal(res.headers.allow, "GET, HEAD");
    }
    assert.equal((await get(base, "/healthz", { method: "POST" })).status, 405);
  });

  it("serves the whole blob with ETag, Content-Length and type, and HEAD with the same headers and no body", async () => {
    const res = await get(base, blobPath, { headers: auth });
    assert.equal(res.status, 200);
    assert.equal(res.headers.etag, `"sha256:${hex}"`);
    assert.equal(res.headers["accept-ranges"], "bytes");
    assert.equal(res.headers["content-type"], "application/octet-stream");
    assert.equal(res.headers["content-length"], String(SIZE));
    assert.equal(createHash("sha256").update(res.body).digest("hex"), hex);

    const head = await get(base, blobPath, { method: "HEAD", headers: auth });
    assert.equal(head.status, 200);
    assert.equal(head.headers["content-length"], String(SIZE));
    assert.equal(head.headers.etag, `"sha256:${hex}"`);
    assert.equal(head.body.length, 0);
  });

  it("answers 304 to If-None-Match naming the blob's ETag", async () => {
    for (const inm of [`"sha256:${hex}"`, `W/"sha256:${hex}"`, `"x", "sha256:${hex}"`, "*"]) {
      const res = await get(base, blobPath, { headers: { ...auth, "If-None-Match": inm } });
      assert.equal(res.status, 304, inm);
      assert.equal(res.headers.etag, `"sha256:${hex}"`);
      assert.equal(res.body.length, 0);
    }
    assert.equal((await get(base, blobPath, { method: "HEAD", headers: { ...auth, "If-None-Match": '"sha256:other"' } })).status, 200);
  });

  it("serves a single range with 206 and Content-Range, answers 416 when unsatisfiable, and honours If-Range", async () => {
    const cases: [string, number, number][] = [
      ["bytes=0-9", 0, 9],
      ["bytes=1000-", 1000, SIZE - 1],
      ["bytes=-10", SIZE - 10, SIZE - 1],
      [`bytes=${SIZE - 1}-`, SIZE - 1, SIZE - 1],
      [`bytes=5-${SIZE + 100}`, 5, SIZE - 1],
      [`bytes=-${SIZE * 2}`, 0, SIZE - 1],
    ];
    for (const [range, start, end] of cases) {
      const res = await get(base, blobPath, { headers: { ...auth, Range: range } });
      assert.equal(res.status, 206, range);
      assert.equal(res.headers["content-range"], `bytes ${start}-${end}/${SIZE}`, range);
      assert.equal(res.headers["content-length"], String(end - start + 1), range);
      assert.ok(res.body.equals(content.subarray(start, end + 1)), range);
    }
    for (const range of [`bytes=${SIZE}-`, `bytes=${SIZE + 5}-${SIZE + 10}`, "bytes=-0"]) {
      const res = await get(base, blobPath, { headers: { ...auth, Range: range } });
      assert.equal(res.status, 416, range);
      assert.equal(res.headers["content-range"], `bytes */${SIZE}`);
    }
    // Several ranges, or nonsense, are ignored: the whole blob.
    for (const range of ["bytes=0-1,5-6", "bytes=9-2", "items=0-1", "bytes=x-"]) {
      const res = await get(base, blobPath, { method: "HEAD", headers: { ...auth, Range: range } });
      assert.equal(res.status, 200, range);
    }
    const partial = await get(base, blobPath, { headers: { ...auth, Range: "bytes=10-19", "If-Range": `"sha256:${hex}"` } });
    assert.equal(partial.status, 206);
    for (const ifRange of ['"sha256:other"', `W/"sha256:${hex}"`, "Wed, 21 Oct 2015 07:28:00 GMT"]) {
      const res = await get(base, blobPath, { method: "HEAD", headers: { ...auth, Range: "bytes=10-19", "If-Range": ifRange } });
      assert.equal(res.status, 200, ifRange);
      assert.equal(res.headers["content-length"], String(SIZE));
    }
    const head = await get(base, blobPath, { method: "HEAD", headers: { ...auth, Range: "bytes=-10" } });
    assert.equal(head.status, 206);
    assert.equal(head.body.length, 0);
  });

  it("parses ranges by RFC 9110", () => {
    assert.deepEqual(parseRange("bytes=0-0", 1), { start: 0, end: 0 });
    assert.equal(parseRange("bytes=0-", 0), "unsatisfiable");
    assert.equal(parseRange("bytes=-5", 0), "unsatisfiable");
    assert.equal(parseRange(undefined, 10), undefined);
    assert.equal(parseRange("bytes=-", 10), undefined);
  });

  it("answers 503 with Retry-After to a blob request over the upload cap, while HEAD still works", async () => {
    const m = new PeerMetrics();
    const capped = createPeerServer({ blobs: src, token: TOKEN, uploadCap: 2, maxUploadBytesPerSec: 1 << 20, metrics: m, log: memoryLogger().log });
    extra.push(capped);
    const url = await listen(capped);
    const held: ClientRequest[] = [];
    const open = (): Promise<IncomingMessage> =>
      new Promise((resolve, reject) => {
        const u = new URL(url);
        const req = request({ host: u.hostname, port: u.port, path: blobPath, headers: auth, agent: false }, resolve);
        req.on("error", () => {});
        held.push(req);
        req.end();
        setTimeout(() => reject(new Error("no response")), 5000).unref();
      });
    const slow = [await open(), await open()];
    for (const r of slow) assert.equal(r.statusCode, 200);
    await until(async () => (await value(m.uploadsActive)) === 2, 5000, "two uploads");

    const t0 = performance.now();
    const over = await get(url, blobPath, { headers: auth });
    assert.equal(over.status, 503);
    assert.equal(over.headers["retry-after"], "1");
    assert.ok(performance.now() - t0 < 500, "rejected at once");
    assert.equal((await get(url, blobPath, { method: "HEAD", headers: auth })).status, 200);
    assert.equal(await value(m.uploadsRejected), 1);

    for (const r of held) r.destroy();
    await until(async () => (await value(m.uploadsActive)) === 0, 5000, "slots released");
    const after = await get(url, blobPath, { headers: { ...auth, Range: "bytes=0-99" } });
    assert.equal(after.status, 206);
  });

  it("paces downloads to the node's bandwidth limit", async () => {
    const limit = 5 * 1024 * 1024;
    const limited = createPeerServer({ blobs: src, token: TOKEN, uploadCap: 4, maxUploadBytesPerSec: limit, metrics: new PeerMetrics(), log: memoryLogger().log });
    extra.push(limited);
    const url = await listen(limited);
    const bytes = 10 * 1024 * 1024;
    const range = { ...auth, Range: `bytes=0-${bytes - 1}` };
    let t0 = performance.now();
    const fast = await get(base, blobPath, { headers: range });
    const fastMs = performance.now() - t0;
    t0 = performance.now();
    const slow = await get(url, blobPath, { headers: range });
    const slowMs = performance.now() - t0;
    assert.ok(fast.body.equals(slow.body));
    assert.equal(slow.body.length, bytes);
    // 10 MiB at 5 MiB/s: two seconds, less a burst of two pieces.
    assert.ok(slowMs > 1700 && slowMs < 6000, `limited download took ${Math.round(slowMs)} ms`);
    assert.ok(fastMs < slowMs / 2, `unlimited ${Math.round(fastMs)} ms vs limited ${Math.round(slowMs)} ms`);
  });

  it("shares one bucket between uploads", () => {
    let now = 0;
    const b = new TokenBucket(1000, () => now);
    assert.equal(b.pieceBytes, 16 << 10);
    const burst = 2 * b.pieceBytes;
    assert.equal(b.reserve(burst), 0);
    // Everything past the burst is paced at the rate, whoever asks.
    assert.equal(b.reserve(500), 500);
    assert.equal(b.reserve(500), 1000);
    now = 1000;
    assert.equal(b.reserve(1000), 1000);
  });

  it("serves /healthz, /readyz and /metrics without a token", async () => {
    assert.equal((await get(base, "/healthz")).status, 200);
    isReady = true;
    assert.equal((await get(base, "/readyz")).status, 200);
    isReady = false;
    assert.equal((await get(base, "/readyz")).status, 503);
    isReady = true;
    const res = await get(base, "/metrics");
    assert.equal(res.status, 200);
    assert.match(String(res.headers["content-type"]), /^text\/plain/);
  });

  it("meters every request by route and status, and the bytes it served", async () => {
    const text = (await get(base, "/metrics")).body.toString();
    assert.match(text, /classcache_peer_requests_total\{route="blob",status="401"\} 12\n/);
    assert.match(text, /classcache_peer_requests_total\{route="other",status="400"\} \d+\n/);
    assert.match(text, /classcache_peer_requests_total\{route="blob",status="206"\} \d+\n/);
    assert.match(text, /classcache_peer_requests_total\{route="healthz",status="200"\} 1\n/);
    const served = Number(/classcache_peer_served_bytes_total (\d+)/.exec(text)?.[1]);
    assert.ok(served >= 2 * SIZE, `served ${served}`);
    assert.equal(await value(metrics.requests, { route: "readyz", status: "503" }), 1);
  });

  it("logs every request once, with one message and method, path, status, bytes and ms", async () => {
    const before = logged.lines.length;
    await get(base, blobPath, { headers: { ...auth, Range: "bytes=0-99" } });
    await get(base, `/v1/blobs/%2e%2e`, { headers: auth });
    await until(() => logged.lines.length >= before + 2, 2000, "log lines");
    const [ok, bad] = logged.lines.slice(before);
    assert.deepEqual({ ...ok, ts: undefined, ms: undefined, remote: undefined }, { ts: undefined, level: "info", msg: "peer request", method: "GET", path: blobPath, status: 206, bytes: 100, ms: undefined, remote: undefined });
    assert.equal(typeof ok!.ms, "number");
    assert.equal(bad!.status, 400);
    assert.equal(bad!.msg, "peer request");
    assert.ok(logged.lines.every((l) => ["peer request", "peer request failed"].includes(l.msg as string)));
  });
});
