/**
 * Fan-out benchmark: N node agents (separate processes, own loopback addresses and stores, a
 * real password-protected redis-server as the directory) ask for the same fresh key at the
 * same moment. Prints the wall time until every node holds a verified copy, how many builds
 * ran (must be 1), and per node the peak of concurrent uploads (never above the cap) and how
 * many archive copies' worth of bytes it served (how evenly the load fanned out). Target: no
 * node serves more than 2× the upload cap in copies (one copy = the archive plus its layout).
 *
 *   node bench/distribution-fanout.ts [--nodes 32] [--upload-cap 4] [--java <JAVA_HOME>] [--json out.json] [--keep]
 *
 * --keep leaves the work directory (agent logs under logs/) and prints its path.
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

const { values } = parseArgs({ options: { nodes: { type: "string", default: "32" }, "upload-cap": { type: "string", default: "4" }, java: { type: "string" }, json: { type: "string" }, keep: { type: "boolean" } } });
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
        jdks: [java],
        args: ["--upload-cap", String(cap)],
        logDir: join(tmp, "logs"),
      }),
    );
  }
  const spec = { app, appArgs: [], jvmOptions: [], java, agent: agentJar, profile: "reference", training: { warmupUrls: [], timeoutMs: 600_000 } };
  process.stderr.write(`all ${n} ask for a fresh key at once…\n`);
  const t0 = performance.now();
  const results = await Promise.all(
    agents.map(async (a) => {
      const r = await a.ensure({ build: spec });
      if (r.status !== 200) throw new Error(`${a.spec.name}: ${JSON.stringify(r.body)}`);
      return Object.assign(r.body, { doneMs: Math.round(performance.now() - t0) });
    }),
  );
  const wallMs = Math.round(performance.now() - t0);
  const built = results.filter((r) => r.source === "built");
  const buildMs = Math.round(Number(built[0]?.ms ?? 0));
  const archiveBytes = Number(results[0]!.size);
  const perNode = await Promise.all(
    agents.map(async (a, i) => ({
      node: a.spec.name,
      source: String(results[i]!.source),
      doneMs: results[i]!.doneMs,
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
  const copies = (bytes: number) => Math.round((bytes / copy) * 10) / 10;
  const maxCopies = Math.max(...perNode.map((p) => copies(p.servedBytes)));
  const byServed = [...perNode].sort((a, b) => b.servedBytes - a.servedBytes);
  const row = (p: (typeof perNode)[number]) => ({ node: p.node, source: p.source, doneS: Math.round(p.doneMs / 100) / 10, servedMiB: Math.round(p.servedBytes / 1048576), archiveCopies: copies(p.servedBytes), peak: p.peakUploads, rejected503: p.rejected });
  const result = {
    date: new Date().toISOString(),
    nodes: n,
    uploadCap: cap,
    builds,
    wallMs,
    buildMs,
    distributeMs: wallMs - buildMs,
    archiveMiB: Math.round((archiveBytes / 1048576) * 10) / 10,
    copyMiB: Math.round((copy / 1048576) * 10) / 10,
    maxPeakConcurrentUploads: maxPeak,
    maxCopiesServed: maxCopies,
    builderCopiesServed: copies(perNode.find((p) => p.source === "built")?.servedBytes ?? 0),
    withinTwiceCap: maxCopies <= 2 * cap,
    nodesServing: perNode.filter((p) => p.servedBytes > 0).length,
    perNode: byServed.map(row),
  };
  const lines = [
    `| nodes | builds | wall time to all verified | of which build | distribution after build | archive (+ layout) | max concurrent uploads on one node (cap) | most copies one node served (≤ ${2 * cap}) |`,
    `| --- | --- | --- | --- | --- | --- | --- | --- |`,
    `| ${n} | ${builds} | ${(wallMs / 1000).toFixed(1)} s | ${(buildMs / 1000).toFixed(1)} s | ${((wallMs - buildMs) / 1000).toFixed(1)} s | ${result.archiveMiB} MiB (${result.copyMiB} MiB) | ${maxPeak} (${cap}) | ${maxCopies} |`,
    "",
    `builds = 1: ${builds === 1 ? "met" : "NOT met"}; most copies served by one node ≤ 2 × cap: ${result.withinTwiceCap ? "met" : "NOT met"}; ${result.nodesServing} of ${n} nodes served bytes`,
    "",
    "Per node (bytes served, in copies of archive + layout), busiest first:",
    ...result.perNode.map((t) => `  ${t.node} ${t.source.padEnd(6)} done at ${t.doneS.toFixed(1).padStart(6)} s: ${String(t.servedMiB).padStart(5)} MiB (${t.archiveCopies} copies), peak ${t.peak} concurrent, ${t.rejected503} answered 503`),
  ];
  process.stdout.write(`${lines.join("\n")}\n\n${JSON.stringify(result, null, 2)}\n`);
  if (values.json) await writeFile(values.json, JSON.stringify(result, null, 2) + "\n");
} finally {
  await Promise.all(agents.map((a) => a.kill()));
  await redis.stop();
  if (values.keep) process.stderr.write(`kept ${tmp} (agent logs in logs/)\n`);
  else await rm(tmp, { recursive: true, force: true });
}
