/**
 * The real-cluster benchmark: pod time-to-ready with and without the archive, and the archive's
 * memory sharing across real pods, on a two-node cluster of real kubelets on this machine.
 *
 *   npm run -s bench:cluster -- [--runs 5] [--pods-per-node 3] [--json]
 *
 * Set-up as a user's: the chart installs classcache from its image; the demo app's Deployment
 * (ENTRYPOINT image, no command) gets a ClassCache with the reference agent in baked mode; the
 * build runs; the Deployment rolls onto the archive. Then, pinned to one node and interleaved,
 * `--runs` pods each of: the patched template (the archive, the agent baked in); the same
 * template with a ref nothing is bound to (the baseline: the same pod on a node without the
 * archive — the agent live, the app as it was); and the Deployment's original template (the app
 * alone, no agent, no init steps, for scale). Each is timed from creation to Ready as the API
 * server reports it (readiness probe every second, on /actuator/health). Last,
 * `--pods-per-node` patched pods on each node at once, and the archive's read-only Pss/Rss
 * across their JVMs (ideal 1/N).
 */
import { mkdtempSync, realpathSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { nodeMemory } from "../src/demo/memory.ts";
import { buildImages, clusterUp, nodeArchive, peerPulls, podHitRate, type Cluster } from "../src/testenv/cluster.ts";
import { classCacheReady, jarCheckSaid, demoClassCache, demoDeployment, installClasscache, json, ready, until, type Pod } from "../src/testenv/story.ts";
import { median } from "../src/util/format.ts";

const { values } = parseArgs({ options: { runs: { type: "string", default: "5" }, "pods-per-node": { type: "string", default: "3" }, json: { type: "boolean", default: false } } });
const RUNS = Number(values.runs);
const PER_NODE = Number(values["pods-per-node"]);
const NS = "bench";
const say = (l: string): void => {
  if (!values.json) process.stdout.write(`${l}\n`);
};

type Template = { metadata?: { labels?: Record<string, string>; annotations?: Record<string, string> }; spec: Record<string, unknown> };

/** A bare pod from a template, on one node, with labels no ReplicaSet selects. */
function podFrom(t: Template, name: string, node: string): Record<string, unknown> {
  return { apiVersion: "v1", kind: "Pod", metadata: { name, namespace: NS, labels: { bench: "cluster" }, annotations: t.metadata?.annotations ?? {} }, spec: { ...t.spec, nodeName: node, restartPolicy: "Always" } };
}

/**
 * The patched template with a ref no archive is bound to: the same pod — the same init steps —
 * started the way a node without the archive starts it (the agent live, the app as it was).
 */
function withoutArchive(t: Template): Template {
  const spec = structuredClone(t.spec) as { initContainers?: { name: string; args?: string[] }[] };
  for (const c of spec.initContainers ?? []) {
    if (c.name === "classcache-init") c.args = c.args?.map((a) => (a.startsWith("--ref=") ? `--ref=${"0".repeat(64)}` : a));
  }
  return { ...t, spec: spec };
}

/** Creates the pod and returns ms from the create call to the API server's Ready. */
async function timeToReady(c: Cluster, pod: Record<string, unknown>): Promise<{ readyMs: number; pod: Pod }> {
  const t0 = Date.now();
  await c.kubectl(["create", "-f", "-"], { input: JSON.stringify(pod) });
  const name = (pod["metadata"] as { name: string }).name;
  const p = await until(`pod ${name} to be Ready`, 300_000, async () => {
    const o = await json<Pod>(c, ["-n", NS, "get", "pod", name]);
    return ready(o) ? o : undefined;
  }, 200);
  return { readyMs: Date.now() - t0, pod: p };
}

async function deletePods(c: Cluster, names: string[]): Promise<void> {
  await c.kubectl(["-n", NS, "delete", "pod", ...names, "--grace-period=1", "--wait=true"], { timeoutMs: 180_000 });
}

async function podFacts(p: Pod): Promise<{ archive: boolean; hitRate: number | null; pid: number | undefined }> {
  const jvm = await podHitRate(p.metadata.uid);
  return { archive: /"archive":true/.test(jarCheckSaid(p)), hitRate: jvm ? Math.round(jvm.hitRate * 1000) / 1000 : null, pid: jvm?.pid };
}

const dir = realpathSync(mkdtempSync(join(tmpdir(), "classcache-bench-cluster-")));
let c: Cluster | undefined;
try {
  say("building images and bringing up two kubelet nodes …");
  const images = await buildImages(join(dir, "images"), ["app-17", "agent", "valkey"]);
  c = await clusterUp(join(dir, "cluster"), { nodes: 2 });
  await c.images(Object.values(images));
  await installClasscache(c);
  await c.kubectl(["create", "namespace", NS]);
  const deployment = demoDeployment(NS, 2);
  const original = (deployment["spec"] as { template: Template }).template;
  await c.kubectl(["apply", "-f", "-"], { input: JSON.stringify(deployment) });
  say("ClassCache applied; waiting for the build and the roll …");
  await c.kubectl(["apply", "-f", "-"], { input: JSON.stringify(demoClassCache(NS)) });
  await classCacheReady(c, NS, "orders", 15 * 60_000);
  await c.kubectl(["-n", NS, "rollout", "status", "deployment/orders", "--timeout=600s"], { timeoutMs: 610_000 });
  const patched = (await json<{ spec: { template: Template } }>(c, ["-n", NS, "get", "deployment", "orders"])).spec.template;
  if (!patched.metadata?.annotations?.["classcache.dev/archive"]) throw new Error("the Deployment did not roll onto the archive");
  // Only the benchmark's pods from here on.
  await c.kubectl(["-n", NS, "scale", "deployment/orders", "--replicas=0"]);
  const builds = (await json<{ items: unknown[] }>(c, ["-n", NS, "get", "jobs"])).items.length;

  const samples = { plain: [] as number[], "no-archive": [] as number[], archive: [] as number[] };
  const jvmMs = { plain: [] as number[], "no-archive": [] as number[], archive: [] as number[] };
  const pods: { node: string; readyMs: number; hitRate: number | null; archive: boolean }[] = [];
  for (let i = 0; i < RUNS; i++) {
    for (const [kind, t] of [["plain", original], ["no-archive", withoutArchive(patched)], ["archive", patched]] as const) {
      const { readyMs, pod } = await timeToReady(c, podFrom(t, `${kind}-${i}`, "node-1"));
      const facts = await podFacts(pod);
      samples[kind].push(readyMs);
      const started = /process running for ([0-9.]+)/.exec(await c.kubectl(["-n", NS, "logs", `${kind}-${i}`, "-c", "app"]).catch(() => ""));
      if (started) jvmMs[kind].push(Math.round(Number(started[1]) * 1000));
      if (kind === "archive") pods.push({ node: "node-1", readyMs, hitRate: facts.hitRate, archive: facts.archive });
      say(`  ${kind.padEnd(10)} run ${i + 1}: Ready in ${readyMs} ms (JVM up in ${started?.[1] ?? "?"} s)${kind === "plain" ? "" : `, hit rate ${facts.hitRate}, archive ${facts.archive}`}`);
      await deletePods(c, [`${kind}-${i}`]);
    }
  }
  const baseline = samples["no-archive"];
  const withArchive = samples.archive;

  say(`${PER_NODE} archive pods on each node at once, for memory …`);
  const memory: { node: string; pods: number; roPssRssRatio: number; idealRoRatio: number; savedMiB: number }[] = [];
  const names: string[] = [];
  const started = await Promise.all(
    [1, 2].flatMap((n) => Array.from({ length: PER_NODE }, (_, j) => {
      const name = `mem-${n}-${j}`;
      names.push(name);
      return timeToReady(c!, podFrom(patched, name, `node-${n}`)).then((r) => ({ n, ...r }));
    })),
  );
  for (const n of [1, 2]) {
    const mine = started.filter((s) => s.n === n);
    const facts = await Promise.all(mine.map((s) => podFacts(s.pod)));
    for (const [k, s] of mine.entries()) pods.push({ node: `node-${n}`, readyMs: s.readyMs, hitRate: facts[k]!.hitRate, archive: facts[k]!.archive });
    const pids = facts.map((f) => f.pid).filter((p): p is number => p !== undefined);
    const mem = await nodeMemory(`node-${n}`, await nodeArchive(c, n), pids);
    memory.push({ node: `node-${n}`, pods: pids.length, roPssRssRatio: mem.roPssRssRatio, idealRoRatio: mem.idealRoRatio, savedMiB: Math.round(mem.savedKb / 1024) });
    say(`  node-${n}: ${pids.length} pods, archive RO Pss/Rss ${mem.roPssRssRatio} (ideal ${mem.idealRoRatio}), ${Math.round(mem.savedKb / 1024)} MiB saved`);
  }
  await deletePods(c, names);

  const result = {
    nodes: c.nodes,
    builds,
    pulls: await peerPulls(c),
    // The same patched pod, its node without the archive (the agent live): the archive's own gain.
    baseline: { readyMs: median(baseline), samplesMs: baseline, jvmMs: median(jvmMs["no-archive"]) },
    archive: { readyMs: median(withArchive), samplesMs: withArchive, jvmMs: median(jvmMs.archive) },
    ratio: Math.round((median(withArchive) / median(baseline)) * 1000) / 1000,
    // The workload as its owner wrote it (no agent, no init steps), for scale.
    plain: { readyMs: median(samples.plain), samplesMs: samples.plain, jvmMs: median(jvmMs.plain) },
    pods,
    memory,
  };
  if (values.json) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  else {
    say(`\nbuilds ${result.builds}, pulls between nodes ${result.pulls}`);
    say(`time to Ready, median of ${RUNS} (node-1, interleaved): the patched pod without the archive ${result.baseline.readyMs} ms, with it ${result.archive.readyMs} ms → ${result.ratio}×; the unpatched app (no agent) ${result.plain.readyMs} ms`);
    say(`JVM up (its own "process running for"): without ${result.baseline.jvmMs} ms, with ${result.archive.jvmMs} ms, unpatched ${result.plain.jvmMs} ms`);
  }
} finally {
  if (c) await c.down().catch((err: unknown) => process.stderr.write(`cluster down failed: ${String(err)}\n`));
  rmSync(dir, { recursive: true, force: true });
}
