import assert from "node:assert/strict";
import { copyFile, mkdtemp, open, readdir, rm, stat, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { Metric } from "prom-client";
import type { Holder } from "../directory/directory.ts";
import { sha256File } from "../util/hash.ts";
import { PeerMetrics } from "./metrics.ts";
import { isPeerUrl, orderHolders, PullError, pullBlob, Quarantine } from "./puller.ts";
import { createPeerServer } from "./server.ts";
import { holdDownload, listen, mapSource, memoryLogger, randomFile, stop, until } from "./testing.ts";

const TOKEN = "pull-token";
const SIZE = 20 * 1024 * 1024;

async function value(metric: Metric, labels: Record<string, string> = {}): Promise<number> {
  const { values } = await metric.get();
  return values.find((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x))?.value ?? 0;
}

/** A deterministic random in [0, 1) (mulberry32). */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Peer {
  holder: Holder;
  server: Server;
  metrics: PeerMetrics;
  lines: Record<string, unknown>[];
}

describe("pulling a blob from peers", () => {
  let dir: string;
  let good: string;
  let corrupt: string;
  let hex: string;
  let n = 0;
  const servers: Server[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "classcache-pull-"));
    good = join(dir, "good");
    hex = await randomFile(good, SIZE);
    // Same size, one byte different: only the digest can tell.
    corrupt = join(dir, "corrupt");
    await copyFile(good, corrupt);
    const fh = await open(corrupt, "r+");
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, SIZE - 5);
    b[0] = b[0]! ^ 0xff;
    await fh.write(b, 0, 1, SIZE - 5);
    await fh.close();
  });

  after(async () => {
    for (const s of servers) await stop(s);
    await rm(dir, { recursive: true, force: true });
  });

  async function peer(node: string, opts: { file?: string; token?: string; limit?: number; uploadCap?: number; zone?: string } = {}): Promise<Peer> {
    const metrics = new PeerMetrics();
    const { log, lines } = memoryLogger();
    const files: Record<string, string> = opts.file === "" ? {} : { [hex]: opts.file ?? good };
    const server = createPeerServer({ blobs: mapSource(files), token: opts.token ?? TOKEN, uploadCap: opts.uploadCap ?? 4, maxUploadBytesPerSec: opts.limit, metrics, log });
    servers.push(server);
    const url = await listen(server);
    return { holder: { node, url, zone: opts.zone ?? "z1" }, server, metrics, lines };
  }

  function dest(): string {
    return join(dir, `dest-${++n}`);
  }

  it("pulls a blob from a holder and verifies its sha256", async () => {
    const a = await peer("a");
    const metrics = new PeerMetrics();
    const to = dest();
    const r = await pullBlob({ sha256: hex, size: SIZE, holders: [a.holder], token: TOKEN, dest: to, quarantine: new Quarantine(), log: memoryLogger().log, metrics });
    assert.deepEqual(r, { from: ["a"], bytes: SIZE });
    assert.deepEqual(await sha256File(to), { sha256: hex, size: SIZE });
    assert.equal(await value(metrics.pulls, { outcome: "ok" }), 1);
    assert.equal(await value(metrics.bytesPulled), SIZE);
  });

  it("quarantines a holder that serves corrupted bytes and completes from an honest one", async () => {
    const liar = await peer("liar", { file: corrupt });
    const honest = await peer("honest");
    const metrics = new PeerMetrics();
    const quarantine = new Quarantine();
    const { log, lines } = memoryLogger();
    const to = dest();
    const r = await pullBlob({ sha256: hex, size: SIZE, holders: [liar.holder, honest.holder], token: TOKEN, dest: to, quarantine, log, metrics });
    assert.deepEqual(r, { from: ["honest"], bytes: 2 * SIZE });
    assert.equal((await sha256File(to)).sha256, hex);
    assert.ok(quarantine.has("liar"));
    assert.ok(!quarantine.has("honest"));
    assert.equal(await value(metrics.peersQuarantined), 1);
    assert.ok(lines.some((l) => l.msg === "pulled bytes failed verification" && JSON.stringify(l.holders) === '["liar"]'));
  });

  it("resumes with a Range request from another holder when a holder dies mid-transfer", async () => {
    const dying = await peer("dying", { limit: 4 << 20 }); // 20 MiB at 4 MiB/s: five seconds
    const other = await peer("other");
    const metrics = new PeerMetrics();
    const { log, lines } = memoryLogger();
    const to = dest();
    const pulling = pullBlob({ sha256: hex, size: SIZE, holders: [dying.holder, other.holder], token: TOKEN, dest: to, quarantine: new Quarantine(), log, metrics });
    await until(async () => (await value(dying.metrics.bytesServed)) >= 3 << 20, 10_000, "the first holder to send 3 MiB");
    await stop(dying.server); // killed mid-transfer
    const r = await pulling;
    assert.deepEqual(r.from, ["dying", "other"]);
    assert.equal((await sha256File(to)).sha256, hex);
    assert.equal(await value(metrics.resumes), 1);
    const resumed = lines.find((l) => l.msg === "resuming pull");
    assert.equal(resumed?.from, "other");
    const offset = resumed?.offset as number;
    assert.ok(offset >= 3 << 20 && offset < SIZE, `resumed at ${offset}`);
    // The second holder sent only the rest, as a 206.
    assert.equal(await value(other.metrics.requests, { route: "blob", status: "206" }), 1);
    assert.equal(await value(other.metrics.bytesServed), SIZE - offset);
    assert.ok(r.bytes >= SIZE && r.bytes < SIZE + (1 << 20));
  });

  it("resumes from another holder when a holder stalls mid-transfer", async () => {
    // A holder that sends headers and 1 MiB, then nothing.
    const stalled = createServer((_req, res) => {
      res.writeHead(200, { "Content-Length": SIZE, "Content-Type": "application/octet-stream" });
      res.write(Buffer.alloc(0));
      void (async () => {
        const fh = await open(good, "r");
        const buf = Buffer.alloc(1 << 20);
        await fh.read(buf, 0, buf.length, 0);
        await fh.close();
        res.write(buf);
      })();
    });
    servers.push(stalled);
    const stalledUrl = await listen(stalled);
    const other = await peer("other2");
    const metrics = new PeerMetrics();
    const { log, lines } = memoryLogger();
    const to = dest();
    const t0 = performance.now();
    const r = await pullBlob({
      sha256: hex,
      size: SIZE,
      holders: [{ node: "stalled", url: stalledUrl, zone: "z1" }, other.holder],
      token: TOKEN,
      dest: to,
      quarantine: new Quarantine(),
      log,
      metrics,
      stallMs: 500,
    });
    assert.ok(performance.now() - t0 >= 500);
    assert.deepEqual(r.from, ["stalled", "other2"]);
    assert.equal((await sha256File(to)).sha256, hex);
    assert.equal(lines.find((l) => l.msg === "resuming pull")?.offset, 1 << 20);
    assert.match(String(lines.find((l) => l.msg === "pull from holder failed")?.reason), /stalled/);
    stalled.closeAllConnections();
  });

  it("goes to the next holder on 503 and back to a busy one after Retry-After", async () => {
    const path = `/v1/blobs/sha256:${hex}`;
    const headers = { Authorization: `Bearer ${TOKEN}` };
    const busy = await peer("busy", { uploadCap: 1 });
    const blocker = await holdDownload(busy.holder.url, path, headers); // holds busy's only upload slot
    assert.equal(blocker.status, 200);
    const free = await peer("free");
    const { log } = memoryLogger();
    const r1 = await pullBlob({ sha256: hex, size: SIZE, holders: [busy.holder, free.holder], token: TOKEN, dest: dest(), quarantine: new Quarantine(), log });
    assert.deepEqual(r1.from, ["free"]);
    assert.equal(await value(busy.metrics.uploadsRejected), 1);

    // Only the busy holder: the pull waits out Retry-After and gets the blob once the slot is free.
    setTimeout(() => blocker.close(), 300);
    const t0 = performance.now();
    const r2 = await pullBlob({ sha256: hex, size: SIZE, holders: [busy.holder], token: TOKEN, dest: dest(), quarantine: new Quarantine(), log, timeoutMs: 60_000 });
    assert.deepEqual(r2.from, ["busy"]);
    assert.ok(performance.now() - t0 >= 900, "waited for Retry-After");
    assert.equal(await value(busy.metrics.uploadsRejected), 2);
  });

  it("fails with an error that says what each holder did, and leaves no file, when no holder can serve the blob", async () => {
    const liar = await peer("liar2", { file: corrupt });
    const stranger = await peer("stranger", { token: "another-token" });
    const empty = await peer("empty", { file: "" });
    const dead = await peer("dead");
    await stop(dead.server);
    const short = join(dir, "short");
    await writeFile(short, "not the blob");
    const wrongSize = await peer("wrong-size", { file: short });
    const quarantine = new Quarantine();
    const metrics = new PeerMetrics();
    const to = dest();
    const holders = [liar, stranger, empty, dead, wrongSize].map((p) => p.holder);
    const err = await pullBlob({ sha256: hex, size: SIZE, holders, token: TOKEN, dest: to, quarantine, log: memoryLogger().log, metrics }).then(
      () => assert.fail("the pull should fail"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof PullError);
    assert.match(err.message, new RegExp(`could not pull sha256:${hex} \\(${SIZE} bytes\\) from any of 5 holders`));
    const said = Object.fromEntries(err.holders.map((h) => [h.node, h.outcomes.join("; ")]));
    assert.match(said.liar2!, /failed verification.*quarantined/);
    assert.match(said.stranger!, /answered 401/);
    assert.match(said.empty!, /answered 404/);
    assert.match(said.dead!, /ECONNREFUSED/);
    assert.match(said["wrong-size"]!, /sent 12 bytes for a blob of \d+, quarantined/);
    assert.match(err.details!, /^liar2: /m);
    await assert.rejects(stat(to), { code: "ENOENT" });
    assert.ok(!(await readdir(dir)).some((f) => f === `dest-${n}`));
    assert.deepEqual(quarantine.entries().map((e) => e.node).sort(), ["liar2", "wrong-size"]);
    assert.equal(await value(metrics.pulls, { outcome: "failed" }), 1);
  });

  it("fails at once with no holders, and never overwrites an existing file", async () => {
    const to = dest();
    await assert.rejects(pullBlob({ sha256: hex, size: SIZE, holders: [], token: TOKEN, dest: to, quarantine: new Quarantine(), log: memoryLogger().log }), /no holder to pull/);
    await assert.rejects(stat(to), { code: "ENOENT" });
    await writeFile(to, "mine");
    const a = await peer("a2");
    await assert.rejects(pullBlob({ sha256: hex, size: SIZE, holders: [a.holder], token: TOKEN, dest: to, quarantine: new Quarantine(), log: memoryLogger().log }), { code: "EEXIST" });
    assert.equal((await stat(to)).size, 4);
  });

  it("stops when its signal aborts, and leaves no file", async () => {
    const slow = await peer("slow", { limit: 2 << 20 });
    const ac = new AbortController();
    const metrics = new PeerMetrics();
    const to = dest();
    setTimeout(() => ac.abort(), 300);
    await assert.rejects(pullBlob({ sha256: hex, size: SIZE, holders: [slow.holder], token: TOKEN, dest: to, quarantine: new Quarantine(), log: memoryLogger().log, metrics, signal: ac.signal }), {
      name: "AbortError",
    });
    await assert.rejects(stat(to), { code: "ENOENT" });
    assert.equal(await value(metrics.pulls, { outcome: "aborted" }), 1);
  });

  it("fails at its deadline with what each holder did, and leaves no file", async () => {
    const slow = await peer("slower", { limit: 2 << 20 });
    const to = dest();
    const err = await pullBlob({ sha256: hex, size: SIZE, holders: [slow.holder], token: TOKEN, dest: to, quarantine: new Quarantine(), log: memoryLogger().log, timeoutMs: 300 }).then(
      () => assert.fail("the pull should time out"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof PullError);
    assert.match(err.message, /within 300 ms/);
    await assert.rejects(stat(to), { code: "ENOENT" });
  });
});

describe("ordering holders", () => {
  const h = (node: string, zone: string): Holder => ({ node, zone, url: `http://${node}:7071` });
  const holders = [h("a", "z1"), h("b", "z2"), h("self", "z1"), h("c", "z1"), h("d", "z2"), h("e", "z3"), h("q", "z1")];
  const self = { node: "self", zone: "z1" };
  const quarantined = (n: string) => n === "q";

  it("puts holders in this node's zone first and never this node or a quarantined one", () => {
    for (let seed = 0; seed < 50; seed++) {
      const order = orderHolders(holders, self, quarantined, seeded(seed)).map((x) => x.node);
      assert.deepEqual(order.slice(0, 2).sort(), ["a", "c"]);
      assert.deepEqual(order.slice(2).sort(), ["b", "d", "e"]);
    }
  });

  it("never sends its token to a holder URL that is not a peer server's: credentials, a path, a query, a fragment, another scheme", () => {
    const bad = ["http://user:pw@evil:7071", "http://127.0.0.1:17999/anything?x=", "http://evil:7071/#frag", "http://evil:7071?x", "file:///etc/passwd", "gopher://evil:70", "not a url", "http://evil:7071/v1/blobs"];
    const listed = [h("a", "z1"), ...bad.map((url, i) => ({ node: `bad-${i}`, zone: "z1", url }))];
    assert.deepEqual(orderHolders(listed, self, quarantined, seeded(1)).map((x) => x.node), ["a"]);
    for (const url of bad) assert.equal(isPeerUrl(url), false, url);
    for (const url of ["http://10.1.2.3:7071", "https://node-a.example:7071/", "http://[fd00::1]:7071"]) assert.equal(isPeerUrl(url), true, url);
  });

  it("is deterministic for a given random and spreads pullers over holders", () => {
    const once = orderHolders(holders, self, quarantined, seeded(7)).map((x) => x.node);
    assert.deepEqual(orderHolders(holders, self, quarantined, seeded(7)).map((x) => x.node), once);
    const firsts = new Map<string, number>();
    for (let seed = 0; seed < 1000; seed++) {
      const first = orderHolders(holders, self, quarantined, seeded(seed))[0]!.node;
      firsts.set(first, (firsts.get(first) ?? 0) + 1);
    }
    assert.deepEqual([...firsts.keys()].sort(), ["a", "c"]);
    for (const count of firsts.values()) assert.ok(count > 400, `uneven: ${JSON.stringify([...firsts])}`);
  });

  it("lists each node once and does not change its input", () => {
    const input = [h("a", "z1"), h("a", "z1"), h("b", "z2")];
    const copy = structuredClone(input);
    assert.deepEqual(orderHolders(input, self, () => false, () => 0.99).map((x) => x.node), ["a", "b"]);
    assert.deepEqual(input, copy);
    assert.deepEqual(orderHolders([h("self", "z1")], self, () => false, Math.random), []);
  });
});

describe("quarantine", () => {
  it("holds a node until its time is up, by the injected clock", () => {
    let now = 1000;
    const q = new Quarantine(() => now);
    q.add("a", 500);
    assert.ok(q.has("a"));
    assert.ok(!q.has("b"));
    q.add("a", 100); // never shortened
    now = 1499;
    assert.ok(q.has("a"));
    assert.deepEqual(q.entries(), [{ node: "a", until: 1500 }]);
    now = 1500;
    assert.ok(!q.has("a"));
    assert.deepEqual(q.entries(), []);
  });
});
