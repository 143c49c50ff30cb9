/**
 * The node agent against the real thing: agents as separate processes on their own loopback
 * addresses and stores, a real password-protected redis-server with AOF as the directory, real
 * JVMs building real archives.
 */
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { mkdir, mkdtemp, open, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, afterEach, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { generateSigningKey, signerFromPem, signManifest } from "../src/archive/signing.ts";
import type { Manifest } from "../src/archive/manifest.ts";
import { ValkeyDirectory } from "../src/directory/valkey.ts";
import type { Stats } from "../src/stats/stats.ts";
import { startRedis, type RunningRedis } from "../src/testenv/redis.ts";
import { Agent, type AgentSpec } from "../src/testenv/agents.ts";
import { cli, jdk } from "./support/cli.ts";
import { fixtureJar } from "./support/fixtures.ts";
import { snapshot } from "./support/store.ts";

const run = promisify(execFile);
const CLI = join(import.meta.dirname, "..", "src", "cli.ts");

let tmp: string;
let redis: RunningRedis;
let java: string;
let slowJar: string;
let crashJar: string;
let tokenFile: string;
let trust: string;
let signingKey: string;
let agents: Agent[] = [];
let prefixN = 0; // also the Redis database of the current test

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), "classcache-dist-"));
  java = await jdk(25);
  [slowJar, crashJar] = await Promise.all([fixtureJar(java, "Slow", tmp), fixtureJar(java, "Crash", tmp)]);
  redis = await startRedis({ dir: join(tmp, "redis"), password: "s3cret-redis-password" });
  tokenFile = join(tmp, "token");
  await writeFile(tokenFile, "node-token-0123456789abcdef");
  const keys = generateSigningKey();
  signingKey = join(tmp, "signing.key");
  trust = join(tmp, "signing.pub");
  await writeFile(signingKey, keys.privatePem);
  await writeFile(trust, keys.publicPem);
});

afterEach(async () => {
  await Promise.all(agents.map((a) => a.kill()));
  // A killed agent's training JVM is not its child any more: end it by its (unique) store path.
  await run("pkill", ["-9", "-f", tmp]).catch(() => {});
  agents = [];
});

after(async () => {
  await redis.stop();
  await rm(tmp, { recursive: true, force: true });
});

/** Each test gets its own key space in the directory and its own agents. */
async function cluster(n: number, opts: { zones?: string[]; args?: (i: number) => string[]; builders?: boolean } = {}): Promise<{ agents: Agent[]; directory: string }> {
  // One Redis database per test (of the server's 16), so tests never see each other's keys.
  const directory = redis.url.replace(/\/\d+$/, `/${++prefixN}`);
  const started = await Promise.all(
    Array.from({ length: n }, (_, i) => {
      const spec: AgentSpec = {
        name: `n${prefixN}-${i}`,
        address: `127.0.0.${21 + i}`,
        zone: opts.zones?.[i] ?? "zone-a",
        store: join(tmp, `t${prefixN}`, `node-${i}`),
        directory,
        tokenFile,
        trust,
        signingKey: opts.builders === false ? undefined : signingKey,
        jdks: [java],
        args: opts.args?.(i),
        logDir: join(tmp, "logs"),
      };
      return Agent.start(spec);
    }),
  );
  agents.push(...started);
  return { agents: started, directory };
}

function slowApp(readyAfterMs: number) {
  return { classPath: [slowJar], mainClass: "Slow", appArgs: [String(readyAfterMs)], jvmOptions: [], java, training: { readyLog: "^ready$", warmupUrls: [], timeoutMs: 120_000 } };
}

describe("node agents", () => {
  it("build an archive exactly once when every node asks at the same moment, and the rest pull it", async () => {
    const { agents: nodes } = await cluster(4);
    const results = await Promise.all(nodes.map((a) => a.ensure({ build: slowApp(500) })));
    for (const r of results) assert.equal(r.status, 200, JSON.stringify(r.body));
    const sources = results.map((r) => r.body.source).sort();
    assert.deepEqual(sources, ["built", "pulled", "pulled", "pulled"]);
    assert.equal(new Set(results.map((r) => r.body.key)).size, 1);
    let builds = 0;
    for (const a of nodes) builds += await a.metric("classcache_builds_total");
    assert.equal(builds, 1);
    const again = await nodes[0]!.ensure({ key: results[0]!.body.key });
    assert.equal(again.body.source, "local");
  });

  it("let another node build when the builder dies mid-build", async () => {
    const { agents: nodes, directory } = await cluster(3);
    const spec = slowApp(6000);
    const pending = nodes.map((a) => a.ensure({ build: spec }).catch((e: unknown): { status: number; body: Record<string, unknown> } => ({ status: 0, body: { error: String(e) } })));
    const dir = new ValkeyDirectory({ url: directory });
    try {
      let builder: string | undefined;
      for (let i = 0; i < 200 && !builder; i++) {
        const events = await dir.readEvents("0", 0);
        builder = events.map((e) => e.event).find((e) => e.type === "build-started")?.node;
        if (!builder) await sleep(100);
      }
      assert.ok(builder, "a build started");
      await nodes.find((a) => a.spec.name === builder)!.kill();
      const results = await Promise.all(pending);
      const survivors = results.filter((_, i) => nodes[i]!.spec.name !== builder);
      for (const r of survivors) assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.deepEqual(survivors.map((r) => r.body.source).sort(), ["built", "pulled"]);
      const started = (await dir.readEvents("0", 0)).filter((e) => e.event.type === "build-started");
      assert.equal(started.length, 2, "one build by the dead node, one by its successor");
    } finally {
      await dir.close();
    }
  });

  it("record a failed build with backoff, and every waiter sees the failure instead of hanging", async () => {
    const { agents: nodes } = await cluster(3);
    const spec = { classPath: [crashJar], mainClass: "Crash", appArgs: [], jvmOptions: [], java, training: { warmupUrls: [], timeoutMs: 60_000 } };
    const results = await Promise.all(nodes.map((a) => a.ensure({ build: spec })));
    for (const r of results) {
      assert.equal(r.status, 503, JSON.stringify(r.body));
      // The builder reports its own error with the app's output; the waiters, the recorded failure.
      assert.match(`${String(r.body.error)} ${String(r.body.details)}`, /database url is not configured/);
    }
    let builds = 0;
    for (const a of nodes) builds += await a.metric("classcache_builds_total");
    assert.equal(builds, 1, "one attempt; the others did not retry at once");
    const later = await nodes[1]!.ensure({ build: spec });
    assert.equal(later.status, 503);
    assert.match(String(later.body.hint), /next attempt is allowed after/);
  });

  it("resume a pull from another holder when a holder dies mid-transfer", async () => {
    // Holders upload at 1 MB/s, so pulling the ~10 MB archive takes seconds: time to kill one.
    const { agents: nodes } = await cluster(3, { zones: ["zone-a", "zone-b", "zone-a"], args: (i) => (i < 2 ? ["--max-upload-rate", "1000000", "--upload-cap", "8"] : []) });
    const [a, b, c] = nodes as [Agent, Agent, Agent];
    const built = await a.ensure({ build: slowApp(100) });
    assert.equal(built.status, 200);
    const key = built.body.key as string;
    const pulledB = await b.ensure({ key });
    assert.equal(pulledB.body.source, "pulled");
    // c prefers a (same zone); kill a once bytes are flowing from it.
    const servedBefore = await a.metric("classcache_peer_served_bytes_total");
    const pulling = c.ensure({ key });
    for (let i = 0; i < 100 && (await a.metric("classcache_peer_served_bytes_total")) < servedBefore + 2_000_000; i++) await sleep(100);
    await a.kill();
    const r = await pulling;
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.ok((r.body.from as string[]).includes(b.spec.name), `resumed from ${b.spec.name}: ${JSON.stringify(r.body.from)}`);
    assert.ok((await c.metric("classcache_peer_resumes_total")) >= 1, "a Range resume happened");
  });

  it("reject a holder's corrupted bytes, quarantine it and pull from an honest one", async () => {
    const { agents: nodes } = await cluster(3, { zones: ["zone-a", "zone-b", "zone-a"] });
    const [a, b, c] = nodes as [Agent, Agent, Agent];
    const built = await a.ensure({ build: slowApp(100) });
    const key = built.body.key as string;
    await b.ensure({ key });
    // Flip bytes in a's copy of the archive: a now serves bad bytes under the right digest.
    const archive = built.body.archive as string;
    const fh = await open(archive, "r+");
    await fh.write(Buffer.from("corrupted!"), 0, 10, 4096);
    await fh.close();
    const r = await c.ensure({ key });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.ok((await c.metric("classcache_peer_quarantined_total")) >= 1);
    assert.ok(!(r.body.from as string[]).includes(a.spec.name) || (r.body.from as string[]).includes(b.spec.name));
  });

  it("never make visible an archive whose only holder serves corrupted bytes", async () => {
    const { agents: nodes } = await cluster(2);
    const [a, c] = nodes as [Agent, Agent];
    const built = await a.ensure({ build: slowApp(100) });
    const fh = await open(built.body.archive as string, "r+");
    await fh.write(Buffer.from("corrupted!"), 0, 10, 8192);
    await fh.close();
    const before = await snapshot(c.spec.store);
    const r = await c.ensure({ key: built.body.key });
    assert.notEqual(r.status, 200);
    assert.deepEqual(await readdir(join(c.spec.store, "manifests")), []);
    assert.deepEqual((await snapshot(c.spec.store)).filter((f) => f.startsWith("blobs/")), before.filter((f) => f.startsWith("blobs/")));
  });

  it("reject a manifest signed by an untrusted key, and download nothing it names", async () => {
    const { agents: nodes, directory } = await cluster(2);
    const [a, c] = nodes as [Agent, Agent];
    const built = await a.ensure({ build: slowApp(100) });
    const m = JSON.parse(JSON.stringify((await readManifest(a, built.body.key as string)))) as Manifest;
    const forged: Manifest = { ...m, key: "f".repeat(64) };
    const attacker = signerFromPem(generateSigningKey().privatePem);
    const dir = new ValkeyDirectory({ url: directory });
    try {
      await dir.publish(forged.key, signManifest(forged, attacker));
      await dir.announce(forged.key, { node: a.spec.name, url: a.peer, zone: "zone-a" }, 60_000);
    } finally {
      await dir.close();
    }
    const r = await c.ensure({ key: forged.key });
    assert.equal(r.status, 502);
    assert.match(String(r.body.error), /rejected: manifest signed by untrusted key/);
    assert.equal(await c.metric("classcache_peer_served_bytes_total"), 0);
    assert.equal(await a.metric("classcache_peer_served_bytes_total"), 0, "nothing was downloaded");
    assert.deepEqual(await readdir(join(c.spec.store, "manifests")), []);
  });

  it("answer 401 to a wrong or missing token, and 400 to malformed digests and path traversal", async () => {
    const { agents: nodes } = await cluster(1);
    const a = nodes[0]!;
    const built = await a.ensure({ build: slowApp(100) });
    const sha = (built.body.archive as string).split("/").pop()!;
    assert.equal((await fetch(`${a.peer}/v1/blobs/sha256:${sha}`)).status, 401);
    assert.equal((await fetch(`${a.peer}/v1/blobs/sha256:${sha}`, { headers: { authorization: "Bearer wrong-token-wrong-token" } })).status, 401);
    const ok = await fetch(`${a.peer}/v1/blobs/sha256:${sha}`, { headers: { authorization: `Bearer ${a.token}`, range: "bytes=0-15" } });
    assert.equal(ok.status, 206);
    assert.equal((await ok.arrayBuffer()).byteLength, 16);
    assert.equal((await a.ensure({ key: built.body.key }, "wrong-token-wrong-token")).status, 401);
    for (const path of [`/v1/blobs/sha256:${sha.toUpperCase()}`, `/v1/blobs/sha256:${sha.slice(1)}`, "/v1/blobs/sha256:../../manifests", `/v1/blobs/md5:${sha}`, "/v1/blobs/sha256%3a" + sha]) {
      const res = await rawGet(a.spec.address, path, a.token);
      assert.equal(res, 400, path);
    }
  });

  it("recover when the directory restarts, with every write it acknowledged still there", async () => {
    const { agents: nodes, directory } = await cluster(2);
    const [a, b] = nodes as [Agent, Agent];
    const built = await a.ensure({ build: slowApp(100) });
    const key = built.body.key as string;
    await redis.restart();
    const dir = new ValkeyDirectory({ url: directory });
    try {
      assert.ok(await dir.manifest(key), "the manifest survived the restart (AOF)");
      // Heartbeats re-announce the holder; a pull works again without restarting any agent.
      const r = await b.ensure({ key });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.equal(r.body.source, "pulled");
      const next = await a.ensure({ build: slowApp(101) });
      assert.equal(next.status, 200, "builds and publishes again after the restart");
    } finally {
      await dir.close();
    }
  });

  it("fail a pull into a full store with a clear error, leaving nothing half-written", async () => {
    assert.equal(process.getuid?.(), 0, "this test mounts a small tmpfs and needs root (CI runs as root)");
    const small = join(tmp, "small-store");
    await mkdir(small, { recursive: true });
    await run("mount", ["-t", "tmpfs", "-o", "size=4m", "tmpfs", small]);
    try {
      const { agents: nodes } = await cluster(1);
      const built = await nodes[0]!.ensure({ build: slowApp(100) });
      const tiny = await Agent.start({ ...nodes[0]!.spec, name: "tiny", address: "127.0.0.29", store: small });
      agents.push(tiny);
      const before = await snapshot(small);
      const r = await tiny.ensure({ key: built.body.key });
      assert.equal(r.status, 507, JSON.stringify(r.body));
      assert.match(String(r.body.error), /the store at .* is full/);
      assert.deepEqual(await snapshot(small), before);
    } finally {
      await Promise.all(agents.map((a) => a.kill()));
      await run("umount", ["-l", small]).catch(() => {});
    }
  });

  it("show up in classcache stats: the archive, its holders, the JVMs mapping it, their hit rate and the memory sharing saved", async () => {
    const { agents: [a, b], directory } = await cluster(2);
    const built = await a!.ensure({ build: slowApp(0) });
    assert.equal(built.status, 200, JSON.stringify(built.body));
    const key = String(built.body.key);
    assert.equal((await b!.ensure({ key })).status, 200);
    // Two JVMs on node b, started from its store exactly as verified; they keep running.
    const jvms = [0, 1].map(() => spawn(process.execPath, [CLI, "run", key, "--store", b!.spec.store], { stdio: "ignore" }));
    const stats = async (...extra: string[]) => {
      const r = await cli("stats", "--directory", directory, "--trust", trust, ...extra);
      assert.equal(r.code, 0, r.stderr);
      return r.stdout;
    };
    try {
      let s: Stats | undefined;
      for (let i = 0; i < 150; i++) {
        s = JSON.parse(await stats("--json")) as Stats;
        if (s.archives[0]?.jvms === 2 && s.archives[0].memory) break;
        await sleep(200);
      }
      const archive = s!.archives.find((x) => x.key === key)!;
      assert.equal(archive.verified, true, "signed by the cluster's key");
      assert.equal(archive.nodes, 2);
      assert.equal(archive.jvms, 2, "both JVMs of node b, seen by its agent in /proc");
      assert.ok(archive.liveHitRate! > 0.5, `live hit rate ${archive.liveHitRate}`);
      assert.deepEqual(
        s!.nodes.map((n) => [n.node, n.archives, n.jvms]),
        [
          [a!.spec.name, 1, 0],
          [b!.spec.name, 1, 2],
        ],
        "per node: what it holds and how many of its JVMs use it",
      );
      // The same figures on node b's /metrics, for Prometheus.
      assert.equal(await b!.metric("classcache_archive_jvms"), 2);
      assert.ok((await b!.metric("classcache_archive_live_hit_rate")) > 0.5);
      const m = archive.memory!;
      assert.ok(m.rssKb > 1024, `the archive is mapped and resident: ${JSON.stringify(m)}`);
      assert.ok(m.pssKb > 0 && m.pssKb <= m.rssKb, `Pss is a share of Rss: ${JSON.stringify(m)}`);
      assert.ok(m.savedKb > 0, `the two JVMs share some of the archive's pages: ${JSON.stringify(m)}`);
      const text = await stats();
      assert.match(text, new RegExp(`^${key.slice(0, 12)}\\s+yes\\s`, "m"));
      // A wrong directory is a clear error, not a stack trace.
      const bad = await cli("stats", "--directory", "redis://127.0.0.1:1/0");
      assert.ok(bad.code !== 0, "non-zero exit");
      assert.match(bad.stderr, /does not answer|cannot|refused/i);
    } finally {
      for (const j of jvms) j.kill("SIGKILL");
    }
  });
});

async function readManifest(a: Agent, key: string): Promise<Manifest> {
  return JSON.parse(await readFile(join(a.spec.store, "manifests", `${key}.json`), "utf8")) as Manifest;
}

/** A GET with the path sent exactly as written (fetch would normalise it). */
async function rawGet(host: string, path: string, token: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = connect(7071, host, () => s.write(`GET ${path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nConnection: close\r\n\r\n`));
    let data = "";
    s.on("data", (d) => (data += d.toString()));
    s.on("end", () => resolve(Number(/^HTTP\/1\.1 (\d+)/.exec(data)?.[1] ?? 0)));
    s.on("error", reject);
  });
}

