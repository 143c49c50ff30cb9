/**
 * The whole story on real kubelets: a two-node cluster on this machine (scripts/cluster/cluster.sh:
 * containerd, runc, kubelet and kube-proxy per node), classcache installed with its Helm chart
 * from its own image, and the demo app as most Java images are — ENTRYPOINT ["java", "-jar",
 * "/app.jar"], no command in the pod spec — with the reference agent from its own image.
 *
 * A ClassCache written as for the original project (app.image + jarPath, no launch) → one build
 * Job in the app's image → the archive on both nodes (one build, one pull between the nodes'
 * agents over the pod network) → the Deployment rolls → every pod boots from the archive, its
 * instrumentation firing in baked mode, the archive's read-only pages shared between the pods of
 * a node. Then the ClassCache goes and the Deployment is exactly as it was.
 */
import assert from "node:assert/strict";
import { mkdtempSync, realpathSync, rmSync } from "node:fs";
import { readdir, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { DEFAULT_IMAGE } from "../scripts/image/build.ts";
import { nodeMemory } from "../src/demo/memory.ts";
import { hitRate, readClassCounts } from "../src/jvm/hsperf.ts";
import { PORTS } from "../src/operator/constants.ts";
import { buildImages, clusterFetch, clusterUp, podJvm, TEST_IMAGES, type Cluster } from "../src/testenv/cluster.ts";

const NS = "shop";
const REPLICAS = 3;
const log = (l: string): void => {
  if (process.env["CLASSCACHE_TEST_VERBOSE"]) process.stderr.write(`${l}\n`);
};

interface Pod {
  metadata: { name: string; uid: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  spec: { nodeName?: string };
  status: {
    podIP?: string;
    phase?: string;
    conditions?: { type: string; status: string }[];
    initContainerStatuses?: { name: string; state?: { terminated?: { message?: string; exitCode?: number } } }[];
  };
}

const deployment = {
  apiVersion: "apps/v1",
  kind: "Deployment",
  metadata: { name: "orders", namespace: NS },
  spec: {
    replicas: REPLICAS,
    selector: { matchLabels: { app: "orders" } },
    template: {
      metadata: { labels: { app: "orders" } },
      spec: {
        containers: [
          {
            name: "app",
            image: TEST_IMAGES["app-17"],
            imagePullPolicy: "IfNotPresent",
            ports: [{ containerPort: 8080 }],
            readinessProbe: { httpGet: { path: "/actuator/health", port: 8080 }, periodSeconds: 1 },
            resources: { requests: { cpu: "50m", memory: "256Mi" }, limits: { memory: "768Mi" } },
          },
        ],
      },
    },
  },
};

/** As a user of the original project wrote it: the app image and its jar, an agent, no launch. */
const classCache = {
  apiVersion: "classcache.dev/v1",
  kind: "ClassCache",
  metadata: { name: "orders", namespace: NS },
  spec: {
    workloadRef: { kind: "Deployment", name: "orders" },
    app: { image: TEST_IMAGES["app-17"], jarPath: "/app.jar" },
    agent: { image: TEST_IMAGES.agent, jarPath: "/agent/agent.jar" },
    profile: "reference",
    mode: "baked",
    training: { readyUrl: "http://localhost:8080/actuator/health", warmupUrls: ["http://localhost:8080/api/owners"] },
  },
};

async function json<T>(c: Cluster, args: string[]): Promise<T> {
  return JSON.parse(await c.kubectl([...args, "-o", "json"])) as T;
}

async function until<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    await sleep(1000);
  }
  throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}${last instanceof Error ? `: ${last.message}` : ""}`);
}

const ready = (p: Pod): boolean => p.status.conditions?.some((c) => c.type === "Ready" && c.status === "True") === true;

void describe("on a real cluster: two kubelet nodes, the Helm chart, an ENTRYPOINT image", { timeout: 40 * 60_000 }, () => {
  let c: Cluster;
  let dir: string;
  let original: unknown;

  before(async () => {
    dir = realpathSync(mkdtempSync(join(tmpdir(), "classcache-cluster-")));
    const images = await buildImages(join(dir, "images"), ["app-17", "agent", "valkey"]);
    c = await clusterUp(join(dir, "cluster"), { nodes: 2, log });
    await c.images(Object.values(images));
    const [repository, tag] = [DEFAULT_IMAGE.slice(0, DEFAULT_IMAGE.lastIndexOf(":")), DEFAULT_IMAGE.slice(DEFAULT_IMAGE.lastIndexOf(":") + 1)];
    await c.helm(["install", "classcache", join(import.meta.dirname, "../deploy/chart/classcache"), "-n", "classcache-system", "--create-namespace",
      "--set", `image.repository=${repository},image.tag=${tag},operator.replicas=1,webhook.replicas=1`, "--wait", "--timeout", "5m"]);
    await c.kubectl(["create", "namespace", NS]);
    await c.kubectl(["apply", "-f", "-"], { input: JSON.stringify(deployment) });
    await c.kubectl(["-n", NS, "rollout", "status", "deployment/orders", "--timeout=300s"], { timeoutMs: 310_000 });
    original = (await json<{ spec: unknown }>(c, ["-n", NS, "get", "deployment", "orders"])).spec;
  });

  after(async () => {
    if (c) await c.down();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  void it("a ClassCache written for the original project: one build, the archive on both nodes through one pull, every pod from the archive", async () => {
    await c.kubectl(["apply", "-f", "-"], { input: JSON.stringify(classCache) });
    await until("the ClassCache to be Ready", 15 * 60_000, async () => {
      const o = await json<{ status?: { conditions?: { type: string; status: string; reason: string; message: string }[]; ref?: string } }>(c, ["-n", NS, "get", "classcache", "orders"]);
      const r = o.status?.conditions?.find((x) => x.type === "Ready");
      log(`Ready: ${r?.status} ${r?.reason} ${r?.message}`);
      if (r?.reason === "BuildFailed" || r?.reason === "LaunchNotJava") throw new Error(`${r.reason}: ${r.message}`);
      return r?.status === "True" ? o : undefined;
    });
    const jobs = await json<{ items: { metadata: { name: string }; status: { succeeded?: number } }[] }>(c, ["-n", NS, "get", "jobs"]);
    assert.equal(jobs.items.length, 1, `one build: ${jobs.items.map((j) => j.metadata.name).join(", ")}`);
    assert.equal(jobs.items[0]!.status.succeeded, 1);

    // The Deployment rolls onto the archive; every new pod is Ready.
    const pods = await until("every pod of the rolled Deployment to be Ready from the archive", 10 * 60_000, async () => {
      const list = (await json<{ items: Pod[] }>(c, ["-n", NS, "get", "pods", "-l", "app=orders"])).items;
      const current = list.filter((p) => p.metadata.annotations?.["classcache.dev/archive"] !== undefined);
      return current.length === REPLICAS && list.length === REPLICAS && current.every(ready) ? current : undefined;
    });
    const nodes = new Set(pods.map((p) => p.spec.nodeName));
    assert.equal(nodes.size, 2, `the pods run on both nodes: ${[...nodes].join(", ")}`);

    // Every pod's JVM: its jar check switched it to the archive, and ≥ 95 % of its classes came from it.
    const byNode = new Map<string, number[]>();
    for (const p of pods) {
      const check = p.status.initContainerStatuses?.find((s) => s.name === "classcache-check")?.state?.terminated?.message ?? "";
      assert.match(check, /"archive":true/, `${p.metadata.name}: the jar check's word: ${check}`);
      const jvm = await podJvm(p.metadata.uid);
      assert.ok(jvm, `${p.metadata.name}: its JVM is a process here`);
      const counts = await readClassCounts(jvm.nsPid, `/proc/${jvm.pid}/root/tmp`);
      assert.ok(counts, `${p.metadata.name}: its perf counters`);
      const rate = hitRate(counts);
      log(`${p.metadata.name} on ${p.spec.nodeName}: hit rate ${rate.toFixed(3)}`);
      assert.ok(rate >= 0.95, `${p.metadata.name}: hit rate ${rate.toFixed(3)} < 0.95`);
      // Baked mode: the reference agent is off at run time, its instrumentation comes from the archive.
      const res = await clusterFetch(c, `http://${p.status.podIP}:8080/api/owners`);
      assert.ok("status" in res, `${p.metadata.name}: ${JSON.stringify(res)}`);
      // The agent's advice counts the requests it saw (the readiness probe's too): present and counting.
      const seen = Number(res.headers["x-reference-agent-requests"]);
      assert.ok(Number.isInteger(seen) && seen >= 1, `${p.metadata.name}: the agent's instrumentation fired (x-reference-agent-requests: ${res.headers["x-reference-agent-requests"]})`);
      byNode.set(p.spec.nodeName!, [...(byNode.get(p.spec.nodeName!) ?? []), jvm.pid]);
    }

    // One build, one pull: the node that did not build pulled the archive from the one that did.
    const agents = (await json<{ items: Pod[] }>(c, ["-n", "classcache-system", "get", "pods", "-l", "app.kubernetes.io/component=agent"])).items;
    let pulls = 0;
    for (const a of agents) {
      const m = await clusterFetch(c, `http://${a.status.podIP}:${PORTS.metrics}/metrics`);
      assert.ok("body" in m, JSON.stringify(m));
      const ok = /^classcache_archive_pulls_total\{result="ok"\} (\d+)/m.exec(m.body);
      pulls += ok ? Number(ok[1]) : 0;
    }
    assert.equal(pulls, 1, "exactly one archive pull between the nodes");

    // Memory: the pods of a node map one archive file; its read-only pages are shared (≈ 1/N each).
    for (const [node, pids] of byNode) {
      if (pids.length < 2) continue;
      const n = Number(node.slice("node-".length));
      const manifests = join(c.varLib(n), "classcache", "manifests");
      const archive = await archiveFileOf(manifests);
      const mem = await nodeMemory(node, join(c.varLib(n), "classcache", archive), pids);
      log(`${node}: ${pids.length} pods, RO Pss/Rss ${mem.roPssRssRatio} (ideal ${mem.idealRoRatio})`);
      assert.ok(Math.abs(mem.roPssRssRatio - 1 / pids.length) <= 0.05, `${node}: RO Pss/Rss ${mem.roPssRssRatio} is not within 5 points of 1/${pids.length}`);
    }
  });

  void it("the ClassCache deleted: the Deployment is exactly as before", async () => {
    await c.kubectl(["-n", NS, "delete", "classcache", "orders", "--wait=true", "--timeout=120s"], { timeoutMs: 130_000 });
    const now = (await json<{ spec: unknown }>(c, ["-n", NS, "get", "deployment", "orders"])).spec;
    assert.deepEqual(now, original);
  });
});

async function archiveFileOf(manifestsDir: string): Promise<string> {
  const files = (await readdir(manifestsDir)).filter((f) => f.endsWith(".json"));
  assert.equal(files.length, 1, `one archive on the node: ${files.join(", ")}`);
  const m = JSON.parse(await readFile(join(manifestsDir, files[0]!), "utf8")) as { archive: { file: string } };
  return m.archive.file;
}
