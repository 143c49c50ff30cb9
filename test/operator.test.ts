/**
 * The operator against a real kube-apiserver + etcd, a real Redis as the directory, and its
 * webhook called by the API server itself over TLS: resources written for cluster-classcache
 * reach the expected objects and status; a second pass writes nothing; an image change gives a
 * new ref and a new build; a stripped patch comes back; the finalizer puts the workload back.
 * The operator runs as its own service account, so the RBAC it ships is proven sufficient.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { after, before, describe, it } from "node:test";
import { signBinding, signedBy, signManifest, signerFromPem, trustStoreFromPems } from "../src/archive/signing.ts";
import { retireSigningKeys, rotateSigningKey } from "../src/operator/keys.ts";
import { sampleManifest } from "./support/manifest.ts";
import { ValkeyDirectory } from "../src/directory/valkey.ts";
import type { KubeClient } from "../src/kube/client.ts";
import { ApiError } from "../src/kube/errors.ts";
import { ConfigMaps, CSIDrivers, DaemonSets, Deployments, Jobs, Namespaces, NetworkPolicies, Pods, Secrets, StatefulSets } from "../src/kube/resource.ts";
import type { KubeObject } from "../src/kube/types.ts";
import { ClassCaches, type ClassCache } from "../src/operator/api/v1.ts";
import { ORIGINAL_LAUNCH_ANNOTATION, PATCHING_LABEL, POD_SECURITY_ENFORCE_LABEL, REF_ANNOTATION, SYSTEM_NAMESPACE } from "../src/operator/constants.ts";
import type { PodSpec } from "../src/operator/inject.ts";
import type { Operator } from "../src/operator/operator.ts";
import type { Stats } from "../src/stats/stats.ts";
import type { RunningRedis } from "../src/testenv/redis.ts";
import { startOperatorCluster, until, type OperatorCluster } from "./support/operator.ts";

interface Workload extends KubeObject {
  spec: { template: { metadata?: { labels?: Record<string, string>; annotations?: Record<string, string> }; spec: PodSpec } };
}

function deployment(name: string, namespace: string, container: Record<string, unknown>, labels: Record<string, string> = {}): Workload {
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name, namespace },
    spec: {
      selector: { matchLabels: { app: name } },
      template: { metadata: { labels: { app: name, ...labels } }, spec: { containers: [{ name: "app", image: "registry.example/shop:1.0", ...container }] } },
    } as Workload["spec"],
  };
}

function classCache(name: string, namespace: string, spec: Record<string, unknown>): ClassCache {
  return { apiVersion: "classcache.dev/v1", kind: "ClassCache", metadata: { name, namespace }, spec: spec as unknown as ClassCache["spec"] };
}

function condition(cc: ClassCache | undefined, type: string): { status: string; reason: string; message: string } | undefined {
  return cc?.status?.conditions?.find((c) => c.type === type);
}

/** The host paths a pod spec mounts. */
const hostPaths = (spec: PodSpec): string[] => (spec.volumes ?? []).flatMap((v) => (v.hostPath ? [v.hostPath.path] : []));

const JAVA_LAUNCH = { command: ["java", "-Xmx256m", "-jar", "/app.jar"], args: ["--server.port=8080"], env: [{ name: "JAVA_TOOL_OPTIONS", value: "-Dteam=shop" }] };

describe("the operator against a real API server, directory and webhook", () => {
  let cluster: OperatorCluster;
  let client: KubeClient;
  let redis: RunningRedis;
  let op: Operator;
  let valkey: OperatorCluster["valkey"];

  before(async () => {
    cluster = await startOperatorCluster("operator", ["shop", "web", "legacy"]);
    ({ client, redis, op, valkey } = cluster);
  });

  after(() => cluster?.stop());

  const getCc = (ns: string, name: string) => client.get<ClassCache>(ClassCaches, name, { namespace: ns });
  const getDeploy = (ns: string, name: string) => client.get<Workload>(Deployments, name, { namespace: ns });

  it("creates the managed directory and the node agents for a ClassCache with the original's defaults, and says the directory is not reachable yet", async (t) => {
    // The later cases use an external directory, which only one managed-directory ClassCache can block:
    // whatever happens here, it must be gone before they run.
    t.after(async () => {
      await client.delete(ClassCaches, "legacy", { namespace: "legacy" }).catch(() => undefined);
      await until("the legacy ClassCache is gone", () => getCc("legacy", "legacy").then(() => false, (e: unknown) => e instanceof ApiError && e.status === 404));
    });
    await client.create(Deployments, deployment("legacy", "legacy", JAVA_LAUNCH), { namespace: "legacy" });
    await client.create(ClassCaches, classCache("legacy", "legacy", { workloadRef: { name: "legacy" }, profile: "scouter", agent: { image: "registry.example/scouter:2.21" } }), { namespace: "legacy" });
    const sts = await until("the directory StatefulSet", () => client.get<KubeObject & { spec: { template: { spec: { containers: { args?: string[]; command?: string[] }[] } } } }>(StatefulSets, "classcache-directory", { namespace: SYSTEM_NAMESPACE }));
    assert.match(JSON.stringify(sts.spec.template.spec.containers[0]), /--appendonly/);
    await client.get(Secrets, "classcache-directory-auth", { namespace: SYSTEM_NAMESPACE });
    // The shared parts are applied one after another: the agents come after the directory.
    const ds = await until("the agent DaemonSet", () => client.get<KubeObject & { spec: { template: { spec: { volumes: { hostPath?: { path: string } }[] } } } }>(DaemonSets, "classcache-agent", { namespace: SYSTEM_NAMESPACE }));
    assert.deepEqual(ds.spec.template.spec.volumes.filter((v) => v.hostPath).map((v) => v.hostPath!.path), ["/var/lib/classcache"], "the only host path is the fixed store");
    const nps = await client.list(NetworkPolicies, { namespace: SYSTEM_NAMESPACE });
    assert.ok(nps.items.length >= 3, "network policies around the directory and the agents");
    const cc = await until("DirectoryUnavailable", async () => {
      const c = await getCc("legacy", "legacy");
      return condition(c, "ArchiveAvailable")?.reason === "DirectoryUnavailable" && c;
    });
    assert.ok(cc.metadata.finalizers?.includes("classcache.dev/cleanup"));
    // A new storage size cannot reach the existing directory: said, not retried forever.
    await client.patch(ClassCaches, "legacy", { spec: { valkey: { storageSize: "1Gi" } } }, { type: "merge", namespace: "legacy" });
    const resized = await until("DirectoryNotUpdated", async () => {
      const c = await getCc("legacy", "legacy");
      return condition(c, "Degraded")?.reason === "DirectoryNotUpdated" && c;
    });
    assert.match(condition(resized, "Degraded")!.message, /storageSize/);
    assert.equal(condition(cc, "WorkloadPatched")?.status, "True", "pods still get the patch: without an archive they start as before");
    // Deleting it puts the workload back even though the directory never answered.
    await client.delete(ClassCaches, "legacy", { namespace: "legacy" });
    await until("the ClassCache is gone", () => getCc("legacy", "legacy").then(() => false, (e: unknown) => e instanceof ApiError && e.status === 404));
    const restored = await getDeploy("legacy", "legacy");
    assert.deepEqual(restored.spec.template.spec.containers[0]!.command, JAVA_LAUNCH.command);
    assert.equal(restored.spec.template.spec.initContainers, undefined);
  });

  let ownedRef = "";

  it("patches an Owned-mode workload created after its ClassCache, starts one build Job, and a second pass writes nothing", async () => {
    await client.create(
      ClassCaches,
      classCache("shop", "shop", {
        workloadRef: { apiVersion: "apps/v1", kind: "Deployment", name: "shop" },
        app: { image: "registry.example/shop:1.0", jarPath: "/app.jar" },
        agent: { image: "registry.example/otel:2.10", jarPath: "/otel.jar" },
        profile: "otel",
        patchMode: "Owned",
        valkey,
      }),
      { namespace: "shop" },
    );
    const waiting = await until("WorkloadNotFound", async () => {
      const c = await getCc("shop", "shop");
      return condition(c, "WorkloadPatched")?.reason === "WorkloadNotFound" && c;
    });
    assert.equal(condition(waiting, "Ready")?.status, "False");
    await client.create(Deployments, deployment("shop", "shop", JAVA_LAUNCH), { namespace: "shop" });
    const cc = await until("patched and building", async () => {
      const c = await getCc("shop", "shop");
      return condition(c, "WorkloadPatched")?.reason === "Patched" && condition(c, "ArchiveAvailable")?.reason === "Building" && c;
    });
    ownedRef = cc.status!.ref!;
    assert.match(ownedRef, /^[0-9a-f]{64}$/);
    const d = await getDeploy("shop", "shop");
    const app = d.spec.template.spec.containers[0]!;
    assert.deepEqual(app.command, ["java", "-Xmx256m", "@/classcache/launch.args"]);
    assert.deepEqual(app.args, ["--server.port=8080"]);
    assert.equal(app.env?.find((e) => e.name === "JAVA_TOOL_OPTIONS")?.value, "-Dteam=shop");
    assert.deepEqual(d.spec.template.spec.initContainers?.map((c) => c.name), ["classcache-agent-jar", "classcache-init", "classcache-check"]);
    assert.deepEqual(hostPaths(d.spec.template.spec), ["/var/lib/classcache/scopes/shop"], "only its namespace's view of the node store");
    assert.equal(d.spec.template.metadata?.annotations?.[REF_ANNOTATION], ownedRef);
    assert.equal(d.metadata.labels?.[PATCHING_LABEL], undefined, "the admission policy's label goes with the patch's last write");
    const job = await client.get<KubeObject>(Jobs, `classcache-build-${ownedRef.slice(0, 10)}`, { namespace: "shop" });
    assert.equal(job.metadata.ownerReferences?.[0]?.kind, "ClassCache");
    // Server-side apply owns exactly our fields; re-running the reconcile changes nothing. (One
    // pass first: the pass after the Job's creation says "running" where the first said "created".)
    await op.reconciler!.reconcile("shop/shop", new AbortController().signal);
    await until("the status settled", async () => condition(await getCc("shop", "shop"), "ArchiveAvailable")?.message.endsWith("is running"));
    const before = [(await getDeploy("shop", "shop")).metadata.resourceVersion, (await getCc("shop", "shop")).metadata.resourceVersion];
    await op.reconciler!.reconcile("shop/shop", new AbortController().signal);
    await op.reconciler!.reconcile("shop/shop", new AbortController().signal);
    const afterRv = [(await getDeploy("shop", "shop")).metadata.resourceVersion, (await getCc("shop", "shop")).metadata.resourceVersion];
    assert.deepEqual(afterRv, before, "a second reconcile writes nothing");
    const managers = (await getDeploy("shop", "shop")).metadata.managedFields?.map((m) => `${m.manager}/${m.operation}`) ?? [];
    assert.ok(managers.includes("classcache-operator/Apply"), managers.join(", "));
  });

  it("reports the archive once a build binds the ref in the directory, signed with the cluster's key", async () => {
    const secret = await client.get<KubeObject & { data: Record<string, string> }>(Secrets, "classcache-signing-key", { namespace: SYSTEM_NAMESPACE });
    const signer = signerFromPem(Buffer.from(secret.data["signing.pem"]!, "base64").toString());
    const directory = new ValkeyDirectory({ url: redis.url });
    try {
      const manifest = sampleManifest({ scope: "shop", hitRate: 0.97 });
      const key = manifest.key;
      const bindingOf = (k: typeof key) => ({ scope: "shop", ref: ownedRef, arch: "amd64", key: k, owner: "", issuedAt: Date.now() });
      await directory.publish(key, signManifest(manifest, signer));
      await directory.announce(key, { node: "node-1", url: "http://10.0.0.1:7071", zone: "a" }, 60_000);
      await directory.bind(`${ownedRef}.amd64`, signBinding(bindingOf(key), signer));
      const cc = await until("Ready", async () => {
        const c = await getCc("shop", "shop");
        return condition(c, "Ready")?.status === "True" && c;
      });
      assert.equal(cc.status?.archiveKey, key);
      assert.equal(cc.status?.readyPeers, 1);
      assert.equal(cc.status?.hitRate, "97.0%");
      assert.equal(cc.status?.phase, "Ready");
      // A binding signed by another key is not believed.
      await directory.unbind(`${ownedRef}.amd64`);
      const forger = signerFromPem((await import("../src/archive/signing.ts")).generateSigningKey().privatePem);
      await directory.bind(`${ownedRef}.amd64`, signBinding(bindingOf(key), forger));
      await until("VerificationFailed", async () => condition(await getCc("shop", "shop"), "ArchiveAvailable")?.reason === "VerificationFailed");
      await directory.unbind(`${ownedRef}.amd64`);
      await directory.bind(`${ownedRef}.amd64`, signBinding(bindingOf(key), signer));
    } finally {
      await directory.close();
    }
  });

  it("rotates the signing key without rebuilding: what is bound is signed again with the new key, and the old one can be retired", async () => {
    const directory = new ValkeyDirectory({ url: redis.url });
    try {
      const bindingName = `${ownedRef}.amd64`;
      const before = await until("the archive bound above", async () => (await getCc("shop", "shop")).status?.archiveKey);
      const oldSigner = signedBy((await directory.binding(bindingName))!);
      const { current, previous } = await rotateSigningKey(client);
      assert.deepEqual(previous, [oldSigner]);
      // Agents are given both keys (and roll to read them); the operator signs again with the new one.
      const trustKeys = async () => [...trustStoreFromPems([(await client.get<KubeObject & { data: Record<string, string> }>(ConfigMaps, "classcache-trust", { namespace: SYSTEM_NAMESPACE })).data["signing.pub"]!]).keys()].sort();
      await until("both keys trusted", async () => JSON.stringify(await trustKeys()) === JSON.stringify([current, oldSigner].sort()));
      await until("the binding and the manifest signed with the new key", async () => signedBy((await directory.binding(bindingName)) ?? "") === current && signedBy((await directory.manifest(before)) ?? "") === current);
      const cc = await getCc("shop", "shop");
      assert.equal(cc.status?.archiveKey, before, "the same archive: nothing was rebuilt");
      assert.equal(condition(cc, "ArchiveAvailable")?.status, "True");
      // Retired: only the new key is trusted, and the archive stays available.
      assert.deepEqual((await retireSigningKeys(client)).retired, [oldSigner]);
      await until("only the new key trusted", async () => JSON.stringify(await trustKeys()) === JSON.stringify([current]));
      await until("still available", async () => condition(await getCc("shop", "shop"), "ArchiveAvailable")?.status === "True");
    } finally {
      await directory.close();
    }
  });

  it("builds again when the pods' jar checks find the app changed under the same image tag, and says so", async () => {
    const before = await until("the archive bound above", async () => (await getCc("shop", "shop")).status?.ref);
    // A pod of the workload whose jar check (the pod patch's last init step) found other jars
    // than the archive's: the tag was pushed again with new content. The kubelet reports it so.
    const actual = "7".repeat(64);
    const pod = await client.create<KubeObject>(Pods, { metadata: { name: "shop-repushed", namespace: "shop", labels: { app: "shop" }, annotations: { [REF_ANNOTATION]: before } }, spec: { containers: [{ name: "app", image: "registry.example/shop:1.0" }] } }, { namespace: "shop" });
    const terminated = { exitCode: 0, reason: "Completed", finishedAt: new Date().toISOString().replace(/\.\d+Z$/, "Z"), message: JSON.stringify({ archive: false, reason: "app-jar-differs", jar: "/app.jar", expected: "6".repeat(64), actual }) };
    await client.updateStatus(Pods, { ...pod, status: { phase: "Running", initContainerStatuses: [{ name: "classcache-check", image: "registry.example/shop:1.0", imageID: "", ready: true, restartCount: 0, state: { terminated } }] } }, { namespace: "shop" });
    const cc = await until("a new ref for the new content", async () => {
      const c = await getCc("shop", "shop");
      return c.status?.appDigest === actual && c.status.ref !== before && c;
    });
    assert.match(condition(cc, "Degraded")?.message ?? "", /1 pod\(s\) run an app jar .*777777777777.* other than the one their archive was built from/);
    assert.equal(condition(cc, "Degraded")?.reason, "AppChanged");
    await until("a build Job for it", () => client.get<KubeObject>(Jobs, `classcache-build-${cc.status!.ref!.slice(0, 10)}`, { namespace: "shop" }).catch(() => undefined));
    await client.delete(Pods, "shop-repushed", { namespace: "shop" });
  });

  it("puts back a patch that something else stripped, and builds again for a new image", async () => {
    const d = await getDeploy("shop", "shop");
    // A GitOps tool re-applies the template as written in git.
    const clean = deployment("shop", "shop", JAVA_LAUNCH);
    await client.update(Deployments, { ...clean, metadata: { ...clean.metadata, resourceVersion: d.metadata.resourceVersion } }, { namespace: "shop" });
    await until("re-patched", async () => (await getDeploy("shop", "shop")).spec.template.spec.initContainers?.some((c) => c.name === "classcache-init"));
    // A new image, written the way a user would: read, change, write, again on a conflict.
    await until("the new image written", async () => {
      const bumped = await getDeploy("shop", "shop");
      bumped.spec.template.spec.containers[0]!.image = "registry.example/shop:1.1";
      return client.update(Deployments, bumped, { namespace: "shop" }).then(() => true);
    });
    // spec.app.image pins the image for the original's resources; without it the pod's image decides.
    const cc = await getCc("shop", "shop");
    await client.patch(ClassCaches, "shop", { spec: { app: { image: "registry.example/shop:1.1" } } }, { type: "merge", namespace: "shop" });
    const next = await until("a new ref", async () => {
      const c = await getCc("shop", "shop");
      return c.status?.ref !== undefined && c.status.ref !== cc.status?.ref ? c : undefined;
    });
    await until("its build Job", () => client.get(Jobs, `classcache-build-${next.status!.ref!.slice(0, 10)}`, { namespace: "shop" }));
    assert.equal(condition(next, "ArchiveAvailable")?.status, "False", "nothing is built for the new image yet");
    assert.equal((await getDeploy("shop", "shop")).spec.template.metadata?.annotations?.[REF_ANNOTATION], next.status!.ref);
  });

  it("in Webhook mode leaves the template clean and patches the Pod the API server creates, over TLS", async () => {
    await client.create(Deployments, deployment("web", "web", JAVA_LAUNCH, { "classcache.dev/inject": "web" }), { namespace: "web" });
    await client.create(ClassCaches, classCache("web", "web", { workloadRef: { name: "web" }, patchMode: "Webhook", valkey }), { namespace: "web" });
    const cc = await until("InjectedByWebhook", async () => {
      const c = await getCc("web", "web");
      return condition(c, "WorkloadPatched")?.reason === "InjectedByWebhook" && c.status?.ref !== undefined ? c : undefined;
    });
    assert.equal((await getDeploy("web", "web")).spec.template.spec.initContainers, undefined, "the template stays as written");
    const pod = await client.create<KubeObject & { spec: PodSpec }>(
      Pods,
      { metadata: { name: "web-1", namespace: "web", labels: { app: "web", "classcache.dev/inject": "web" } }, spec: { containers: [{ name: "app", image: "registry.example/shop:1.0", ...JAVA_LAUNCH }] } },
      { namespace: "web" },
    );
    assert.equal(pod.metadata.annotations?.[REF_ANNOTATION], cc.status!.ref, "the webhook computes the same ref as the operator");
    assert.deepEqual(pod.spec.containers[0]!.command, ["java", "-Xmx256m", "@/classcache/launch.args"]);
    assert.deepEqual(pod.spec.initContainers?.map((c) => c.name), ["classcache-init", "classcache-check"]);
    assert.deepEqual(hostPaths(pod.spec), ["/var/lib/classcache/scopes/web"], "only its namespace's view of the node store");
    const plain = await client.create<KubeObject & { spec: PodSpec }>(Pods, { metadata: { name: "other", namespace: "web" }, spec: { containers: [{ name: "app", image: "x", ...JAVA_LAUNCH }] } }, { namespace: "web" });
    assert.deepEqual(plain.spec.containers[0]!.command, JAVA_LAUNCH.command, "unlabelled pods are untouched");
  });

  it("patches a workload whose image's ENTRYPOINT starts java once its build's probe recorded the launch, reaches Ready, and on deletion puts it back without a command", async () => {
    // As the original project's resources are written: app.image and app.jarPath, no command anywhere.
    const written = deployment("entry", "web", { args: ["--server.port=8080"], env: [{ name: "JAVA_TOOL_OPTIONS", value: "-Dteam=web" }] });
    await client.create(Deployments, written, { namespace: "web" });
    const original = (await getDeploy("web", "entry")).spec.template;
    await client.create(ClassCaches, classCache("entry", "web", { workloadRef: { name: "entry" }, app: { image: "registry.example/shop:1.0", jarPath: "/app.jar" }, valkey }), { namespace: "web" });
    const waiting = await until("LaunchUnknown until the probe has spoken", async () => {
      const c = await getCc("web", "entry");
      return condition(c, "WorkloadPatched")?.reason === "LaunchUnknown" && condition(c, "ArchiveAvailable")?.reason === "Building" && c;
    });
    assert.match(condition(waiting, "WorkloadPatched")!.message, /ENTRYPOINT starts the JVM, and build Job classcache-build-[0-9a-f]{10} records that launch/);
    assert.equal((await getDeploy("web", "entry")).spec.template.spec.initContainers, undefined, "nothing patched yet");
    const ref = waiting.status!.ref!;
    const job = `classcache-build-${ref.slice(0, 10)}`;
    const pod = (await client.get<KubeObject & { spec: { template: { spec: PodSpec } } }>(Jobs, job, { namespace: "web" })).spec.template.spec;
    const probe = pod.initContainers!.at(-1)!;
    assert.equal(probe.name, "classcache-probe");
    assert.equal(probe.command, undefined, "the image's own ENTRYPOINT runs");
    assert.deepEqual(probe.args, ["--server.port=8080"]);
    assert.match(probe.env!.find((e) => e.name === "JAVA_TOOL_OPTIONS")!.value!, /^-Dteam=web -javaagent:\/classcache-kit\/probe\/launch-probe\.jar=/);
    assert.ok(pod.containers[0]!.args!.includes("--launch-file=/classcache-probe/launch.json"));

    // What the kubelet would write when the probe ended (no kubelet here): its record as the init container's termination message.
    const java = "/opt/java/openjdk/bin/java";
    const recorded = [java, "-Xmx256m", "-XX:+UseSerialGC", "-jar", "/app.jar", "--server.port=8080"];
    await client.create(Pods, { metadata: { name: `${job}-p1`, namespace: "web", labels: { "batch.kubernetes.io/job-name": job } }, spec: { initContainers: [{ name: "classcache-probe", image: "x" }], containers: [{ name: "app", image: "x" }] } }, { namespace: "web" });
    const terminated = { exitCode: 0, reason: "Completed", message: JSON.stringify({ command: recorded, workingDir: "/" }), finishedAt: new Date().toISOString() };
    await client.patch(Pods, `${job}-p1`, { status: { phase: "Pending", initContainerStatuses: [{ name: "classcache-probe", image: "x", imageID: "", ready: false, restartCount: 0, state: { terminated } }] } }, { type: "merge", namespace: "web", subresource: "status" });
    const patched = await until("patched with the recorded launch", async () => {
      const c = await getCc("web", "entry");
      return condition(c, "WorkloadPatched")?.reason === "Patched" && c;
    });
    assert.deepEqual(patched.status?.launch, { ref, command: recorded });
    const d = await getDeploy("web", "entry");
    const app = d.spec.template.spec.containers[0]!;
    assert.deepEqual(app.command, [java, "-Xmx256m", "-XX:+UseSerialGC", "@/classcache/launch.args"]);
    assert.deepEqual(app.args, ["--server.port=8080"]);
    assert.equal(app.env?.find((e) => e.name === "JAVA_TOOL_OPTIONS")?.value, "-Dteam=web");
    assert.deepEqual(d.spec.template.spec.initContainers?.map((c) => c.name), ["classcache-init", "classcache-check"]);
    assert.ok(d.spec.template.spec.initContainers[0]!.args!.includes("--fallback=/app.jar"));

    // The build binds its archive: Ready.
    const secret = await client.get<KubeObject & { data: Record<string, string> }>(Secrets, "classcache-signing-key", { namespace: SYSTEM_NAMESPACE });
    const signer = signerFromPem(Buffer.from(secret.data["signing.pem"]!, "base64").toString());
    const directory = new ValkeyDirectory({ url: redis.url });
    try {
      const manifest = sampleManifest({ scope: "web", hitRate: 0.95 });
      await directory.publish(manifest.key, signManifest(manifest, signer));
      await directory.bind(`${ref}.amd64`, signBinding({ scope: "web", ref, arch: "amd64", key: manifest.key, owner: "", issuedAt: Date.now() }, signer));
    } finally {
      await directory.close();
    }
    const ready = await until("Ready", async () => {
      const c = await getCc("web", "entry");
      return condition(c, "Ready")?.status === "True" && c;
    });
    assert.equal(ready.status?.phase, "Ready");
    assert.deepEqual(ready.status?.launch, { ref, command: recorded }, "kept: the Job's pods are not read again");

    await client.delete(ClassCaches, "entry", { namespace: "web" });
    await until("the ClassCache is gone", () => getCc("web", "entry").then(() => false, (e: unknown) => e instanceof ApiError && e.status === 404));
    const restored = await getDeploy("web", "entry");
    assert.deepEqual(restored.spec.template, original, "exactly as written");
    assert.equal("command" in restored.spec.template.spec.containers[0]!, false);
    assert.equal(restored.metadata.annotations?.[ORIGINAL_LAUNCH_ANNOTATION], undefined);
    assert.equal(restored.metadata.labels?.[PATCHING_LABEL], undefined);
  });

  it("keeps archives within the namespace when a ClassCache asks for cluster sharing the admin did not allow", async () => {
    await client.create(Deployments, deployment("shared", "web", JAVA_LAUNCH, { "classcache.dev/inject": "shared" }), { namespace: "web" });
    await client.create(ClassCaches, classCache("shared", "web", { workloadRef: { name: "shared" }, patchMode: "Webhook", sharing: "Cluster", valkey }), { namespace: "web" });
    const cc = await until("ClusterSharingNotAllowed", async () => {
      const c = await getCc("web", "shared");
      return condition(c, "Degraded")?.reason === "ClusterSharingNotAllowed" && c;
    });
    assert.match(condition(cc, "Degraded")!.message, /--allow-cluster-sharing/);
  });

  it("refuses a ClassCache the CRD's rules cannot judge, through the validating webhook", async () => {
    const err = await client.create(ClassCaches, classCache("typo", "web", { workloadRef: { name: "web" }, profile: "open-telemetry", agent: { image: "x" } }), { namespace: "web" }).then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(err instanceof ApiError, "refused");
    assert.match(err.message, /open-telemetry/);
    assert.match(err.message, /otel|scouter|pinpoint/);
  });

  it("leaves workloads as written where the namespace's Pod Security level would refuse patched pods, and patches once it allows them", async () => {
    await client.create(Namespaces, { metadata: { name: "strict", labels: { [POD_SECURITY_ENFORCE_LABEL]: "baseline" } } });
    // What the API server does to a patched pod there: the node store's hostPath is refused.
    const patchedSpec = (await getDeploy("shop", "shop")).spec.template.spec;
    const refused = await client.create(Pods, { metadata: { name: "patched", namespace: "strict" }, spec: patchedSpec }, { namespace: "strict" }).then(() => undefined, (e: unknown) => e);
    assert.ok(refused instanceof ApiError && refused.status === 403, `the API server refuses it: ${String(refused)}`);
    assert.match(refused.message, /violates PodSecurity "baseline.*hostPath/);

    await client.create(Deployments, deployment("strict", "strict", JAVA_LAUNCH, { "classcache.dev/inject": "strict" }), { namespace: "strict" });
    await client.create(ClassCaches, classCache("strict", "strict", { workloadRef: { name: "strict" }, valkey }), { namespace: "strict" });
    const cc = await until("PodSecurityForbidsHostPath", async () => {
      const c = await getCc("strict", "strict");
      return condition(c, "WorkloadPatched")?.reason === "PodSecurityForbidsHostPath" && c;
    });
    assert.match(condition(cc, "WorkloadPatched")!.message, /enforces Pod Security "baseline".*enforce "privileged"/);
    assert.equal((await getDeploy("strict", "strict")).spec.template.spec.initContainers, undefined, "the template stays as written");
    assert.equal((await client.list(Jobs, { namespace: "strict" })).items.length, 0, "no build pod the API server would refuse");
    // The webhook adds nothing to the namespace's pods (it warns): they start as written, and start at all.
    const pod = await client.create<KubeObject & { spec: PodSpec }>(
      Pods,
      { metadata: { name: "strict-1", namespace: "strict", labels: { app: "strict", "classcache.dev/inject": "strict" } }, spec: { containers: [{ name: "app", image: "registry.example/shop:1.0", ...JAVA_LAUNCH }] } },
      { namespace: "strict" },
    );
    assert.deepEqual(pod.spec.containers[0]!.command, JAVA_LAUNCH.command);

    await client.patch(Namespaces, "strict", { metadata: { labels: { [POD_SECURITY_ENFORCE_LABEL]: "privileged" } } }, { type: "merge" });
    await until("patched once the namespace allows it", async () => condition(await getCc("strict", "strict"), "WorkloadPatched")?.reason === "Patched");
    assert.ok((await getDeploy("strict", "strict")).spec.template.spec.initContainers?.some((c) => c.name === "classcache-init"));
    await until("its build Job", async () => (await client.list(Jobs, { namespace: "strict" })).items.length === 1);
  });

  it("with the node agent's CSIDriver, a baseline namespace gets the store through it: the API server's Pod Security admits the patched pods and build pods; without it, as written again", async () => {
    const ns = "strict-csi";
    await client.create(Namespaces, { metadata: { name: ns, labels: { [POD_SECURITY_ENFORCE_LABEL]: "baseline" } } });
    await client.create(CSIDrivers, { metadata: { name: "csi.classcache.dev" }, spec: { attachRequired: false, podInfoOnMount: true, volumeLifecycleModes: ["Ephemeral"], fsGroupPolicy: "None" } });
    try {
      await client.create(Deployments, deployment(ns, ns, JAVA_LAUNCH, { "classcache.dev/inject": ns }), { namespace: ns });
      await client.create(ClassCaches, classCache(ns, ns, { workloadRef: { name: ns }, valkey }), { namespace: ns });
      await until("patched through the CSI driver", async () => condition(await getCc(ns, ns), "WorkloadPatched")?.reason === "Patched");
      const spec = (await getDeploy(ns, ns)).spec.template.spec;
      assert.deepEqual(spec.volumes?.filter((v) => v["csi"]).map((v) => v["csi"]), [{ driver: "csi.classcache.dev", readOnly: true }]);
      assert.ok(!spec.volumes?.some((v) => v.hostPath), "no host path");
      // The API server's own Pod Security admission takes the patched pod, the build pod and a webhook-patched pod.
      await client.create(Pods, { metadata: { name: "patched", namespace: ns }, spec }, { namespace: ns, dryRun: true });
      const job = await until("its build Job", async () => (await client.list<KubeObject & { spec: { template: { spec: PodSpec } } }>(Jobs, { namespace: ns })).items[0]);
      assert.deepEqual(job.spec.template.spec.volumes?.filter((v) => v["csi"]).map((v) => v["csi"]), [{ driver: "csi.classcache.dev", readOnly: true, volumeAttributes: { view: "build" } }]);
      await client.create(Pods, { metadata: { name: "build", namespace: ns }, spec: job.spec.template.spec }, { namespace: ns, dryRun: true });
      const hooked = await client.create<KubeObject & { spec: PodSpec }>(
        Pods,
        { metadata: { name: `${ns}-1`, namespace: ns, labels: { app: ns, "classcache.dev/inject": ns } }, spec: { containers: [{ name: "app", image: "registry.example/shop:1.0", ...JAVA_LAUNCH }] } },
        { namespace: ns, dryRun: true },
      );
      assert.ok(hooked.spec.volumes?.some((v) => (v["csi"] as { driver?: string } | undefined)?.driver === "csi.classcache.dev"), "the webhook patched the pod with the CSI volume");
    } finally {
      await client.delete(CSIDrivers, "csi.classcache.dev");
    }
    // Without the driver: the condition says so, and the workload is as written.
    const cc = await until("PodSecurityForbidsHostPath without the driver", async () => {
      const c = await getCc(ns, ns);
      return condition(c, "WorkloadPatched")?.reason === "PodSecurityForbidsHostPath" && c;
    });
    assert.match(condition(cc, "WorkloadPatched")!.message, /CSIDriver csi\.classcache\.dev\) is not installed.*csi\.enabled=true/);
    await until("the template as written", async () => (await getDeploy(ns, ns)).spec.template.spec.initContainers === undefined);
  });

  it("says why a build failed, in the build's own words from its pod's termination message", async () => {
    const ref = (await getCc("strict", "strict")).status!.ref!;
    const job = `classcache-build-${ref.slice(0, 10)}`;
    const spec = (await client.get<KubeObject & { spec: { template: { spec: PodSpec } } }>(Jobs, job, { namespace: "strict" })).spec.template.spec;
    const build = spec.containers[0]! as PodSpec["containers"][number] & { terminationMessagePolicy?: string; env?: { name: string; value?: string }[] };
    assert.equal(build.terminationMessagePolicy, "FallbackToLogsOnError");
    assert.ok(build.env?.some((e) => e.name === "CLASSCACHE_TERMINATION_LOG"), "classcache writes its error where the kubelet reads it");
    // What the kubelet and the Job controller would write (neither runs here): the pod's end, then the Job's.
    const said = "error: training failed: the app exited with status 1 before it was ready\nhint: its output is in the build log";
    await client.create(Pods, { metadata: { name: `${job}-x1`, namespace: "strict", labels: { "batch.kubernetes.io/job-name": job } }, spec: { containers: [{ name: build.name, image: "x" }] } }, { namespace: "strict" });
    await client.patch(
      Pods,
      `${job}-x1`,
      { status: { phase: "Failed", containerStatuses: [{ name: build.name, image: "x", imageID: "", ready: false, restartCount: 0, state: { terminated: { exitCode: 1, reason: "Error", message: said, finishedAt: new Date().toISOString() } } }] } },
      { type: "merge", namespace: "strict", subresource: "status" },
    );
    const now = new Date().toISOString();
    await client.patch(
      Jobs,
      job,
      {
        status: {
          startTime: now,
          failed: 1,
          conditions: [
            { type: "FailureTarget", status: "True", reason: "BackoffLimitExceeded", message: "Job has reached the specified backoff limit", lastTransitionTime: now, lastProbeTime: now },
            { type: "Failed", status: "True", reason: "BackoffLimitExceeded", message: "Job has reached the specified backoff limit", lastTransitionTime: now, lastProbeTime: now },
          ],
        },
      },
      { type: "merge", namespace: "strict", subresource: "status" },
    );
    const cc = await until("BuildFailed", async () => {
      const c = await getCc("strict", "strict");
      return condition(c, "ArchiveAvailable")?.reason === "BuildFailed" && c;
    });
    assert.match(condition(cc, "ArchiveAvailable")!.message, /failed: error: training failed: the app exited with status 1 before it was ready\nhint: its output is in the build log; it is not retried/);
    assert.equal(cc.status?.phase, "Failed");
  });

  it("serves its reconciles, work queue, admissions and ClassCaches on /metrics, and is ready", async () => {
    const base = `http://127.0.0.1:${await op.health.listening()}`;
    const ready = await fetch(`${base}/readyz`);
    assert.equal(ready.status, 200, await ready.text());
    const text = await (await fetch(`${base}/metrics`)).text();
    const value = (series: RegExp): number => text.split("\n").filter((l) => series.test(l)).reduce((a, l) => a + Number(l.split(" ").pop()), 0);
    assert.ok(value(/^classcache_controller_reconcile_total\{controller="classcache",result="(success|requeue_after)"\}/) > 0, "reconciles counted");
    assert.ok(value(/^classcache_controller_reconcile_time_seconds_count\{controller="classcache"\}/) > 0);
    assert.match(text, /^classcache_workqueue_depth\{name="classcache"\} \d+$/m);
    assert.match(text, /^classcache_leader_election_master_status\{name="classcache-operator"\} 1$/m);
    assert.ok(value(/^classcache_webhook_requests_total\{webhook="mutate-pods",outcome="patched"\}/) >= 1, "the Pod patched over TLS in Webhook mode");
    assert.ok(value(/^classcache_webhook_requests_total\{webhook="validate-classcaches",outcome="denied"\}/) >= 1, "the ClassCache refused above");
    const listed = (await client.list<ClassCache>(ClassCaches)).items.length;
    assert.equal(value(/^classcache_classcaches\{phase="[A-Za-z]+"\}/), listed, "every ClassCache counted once, by phase");
  });

  it("shows each ClassCache's state in classcache stats, next to the directory's archives", async () => {
    const r = await promisify(execFile)(process.execPath, [join(import.meta.dirname, "..", "src", "cli.ts"), "stats", "--directory", redis.url, "--kubeconfig", cluster.env.kubeconfigPath, "--json"]);
    const s = JSON.parse(r.stdout) as Stats;
    const row = (ns: string, name: string) => s.classCaches?.find((c) => c.namespace === ns && c.name === name);
    assert.equal(row("shop", "shop")?.workload, "Deployment/shop");
    assert.equal(row("shop", "shop")?.ref, (await getCc("shop", "shop")).status?.ref);
    assert.match(row("strict", "strict")?.problem ?? "", /^(Ready=False|ArchiveAvailable=False)/);
    assert.ok(s.archives.some((a) => a.key === sampleManifest({ scope: "shop", hitRate: 0.97 }).key && a.verified === undefined), "the archive bound above, unchecked without --trust");
  });

  it("on deletion puts the workload back exactly as it was and removes the ref from the directory", async () => {
    const ref = (await getCc("shop", "shop")).status!.ref!;
    await client.delete(ClassCaches, "shop", { namespace: "shop" });
    await until("the ClassCache is gone", () => getCc("shop", "shop").then(() => false, (e: unknown) => e instanceof ApiError && e.status === 404));
    const d = await getDeploy("shop", "shop");
    const app = d.spec.template.spec.containers[0]!;
    assert.deepEqual(app.command, JAVA_LAUNCH.command);
    assert.deepEqual(app.env, JAVA_LAUNCH.env);
    assert.equal(app.volumeMounts, undefined);
    assert.equal(d.spec.template.spec.initContainers, undefined);
    assert.equal(d.spec.template.spec.volumes, undefined);
    assert.equal(d.metadata.annotations?.[ORIGINAL_LAUNCH_ANNOTATION], undefined);
    assert.equal(d.spec.template.metadata?.annotations?.[REF_ANNOTATION], undefined);
    assert.equal(d.metadata.labels?.[PATCHING_LABEL], undefined);
    // No ClassCache is left in the namespace: the admission policy still leaves the workload's own writes alone.
    await client.patch(Deployments, "shop", { spec: { template: { spec: { containers: [{ name: "app", image: "registry.example/shop:1.2" }] } } } }, { type: "strategic", namespace: "shop" });
    const directory = new ValkeyDirectory({ url: redis.url });
    try {
      assert.equal(await directory.binding(`${ref}.amd64`), undefined);
    } finally {
      await directory.close();
    }
  });
});
