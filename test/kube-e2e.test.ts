/**
 * End to end without a kubelet: a ClassCache in Webhook mode, a Pod created through the real
 * API server and patched by the operator's webhook over TLS (controller and webhook running apart,
 * each as its own service account, the webhook serving the controller's certificate from files), an archive built on one simulated
 * node and pulled peer-to-peer by another, and then the Pod's init and app containers run as
 * the API server stored them — command, args, env and mounts — on that second node. The JVM
 * boots from the archive with the reference agent's instrumentation working; before the node
 * has the archive, the same pod boots without it (agent live), never broken. The pod sees only
 * its namespace's view of the node store: another tenant's archive on the same node is out of
 * its reach.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import { join, relative } from "node:path";
import { after, before, describe, it } from "node:test";
import { BOOT_STARTED } from "../src/build/train.ts";
import { referenceAgentJar, demoAppJar, REPO } from "../src/demo/fixtures.ts";
import { ValkeyDirectory } from "../src/directory/valkey.ts";
import { hitRate, readClassCounts } from "../src/jvm/hsperf.ts";
import { freePort } from "../src/jvm/launch.ts";
import { JvmProcess } from "../src/jvm/process.ts";
import type { KubeClient } from "../src/kube/client.ts";
import { Deployments, Pods, Secrets } from "../src/kube/resource.ts";
import type { KubeObject } from "../src/kube/types.ts";
import { ClassCaches, type ClassCache } from "../src/operator/api/v1.ts";
import { REF_ANNOTATION, SYSTEM_NAMESPACE } from "../src/operator/constants.ts";
import type { Container, PodSpec } from "../src/operator/inject.ts";
import type { Manifest } from "../src/archive/manifest.ts";
import { LocalStore } from "../src/store/store.ts";
import { Agent } from "../src/testenv/agents.ts";
import type { RunningRedis } from "../src/testenv/redis.ts";
import { cli, jdk } from "./support/cli.ts";
import { startOperatorCluster, until, type OperatorCluster } from "./support/operator.ts";

const STORE_ROOT = "/var/lib/classcache";

/**
 * Where a simulated node keeps a hostPath volume of the pod: under its own store directory for
 * a path under the store (the pod spec names the host's /var/lib/classcache/…), created if
 * missing, as DirectoryOrCreate has the kubelet do before any container starts.
 */
async function hostPathOn(node: { store: string }, spec: PodSpec, volume: string): Promise<string> {
  const v = (spec.volumes ?? []).find((x) => x.name === volume);
  const path = v?.hostPath?.path ?? "";
  const rel = relative(STORE_ROOT, path);
  assert.ok(path.startsWith(`${STORE_ROOT}/`) && !rel.startsWith(".."), `volume ${volume} is a hostPath under the store, not ${JSON.stringify(v)}`);
  const dir = join(node.store, rel);
  await mkdir(dir, { recursive: true });
  return dir;
}

/**
 * A simulated node runs a container the way a kubelet would: its own mount namespace with the
 * pod's volumes at the paths the pod spec says (the hostPath the spec names — its scope's view
 * of the node store — read-only at /var/lib/classcache, the pod's emptyDir at /classcache), the
 * command and args as written, the env as written. The image's binaries resolve on this
 * machine: `java` is the app's JDK, `classcache` this CLI. (Unlike a real container, it shares
 * this machine's root file system: what it must not see is judged under its mounts alone.)
 */
function containerProcess(c: Container, storeVolume: string, emptyDir: string, javaHome: string, logFile: string): JvmProcess {
  const mountsFor = (m: { name: string; mountPath: string; readOnly?: boolean; subPath?: string }): [string, string, boolean] => {
    if (m.name === "classcache-store") return [storeVolume, m.mountPath, true];
    if (m.name === "classcache-args") return [m.subPath ? join(emptyDir, m.subPath) : emptyDir, m.mountPath, m.readOnly === true];
    throw new Error(`the simulated node does not know volume ${m.name}`);
  };
  const mounts = (c.volumeMounts ?? []).map(mountsFor);
  const bin: Record<string, string[]> = { classcache: [process.execPath, join(REPO, "src", "cli.ts")], java: [join(javaHome, "bin", "java")], cp: ["cp"], sh: ["/bin/sh"] };
  const argv = [...(c.command ?? []), ...(c.args ?? [])];
  const exe = bin[argv[0]!];
  if (!exe) throw new Error(`the simulated node has no binary for ${argv[0]}`);
  // Mount in order (a subPath mount may sit inside another), read-only where the spec says so.
  const script = mounts
    .map((_, i) => `mkdir -p "$T${i}" && mount --bind "$S${i}" "$T${i}"${mounts[i]![2] ? ` && mount -o remount,bind,ro "$T${i}"` : ""}`)
    .concat(['exec "$@"'])
    .join(" && ");
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: process.env.HOME };
  mounts.forEach(([s, t], i) => {
    env[`S${i}`] = s;
    env[`T${i}`] = t;
  });
  for (const e of c.env ?? []) if (e.value !== undefined) env[e.name] = e.value;
  return JvmProcess.start({ command: "unshare", args: ["--mount", "--propagation", "private", "--", "/bin/sh", "-c", script, "sh", ...exe, ...argv.slice(1)], env, logFile, keepLines: 5000 });
}

/**
 * Another tenant's archive in a node's store: namespace rival's own app jar (its own bytes) and
 * archive, published and linked into rival's view through the store, as the agent would for
 * rival's pods. Modelled on the manifest of `ref`'s key, which the store holds.
 */
async function rivalArchive(storeDir: string, shopRef: string): Promise<Manifest & { ref: string }> {
  const store = await LocalStore.open(storeDir);
  const shop = (await store.getManifest((await store.getRef("shop", `${shopRef}.amd64`))!.key))!;
  const work = await store.workDir("rival");
  await writeFile(join(work, "app.jar"), `rival's app ${randomBytes(16).toString("hex")}`);
  await writeFile(join(work, "archive"), randomBytes(64 * 1024));
  const layout = await store.addLayout([{ path: "app.jar", tempPath: join(work, "app.jar") }]);
  const archive = await store.addBlob(join(work, "archive"));
  const key = randomBytes(32).toString("hex");
  const m: Manifest = {
    ...shop,
    key,
    inputs: { ...shop.inputs, scope: "rival" },
    layout,
    archive: { ...shop.archive, sha256: archive.sha256, size: archive.size, file: `blobs/sha256/${archive.sha256}` },
    runtime: { ...shop.runtime, launch: { kind: "jar", jar: `layouts/${layout.id}/app.jar` }, jvmOptions: ["-Xshare:auto", `-XX:SharedArchiveFile={root}/blobs/sha256/${archive.sha256}`] },
  };
  await store.publishManifest(m);
  const ref = randomBytes(32).toString("hex");
  await store.setRef("rival", `${ref}.amd64`, key, Date.now());
  return { ...m, ref };
}

async function runToEnd(p: JvmProcess, what: string): Promise<string> {
  const exit = await p.exited;
  assert.equal(exit.code, 0, `${what} exited with ${exit.code}:\n${p.tail()}`);
  return p.tail(200);
}

// Runs as root (as CI does): a simulated node mounts the pod's volumes in its own mount namespace.
describe("a webhook-patched Pod on a simulated node, from a P2P-pulled archive", () => {
  let cluster: OperatorCluster;
  let dir: string;
  let client: KubeClient;
  let redis: RunningRedis;
  let nodeA: Agent;
  let nodeB: Agent;
  let app: string;
  let agentJar: string;
  let java17: string;
  const jvms: JvmProcess[] = [];

  before(async () => {
    [app, agentJar, java17] = await Promise.all([demoAppJar(), referenceAgentJar(), jdk(17)]);
    // The controller and the webhook apart, as deploy/operator/ runs them, each as its own service account.
    cluster = await startOperatorCluster("e2e", ["shop"], { split: true });
    ({ client, redis, dir } = cluster);
  });

  after(async () => {
    for (const j of jvms) await j.stop(2000).catch(() => {});
    await nodeA?.stop();
    await nodeB?.stop();
    await cluster?.stop();
  });

  it("boots the Pod as the API server stored it: first without the archive, then from the archive its node pulled", async () => {
    // The workload, labelled for the webhook, and its ClassCache as a user writes it: the app's jar and the agent image's jar, the reference profile (baked).
    const port = await freePort();
    // The pod spec as the template has it: the ref covers the whole java command line, args included.
    const launch = { command: ["java", "-jar", app], args: [`--server.port=${port}`] };
    await client.create(
      Deployments,
      {
        metadata: { name: "shop", namespace: "shop" },
        spec: {
          selector: { matchLabels: { app: "shop" } },
          template: { metadata: { labels: { app: "shop", "classcache.dev/inject": "shop" } }, spec: { containers: [{ name: "app", image: "registry.example/shop:1.0", ...launch }] } },
        },
      },
      { namespace: "shop" },
    );
    await client.create(
      ClassCaches,
      {
        apiVersion: "classcache.dev/v1",
        kind: "ClassCache",
        metadata: { name: "shop", namespace: "shop" },
        spec: {
          workloadRef: { name: "shop" },
          app: { jarPath: app },
          agent: { image: "registry.example/reference-agent:1.0", jarPath: agentJar },
          profile: "reference",
          patchMode: "Webhook",
          valkey: cluster.valkey,
        },
      } as unknown as ClassCache,
      { namespace: "shop" },
    );
    // The operator made the cluster's keys; the node agents get the public one and the peer token, as the DaemonSet gives them.
    const secret = async (name: string, key: string) => {
      const s = await until(`secret ${name}`, () => client.get<KubeObject & { data: Record<string, string> }>(Secrets, name, { namespace: SYSTEM_NAMESPACE }));
      return Buffer.from(s.data[key]!, "base64").toString();
    };
    const keys = join(dir, "keys");
    await mkdir(keys);
    await writeFile(join(keys, "signing.pub"), await secret("classcache-signing-key", "signing.pub"));
    await writeFile(join(keys, "token"), await secret("classcache-agent-token", "token"), { mode: 0o600 });
    const common = { directory: redis.url, tokenFile: join(keys, "token"), trust: join(keys, "signing.pub"), logDir: join(dir, "logs"), args: ["--root", STORE_ROOT, "--want-retry", "1"] };
    nodeA = await Agent.start({ ...common, name: "node-a", address: "127.0.0.31", store: join(dir, "node-a", "store") });
    nodeB = await Agent.start({ ...common, name: "node-b", address: "127.0.0.32", store: join(dir, "node-b", "store") });

    // A Pod of the workload, created through the API server: the webhook patches it.
    const pod = await client.create<KubeObject & { spec: PodSpec }>(
      Pods,
      {
        metadata: { name: "shop-1", namespace: "shop", labels: { app: "shop", "classcache.dev/inject": "shop" } },
        spec: { containers: [{ name: "app", image: "registry.example/shop:1.0", ...launch }] },
      },
      { namespace: "shop" },
    );
    const ref = pod.metadata.annotations?.[REF_ANNOTATION];
    assert.match(ref ?? "", /^[0-9a-f]{64}$/, "the webhook patched the pod");
    const status = await until("the operator's ref", async () => (await client.get<ClassCache>(ClassCaches, "shop", { namespace: "shop" })).status?.ref);
    assert.equal(status, ref, "the operator and the webhook compute the same ref");
    const appContainer = pod.spec.containers[0]!;
    assert.deepEqual(appContainer.command, ["java", "@/classcache/launch.args"]);
    const inits = pod.spec.initContainers ?? [];
    assert.deepEqual(inits.map((c) => c.name), ["classcache-agent-jar", "classcache-init", "classcache-check"]);
    assert.equal(pod.spec.volumes?.find((v) => v.name === "classcache-store")?.hostPath?.path, `${STORE_ROOT}/scopes/shop`, "the pod mounts its namespace's view of the node store");

    const runPod = async (name: string): Promise<{ p: JvmProcess; init: { archive: boolean; reason: string; key?: string } }> => {
      const emptyDir = join(dir, "node-b", name);
      await mkdir(join(emptyDir, "agent"), { recursive: true }); // the kubelet creates subPath directories
      const store = await hostPathOn(nodeB.spec, pod.spec, "classcache-store");
      let init: { archive: boolean; reason: string; key?: string } = { archive: false, reason: "" };
      for (const c of inits) {
        const out = await runToEnd(containerProcess(c, store, emptyDir, java17, join(dir, `${name}-${c.name}.log`)), c.name);
        // The init step stages the archive; the jar check, in the app's image, decides.
        if (c.name !== "classcache-init" && c.name !== "classcache-check") continue;
        const said = JSON.parse(out.split("\n").find((l) => l.startsWith("{"))!) as typeof init;
        init = c.name === "classcache-init" ? said : { ...init, archive: said.archive, reason: said.archive ? init.reason : `${init.reason}; ${said.reason}` };
      }
      const p = containerProcess(appContainer, store, emptyDir, java17, join(dir, `${name}-app.log`));
      jvms.push(p);
      await p.waitForLine(BOOT_STARTED, 180_000);
      return { p, init };
    };
    const instrumented = async (): Promise<boolean> => {
      const res = await fetch(`http://127.0.0.1:${port}/api/owners`);
      await res.arrayBuffer();
      return res.headers.get("x-reference-agent-requests") === "1";
    };

    // 1. Node B has nothing yet: the pod starts as it would without classcache, agent live.
    const cold = await runPod("pod-cold");
    assert.equal(cold.init.archive, false, cold.init.reason);
    assert.equal(await instrumented(), true, "no archive on the node: the agent runs live, instrumentation is not lost");
    await cold.p.stop();

    // 2. The build, as the ClassCache's build Job runs it in the app's image on node A: built in
    // its own store for the namespace's scope, uploaded to node A's agent under the grant the
    // operator put in the Job's Secret and signed with the Secret's one-time build key; the agent
    // leaves it as an offer, the operator signs, publishes and binds it, node A adopts it.
    const jobSecret = await until("the build Job's grant", async () => {
      const s = await client.get<KubeObject & { data?: Record<string, string> }>(Secrets, `classcache-build-${ref!.slice(0, 10)}`, { namespace: "shop" }).catch(() => undefined);
      return s?.data?.token && s.data["build.pem"] ? s.data : undefined;
    });
    await writeFile(join(dir, "grant"), Buffer.from(jobSecret.token!, "base64"));
    await writeFile(join(dir, "build.pem"), Buffer.from(jobSecret["build.pem"]!, "base64"), { mode: 0o600 });
    const built = await cli(
      "build", `--app=${app}`, `--java=${java17}`, `--agent=${agentJar}`, "--profile=reference", `--store=${join(dir, "job-store")}`, `--root=${STORE_ROOT}`,
      `--ref=${ref}`, "--scope=shop", `--publish-to=unix:${join(nodeA.spec.store, "run", "agent.sock")}`, `--build-token-file=${join(dir, "grant")}`, `--build-key-file=${join(dir, "build.pem")}`, "--json",
    );
    assert.equal(built.code, 0, built.stderr);
    await until("the ClassCache is Ready", async () => {
      const cc = await client.get<ClassCache>(ClassCaches, "shop", { namespace: "shop" });
      return cc.status?.conditions?.find((c) => c.type === "Ready")?.status === "True";
    }, 60_000);

    // 3. The cold pod's init step told node B it wants the ref (through the agent's socket in the
    // pod's view): B pulls it from A, peer to peer, and links it into the namespace's view.
    await until("node B holds the archive for the ref", () => Promise.resolve(existsSync(join(nodeB.spec.store, "scopes", "shop", "refs", `${ref}.amd64`))), 120_000);
    const directory = new ValkeyDirectory({ url: redis.url });
    try {
      const events = (await directory.readEvents("0", 0)).map((e) => e.event);
      assert.ok(events.some((e) => e.type === "pulled" && e.node === "node-b" && e.from.includes("node-a")), JSON.stringify(events));
    } finally {
      await directory.close();
    }

    // Node B also holds another tenant's archive: namespace rival's app jar and archive, in the
    // same store, linked into rival's view by the store, as the agent does for rival's pods.
    const rival = await rivalArchive(nodeB.spec.store, ref!);

    // 4. The next pod on node B boots from the archive, with the baked instrumentation working.
    const warm = await runPod("pod-warm");
    assert.equal(warm.init.archive, true, warm.init.reason);
    const counts = await readClassCounts(warm.p.pid);
    assert.ok(counts, "the JVM's perf counters are readable");
    assert.ok(hitRate(counts) >= 0.9, `hit rate ${hitRate(counts)}: the JVM loaded its classes from the archive`);
    assert.equal(await instrumented(), true, "the baked instrumentation ran in this JVM");
    // Node B's agent reads the JVM's perf counters and reports them; the status shows what the workload really gets.
    const seen = await until("the workload's hit rate in status", async () => {
      const cc = await client.get<ClassCache>(ClassCaches, "shop", { namespace: "shop" });
      return cc.status?.workloadHitRate;
    }, 60_000);
    assert.ok(seen >= 0.9, `status.workloadHitRate ${seen}`);

    // 5. The attack: from inside shop's pod, list the store and open rival's jar and archive
    // wherever they are in the node's store. Only shop's own files are there.
    const own = JSON.parse(await readFile(join(nodeB.spec.store, "scopes", "shop", "manifests", `${warm.init.key}.json`), "utf8")) as Manifest;
    const paths = [
      own.archive.file,
      `layouts/${own.layout.id}/app.jar`,
      rival.archive.file,
      `layouts/${rival.layout.id}/app.jar`,
      `manifests/${rival.key}.json`,
      `refs/${rival.ref}.amd64`,
      `scopes/rival/${rival.archive.file}`,
      `scopes/rival/layouts/${rival.layout.id}/app.jar`,
      `../classcache/scopes/rival/${rival.archive.file}`,
    ].map((p) => `${STORE_ROOT}/${p}`);
    const probe = containerProcess(
      { name: "probe", image: appContainer.image, command: ["sh", "-c", 'cd "$0" && find . \\( -type f -o -type s \\) | sed "s|^\\./|seen |"; for p in "$@"; do if cat "$p" >/dev/null 2>&1; then echo "read $p"; else echo "denied $p"; fi; done', STORE_ROOT, ...paths], volumeMounts: appContainer.volumeMounts },
      await hostPathOn(nodeB.spec, pod.spec, "classcache-store"), join(dir, "node-b", "pod-warm"), java17, join(dir, "probe.log"),
    );
    await runToEnd(probe, "the probe");
    assert.deepEqual(probe.grep(/^seen /).map((l) => l.slice(5)).sort(), [
      own.archive.file,
      ...own.layout.files.map((f) => `layouts/${own.layout.id}/${f.path}`),
      `manifests/${own.key}.json`,
      `refs/${ref}.amd64`,
      "run/agent.sock",
    ].sort(), "the pod sees its own archive, layout, manifest and ref, and the agent's socket: nothing of rival's, nothing of the store's own");
    assert.deepEqual(probe.grep(/^(read|denied) /), [
      ...paths.slice(0, 2).map((p) => `read ${p}`),
      ...paths.slice(2).map((p) => `denied ${p}`),
    ], "it reads its own jar and archive, and none of rival's");
    assert.ok(existsSync(join(nodeB.spec.store, rival.archive.file)) && existsSync(join(nodeB.spec.store, "scopes", "rival", rival.archive.file)), "rival's archive is on the node all along");
    await warm.p.stop();
  });

  it("keeps a pod bootable when pod-init gets a bad ref or a flag it does not know (it never fails a pod)", async () => {
    const out = join(dir, "nonsense");
    await mkdir(out);
    const p = spawn(process.execPath, [join(REPO, "src", "cli.ts"), "pod-init", "--ref=not-a-ref", `--out=${out}`, "--fallback=-jar", "--fallback=/app.jar", "--from-a-newer-operator=1"], { stdio: "ignore" });
    const code = await new Promise<number | null>((r) => p.on("close", r));
    assert.equal(code, 0);
    assert.equal(await readFile(join(out, "launch.args"), "utf8"), "-jar\n/app.jar\n");
    assert.equal(await readFile(join(out, "jvm.args"), "utf8"), "\n");
  });
});
