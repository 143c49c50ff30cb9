/**
 * End to end without a kubelet: a ClassCache in Webhook mode, a Pod created through the real
 * API server and patched by the operator's webhook over TLS (controller and webhook running apart,
 * each as its own service account, the webhook serving the controller's certificate from files), an archive built on one simulated
 * node and pulled peer-to-peer by another, and then the Pod's init and app containers run as
 * the API server stored them — command, args, env and mounts — on that second node. The JVM
 * boots from the archive with the reference agent's instrumentation working; before the node
 * has the archive, the same pod boots without it (agent live), never broken.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import { join } from "node:path";
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
import { Agent } from "../src/testenv/agents.ts";
import type { RunningRedis } from "../src/testenv/redis.ts";
import { cli, jdk } from "./support/cli.ts";
import { startOperatorCluster, until, type OperatorCluster } from "./support/operator.ts";

const STORE_ROOT = "/var/lib/classcache";

/**
 * A simulated node runs a container the way a kubelet would: its own mount namespace with the
 * pod's volumes at the paths the pod spec says (the node store read-only at /var/lib/classcache,
 * the pod's emptyDir at /classcache), the command and args as written, the env as written. The
 * image's binaries resolve on this machine: `java` is the app's JDK, `classcache` this CLI.
 */
function containerProcess(c: Container, node: { store: string }, emptyDir: string, javaHome: string, logFile: string): JvmProcess {
  const mountsFor = (m: { name: string; mountPath: string; readOnly?: boolean; subPath?: string }): [string, string, boolean] => {
    if (m.name === "classcache-store") return [node.store, m.mountPath, true];
    if (m.name === "classcache-args") return [m.subPath ? join(emptyDir, m.subPath) : emptyDir, m.mountPath, m.readOnly === true];
    throw new Error(`the simulated node does not know volume ${m.name}`);
  };
  const mounts = (c.volumeMounts ?? []).map(mountsFor);
  const bin: Record<string, string[]> = { classcache: [process.execPath, join(REPO, "src", "cli.ts")], java: [join(javaHome, "bin", "java")], cp: ["cp"] };
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
  return JvmProcess.start({ command: "unshare", args: ["--mount", "--propagation", "private", "--", "/bin/sh", "-c", script, "sh", ...exe, ...argv.slice(1)], env, logFile });
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
    // The operator made the cluster's keys; the node agents use them, as the DaemonSet would.
    const secret = async (name: string, key: string) => {
      const s = await until(`secret ${name}`, () => client.get<KubeObject & { data: Record<string, string> }>(Secrets, name, { namespace: SYSTEM_NAMESPACE }));
      return Buffer.from(s.data[key]!, "base64").toString();
    };
    const keys = join(dir, "keys");
    await mkdir(keys);
    await writeFile(join(keys, "signing.pem"), await secret("classcache-signing-key", "signing.pem"), { mode: 0o600 });
    await writeFile(join(keys, "signing.pub"), await secret("classcache-signing-key", "signing.pub"));
    await writeFile(join(keys, "token"), await secret("classcache-agent-token", "token"), { mode: 0o600 });
    const common = { directory: redis.url, tokenFile: join(keys, "token"), trust: join(keys, "signing.pub"), logDir: join(dir, "logs"), args: ["--root", STORE_ROOT] };
    nodeA = await Agent.start({ ...common, name: "node-a", address: "127.0.0.31", store: join(dir, "node-a", "store"), signingKey: join(keys, "signing.pem") });
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
    assert.deepEqual(inits.map((c) => c.name), ["classcache-agent-jar", "classcache-init"]);

    const runPod = async (name: string): Promise<{ p: JvmProcess; init: { archive: boolean; reason: string } }> => {
      const emptyDir = join(dir, "node-b", name);
      await mkdir(join(emptyDir, "agent"), { recursive: true }); // the kubelet creates subPath directories
      let init = { archive: false, reason: "" };
      for (const c of inits) {
        const out = await runToEnd(containerProcess(c, nodeB.spec, emptyDir, java17, join(dir, `${name}-${c.name}.log`)), c.name);
        if (c.name === "classcache-init") init = JSON.parse(out.split("\n").find((l) => l.startsWith("{"))!) as typeof init;
      }
      const p = containerProcess(appContainer, nodeB.spec, emptyDir, java17, join(dir, `${name}-app.log`));
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
    // operator put in the Job's Secret; the agent admits it, publishes it and binds the ref.
    const grant = await until("the build Job's grant", async () => {
      const s = await client.get<KubeObject & { data?: Record<string, string> }>(Secrets, `classcache-build-${ref!.slice(0, 10)}`, { namespace: "shop" }).catch(() => undefined);
      return s?.data?.token && Buffer.from(s.data.token, "base64").toString();
    });
    await writeFile(join(dir, "grant"), grant);
    const built = await cli(
      "build", `--app=${app}`, `--java=${java17}`, `--agent=${agentJar}`, "--profile=reference", `--store=${join(dir, "job-store")}`, `--root=${STORE_ROOT}`,
      `--ref=${ref}`, "--scope=shop", `--publish-to=unix:${join(nodeA.spec.store, "run", "agent.sock")}`, `--build-token-file=${join(dir, "grant")}`, "--json",
    );
    assert.equal(built.code, 0, built.stderr);
    await until("the ClassCache is Ready", async () => {
      const cc = await client.get<ClassCache>(ClassCaches, "shop", { namespace: "shop" });
      return cc.status?.conditions?.find((c) => c.type === "Ready")?.status === "True";
    }, 60_000);

    // 3. The cold pod's init step told node B it wants the ref: B pulls it from A, peer to peer.
    await until("node B holds the archive for the ref", () => Promise.resolve(existsSync(join(nodeB.spec.store, "refs", `${ref}.amd64`))), 120_000);
    const directory = new ValkeyDirectory({ url: redis.url });
    try {
      const events = (await directory.readEvents("0", 0)).map((e) => e.event);
      assert.ok(events.some((e) => e.type === "pulled" && e.node === "node-b" && e.from.includes("node-a")), JSON.stringify(events));
    } finally {
      await directory.close();
    }

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
