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
import { ConfigMaps, Deployments, Jobs, Namespaces, Pods, resourceType, Secrets, Services, StatefulSets } from "../src/kube/resource.ts";
import { MutatingWebhookConfigurations } from "../src/webhook/configuration.ts";
import type { KubeObject } from "../src/kube/types.ts";
import { ClassCaches, resolveSpec, validateClassCache, type ClassCache } from "../src/operator/api/v1.ts";
import { defaultManifestFiles } from "../src/testenv/manifests.ts";
import { REPO_ROOT, startTestEnv, type TestEnv } from "../src/testenv/testenv.ts";

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
      assert.match(unknown.join("\n"), /spec\.profile "newrelic" is not a catalog profile: use one of apm-v01, otel, pinpoint, reference, scouter/);
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
    void it("patches workloads in any namespace and runs build jobs there", async () => {
      const ns = await namespace("shop");
      await admin.create(Deployments, deployment("web", ns));
      await operator.patch(Deployments, "web", { spec: { template: { metadata: { annotations: { "classcache.dev/key": "3f9a" } } } } }, { namespace: ns, type: "merge" });
      await operator.list(Deployments);
      await operator.list(Pods, { namespace: ns });
      await operator.create(Jobs, {
        metadata: { name: "classcache-build-web", namespace: ns },
        spec: { template: { spec: { restartPolicy: "Never", containers: [{ name: "build", image: "example.com/app:1" }] } } },
      });
      await operator.delete(Jobs, "classcache-build-web", { namespace: ns });
      await operator.patch(ClassCaches, "none", { metadata: { finalizers: [] } }, { namespace: ns, type: "merge" }).catch((err: unknown) => {
        assert.equal((err as ApiError).status, 404, "allowed, but there is no such ClassCache");
      });
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

  void describe("the operator's own Deployment and webhook Service (deploy/operator/)", () => {
    void it("are accepted by the API server with strict field validation, as the operator's service account", async () => {
      const docs = parseAllDocuments(readFileSync(join(REPO_ROOT, "deploy/operator/operator.yaml"), "utf8")).map((d) => d.toJS() as KubeObject & { kind: string });
      assert.deepEqual(docs.map((d) => d.kind), ["Deployment", "Service"]);
      for (const d of docs) {
        const rt = d.kind === "Deployment" ? Deployments : Services;
        await admin.apply(rt, d, { fieldManager: "classcache-install", dryRun: true, fieldValidation: "Strict" });
      }
      const pod = (docs[0] as unknown as { spec: { template: { spec: { serviceAccountName: string; containers: { args: string[] }[] } } } }).spec.template.spec;
      assert.equal(pod.serviceAccountName, "classcache-operator");
      assert.equal(pod.containers[0]!.args[0], "operator");
    });
  });
});
