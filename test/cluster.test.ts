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
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { nodeMemory } from "../src/demo/memory.ts";
import { buildImages, clusterFetch, clusterPrefix, clusterUp, leftovers, runNetnsMounted, nodeArchive, peerPulls, podHitRate, type Cluster } from "../src/testenv/cluster.ts";
import { TEST_IMAGES } from "../src/testenv/images.ts";
import { CHART, classCacheReady, jarCheckSaid, demoClassCache, demoDeployment, installClasscache, json, ready, until, type Pod } from "../src/testenv/story.ts";

const NS = "shop";
type Spec = { template: { metadata?: { annotations?: Record<string, string>; labels?: Record<string, string> }; spec: { containers: { image: string }[] } } };
const REPLICAS = 3;
const log = (l: string): void => {
  if (process.env["CLASSCACHE_TEST_VERBOSE"]) process.stderr.write(`${l}\n`);
};

void describe("on a real cluster: two kubelet nodes, the Helm chart, an ENTRYPOINT image", { timeout: 40 * 60_000 }, () => {
  let c: Cluster;
  let dir: string;
  let original: unknown;
  let downed = false;
  let netnsMountBefore = false;

  before(async () => {
    dir = realpathSync(mkdtempSync(join(tmpdir(), "classcache-cluster-")));
    netnsMountBefore = await runNetnsMounted();
    const images = await buildImages(join(dir, "images"), ["app-17", "app-25", "agent", "valkey"]);
    c = await clusterUp(join(dir, "cluster"), { nodes: 2, log });
    await c.images(Object.values(images));
    await installClasscache(c);
    await c.kubectl(["create", "namespace", NS]);
    await c.kubectl(["apply", "-f", "-"], { input: JSON.stringify(demoDeployment(NS, REPLICAS)) });
    await c.kubectl(["-n", NS, "rollout", "status", "deployment/orders", "--timeout=300s"], { timeoutMs: 310_000 });
    original = (await json<{ spec: unknown }>(c, ["-n", NS, "get", "deployment", "orders"])).spec;
  });

  after(async () => {
    if (c && !downed) await c.down();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  void it("a ClassCache written for the original project: one build, the archive on both nodes through one pull, every pod from the archive", async () => {
    await c.kubectl(["apply", "-f", "-"], { input: JSON.stringify(demoClassCache(NS)) });
    await classCacheReady(c, NS, "orders", 15 * 60_000, log);
    // One build: its Job (the archive may be bound a moment before the Job is marked done).
    const jobs = await until("the build Job to succeed", 120_000, async () => {
      const list = await json<{ items: { metadata: { name: string }; status: { succeeded?: number; failed?: number } }[] }>(c, ["-n", NS, "get", "jobs"]);
      return list.items.every((j) => j.status.succeeded === 1) ? list : undefined;
    });
    assert.equal(jobs.items.length, 1, `one build: ${jobs.items.map((j) => j.metadata.name).join(", ")}`);

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
      const check = jarCheckSaid(p);
      assert.match(check, /"archive":true/, `${p.metadata.name}: the jar check's word: ${check}`);
      const jvm = await podHitRate(p.metadata.uid);
      assert.ok(jvm, `${p.metadata.name}: its JVM is a process here, with its perf counters`);
      const rate = jvm.hitRate;
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
    assert.equal(await peerPulls(c), 1, "exactly one archive pull between the nodes");

    // Memory: the pods of a node map one archive file; its read-only pages are shared (≈ 1/N each).
    for (const [node, pids] of byNode) {
      if (pids.length < 2) continue;
      const n = Number(node.slice("node-".length));
      const mem = await nodeMemory(node, await nodeArchive(c, n), pids);
      log(`${node}: ${pids.length} pods, RO Pss/Rss ${mem.roPssRssRatio} (ideal ${mem.idealRoRatio})`);
      assert.ok(Math.abs(mem.roPssRssRatio - 1 / pids.length) <= 0.05, `${node}: RO Pss/Rss ${mem.roPssRssRatio} is not within 5 points of 1/${pids.length}`);
    }
  });

  void it("the agent pods deleted mid-rollout: the new pods still start (without waiting for them)", async () => {
    await c.kubectl(["-n", "classcache-system", "delete", "pods", "-l", "app.kubernetes.io/component=agent", "--wait=false"]);
    await c.kubectl(["-n", NS, "rollout", "restart", "deployment/orders"]);
    await c.kubectl(["-n", NS, "rollout", "status", "deployment/orders", "--timeout=300s"], { timeoutMs: 310_000 });
    const pods = (await json<{ items: Pod[] }>(c, ["-n", NS, "get", "pods", "-l", "app=orders"])).items.filter(ready);
    assert.ok(pods.length >= REPLICAS, `${pods.length} Ready pods`);
  });

  void it("a new image (the app on JDK 25): a new build, and the Deployment rolls onto its AOT cache", async () => {
    const before = (await json<{ status: { archiveKey?: string } }>(c, ["-n", NS, "get", "classcache", "orders"])).status.archiveKey;
    await c.kubectl(["-n", NS, "set", "image", "deployment/orders", `app=${TEST_IMAGES["app-25"]}`]);
    await c.kubectl(["-n", NS, "patch", "classcache", "orders", "--type=merge", "-p", JSON.stringify({ spec: { app: { image: TEST_IMAGES["app-25"] } } })]);
    const key = await until("a new archive for the new image", 15 * 60_000, async () => {
      const st = (await json<{ status: { archiveKey?: string; conditions?: { type: string; status: string }[] } }>(c, ["-n", NS, "get", "classcache", "orders"])).status;
      return st.archiveKey && st.archiveKey !== before && st.conditions?.some((x) => x.type === "Ready" && x.status === "True") ? st.archiveKey : undefined;
    });
    const pods = await until("every pod on the new image to be Ready from the new archive", 10 * 60_000, async () => {
      const list = (await json<{ items: Pod[] }>(c, ["-n", NS, "get", "pods", "-l", "app=orders"])).items;
      const current = list.filter((p) => p.metadata.annotations?.["classcache.dev/archive"] === key);
      return current.length === REPLICAS && list.length === REPLICAS && current.every(ready) ? current : undefined;
    });
    for (const p of pods) {
      const jvm = await podHitRate(p.metadata.uid);
      assert.ok(jvm, `${p.metadata.name}: its perf counters`);
      log(`${p.metadata.name} (JDK 25): hit rate ${jvm.hitRate.toFixed(3)}`);
      assert.ok(jvm.hitRate >= 0.95, `${p.metadata.name}: hit rate ${jvm.hitRate.toFixed(3)} on JDK 25`);
    }
    const builds = (await json<{ items: unknown[] }>(c, ["-n", NS, "get", "jobs"])).items.length;
    assert.equal(builds, 2, "one build per image");
  });

  void it("Webhook mode through a real ReplicaSet: the pods the ReplicaSet creates are patched on admission and boot from the archive", async () => {
    const ns = "web";
    await c.kubectl(["create", "namespace", ns]);
    const d = demoDeployment(ns, 1) as { spec: { template: { metadata: { labels: Record<string, string> } } } };
    d.spec.template.metadata.labels["classcache.dev/inject"] = "orders";
    await c.kubectl(["apply", "-f", "-"], { input: JSON.stringify(d) });
    const cc = demoClassCache(ns) as { spec: Record<string, unknown> };
    cc.spec["patchMode"] = "Webhook";
    await c.kubectl(["apply", "-f", "-"], { input: JSON.stringify(cc) });
    await classCacheReady(c, ns, "orders", 15 * 60_000, log);
    // The workload's template is the user's; each new pod is patched by the webhook as it is created.
    const template = (await json<{ spec: { template: { spec: { initContainers?: unknown[] } } } }>(c, ["-n", ns, "get", "deployment", "orders"])).spec.template;
    assert.equal(template.spec.initContainers, undefined, "the template is not patched in Webhook mode");
    await c.kubectl(["-n", ns, "rollout", "restart", "deployment/orders"]);
    await c.kubectl(["-n", ns, "rollout", "status", "deployment/orders", "--timeout=300s"], { timeoutMs: 310_000 });
    const pod = await until("the restarted pod", 120_000, async () => {
      const list = (await json<{ items: Pod[] }>(c, ["-n", ns, "get", "pods", "-l", "app=orders"])).items;
      return list.length === 1 && ready(list[0]!) ? list[0] : undefined;
    });
    const check = jarCheckSaid(pod);
    assert.match(check, /"archive":true/, `the webhook patched the pod and it switched to the archive: ${check}`);
    const jvm = await podHitRate(pod.metadata.uid);
    assert.ok(jvm && jvm.hitRate >= 0.95, `hit rate ${jvm ? jvm.hitRate.toFixed(3) : "unknown"}`);
  });

  void it("the ClassCache deleted: the Deployment is exactly as before", async () => {
    await c.kubectl(["-n", NS, "delete", "classcache", "orders", "--wait=true", "--timeout=120s"], { timeoutMs: 130_000 });
    const now = (await json<{ spec: Spec }>(c, ["-n", NS, "get", "deployment", "orders"])).spec;
    // What the user did since: a restart (kubectl's annotation) and a new image; nothing of ours is left.
    const expected = structuredClone(original) as Spec;
    expected.template.spec.containers[0]!.image = TEST_IMAGES["app-25"];
    const restartedAt = now.template.metadata?.annotations?.["kubectl.kubernetes.io/restartedAt"];
    assert.ok(restartedAt, "the restart's annotation (the user's) is kept");
    expected.template.metadata = { ...expected.template.metadata, annotations: { ...expected.template.metadata?.annotations, "kubectl.kubernetes.io/restartedAt": restartedAt } };
    assert.deepEqual(now, expected);
  });

  void it("helm upgrade rolls the operator with the new values; helm uninstall removes what the chart installed", async () => {
    await c.helm(["upgrade", "classcache", CHART, "-n", "classcache-system", "--reuse-values", "--set", "logFormat=text", "--wait", "--timeout", "5m"]);
    const args = (await json<{ spec: { template: { spec: { containers: { args: string[] }[] } } } }>(c, ["-n", "classcache-system", "get", "deployment", "classcache-operator"])).spec.template.spec.containers[0]!.args;
    assert.equal(args[args.indexOf("--log-format") + 1], "text");
    await c.kubectl(["-n", "classcache-system", "rollout", "status", "deployment/classcache-operator", "--timeout=180s"], { timeoutMs: 190_000 });
    // Every ClassCache first (their finalizers need the operator), then the release.
    await c.kubectl(["delete", "classcache", "--all", "-A", "--wait=true", "--timeout=120s"], { timeoutMs: 130_000 });
    await c.helm(["uninstall", "classcache", "-n", "classcache-system", "--wait", "--timeout", "3m"]);
    const left = (await c.kubectl(["-n", "classcache-system", "get", "deployments,services", "-o", "name"])).split("\n").filter(Boolean);
    assert.deepEqual(left, ["service/classcache-directory"], "the chart's Deployments and Service are gone; the directory is the operator's (docs/chart.md: the namespace goes next)");
    const policies = (await c.kubectl(["get", "validatingadmissionpolicies", "-o", "name"])).split("\n").filter((l) => l.includes("classcache"));
    assert.deepEqual(policies, []);
    // The CRD stays (helm keeps crds/); the workloads are as their owners wrote them.
    await c.kubectl(["get", "crd", "classcaches.classcache.dev"]);
    // (The ClassCache's deletion rolled it back to the template its owner wrote: that roll ends.)
    await c.kubectl(["-n", NS, "rollout", "status", "deployment/orders", "--timeout=300s"], { timeoutMs: 310_000 });
    const pods = (await json<{ items: Pod[] }>(c, ["-n", NS, "get", "pods", "-l", "app=orders"])).items.filter((p) => ready(p) && !p.metadata.deletionTimestamp);
    assert.equal(pods.length, REPLICAS, "the app still runs");
  });

  void it("down leaves the machine as it was: no namespace, cgroup, mount, process or file of the cluster", async () => {
    const prefix = await clusterPrefix(c);
    downed = true;
    await c.down();
    assert.deepEqual(await leftovers(c.dir, prefix, netnsMountBefore), []);
  });
});
