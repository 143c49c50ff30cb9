/**
 * The real-cluster benchmark: pod time-to-ready with and without the archive, and the archive's
 * memory sharing across real pods, on a two-node cluster of real kubelets on this machine.
 *
 *   npm run -s bench:cluster -- [--runs 5] [--pods-per-node 3] [--jdk 17,25] [--json]
 *
 * Set-up as a user's: the chart installs classcache from its image; the demo app's Deployment
 * (ENTRYPOINT image, no command) gets a ClassCache with the reference agent in baked mode; the
 * build runs; the Deployment rolls onto the archive. Then, pinned to one node and interleaved,
 * `--runs` pods each of: the patched template (the archive, the agent baked in); the same
 * template with a ref nothing is bound to (the baseline: the same pod on a node without the
 * archive — the agent live, the app as it was); the patched template with the store through
 * the CSI driver instead of the hostPath (what baseline/restricted namespaces get); and the
 * Deployment's original template (the app alone, no agent, no init steps, for scale). Each is timed from creation to Ready as the API
 * server reports it (readiness probe every second, on /actuator/health). Last,
 * `--pods-per-node` patched pods on each node at once, and the archive's read-only Pss/Rss
 * across their JVMs (ideal 1/N). All of it once per JDK (`--jdk`: the demo app's image on JDK 17,
 * dynamic CDS; on JDK 25, the AOT cache), each in its own namespace on the same cluster.
 */
import { mkdtempSync, realpathSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { nodeMemory } from "../src/demo/memory.ts";
import { buildImages, clusterUp, nodeArchive, peerPulls, podHitRate, type Cluster } from "../src/testenv/cluster.ts";
import { TEST_IMAGES } from "../src/testenv/images.ts";
import { classCacheReady, jarCheckSaid, demoClassCache, demoDeployment, installClasscache, json, ready, until, type Pod } from "../src/testenv/story.ts";
import { median } from "../src/util/format.ts";

const { values } = parseArgs({ options: { runs: { type: "string", default: "5" }, "pods-per-node": { type: "string", default: "3" }, jdk: { type: "string", default: "17,25" }, json: { type: "boolean", default: false } } });
const RUNS = Number(values.runs);
const PER_NODE = Number(values["pods-per-node"]);
const JDKS = values.jdk.split(",").map((j) => j.trim());
for (const j of JDKS) if (j !== "17" && j !== "25") throw new Error(`--jdk takes 17, 25 or both (17,25), not "${j}"`);
const say = (l: string): void => {
  if (!values.json) process.stdout.write(`${l}\n`);
};

type Template = { metadata?: { labels?: Record<string, string>; annotations?: Record<string, string> }; spec: Record<string, unknown> };

/** A bare pod from a template, on one node, with labels no ReplicaSet selects. */
function podFrom(NS: string, t: Template, name: string, node: string): Record<string, unknown> {
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

/**
 * The patched template with the store through the node agent's CSI driver instead of the
 * hostPath — what a namespace enforcing baseline or restricted gets (ADR 0011): the same view,
 * the same archive; the difference is the plugin's mount on the pod's start path.
 */
function throughCsi(t: Template): Template {
  const spec = structuredClone(t.spec) as { volumes?: { name: string; hostPath?: unknown; csi?: unknown }[] };
  for (const v of spec.volumes ?? []) {
    if (v.name === "classcache-store" && v.hostPath) {
      delete v.hostPath;
      v.csi = { driver: "csi.classcache.dev", readOnly: true };
    }
  }
  return { ...t, spec };
}

/** Creates the pod and returns ms from the create call to the API server's Ready. */
async function timeToReady(c: Cluster, NS: string, pod: Record<string, unknown>): Promise<{ readyMs: number; pod: Pod }> {
  const t0 = Date.now();
  await c.kubectl(["create", "-f", "-"], { input: JSON.stringify(pod) });
  const name = (pod["metadata"] as { name: string }).name;
  const p = await until(`pod ${name} to be Ready`, 300_000, async () => {
    const o = await json<Pod>(c, ["-n", NS, "get", "pod", name]);
    return ready(o) ? o : undefined;
  }, 200);
  return { readyMs: Date.now() - t0, pod: p };
}

async function deletePods(c: Cluster, NS: string, names: string[]): Promise<void> {
  await c.kubectl(["-n", NS, "delete", "pod", ...names, "--grace-period=1", "--wait=true"], { timeoutMs: 180_000 });
}

async function podFacts(p: Pod): Promise<{ archive: boolean; hitRate: number | null; pid: number | undefined }> {
  const jvm = await podHitRate(p.metadata.uid);
  return { archive: /"archive":true/.test(jarCheckSaid(p)), hitRate: jvm ? Math.round(jvm.hitRate * 1000) / 1000 : null, pid: jvm?.pid };
}

/** One kind of pod's starts: the median time to Ready, every sample, the median JVM-up time. */
type Starts = { readyMs: number; samplesMs: number[]; jvmMs: number };
type Measured = {
  jdk: number;
  builds: number;
  pulls: number;
  baseline: Starts;
  archive: Starts;
  archiveCsi: Starts;
  ratio: number;
  plain: Starts;
  pods: { node: string; readyMs: number; hitRate: number | null; archive: boolean }[];
  memory: { node: string; pods: number; roPssRssRatio: number; idealRoRatio: number; savedMiB: number }[];
};

/** One JDK's measurement: its own namespace, Deployment, ClassCache, build and pods. */
async function measure(c: Cluster, jdk: string): Promise<Measured> {
  const NS = `bench-${jdk}`;
  const app = jdk === "25" ? "app-25" : "app-17";
  const pullsBefore = await peerPulls(c);
  await c.kubectl(["create", "namespace", NS]);
  const deployment = demoDeployment(NS, 2, TEST_IMAGES[app]);
  const original = (deployment["spec"] as { template: Template }).template;
  await c.kubectl(["apply", "-f", "-"], { input: JSON.stringify(deployment) });
  say(`JDK ${jdk}: ClassCache applied; waiting for the build and the roll …`);
  await c.kubectl(["apply", "-f", "-"], { input: JSON.stringify(demoClassCache(NS, TEST_IMAGES[app])) });
  const key = ((await classCacheReady(c, NS, "orders", 15 * 60_000)) as { status: { archiveKey: string } }).status.archiveKey;
  await c.kubectl(["-n", NS, "rollout", "status", "deployment/orders", "--timeout=600s"], { timeoutMs: 610_000 });
  const patched = (await json<{ spec: { template: Template } }>(c, ["-n", NS, "get", "deployment", "orders"])).spec.template;
  if (!patched.metadata?.annotations?.["classcache.dev/archive"]) throw new Error("the Deployment did not roll onto the archive");
  // Only the benchmark's pods from here on.
  await c.kubectl(["-n", NS, "scale", "deployment/orders", "--replicas=0"]);
  const builds = (await json<{ items: unknown[] }>(c, ["-n", NS, "get", "jobs"])).items.length;

  const samples = { plain: [] as number[], "no-archive": [] as number[], archive: [] as number[], "archive-csi": [] as number[] };
  const jvmMs = { plain: [] as number[], "no-archive": [] as number[], archive: [] as number[], "archive-csi": [] as number[] };
  const pods: Measured["pods"] = [];
  for (let i = 0; i < RUNS; i++) {
    for (const [kind, t] of [["plain", original], ["no-archive", withoutArchive(patched)], ["archive", patched], ["archive-csi", throughCsi(patched)]] as const) {
      const { readyMs, pod } = await timeToReady(c, NS, podFrom(NS, t, `${kind}-${i}`, "node-1"));
      const facts = await podFacts(pod);
      samples[kind].push(readyMs);
      const started = /process running for ([0-9.]+)/.exec(await c.kubectl(["-n", NS, "logs", `${kind}-${i}`, "-c", "app"]).catch(() => ""));
      if (started) jvmMs[kind].push(Math.round(Number(started[1]) * 1000));
      if (kind === "archive") pods.push({ node: "node-1", readyMs, hitRate: facts.hitRate, archive: facts.archive });
      say(`  JDK ${jdk} ${kind.padEnd(10)} run ${i + 1}: Ready in ${readyMs} ms (JVM up in ${started?.[1] ?? "?"} s)${kind === "plain" ? "" : `, hit rate ${facts.hitRate}, archive ${facts.archive}`}`);
      await deletePods(c, NS, [`${kind}-${i}`]);
    }
  }

  say(`JDK ${jdk}: ${PER_NODE} archive pods on each node at once, for memory …`);
  const memory: Measured["memory"] = [];
  const names: string[] = [];
  const started = await Promise.all(
    [1, 2].flatMap((n) => Array.from({ length: PER_NODE }, (_, j) => {
      const name = `mem-${n}-${j}`;
      names.push(name);
      return timeToReady(c, NS, podFrom(NS, patched, name, `node-${n}`)).then((r) => ({ n, ...r }));
    })),
  );
  for (const n of [1, 2]) {
    const mine = started.filter((s) => s.n === n);
    const facts = await Promise.all(mine.map((s) => podFacts(s.pod)));
    for (const [k, s] of mine.entries()) pods.push({ node: `node-${n}`, readyMs: s.readyMs, hitRate: facts[k]!.hitRate, archive: facts[k]!.archive });
    const pids = facts.map((f) => f.pid).filter((p): p is number => p !== undefined);
    const mem = await nodeMemory(`node-${n}`, await nodeArchive(c, n, key), pids);
    memory.push({ node: `node-${n}`, pods: pids.length, roPssRssRatio: mem.roPssRssRatio, idealRoRatio: mem.idealRoRatio, savedMiB: Math.round(mem.savedKb / 1024) });
    say(`  JDK ${jdk} node-${n}: ${pids.length} pods, archive RO Pss/Rss ${mem.roPssRssRatio} (ideal ${mem.idealRoRatio}), ${Math.round(mem.savedKb / 1024)} MiB saved`);
  }
  await deletePods(c, NS, names);

  const pulls = (await peerPulls(c)) - pullsBefore;
  const starts = (kind: keyof typeof samples): Starts => ({ readyMs: median(samples[kind]), samplesMs: samples[kind], jvmMs: median(jvmMs[kind]) });
  return {
    jdk: Number(jdk),
    builds,
    pulls,
    // The same patched pod, its node without the archive (the agent live): the archive's own gain.
    baseline: starts("no-archive"),
    archive: starts("archive"),
    ratio: Math.round((median(samples.archive) / median(samples["no-archive"])) * 1000) / 1000,
    // The same archive pod with the store through the CSI driver: the plugin's cost at start.
    archiveCsi: starts("archive-csi"),
    // The workload as its owner wrote it (no agent, no init steps), for scale.
    plain: starts("plain"),
    pods,
    memory,
  };
}

const dir = realpathSync(mkdtempSync(join(tmpdir(), "classcache-bench-cluster-")));
let c: Cluster | undefined;
try {
  say("building images and bringing up two kubelet nodes …");
  const images = await buildImages(join(dir, "images"), [...JDKS.map((j) => (j === "25" ? "app-25" : "app-17")), "agent", "valkey"]);
  c = await clusterUp(join(dir, "cluster"), { nodes: 2 });
  await c.images(Object.values(images));
  await installClasscache(c);
  const byJdk: Measured[] = [];
  for (const jdk of JDKS) byJdk.push(await measure(c, jdk));
  // The contract's top-level fields are the first JDK's; every JDK's are under byJdk.
  const result = { nodes: c.nodes, ...byJdk[0]!, byJdk };
  if (values.json) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  else {
    for (const r of byJdk) {
      say(`\nJDK ${r.jdk}: builds ${r.builds}, pulls between nodes ${r.pulls}`);
      say(`  time to Ready, median of ${RUNS} (node-1, interleaved): the patched pod without the archive ${r.baseline.readyMs} ms, with it ${r.archive.readyMs} ms → ${r.ratio}×; the unpatched app (no agent) ${r.plain.readyMs} ms`);
      say(`  JVM up (its own "process running for"): without ${r.baseline.jvmMs} ms, with ${r.archive.jvmMs} ms, unpatched ${r.plain.jvmMs} ms`);
      say(`  the archive pod with the store through the CSI driver instead of the hostPath: ${r.archiveCsi.readyMs} ms (hostPath ${r.archive.readyMs} ms)`);
    }
  }
} finally {
  if (c) await c.down().catch((err: unknown) => process.stderr.write(`cluster down failed: ${String(err)}\n`));
  rmSync(dir, { recursive: true, force: true });
}
