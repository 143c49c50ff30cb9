/**
 * The ClassCache CRD and the RBAC manifests (deploy/) against a real kube-apiserver + etcd:
 * resources written for cluster-classcache are accepted with its defaults, bad ones are refused
 * with a message a user understands, and each service account can do its job and nothing more.
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import https from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { parse as parseYaml, parseAllDocuments } from "yaml";
import { KubeClient } from "../src/kube/client.ts";
import { ApiError, isForbidden } from "../src/kube/errors.ts";
import { ConfigMaps, CSIDrivers, Deployments, Jobs, Namespaces, Pods, resourceType, Secrets, Services, StatefulSets } from "../src/kube/resource.ts";
import { MutatingWebhookConfigurations } from "../src/webhook/configuration.ts";
import type { KubeObject } from "../src/kube/types.ts";
import { ClassCaches, resolveSpec, validateClassCache, type ClassCache } from "../src/operator/api/v1.ts";
import { PATCHING_LABEL } from "../src/operator/constants.ts";
import { injectPod, stripInjection, type PodSpec } from "../src/operator/inject.ts";
import { buildJob, buildTokenSecret } from "../src/operator/objects/buildjob.ts";
import { classCacheOwner } from "../src/operator/objects/meta.ts";
import { buildInput, REF } from "../src/operator/objects/testing.ts";
import { defaultManifestFiles } from "../src/testenv/manifests.ts";
import { REPO_ROOT, startTestEnv, type TestEnv } from "../src/testenv/testenv.ts";
import { until } from "./support/operator.ts";

const FIXTURES = join(REPO_ROOT, "test/fixtures/classcache");
const SYSTEM_NS = "classcache-system";
const OPERATOR = {
  user: `system:serviceaccount:${SYSTEM_NS}:classcache-operator`,
  groups: ["system:serviceaccounts", `system:serviceaccounts:${SYSTEM_NS}`, "system:authenticated"],
};
const AGENT = {
  user: `system:serviceaccount:${SYSTEM_NS}:classcache-agent`,
  groups: ["system:serviceaccounts", `system:serviceaccounts:${SYSTEM_NS}`, "system:authenticated"],
};
const WEBHOOK = {
  user: `system:serviceaccount:${SYSTEM_NS}:classcache-webhook`,
  groups: ["system:serviceaccounts", `system:serviceaccounts:${SYSTEM_NS}`, "system:authenticated"],
};
const SelfSubjectAccessReviews = resourceType("authorization.k8s.io/v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews", false);

const Nodes = resourceType("v1", "Node", "nodes", false);

function fixture(name: string): ClassCache {
  return parseYaml(readFileSync(join(FIXTURES, name), "utf8")) as ClassCache;
}

function cc(name: string, spec: Record<string, unknown>): ClassCache {
  return { apiVersion: "classcache.dev/v1", kind: "ClassCache", metadata: { name }, spec: spec as unknown as ClassCache["spec"] };
}

/** Asserts that every field of `want` is in `got` with the same value (`got` may have more). */
function assertContains(got: unknown, want: unknown, path = "$"): void {
  if (typeof want === "object" && want !== null && !Array.isArray(want)) {
    assert.ok(typeof got === "object" && got !== null, `${path} is missing`);
    for (const [k, v] of Object.entries(want)) assertContains((got as Record<string, unknown>)[k], v, `${path}.${k}`);
    return;
  }
  assert.deepEqual(got, want, `${path} changed`);
}

async function rejection(p: Promise<unknown>): Promise<ApiError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof ApiError) return err;
    throw err;
  }
  assert.fail("the API server accepted it");
}

function deployment(name: string, namespace: string): KubeObject {
  return {
    metadata: { name, namespace },
    spec: {
      selector: { matchLabels: { app: name } },
      template: { metadata: { labels: { app: name } }, spec: { containers: [{ name: "app", image: "example.com/app:1" }] } },
    },
  };
}

/** A GET that asks for the server-side table, as kubectl get does. */
function getTable(env: TestEnv, path: string): Promise<{ columnDefinitions: { name: string }[]; rows: { cells: unknown[] }[] }> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      env.server + path,
      { ca: env.caPem, headers: { Authorization: `Bearer ${env.token}`, Accept: "application/json;as=Table;v=v1;g=meta.k8s.io" } },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => (body += c));
        res.on("end", () => (res.statusCode === 200 ? resolve(JSON.parse(body) as never) : reject(new Error(`${res.statusCode}: ${body}`))));
      },
    );
    req.on("error", reject);
    req.end();
  });
}

void describe("the ClassCache API on a real API server", { timeout: 180_000 }, () => {
  let dir: string;
  let env: TestEnv;
  let admin: KubeClient;
  let operator: KubeClient;
  let agent: KubeClient;
  let webhook: KubeClient;
  let nsCount = 0;
  const namespace = async (prefix: string): Promise<string> => {
    const name = `${prefix}-${++nsCount}`;
    await admin.create(Namespaces, { metadata: { name } });
    return name;
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "classcache-api-"));
    env = await startTestEnv({ dir, manifests: defaultManifestFiles(REPO_ROOT) });
    admin = KubeClient.load({ kubeconfigPath: env.kubeconfigPath });
    operator = KubeClient.load({ kubeconfigPath: env.kubeconfigPath, impersonate: OPERATOR });
    agent = KubeClient.load({ kubeconfigPath: env.kubeconfigPath, impersonate: AGENT });
    webhook = KubeClient.load({ kubeconfigPath: env.kubeconfigPath, impersonate: WEBHOOK });
  });
  after(async () => {
    await env?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  void describe("resources written for cluster-classcache", () => {
    const files = readdirSync(FIXTURES).filter((f) => f.endsWith(".yaml")).sort();

    void it("are accepted unchanged, get cluster-classcache's defaults and pass the webhook's checks", async () => {
      const ns = await namespace("compat");
      assert.ok(files.length >= 6);
      for (const file of files) {
        const given = fixture(file);
        const stored = await admin.create(ClassCaches, given, { namespace: ns });
        assertContains(stored, given, file);
        const s = stored.spec;
        assert.equal(s.workloadRef.apiVersion, "apps/v1", file);
        assert.ok(s.workloadRef.kind, file);
        assert.equal(s.patchMode ?? "", given.spec.patchMode ?? "Owned", file);
        if (given.spec.app) assert.equal(s.app?.jarPath, given.spec.app.jarPath ?? "/app.jar", file);
        if (given.spec.agent) assert.equal(s.agent?.jarPath, given.spec.agent.jarPath ?? "/agent.jar", file);
        assert.equal(s.valkey?.create, given.spec.valkey?.create ?? true, file);
        assert.equal(s.valkey?.image, given.spec.valkey?.image ?? "valkey/valkey:7.2-alpine", file);
        assert.equal(s.valkey?.storageSize, given.spec.valkey?.storageSize ?? "256Mi", file);
        assert.equal(s.training?.timeoutSeconds, 300, file);
        assert.equal(s.memorySharing, true, file);
        assert.equal(s.sharing, "Namespace", file);
        assert.equal(s.mode, undefined, `${file}: mode is left to the profile`);
        assert.deepEqual(validateClassCache(stored), [], file);
        resolveSpec(stored);
      }
    });

    void it("never get a primer image or an archive dir by default, and a set one is reported as ignored", async () => {
      const ns = await namespace("ignored");
      const plain = await admin.create(ClassCaches, fixture("owned-scouter.yaml"), { namespace: ns });
      assert.equal(plain.spec.primerImage, undefined);
      assert.equal(plain.spec.archiveDir, undefined);
      assert.deepEqual(resolveSpec(plain).warnings, []);

      const old = await admin.create(ClassCaches, fixture("primer-archivedir.yaml"), { namespace: ns });
      const { spec, warnings } = resolveSpec(old);
      assert.deepEqual(spec.ignored, { primerImage: "registry.example.com/platform/classcache-primer:v0.9-universal", archiveDir: "/mnt/fast/classcache" });
      assert.equal(warnings.length, 2);
      assert.match(warnings[0] ?? "", /spec\.primerImage is ignored/);
      assert.match(warnings[1] ?? "", /spec\.archiveDir is ignored: .*never in a user-chosen host path/);
    });

    void it("resolve to the profile's mode: scouter baked, otel hybrid, none without an agent", async () => {
      const ns = await namespace("modes");
      const modes: Record<string, string> = {};
      for (const file of ["owned-scouter.yaml", "webhook-otel.yaml", "inline-profile.yaml", "minimal.yaml"]) {
        const stored = await admin.create(ClassCaches, fixture(file), { namespace: ns });
        modes[file] = resolveSpec(stored).spec.mode;
      }
      assert.deepEqual(modes, { "owned-scouter.yaml": "baked", "webhook-otel.yaml": "hybrid", "inline-profile.yaml": "baked", "minimal.yaml": "none" });
    });
  });

  void describe("bad resources", () => {
    const cases: { name: string; spec: Record<string, unknown>; field: string; says: RegExp }[] = [
      { name: "a profile without an agent image", spec: { workloadRef: { name: "w" }, profile: "scouter" }, field: "spec.agent.image", says: /set spec\.agent\.image to the image that holds the agent jar/ },
      { name: "mode baked without an agent", spec: { workloadRef: { name: "w" }, mode: "baked" }, field: "spec.mode", says: /need spec\.agent\.image .* or use mode none/ },
      { name: "an external directory without an address", spec: { workloadRef: { name: "w" }, valkey: { create: false } }, field: "spec.valkey.addr", says: /spec\.valkey\.addr must give the host:port of an existing Valkey or Redis/ },
      { name: "a Job as the workload", spec: { workloadRef: { name: "w", kind: "Job" } }, field: "spec.workloadRef.kind", says: /must be Deployment, StatefulSet or DaemonSet/ },
      { name: "a workload of another API group", spec: { workloadRef: { name: "w", apiVersion: "argoproj.io/v1alpha1", kind: "Deployment" } }, field: "spec.workloadRef.apiVersion", says: /must be apps\/v1/ },
      { name: "a warm-up URL to another host", spec: { workloadRef: { name: "w" }, training: { warmupUrls: ["http://localhost:8080/ok", "http://payments.prod:8080/charge"] } }, field: "spec.training.warmupUrls", says: /http\(s\) URL to localhost or 127\.0\.0\.1.*training only reaches the app itself/ },
      { name: "a ready URL that is not a URL", spec: { workloadRef: { name: "w" }, training: { readyUrl: "/actuator/health" } }, field: "spec.training.readyUrl", says: /e\.g\. http:\/\/localhost:8080\/actuator\/health/ },
      { name: "seventeen warm-up URLs", spec: { workloadRef: { name: "w" }, training: { warmupUrls: Array.from({ length: 17 }, (_, i) => `http://localhost:8080/${i}`) } }, field: "spec.training.warmupUrls", says: /must have at most 16 items/ },
      { name: "a training time limit over an hour", spec: { workloadRef: { name: "w" }, training: { timeoutSeconds: 7200 } }, field: "spec.training.timeoutSeconds", says: /less than or equal to 3600/ },
      { name: "a storage size that is no quantity", spec: { workloadRef: { name: "w" }, valkey: { storageSize: "big" } }, field: "spec.valkey.storageSize", says: /must be a quantity such as 256Mi/ },
      { name: "sharing with the world", spec: { workloadRef: { name: "w" }, sharing: "World" }, field: "spec.sharing", says: /supported values: "Namespace", "Cluster"/ },
      { name: "no workload name", spec: { workloadRef: { kind: "Deployment" } }, field: "spec.workloadRef.name", says: /Required value/ },
      { name: "a password secret without a key", spec: { workloadRef: { name: "w" }, valkey: { passwordSecretRef: { name: "valkey" } } }, field: "spec.valkey.passwordSecretRef.key", says: /Required value/ },
    ];
    for (const c of cases) {
      void it(`are refused: ${c.name}`, async () => {
        const err = await rejection(admin.create(ClassCaches, cc("bad", c.spec), { namespace: "default" }));
        assert.equal(err.status, 422, err.message);
        const cause = err.details?.causes?.find((x) => x.field === c.field);
        assert.ok(cause, `no cause for ${c.field} in: ${err.message}`);
        assert.match(cause.message ?? "", c.says);
      });
    }

    void it("are refused with every problem at once, not one per attempt", async () => {
      const err = await rejection(admin.create(ClassCaches, cc("bad", { workloadRef: { name: "w", kind: "Job" }, profile: "otel", valkey: { create: false } }), { namespace: "default" }));
      const fields = (err.details?.causes ?? []).map((c) => c.field).sort();
      assert.deepEqual(fields, ["spec.agent.image", "spec.valkey.addr", "spec.workloadRef.kind"]);
    });

    void it("include an unknown catalog profile and a broken inline profile, which the webhook's checks catch", () => {
      const unknown = validateClassCache(cc("x", { workloadRef: { name: "w" }, agent: { image: "a" }, profile: "newrelic" }));
      assert.match(unknown.join("\n"), /spec\.profile "newrelic" is not a catalog profile: use one of apm-v01, datadog, elastic, otel, pinpoint, reference, scouter/);
      const broken = validateClassCache(cc("x", { workloadRef: { name: "w" }, agent: { image: "a" }, profileYAML: "kind: AgentProfile\n" }));
      assert.match(broken.join("\n"), /spec\.profileYAML: the profile does not match the AgentProfile schema: .*must have required property 'spec'/);
    });
  });

  void describe("workloadRef", () => {
    void it("cannot change once created; the rest of the spec and the status can", async () => {
      const ns = await namespace("immutable");
      const created = await admin.create(ClassCaches, fixture("webhook-otel.yaml"), { namespace: ns });
      const err = await rejection(admin.patch(ClassCaches, "orders", { spec: { workloadRef: { name: "payments" } } }, { namespace: ns, type: "merge" }));
      assert.equal(err.status, 422);
      assert.match(err.message, /spec\.workloadRef is immutable: to accelerate another workload, create a new ClassCache/);
      const kindErr = await rejection(admin.patch(ClassCaches, "orders", { spec: { workloadRef: { kind: "StatefulSet" } } }, { namespace: ns, type: "merge" }));
      assert.match(kindErr.message, /immutable/);

      const patched = await admin.patch<ClassCache>(ClassCaches, "orders", { spec: { patchMode: "Owned", training: { warmupUrls: ["http://localhost:8080/orders"] } } }, { namespace: ns, type: "merge" });
      assert.equal(patched.spec.patchMode, "Owned");
      assert.ok((patched.metadata.generation ?? 0) > (created.metadata.generation ?? 0));

      const status = {
        observedGeneration: patched.metadata.generation,
        phase: "Ready",
        archiveKey: "3f9a0c1d2e4b5a69",
        ref: "sha256:3f9a0c1d2e4b5a69",
        readyPeers: 3,
        hitRate: "97.4%",
        workloadHitRate: 0.974,
        archives: [{ arch: "amd64", jvm: "Eclipse Adoptium 25.0.3+9", key: "3f9a0c1d2e4b5a69", holders: 3, hitRate: 0.981, builtAt: "2026-01-02T03:04:05Z" }],
        conditions: [{ type: "Ready", status: "True", observedGeneration: patched.metadata.generation, lastTransitionTime: "2026-01-02T03:04:05Z", reason: "Ready", message: "3 of 3 pods boot from the archive" }],
      };
      const withStatus = await admin.patch<ClassCache>(ClassCaches, "orders", { status }, { namespace: ns, type: "merge", subresource: "status" });
      assert.deepEqual(withStatus.status, status);
      assert.equal(withStatus.metadata.generation, patched.metadata.generation, "a status write does not bump the generation");
    });
  });

  void it("prints Workload, Profile, Phase, Key, Hit rate and Age, as kubectl get shows them", async () => {
    const ns = await namespace("columns");
    await admin.create(ClassCaches, fixture("owned-scouter.yaml"), { namespace: ns });
    await admin.patch(ClassCaches, "quickstart", { status: { phase: "Ready", archiveKey: "3f9a0c1d", hitRate: "97.4%" } }, { namespace: ns, type: "merge", subresource: "status" });
    const table = await getTable(env, `/apis/classcache.dev/v1/namespaces/${ns}/classcaches`);
    const names = table.columnDefinitions.map((c) => c.name);
    assert.deepEqual(names, ["Name", "Workload", "Profile", "Phase", "Key", "Hit rate", "Mode", "Age"]);
    const cells = table.rows[0]?.cells ?? [];
    assert.deepEqual(cells.slice(0, 6), ["quickstart", "quickstart", "scouter", "Ready", "3f9a0c1d", "97.4%"]);
    const short = await getTable(env, `/apis/classcache.dev/v1/namespaces/${ns}/classcaches/quickstart`);
    assert.equal(short.rows.length, 1);
  });

  void describe("the operator's service account", () => {
    /** A namespace with a ClassCache and a Deployment, and what the operator would write there. */
    const tenant = async (prefix: string, ns?: string): Promise<{ ns: string; job: KubeObject; secret: KubeObject }> => {
      ns ??= await namespace(prefix);
      const stored = await admin.create(ClassCaches, fixture("minimal.yaml"), { namespace: ns });
      await admin.create(Deployments, deployment("web", ns));
      const owner = { name: stored.metadata.name!, namespace: ns, uid: stored.metadata.uid! };
      // What the reconciler builds, from a workload that asks for host paths, host ports and more.
      const job = buildJob(buildInput({ classCache: owner }));
      const secret = buildTokenSecret(ns, REF, { token: "grant", key: "-----BEGIN PRIVATE KEY-----" }, classCacheOwner(owner));
      return { ns, job, secret };
    };
    /** The reconciler's writes of a workload patch: the template with the label, then the label removed. */
    const patchWorkload = async (client: KubeClient, ns: string, name = "web"): Promise<void> => {
      const w = await admin.get<KubeObject & { spec: { template: { spec: PodSpec } } }>(Deployments, name, { namespace: ns });
      const clean = stripInjection(w.spec.template.spec, undefined);
      const container = { ...clean.containers[0]!, command: ["java", "-jar", "/app.jar"] };
      const injected = injectPod({ ...clean, containers: [container] }, { ref: REF, scope: ns, jarPath: "/app.jar", mode: "none", memorySharing: true, image: "registry.example/classcache:test" });
      assert.equal(injected.outcome.patched, true, injected.outcome.message);
      const ops = [
        { op: "replace", path: "/spec/template/spec", value: injected.spec },
        { op: "add", path: "/metadata/labels", value: { [PATCHING_LABEL]: "inventory" } },
      ];
      await client.patch(Deployments, name, ops, { type: "json", namespace: ns });
      await client.patch(Deployments, name, [{ op: "remove", path: `/metadata/labels/${PATCHING_LABEL.replace("/", "~1")}` }], { type: "json", namespace: ns });
    };
    /** The operator's writes: the build's token Secret and Job, and a workload patch. */
    const writes = (t: { ns: string; job: KubeObject; secret: KubeObject }): Record<string, () => Promise<unknown>> => ({
      "create the build's Secret": () => operator.create(Secrets, { ...t.secret, metadata: { ...t.secret.metadata, namespace: t.ns } }, { namespace: t.ns }),
      "apply the build Job": () => operator.apply(Jobs, { ...t.job, metadata: { ...t.job.metadata, namespace: t.ns } }, { fieldManager: "classcache-operator", force: true, namespace: t.ns }),
      "patch the Deployment": () => patchWorkload(operator, t.ns),
    });

    void it("creates a build Job and its Secret and patches a Deployment in a namespace with a ClassCache, also with two there", async () => {
      const t = await tenant("shop");
      // The API server's view of the namespace's ClassCaches (the policy's parameters) follows a watch.
      await until("the ClassCache reaches the admission policy", () => operator.create(Secrets, t.secret, { namespace: t.ns }).then(() => true));
      await writes(t)["apply the build Job"]!();
      await writes(t)["patch the Deployment"]!();
      const patched = await admin.get<KubeObject & { spec: { template: { spec: PodSpec } } }>(Deployments, "web", { namespace: t.ns });
      assert.ok(patched.spec.template.spec.initContainers?.some((c) => c.name === "classcache-init"));
      assert.equal(patched.metadata.labels?.[PATCHING_LABEL], undefined, "the label goes with the last write");
      // Every ClassCache of the namespace is a parameter; a second one allows just the same.
      await admin.create(ClassCaches, { ...fixture("minimal.yaml"), metadata: { name: "second" } }, { namespace: t.ns });
      await until("both ClassCaches reach the admission policy", async () => {
        await admin.delete(Secrets, t.secret.metadata.name!, { namespace: t.ns }).catch(() => undefined);
        return operator.create(Secrets, t.secret, { namespace: t.ns }).then(() => true);
      });
      await writes(t)["apply the build Job"]!();
      await writes(t)["patch the Deployment"]!();
      await operator.list(Deployments);
      await operator.list(Pods, { namespace: t.ns });
      await operator.patch(ClassCaches, "none", { metadata: { finalizers: [] } }, { namespace: t.ns, type: "merge" }).catch((err: unknown) => {
        assert.equal((err as ApiError).status, 404, "allowed, but there is no such ClassCache");
      });
      assert.ok(isForbidden(await rejection(operator.delete(Jobs, t.job.metadata.name!, { namespace: t.ns }))), "deletes a Job (the garbage collector and the Job's TTL do)");
    });

    void it("is refused the same writes in a namespace without a ClassCache, and in kube-system even with one", async () => {
      const t = await tenant("shop");
      const bare = await namespace("bare");
      await admin.create(Deployments, deployment("web", bare));
      for (const [what, call] of Object.entries(writes({ ...t, ns: bare }))) {
        const err = await rejection(call());
        assert.match(err.message, /ValidatingAdmissionPolicy 'classcache-operator-(builds|patches)-need-a-classcache' with binding 'classcache-operator-(builds|patches)-need-a-classcache' denied request: .*no params found/, `${what}: ${err.message}`);
      }
      const system = await tenant("", "kube-system");
      for (const ns of ["kube-system", "kube-public", "kube-node-lease"]) {
        if (ns !== "kube-system") await admin.create(Deployments, deployment("web", ns));
        for (const [what, call] of Object.entries(writes({ ...system, ns }))) {
          const err = await rejection(call());
          assert.ok(isForbidden(err), `${ns}: ${what}: ${err.message}`);
          assert.match(err.message, /ValidatingAdmissionPolicy 'classcache-operator-writes' .* denied request: classcache-operator never writes in kube-system, kube-public or kube-node-lease/, `${ns}: ${what}`);
        }
      }
      // Everybody else's writes there are none of the policies' business.
      await admin.create(Secrets, { metadata: { name: "db", namespace: bare }, stringData: { password: "x" } });
      await admin.create(Jobs, { metadata: { name: "migrate", namespace: bare }, spec: { template: { spec: { restartPolicy: "Never", hostPID: true, containers: [{ name: "m", image: "example.com/m:1" }] } } } });
      await admin.patch(Deployments, "web", { metadata: { labels: { team: "shop" } } }, { namespace: bare, type: "merge" });
    });

    void it("is refused build Jobs with host namespaces, privilege or another host path, and Secrets of another shape, even where a ClassCache exists", async () => {
      const t = await tenant("shop");
      await until("the ClassCache reaches the admission policy", () => operator.create(Secrets, t.secret, { namespace: t.ns }).then(() => true));
      type PodTemplateSpec = { spec: { template: { spec: PodSpec & Record<string, unknown> } } };
      const job = (change: (spec: PodSpec & Record<string, unknown>, j: KubeObject) => void): KubeObject => {
        const j = structuredClone(t.job) as KubeObject & PodTemplateSpec;
        change(j.spec.template.spec, j);
        return j;
      };
      const app = (s: PodSpec) => s.containers[0]!;
      const badJobs: Record<string, [KubeObject, RegExp]> = {
        hostPID: [job((s) => (s["hostPID"] = true)), /shares no host namespace/],
        hostNetwork: [job((s) => (s["hostNetwork"] = true)), /shares no host namespace/],
        "a privileged container": [job((s) => (app(s)["securityContext"] = { privileged: true })), /not privileged/],
        "a privileged init container": [job((s) => (s.initContainers![0]!["securityContext"] = { privileged: true })), /not privileged/],
        "SYS_ADMIN": [job((s) => (app(s)["securityContext"] = { capabilities: { add: ["SYS_ADMIN"] } })), /no capability beyond/],
        "the host's root": [job((s) => s.volumes!.push({ name: "root", hostPath: { path: "/" } })), /only host path is the node agent's socket directory/],
        "the node store": [job((s) => s.volumes!.push({ name: "store", hostPath: { path: "/var/lib/classcache", type: "Directory" } })), /only host path/],
        "the socket directory writable": [job((s) => app(s).volumeMounts!.filter((m) => m.name === "classcache-agent-run").forEach((m) => (m.readOnly = false))), /mounted read-only/],
        "another CSI driver": [job((s) => s.volumes!.push({ name: "x", csi: { driver: "hostpath.csi.k8s.io", readOnly: true } })), /only CSI volume is the node agent's socket directory/],
        "the driver's scope view": [job((s) => s.volumes!.push({ name: "x", csi: { driver: "csi.classcache.dev", readOnly: true } })), /only CSI volume is the node agent's socket directory/],
        "another name": [job((_, j) => (j.metadata.name = "backup")), /named classcache-build-<10 hex digits/],
        "no owner": [job((_, j) => delete j.metadata.ownerReferences), /owned by exactly one ClassCache/],
        "no managed-by label": [job((_, j) => delete j.metadata.labels!["app.kubernetes.io/managed-by"]), /carry app.kubernetes.io\/managed-by/],
      };
      for (const [what, [obj, says]] of Object.entries(badJobs)) {
        const err = await rejection(operator.apply(Jobs, obj, { fieldManager: "classcache-operator", force: true, namespace: t.ns, dryRun: true }));
        assert.ok(isForbidden(err), `${what}: ${err.message}`);
        assert.match(err.message, /ValidatingAdmissionPolicy 'classcache-operator-writes'/, what);
        assert.match(err.message, says, what);
      }
      const secret = (change: (s: KubeObject & { stringData?: Record<string, string>; type?: string }) => void): KubeObject => {
        const s = structuredClone(t.secret) as KubeObject & { stringData?: Record<string, string>; type?: string };
        s.metadata.name = "classcache-build-abcdefabcd";
        change(s);
        return s;
      };
      const badSecrets: Record<string, [KubeObject, RegExp]> = {
        "another name": [secret((s) => (s.metadata.name = "db-password")), /named classcache-build-/],
        "another key": [secret((s) => (s.stringData = { token: "t", ".dockerconfigjson": "{}" })), /hold a build.s grant \(token\) and its one-time build key \(build.pem\), nothing else/],
        "another type": [secret((s) => (s.type = "example.com/credentials")), /are Opaque/],
      };
      for (const [what, [obj, says]] of Object.entries(badSecrets)) {
        const err = await rejection(operator.create(Secrets, obj, { namespace: t.ns, dryRun: true }));
        assert.ok(isForbidden(err), `${what}: ${err.message}`);
        assert.match(err.message, says, what);
      }
      // The reconciler's own Job for that workload passes, as the first test shows.
      await operator.apply(Jobs, t.job, { fieldManager: "classcache-operator", force: true, namespace: t.ns, dryRun: true });
    });

    void it("is refused workload patches that change who the pod runs as, its images or its host access, and unmarked ones", async () => {
      const t = await tenant("shop");
      await until("the ClassCache reaches the admission policy", () => operator.create(Secrets, t.secret, { namespace: t.ns }).then(() => true));
      const marked = { metadata: { labels: { [PATCHING_LABEL]: "inventory" } } };
      const template = (spec: Record<string, unknown>) => ({ ...marked, spec: { template: { spec } } });
      const bad: Record<string, [unknown, RegExp]> = {
        "no patching label": [{ spec: { template: { metadata: { annotations: { a: "b" } } } } }, /set the label classcache.dev\/patching/],
        hostPID: [template({ hostPID: true }), /keeps the pod's host namespaces, service account/],
        "another service account": [template({ serviceAccountName: "admin" }), /keeps the pod's host namespaces, service account/],
        "runs as root": [template({ securityContext: { runAsUser: 0 } }), /pod security context/],
        "another image": [template({ containers: [{ name: "app", image: "evil.example/app:1" }] }), /keeps each container's image/],
        "a privileged app": [template({ containers: [{ name: "app", securityContext: { privileged: true } }] }), /keeps each container's image and security context/],
        "a sidecar": [template({ containers: [{ name: "miner", image: "evil.example/miner:1" }] }), /adds no container/],
        "a privileged classcache init container": [template({ initContainers: [{ name: "classcache-init", image: "x", securityContext: { privileged: true } }] }), /only adds unprivileged classcache-\* init containers/],
        "another init container": [template({ initContainers: [{ name: "setup", image: "x" }] }), /only adds unprivileged classcache-\* init containers/],
        "the host's root": [template({ volumes: [{ name: "root", hostPath: { path: "/" } }] }), /adds no host path but its scope's view/],
        "the whole node store": [template({ volumes: [{ name: "classcache-store", hostPath: { path: "/var/lib/classcache", type: "DirectoryOrCreate" } }] }), /adds no host path but its scope's view/],
        "another namespace's view": [template({ volumes: [{ name: "classcache-store", hostPath: { path: "/var/lib/classcache/scopes/victim", type: "DirectoryOrCreate" } }] }), /adds no host path but its scope's view/],
        "another CSI driver": [template({ volumes: [{ name: "classcache-store", csi: { driver: "hostpath.csi.k8s.io", readOnly: true } }] }), /adds no CSI volume but the node agent's read-only view/],
        "the driver's build view": [template({ volumes: [{ name: "classcache-store", csi: { driver: "csi.classcache.dev", readOnly: true, volumeAttributes: { view: "build" } } }] }), /adds no CSI volume but the node agent's read-only view/],
        "the driver's view writable": [template({ volumes: [{ name: "classcache-store", csi: { driver: "csi.classcache.dev" } }] }), /adds no CSI volume but the node agent's read-only view/],
        "its view writable": [
          template({ volumes: [{ name: "classcache-store", hostPath: { path: `/var/lib/classcache/scopes/${t.ns}`, type: "DirectoryOrCreate" } }], containers: [{ name: "app", volumeMounts: [{ name: "classcache-store", mountPath: "/var/lib/classcache" }] }] }),
          /mounted read-only/,
        ],
      };
      for (const [what, [patch, says]] of Object.entries(bad)) {
        const err = await rejection(operator.patch(Deployments, "web", patch, { namespace: t.ns, type: "strategic", dryRun: true }));
        assert.ok(isForbidden(err), `${what}: ${err.message}`);
        assert.match(err.message, says, what);
      }
      const other = deployment("other", t.ns);
      assert.ok(isForbidden(await rejection(operator.create(Deployments, { ...other, metadata: { ...other.metadata, ...marked.metadata } }))), "creates a Deployment in a tenant namespace");
    });

    void it("manages secrets, services and its directory only in classcache-system", async () => {
      const ns = await namespace("tenant");
      await admin.create(Secrets, { metadata: { name: "db", namespace: ns }, stringData: { password: "x" } });
      assert.ok(isForbidden(await rejection(operator.get(Secrets, "db", { namespace: ns }))), "reads a tenant's secret");
      assert.ok(isForbidden(await rejection(operator.list(Secrets))), "lists secrets of every namespace");
      assert.ok(isForbidden(await rejection(operator.create(StatefulSets, { metadata: { name: "x", namespace: ns }, spec: {} }))), "creates a StatefulSet in a tenant namespace");
      assert.ok(isForbidden(await rejection(operator.create(ConfigMaps, { metadata: { name: "x", namespace: ns } }))), "creates a ConfigMap in a tenant namespace");

      await operator.create(Secrets, { metadata: { name: "classcache-directory", namespace: SYSTEM_NS }, stringData: { password: "p" } });
      await operator.get(Secrets, "classcache-directory", { namespace: SYSTEM_NS });
      await operator.delete(Secrets, "classcache-directory", { namespace: SYSTEM_NS });
      await operator.create(ConfigMaps, { metadata: { name: "classcache-profiles", namespace: SYSTEM_NS }, data: { "scouter.yaml": "x" } });
      await operator.create(resourceType("coordination.k8s.io/v1", "Lease", "leases"), { metadata: { name: "classcache-operator", namespace: SYSTEM_NS }, spec: {} });
    });

    void it("changes only its own webhook configuration and cannot delete namespaces", async () => {
      await admin.create(MutatingWebhookConfigurations, { metadata: { name: "classcache-webhook" }, webhooks: [] });
      await admin.create(MutatingWebhookConfigurations, { metadata: { name: "someone-elses-webhook" }, webhooks: [] });
      await operator.list(MutatingWebhookConfigurations);
      await operator.patch(MutatingWebhookConfigurations, "classcache-webhook", { metadata: { labels: { "app.kubernetes.io/part-of": "classcache" } } }, { type: "merge" });
      const other = await rejection(operator.patch(MutatingWebhookConfigurations, "someone-elses-webhook", { metadata: { labels: { x: "y" } } }, { type: "merge" }));
      assert.ok(isForbidden(other), other.message);
      assert.ok(isForbidden(await rejection(operator.delete(MutatingWebhookConfigurations, "classcache-webhook"))), "deletes its webhook configuration");
      // Server-side apply names the object, so a create restricted to that name lets the operator
      // (re)create its own configuration; a POST (no name at authorization time) stays forbidden.
      await admin.delete(MutatingWebhookConfigurations, "classcache-webhook");
      const post = await rejection(operator.create(MutatingWebhookConfigurations, { metadata: { name: "classcache-webhook" }, webhooks: [] }));
      assert.ok(isForbidden(post), post.message);
      await operator.apply(MutatingWebhookConfigurations, { apiVersion: "admissionregistration.k8s.io/v1", kind: "MutatingWebhookConfiguration", metadata: { name: "classcache-webhook" }, webhooks: [] }, { fieldManager: "classcache-operator" });
      const elsewhere = await rejection(operator.apply(MutatingWebhookConfigurations, { apiVersion: "admissionregistration.k8s.io/v1", kind: "MutatingWebhookConfiguration", metadata: { name: "another-webhook" }, webhooks: [] }, { fieldManager: "classcache-operator" }));
      assert.ok(isForbidden(elsewhere), elsewhere.message);
      const ns = await namespace("keep");
      assert.ok(isForbidden(await rejection(operator.delete(Namespaces, ns))), "deletes a namespace");
    });
  });

  void describe("the node agent's service account", () => {
    void it("can do nothing with the API: the agent never calls it", async () => {
      await admin.create(Nodes, { metadata: { name: "node-a", labels: { "kubernetes.io/arch": "arm64", "topology.kubernetes.io/zone": "eu-1a" } } });
      const ns = await namespace("private");
      await admin.create(Secrets, { metadata: { name: "s", namespace: ns }, stringData: { k: "v" } });
      await admin.create(ClassCaches, fixture("minimal.yaml"), { namespace: ns });
      const denied: Record<string, () => Promise<unknown>> = {
        "get a node": () => agent.get(Nodes, "node-a"),
        "list nodes": () => agent.list(Nodes),
        "list pods": () => agent.list(Pods, { namespace: ns }),
        "get a secret": () => agent.get(Secrets, "s", { namespace: ns }),
        "get a secret in classcache-system": () => agent.get(Secrets, "classcache-directory", { namespace: SYSTEM_NS }),
        "get a ClassCache": () => agent.get(ClassCaches, "inventory", { namespace: ns }),
        "patch a node": () => agent.patch(Nodes, "node-a", { metadata: { labels: { x: "y" } } }, { type: "merge" }),
      };
      for (const [what, call] of Object.entries(denied)) {
        const err = await rejection(call());
        assert.ok(isForbidden(err), `${what}: ${err.message}`);
      }
    });
  });

  void describe("the webhook's service account", () => {
    /** Whether the webhook's service account may do `verb` (the API server's own answer, for verbs a plain call cannot show, like watch). */
    const may = async (verb: string, resource: string, group = "", namespace = ""): Promise<boolean> => {
      const review = await webhook.create<KubeObject & { status?: { allowed?: boolean } }>(SelfSubjectAccessReviews, {
        apiVersion: "authorization.k8s.io/v1",
        kind: "SelfSubjectAccessReview",
        metadata: {},
        spec: { resourceAttributes: { verb, resource, group, ...(namespace ? { namespace } : {}) } },
      });
      return review.status?.allowed === true;
    };

    void it("reads ClassCaches, namespaces and the agent's CSIDriver, which decide a pod's patch", async () => {
      const ns = await namespace("hooked");
      await admin.create(ClassCaches, fixture("minimal.yaml"), { namespace: ns });
      assert.ok((await webhook.list(ClassCaches)).items.length >= 1);
      await webhook.get(ClassCaches, "inventory", { namespace: ns });
      await webhook.get(Namespaces, ns);
      assert.ok((await webhook.list(Namespaces)).items.some((n) => n.metadata.name === ns));
      for (const resource of ["classcaches", "namespaces"]) assert.ok(await may("watch", resource, resource === "classcaches" ? "classcache.dev" : ""), `watch ${resource}`);
      await admin.create(CSIDrivers, { metadata: { name: "csi.classcache.dev" }, spec: { podInfoOnMount: true, volumeLifecycleModes: ["Ephemeral"] } }).catch(() => undefined);
      await admin.create(CSIDrivers, { metadata: { name: "other.csi.example.com" }, spec: {} }).catch(() => undefined);
      await webhook.get(CSIDrivers, "csi.classcache.dev");
      assert.equal((await webhook.list(CSIDrivers, { fieldSelector: "metadata.name=csi.classcache.dev" })).items.length, 1, "its informer's list, by name");
      assert.ok(isForbidden(await rejection(webhook.get(CSIDrivers, "other.csi.example.com"))), "reads another CSIDriver");
      assert.ok(isForbidden(await rejection(webhook.list(CSIDrivers))), "lists every CSIDriver");
    });

    void it("can do nothing else: no Secret, not even its own certificate's, no pod, workload, Job or ClassCache write", async () => {
      const ns = await namespace("hooked");
      await admin.create(Secrets, { metadata: { name: "db", namespace: ns }, stringData: { password: "x" } });
      await admin.create(Secrets, { metadata: { name: "classcache-webhook-tls", namespace: SYSTEM_NS }, type: "kubernetes.io/tls", stringData: { "tls.crt": "", "tls.key": "" } }).catch(() => undefined);
      await admin.create(Deployments, deployment("web", ns));
      await admin.create(ClassCaches, fixture("minimal.yaml"), { namespace: ns });
      const denied: Record<string, () => Promise<unknown>> = {
        "list secrets": () => webhook.list(Secrets),
        "list secrets in classcache-system": () => webhook.list(Secrets, { namespace: SYSTEM_NS }),
        "get a tenant's secret": () => webhook.get(Secrets, "db", { namespace: ns }),
        // The kubelet mounts it into the webhook's pod; the service account itself never reads it.
        "get its serving-certificate Secret": () => webhook.get(Secrets, "classcache-webhook-tls", { namespace: SYSTEM_NS }),
        "create a pod": () => webhook.create(Pods, { metadata: { name: "p", namespace: ns }, spec: { containers: [{ name: "c", image: "example.com/c:1" }] } }),
        "list pods": () => webhook.list(Pods, { namespace: ns }),
        "patch a deployment": () => webhook.patch(Deployments, "web", { metadata: { labels: { x: "y" } } }, { namespace: ns, type: "merge" }),
        "list deployments": () => webhook.list(Deployments),
        "create a job": () => webhook.create(Jobs, { metadata: { name: "j", namespace: ns }, spec: { template: { spec: { restartPolicy: "Never", containers: [{ name: "c", image: "example.com/c:1" }] } } } }),
        "update a ClassCache": () => webhook.patch(ClassCaches, "inventory", { metadata: { labels: { x: "y" } } }, { namespace: ns, type: "merge" }),
        "write a ClassCache's status": () => webhook.patch(ClassCaches, "inventory", { status: { phase: "Ready" } }, { namespace: ns, type: "merge", subresource: "status" }),
        "patch a namespace": () => webhook.patch(Namespaces, ns, { metadata: { labels: { x: "y" } } }, { type: "merge" }),
        "change the webhook configuration": () => webhook.apply(MutatingWebhookConfigurations, { apiVersion: "admissionregistration.k8s.io/v1", kind: "MutatingWebhookConfiguration", metadata: { name: "classcache-webhook" }, webhooks: [] }, { fieldManager: "classcache-webhook" }),
        "create a config map in classcache-system": () => webhook.create(ConfigMaps, { metadata: { name: "x", namespace: SYSTEM_NS } }),
      };
      for (const [what, call] of Object.entries(denied)) {
        const err = await rejection(call());
        assert.ok(isForbidden(err), `${what}: ${err.message}`);
      }
      for (const [verb, resource, group] of [["watch", "secrets", ""], ["create", "events", ""], ["create", "leases", "coordination.k8s.io"]] as const) {
        assert.equal(await may(verb, resource, group, SYSTEM_NS), false, `${verb} ${resource}`);
      }
    });
  });

  void describe("the operator's Deployments and webhook Service (deploy/operator/, from the chart)", () => {
    type Doc = KubeObject & { kind: string; spec: { selector?: Record<string, string>; template?: { metadata: { labels: Record<string, string> }; spec: PodSpec & { serviceAccountName: string; volumes?: { name: string; secret?: { secretName: string; items: { key: string }[] } }[] } } } };
    const operatorDir = join(REPO_ROOT, "deploy/operator");
    const docs = (): Doc[] =>
      readdirSync(operatorDir)
        .filter((f) => f.endsWith(".yaml"))
        .sort()
        .flatMap((f) => parseAllDocuments(readFileSync(join(operatorDir, f), "utf8")).map((d) => d.toJS() as Doc));
    const named = (kind: string, name: string): Doc | undefined => docs().find((d) => d.kind === kind && d.metadata.name === name);

    void it("are accepted by the API server with strict field validation", async () => {
      const all = docs();
      assert.deepEqual(all.map((d) => `${d.kind}/${d.metadata.name}`).sort(), ["Deployment/classcache-operator", "Deployment/classcache-webhook", "Service/classcache-webhook"]);
      for (const d of all) await admin.apply(d.kind === "Deployment" ? Deployments : Services, d, { fieldManager: "classcache-install", dryRun: true, fieldValidation: "Strict" });
    });

    void it("run the controller and the webhook apart, each as its own service account, the Service in front of the webhook only", () => {
      const [controller, hook, service] = [named("Deployment", "classcache-operator"), named("Deployment", "classcache-webhook"), named("Service", "classcache-webhook")];
      const pod = (d: Doc | undefined) => d!.spec.template!;
      assert.equal(pod(controller).spec.serviceAccountName, "classcache-operator");
      assert.deepEqual(pod(controller).spec.containers[0]!.args!.slice(0, 3), ["operator", "--role", "controller"]);
      assert.equal(pod(controller).metadata.labels["app.kubernetes.io/component"], "operator", "the directory's NetworkPolicy admits the controller by this label");
      assert.ok(!(pod(controller).spec.containers[0]!["ports"] as { name: string }[]).some((p) => p.name === "webhook"), "the controller serves no webhook");
      assert.equal(pod(hook).spec.serviceAccountName, "classcache-webhook");
      assert.deepEqual(pod(hook).spec.containers[0]!.args!.slice(0, 5), ["operator", "--role", "webhook", "--webhook-cert-dir", "/var/run/classcache/webhook-tls"]);
      const tls = pod(hook).spec.volumes?.find((v) => v.secret?.secretName === "classcache-webhook-tls");
      assert.deepEqual(tls?.secret?.items?.map((i) => i.key), ["tls.crt", "tls.key", "ca.crt"], "the CA's key never reaches the webhook");
      const selector = service!.spec.selector!;
      assert.ok(Object.entries(selector).every(([k, v]) => pod(hook).metadata.labels[k] === v), "the Service selects the webhook's pods");
      assert.ok(!Object.entries(selector).every(([k, v]) => pod(controller).metadata.labels[k] === v), "and not the controller's");
      const image = (d: Doc | undefined): string | undefined => {
        const args = pod(d).spec.containers[0]!.args!;
        return args[args.indexOf("--image") + 1];
      };
      assert.equal(image(hook), image(controller), "both parts patch pods with the same image");
    });
  });
});
