/**
 * Fan-out benchmark: N node agents (separate processes, own loopback addresses and stores, a
 * real password-protected redis-server as the directory) ask for the same fresh key at the
 * same moment. Prints the wall time until every node holds a verified copy, how many builds
 * ran (must be 1), and per node the peak of concurrent uploads (never above the cap) and how
 * many archive copies' worth of bytes it served (how evenly the load fanned out).
 *
 *   node bench/distribution-fanout.ts [--nodes 32] [--upload-cap 4] [--json out.json]
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { generateSigningKey } from "../src/archive/signing.ts";
import { demoAppJar, referenceAgentJar } from "../src/demo/fixtures.ts";
import { resolveJavaHome } from "../src/jvm/jdk.ts";
import { Agent } from "../src/testenv/agents.ts";
import { startRedis } from "../src/testenv/redis.ts";

const { values } = parseArgs({ options: { nodes: { type: "string", default: "32" }, "upload-cap": { type: "string", default: "4" }, java: { type: "string" }, json: { type: "string" } } });
const n = Number(values.nodes);
const cap = Number(values["upload-cap"]);

const tmp = await mkdtemp(join(tmpdir(), "classcache-fanout-"));
const agents: Agent[] = [];
const redis = await startRedis({ dir: join(tmp, "redis"), password: "bench-redis-password" });
try {
  const [app, agentJar, java] = await Promise.all([demoAppJar(), referenceAgentJar(), resolveJavaHome(values.java)]);
  const keys = generateSigningKey();
  await writeFile(join(tmp, "token"), "bench-token-0123456789abcdef");
  await writeFile(join(tmp, "key.pem"), keys.privatePem);
  await writeFile(join(tmp, "pub.pem"), keys.publicPem);
  process.stderr.write(`starting ${n} node agents…\n`);
  for (let i = 0; i < n; i++) {
    agents.push(
      await Agent.start({
        name: `node-${String(i).padStart(2, "0")}`,
        address: `127.0.1.${10 + i}`,
        zone: `zone-${"abcd"[i % 4]}`,
        store: join(tmp, `node-${i}`),
        directory: redis.url,
        tokenFile: join(tmp, "token"),
        trust: join(tmp, "pub.pem"),
        signingKey: join(tmp, "key.pem"),
        args: ["--upload-cap", String(cap)],
        logDir: join(tmp, "logs"),
      }),
    );
  }
  const spec = { app, appArgs: [], jvmOptions: [], java, agent: agentJar, profile: "reference", training: { warmupUrls: [], timeoutMs: 600_000 } };
  process.stderr.write(`all ${n} ask for a fresh key at once…\n`);
  const t0 = performance.now();
  const done: number[] = [];
  const results = await Promise.all(
    agents.map(async (a) => {
      const r = await a.ensure({ build: spec });
      done.push(performance.now() - t0);
      if (r.status !== 200) throw new Error(`${a.spec.name}: ${JSON.stringify(r.body)}`);
      return r.body;
    }),
  );
  const wallMs = Math.round(performance.now() - t0);
  const built = results.filter((r) => r.source === "built");
  const buildMs = Math.round(Number(built[0]?.ms ?? 0));
  const archiveBytes = Number(results[0]!.size);
  const perNode = await Promise.all(
    agents.map(async (a) => ({
      node: a.spec.name,
      peakUploads: await a.metric("classcache_peer_uploads_peak"),
      servedBytes: await a.metric("classcache_peer_served_bytes_total"),
      rejected: await a.metric("classcache_peer_uploads_rejected_total"),
    })),
  );
  let builds = 0;
  for (const a of agents) builds += await a.metric("classcache_builds_total");
  // One node's pull: the archive and the app's extracted layout.
  const copy = archiveBytes + Number(results[0]!.layoutSize);
  const maxPeak = Math.max(...perNode.map((p) => p.peakUploads));
  const top = [...perNode].sort((a, b) => b.servedBytes - a.servedBytes).slice(0, 5);
  const result = {
    date: new Date().toISOString(),
    nodes: n,
    uploadCap: cap,
    builds,
    wallMs,
    buildMs,
    distributeMs: wallMs - buildMs,
    archiveMiB: Math.round((archiveBytes / 1048576) * 10) / 10,
    maxPeakConcurrentUploads: maxPeak,
    withinTwiceCap: maxPeak <= 2 * cap,
    topServers: top.map((p) => ({ node: p.node, servedMiB: Math.round(p.servedBytes / 1048576), archiveCopies: Math.round((p.servedBytes / copy) * 10) / 10, peak: p.peakUploads, rejected503: p.rejected })),
  };
  const lines = [
    `| nodes | builds | wall time to all verified | of which build | distribution after build | archive | max concurrent uploads on one node (cap) |`,
    `| --- | --- | --- | --- | --- | --- | --- |`,
    `| ${n} | ${builds} | ${(wallMs / 1000).toFixed(1)} s | ${(buildMs / 1000).toFixed(1)} s | ${((wallMs - buildMs) / 1000).toFixed(1)} s | ${result.archiveMiB} MiB | ${maxPeak} (${cap}) |`,
    "",
    "Busiest uploaders (bytes served, in archive-sized copies):",
    ...result.topServers.map((t) => `  ${t.node}: ${t.servedMiB} MiB (${t.archiveCopies} copies), peak ${t.peak} concurrent, ${t.rejected503} requests answered 503`),
  ];
  process.stdout.write(`${lines.join("\n")}\n\n${JSON.stringify(result, null, 2)}\n`);
  if (values.json) await writeFile(values.json, JSON.stringify(result, null, 2) + "\n");
} finally {
  await Promise.all(agents.map((a) => a.kill()));
  await redis.stop();
  await rm(tmp, { recursive: true, force: true });
}
