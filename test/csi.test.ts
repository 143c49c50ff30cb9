/**
 * Namespaces whose Pod Security level forbids hostPath (baseline, restricted) on real kubelets:
 * their pods reach the node store through the node agent's CSI driver (src/node/csi), which
 * mounts the pod's own namespace's view, read-only. A two-node cluster (scripts/cluster), the
 * chart with its defaults (csi.enabled), the demo app's ENTRYPOINT image with the reference agent.
 *
 * What must hold (docs/csi.md, docs/adr/0011): the API server's own Pod Security admission
 * accepts the patched pods and the build pods; the pods boot from the archive and share its pages;
 * a pod of one namespace sees nothing of another's; the plugin refuses a volume that asks for
 * another view; the agent pods killed while pods start delay them and fail none; without the
 * CSIDriver object, such a namespace gets today's behaviour and a condition that says so.
 */
import assert from "node:assert/strict";
import { mkdtempSync, realpathSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { DEFAULT_IMAGE } from "../scripts/image/build.ts";
import { nodeMemory } from "../src/demo/memory.ts";
import { buildImages, clusterPrefix, clusterUp, leftovers, nodeArchive, podHitRate, runNetnsMounted, type Cluster } from "../src/testenv/cluster.ts";
import { classCacheReady, demoClassCache, demoDeployment, installClasscache, jarCheckSaid, json, ready, until, type Pod } from "../src/testenv/story.ts";

const log = (l: string): void => {
  if (process.env["CLASSCACHE_TEST_VERBOSE"]) process.stderr.write(`${l}\n`);
};
const DRIVER = "csi.classcache.dev";
const REPLICAS = 3;
/** Each namespace's Pod Security level. */
const TENANTS = { locked: "restricted", basic: "baseline" } as const;
type Tenant = keyof typeof TENANTS;
type Volume = { name: string; csi?: { driver: string; volumeAttributes?: Record<string, string> }; hostPath?: unknown };
type Spec = { template: { metadata?: { annotations?: Record<string, string> } } };
type CC = { status: { archiveKey?: string; conditions?: { type: string; status: string; reason: string; message: string }[] } };

/** What the restricted level asks of every container: non-root, no privilege escalation, no capabilities, a seccomp profile. */
const RESTRICTED_POD = { runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, seccompProfile: { type: "RuntimeDefault" } };
const RESTRICTED_CONTAINER = { allowPrivilegeEscalation: false, capabilities: { drop: ["ALL"] } };

function tenantDeployment(ns: Tenant): Record<string, unknown> {
  const d = demoDeployment(ns, REPLICAS) as { spec: { template: { spec: { securityContext?: unknown; containers: Record<string, unknown>[] } } } };
  d.spec.template.spec.securityContext = RESTRICTED_POD;
  d.spec.template.spec.containers[0]!["securityContext"] = RESTRICTED_CONTAINER;
  return d;
}

/** A pod in `ns` that mounts the driver's volume with `attributes` and lists what it sees there (busybox sh globs: the image has no ls). */
function peekPod(ns: Tenant, name: string, attributes?: Record<string, string>): Record<string, unknown> {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, namespace: ns },
    spec: {
      restartPolicy: "Never",
      securityContext: RESTRICTED_POD,
      containers: [
        {
          name: "peek",
          image: DEFAULT_IMAGE,
          imagePullPolicy: "IfNotPresent",
          command: ["sh", "-c", 'for f in /store/* /store/*/* /store/*/*/* /store/*/*/*/*; do [ -e "$f" ] && echo "$f"; done; echo end'],
          securityContext: { ...RESTRICTED_CONTAINER, readOnlyRootFilesystem: true },
          volumeMounts: [{ name: "store", mountPath: "/store", readOnly: true }],
        },
      ],
      volumes: [{ name: "store", csi: { driver: DRIVER, readOnly: true, ...(attributes ? { volumeAttributes: attributes } : {}) } }],
    },
  };
}

void describe("Pod Security baseline and restricted namespaces: the store through the node agent's CSI driver", { timeout: 40 * 60_000 }, () => {
  let c: Cluster;
  let dir: string;
  let downed = false;
  let netnsMountBefore = false;
  const written: Partial<Record<Tenant, unknown>> = {};
  const keys: Partial<Record<Tenant, string>> = {};

  before(async () => {
    dir = realpathSync(mkdtempSync(join(tmpdir(), "classcache-csi-")));
    netnsMountBefore = await runNetnsMounted();
    const images = await buildImages(join(dir, "images"), ["app-17", "agent", "valkey"]);
    c = await clusterUp(join(dir, "cluster"), { nodes: 2, log });
    await c.images(Object.values(images));
    await installClasscache(c);
    for (const [ns, level] of Object.entries(TENANTS) as [Tenant, string][]) {
      await c.kubectl(["apply", "-f", "-"], { input: JSON.stringify({ apiVersion: "v1", kind: "Namespace", metadata: { name: ns, labels: { "pod-security.kubernetes.io/enforce": level } } }) });
      await c.kubectl(["apply", "-f", "-"], { input: JSON.stringify(tenantDeployment(ns)) });
    }
    for (const ns of Object.keys(TENANTS) as Tenant[]) {
      await c.kubectl(["-n", ns, "rollout", "status", "deployment/orders", "--timeout=300s"], { timeoutMs: 310_000 });
      written[ns] = (await json<{ spec: unknown }>(c, ["-n", ns, "get", "deployment", "orders"])).spec;
    }
  });

  after(async () => {
    if (c && !downed) await c.down();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  void it("restricted and baseline: the API server admits the patched pods and the build pods, which boot from the archive and share its pages", async () => {
    for (const ns of Object.keys(TENANTS) as Tenant[]) await c.kubectl(["apply", "-f", "-"], { input: JSON.stringify(demoClassCache(ns)) });
    for (const ns of Object.keys(TENANTS) as Tenant[]) {
      const cc = (await classCacheReady(c, ns, "orders", 15 * 60_000, log)) as CC;
      keys[ns] = cc.status.archiveKey;
      assert.ok(keys[ns], `${ns}: the ClassCache names its archive`);
      const jobs = (await json<{ items: { spec: { template: { spec: { volumes: Volume[] } } } }[] }>(c, ["-n", ns, "get", "jobs"])).items;
      assert.equal(jobs.length, 1, `${ns}: one build`);
      const buildVolumes = jobs[0]!.spec.template.spec.volumes;
      assert.ok(!buildVolumes.some((v) => v.hostPath), `${ns}: the build pod has no hostPath`);
      assert.deepEqual(buildVolumes.filter((v) => v.csi).map((v) => v.csi), [{ driver: DRIVER, readOnly: true, volumeAttributes: { view: "build" } }], `${ns}: the build reaches the agent's socket through the driver`);

      const pods = await until(`${ns}: every pod of the rolled Deployment to be Ready from the archive`, 10 * 60_000, async () => {
        const list = (await json<{ items: (Pod & { spec: { volumes?: Volume[] } })[] }>(c, ["-n", ns, "get", "pods", "-l", "app=orders"])).items;
        const current = list.filter((p) => p.metadata.annotations?.["classcache.dev/archive"] !== undefined);
        return current.length === REPLICAS && list.length === REPLICAS && current.every(ready) ? current : undefined;
      });
      const byNode = new Map<string, number[]>();
      for (const p of pods) {
        const vols = p.spec.volumes ?? [];
        assert.ok(!vols.some((v) => v.hostPath), `${p.metadata.name}: no hostPath`);
        assert.ok(vols.some((v) => v.csi?.driver === DRIVER && v.csi.volumeAttributes === undefined), `${p.metadata.name}: the store through the driver, its own scope`);
        assert.match(jarCheckSaid(p), /"archive":true/, `${ns}/${p.metadata.name}: the jar check's word: ${jarCheckSaid(p)}`);
        const jvm = await podHitRate(p.metadata.uid);
        assert.ok(jvm, `${p.metadata.name}: its JVM is a process here`);
        log(`${ns}/${p.metadata.name} on ${p.spec.nodeName}: hit rate ${jvm.hitRate.toFixed(3)}`);
        assert.ok(jvm.hitRate >= 0.95, `${ns}/${p.metadata.name}: hit rate ${jvm.hitRate.toFixed(3)} < 0.95`);
        byNode.set(p.spec.nodeName!, [...(byNode.get(p.spec.nodeName!) ?? []), jvm.pid]);
      }
      let measured = 0;
      for (const [node, pids] of byNode) {
        if (pids.length < 2) continue;
        const mem = await nodeMemory(node, await nodeArchive(c, Number(node.slice("node-".length)), keys[ns]), pids);
        log(`${ns} ${node}: ${pids.length} pods, RO Pss/Rss ${mem.roPssRssRatio} (ideal ${mem.idealRoRatio})`);
        assert.ok(Math.abs(mem.roPssRssRatio - 1 / pids.length) <= 0.05, `${ns} ${node}: RO Pss/Rss ${mem.roPssRssRatio} is not within 5 points of 1/${pids.length}`);
        measured++;
      }
      assert.ok(measured >= 1, `${ns}: ${REPLICAS} pods on two nodes put two on one`);
    }
  });

  void it("a pod of one namespace sees its own view only, and the plugin refuses a volume that asks for another", async () => {
    await c.kubectl(["apply", "-f", "-"], { input: JSON.stringify(peekPod("basic", "peek")) });
    const seen = await until("the peek pod's listing", 180_000, async () => {
      const p = await json<Pod & { status: { phase?: string } }>(c, ["-n", "basic", "get", "pod", "peek"]);
      if (p.status.phase !== "Succeeded" && p.status.phase !== "Failed") return undefined;
      return (await c.kubectl(["-n", "basic", "logs", "peek"])).split("\n").filter(Boolean);
    });
    log(`peek saw ${seen.length} paths`);
    assert.equal(seen.at(-1), "end");
    // Its own namespace's archive is there (the listing works) …
    const own = basename(await nodeArchive(c, 1, keys.basic));
    assert.ok(seen.some((l) => l.endsWith(own)), `basic's own archive in its view: ${seen.join(" ")}`);
    // … and nothing of the other tenant's, though both nodes hold it.
    const theirs = basename(await nodeArchive(c, 1, keys.locked));
    assert.ok(!seen.some((l) => l.includes(theirs) || l.includes(keys.locked!)), `locked's archive or manifest visible to basic: ${seen.filter((l) => l.includes(theirs) || l.includes(keys.locked!)).join(" ")}`);
    assert.ok(!seen.some((l) => l.includes("/scopes/")), "no other view inside the view");

    // Asking for another view: refused by the plugin, nothing mounted, the pod does not start.
    for (const [name, attributes] of [["pry-ns", { namespace: "locked" }], ["pry-path", { view: "../locked" }]] as const) {
      await c.kubectl(["apply", "-f", "-"], { input: JSON.stringify(peekPod("basic", name, attributes)) });
      const why = await until(`${name}: the kubelet's FailedMount event`, 120_000, async () => {
        const events = (await json<{ items: { reason: string; message: string; involvedObject: { name: string } }[] }>(c, ["-n", "basic", "get", "events", "--field-selector", `involvedObject.name=${name}`])).items;
        return events.find((e) => e.reason === "FailedMount")?.message;
      });
      log(`${name}: ${why}`);
      assert.match(why, /InvalidArgument/, `${name}: ${why}`);
      const p = await json<Pod & { status: { phase?: string } }>(c, ["-n", "basic", "get", "pod", name]);
      assert.equal(p.status.phase, "Pending", `${name} never ran`);
      await c.kubectl(["-n", "basic", "delete", "pod", name, "--wait=true", "--timeout=120s"], { timeoutMs: 130_000 });
    }
  });

  void it("the agent pods killed while pods start: every pod starts, none fails", async () => {
    await c.kubectl(["-n", "classcache-system", "delete", "pods", "-l", "app.kubernetes.io/component=agent", "--wait=false"]);
    await c.kubectl(["-n", "locked", "rollout", "restart", "deployment/orders"]);
    await c.kubectl(["-n", "locked", "rollout", "status", "deployment/orders", "--timeout=600s"], { timeoutMs: 610_000 });
    const pods = (await json<{ items: (Pod & { metadata: { creationTimestamp: string } })[] }>(c, ["-n", "locked", "get", "pods", "-l", "app=orders"])).items.filter((p) => !p.metadata.deletionTimestamp);
    assert.equal(pods.filter(ready).length, REPLICAS);
    let longest = 0;
    for (const p of pods) {
      const st = p.status as { conditions?: { type: string; lastTransitionTime: string }[]; containerStatuses?: { restartCount: number }[]; initContainerStatuses?: { name: string; restartCount: number }[] };
      const readyAt = Date.parse(st.conditions!.find((x) => x.type === "Ready")!.lastTransitionTime);
      longest = Math.max(longest, readyAt - Date.parse(p.metadata.creationTimestamp));
      assert.ok((st.containerStatuses ?? []).every((s) => s.restartCount === 0) && (st.initContainerStatuses ?? []).every((s) => s.restartCount === 0), `${p.metadata.name}: nothing restarted`);
    }
    log(`agents killed: the longest pod start was ${longest} ms (creation to Ready, 1 s resolution)`);
    process.stdout.write(`# csi: with the agent pods killed as they started, the longest pod start was ${longest} ms\n`);
  });

  void it("without the CSIDriver object: today's behaviour, a condition that says so, the workload as written", async () => {
    await c.kubectl(["delete", "csidriver", DRIVER, "--wait=true"]);
    const cond = await until("the ClassCache to say why", 120_000, async () => {
      const st = (await json<CC>(c, ["-n", "locked", "get", "classcache", "orders"])).status;
      const w = st.conditions?.find((x) => x.type === "WorkloadPatched");
      return w?.reason === "PodSecurityForbidsHostPath" ? w : undefined;
    });
    assert.match(cond.message, /csi\.enabled/);
    await until("the Deployment to be as written", 120_000, async () => {
      const now = (await json<{ spec: Spec }>(c, ["-n", "locked", "get", "deployment", "orders"])).spec;
      // As written, and the restart the test did (kubectl's annotation).
      const expected = structuredClone(written.locked) as Spec;
      const restartedAt = now.template.metadata?.annotations?.["kubectl.kubernetes.io/restartedAt"];
      if (restartedAt) expected.template.metadata = { ...expected.template.metadata, annotations: { ...expected.template.metadata?.annotations, "kubectl.kubernetes.io/restartedAt": restartedAt } };
      try {
        assert.deepEqual(now, expected);
        return true;
      } catch {
        return undefined;
      }
    });
    await c.kubectl(["-n", "locked", "rollout", "status", "deployment/orders", "--timeout=300s"], { timeoutMs: 310_000 });
  });

  void it("down leaves the machine as it was", async () => {
    const prefix = await clusterPrefix(c);
    downed = true;
    await c.down();
    assert.deepEqual(await leftovers(c.dir, prefix, netnsMountBefore), []);
  });
});
