/**
 * The Helm chart (deploy/chart/classcache), the one source of truth of the raw manifests in
 * deploy/: `helm lint --strict`, deploy/ equal to what the chart renders (scripts/manifests.sh),
 * what each value changes, the namespace the code fixes, and a real `helm install`, `upgrade` and
 * `uninstall` against a real kube-apiserver + etcd (src/testenv), with every object of a fully
 * configured rendering accepted under strict field validation. helm is built when missing
 * (scripts/testenv/build-binaries.sh helm), never skipped.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { parseAllDocuments, stringify } from "yaml";
import { KubeClient } from "../src/kube/client.ts";
import { isNotFound } from "../src/kube/errors.ts";
import { CustomResourceDefinitions, Deployments, Namespaces, resourceType, Services } from "../src/kube/resource.ts";
import type { KubeObject } from "../src/kube/types.ts";
import { ensureHelm, REPO_ROOT, startTestEnv, type TestEnv } from "../src/testenv/testenv.ts";

const CHART = join(REPO_ROOT, "deploy/chart/classcache");
const NS = "classcache-system";
const GENERATED_DIRS = ["crds", "rbac", "operator", "csi"];
const DIGEST = `sha256:${"ab".repeat(32)}`;

const ValidatingAdmissionPolicies = resourceType("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy", "validatingadmissionpolicies", false);
const ServiceAccounts = resourceType("v1", "ServiceAccount", "serviceaccounts");
const ClusterRoles = resourceType("rbac.authorization.k8s.io/v1", "ClusterRole", "clusterroles", false);

type Container = { name: string; image: string; imagePullPolicy?: string; args: string[]; ports: { name: string; containerPort: number }[] };
type PodSpec = Record<string, unknown> & { containers: Container[]; imagePullSecrets?: { name: string }[] };
type Doc = KubeObject & { kind: string; apiVersion: string; spec?: Record<string, unknown> & { template?: { metadata: { annotations?: Record<string, string> }; spec: PodSpec } } };

let helmBin: string;
/** Where helm keeps its config, cache, data and discovery cache: never the user's. */
let helmHome: string;

function run(file: string, args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { env: { ...process.env, HELM_CONFIG_HOME: join(helmHome, "config"), HELM_CACHE_HOME: join(helmHome, "cache"), HELM_DATA_HOME: join(helmHome, "data"), KUBECACHEDIR: join(helmHome, "kube-cache"), ...env }, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

async function helm(...args: string[]): Promise<string> {
  const r = await run(helmBin, args);
  assert.equal(r.code, 0, `helm ${args.join(" ")} failed:\n${r.stderr}`);
  return r.stdout;
}

/** The documents `helm template` renders (CRD included) in classcache-system with these extra arguments. */
async function template(...args: string[]): Promise<Doc[]> {
  const out = await helm("template", "classcache", CHART, "--namespace", NS, "--include-crds", ...args);
  return parseAllDocuments(out)
    .map((d) => d.toJS() as Doc | null)
    .filter((d): d is Doc => d !== null);
}

const find = (docs: Doc[], kind: string, name: string): Doc => {
  const d = docs.find((x) => x.kind === kind && x.metadata.name === name);
  assert.ok(d, `${kind}/${name} is rendered`);
  return d;
};
const pod = (docs: Doc[], name: string): PodSpec => find(docs, "Deployment", name).spec!.template!.spec;
const container = (docs: Doc[], name: string): Container => pod(docs, name).containers[0]!;
const flag = (c: Container, name: string): string | undefined => {
  const i = c.args.indexOf(name);
  return i < 0 ? undefined : c.args[i + 1];
};

/** Every value of values.yaml set to something other than its default (the ServiceMonitor stays off: see "fully configured"). */
const FULL_VALUES = {
  image: { repository: "registry.example/team/classcache", tag: "ignored-for-the-digest", digest: DIGEST, pullPolicy: "Always" },
  imagePullSecrets: [{ name: "registry-credentials" }],
  runtimeImage: "registry.example/team/classcache-runtime:1.2.3",
  logFormat: "text",
  allowClusterSharing: true,
  createNamespace: true,
  metrics: { port: 9090, serviceMonitor: { enabled: false, interval: "30s", scrapeTimeout: "10s", labels: { release: "prometheus" } } },
  operator: {
    replicas: 3,
    resources: { requests: { cpu: "100m", memory: "256Mi" }, limits: { memory: "1Gi" } },
    nodeSelector: { "kubernetes.io/os": "linux" },
    tolerations: [{ key: "dedicated", operator: "Equal", value: "infra", effect: "NoSchedule" }],
    affinity: { nodeAffinity: { requiredDuringSchedulingIgnoredDuringExecution: { nodeSelectorTerms: [{ matchExpressions: [{ key: "kubernetes.io/arch", operator: "In", values: ["amd64", "arm64"] }] }] } } },
    priorityClassName: "infra-critical",
  },
  webhook: {
    replicas: 4,
    resources: { requests: { cpu: "20m", memory: "64Mi" }, limits: { memory: "128Mi" } },
    nodeSelector: { "kubernetes.io/os": "linux" },
    tolerations: [{ operator: "Exists" }],
    affinity: { podAntiAffinity: { preferredDuringSchedulingIgnoredDuringExecution: [{ weight: 100, podAffinityTerm: { topologyKey: "kubernetes.io/hostname", labelSelector: { matchLabels: { "app.kubernetes.io/component": "webhook" } } } }] } },
    priorityClassName: "infra-critical",
  },
  agent: { observeJvms: true, priorityClassName: "system-node-critical", controlPlane: true, imagePullPolicy: "Never" },
};

void describe("the Helm chart", { timeout: 1_800_000 }, () => {
  let dir: string;
  let fullValues: string;

  before(async () => {
    helmBin = await ensureHelm();
    dir = await mkdtemp(join(tmpdir(), "classcache-chart-"));
    helmHome = join(dir, "helm-home");
    fullValues = join(dir, "full-values.yaml");
    await writeFile(fullValues, stringify(FULL_VALUES));
  });
  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  void it("passes helm lint --strict, with the default values and with every value set", async () => {
    await helm("lint", "--strict", "--namespace", NS, CHART);
    await helm("lint", "--strict", "--namespace", NS, CHART, "-f", fullValues, "--set", "metrics.serviceMonitor.enabled=true");
  });

  void it("is what deploy/crds, deploy/rbac and deploy/operator hold: scripts/manifests.sh wrote them from it", async () => {
    const out = join(dir, "generated");
    const r = await run("bash", [join(REPO_ROOT, "scripts/manifests.sh"), "--out", out], { HELM: helmBin });
    assert.equal(r.code, 0, r.stderr);
    for (const sub of GENERATED_DIRS) {
      const files = (d: string) => readdirSync(d).filter((f) => f.endsWith(".yaml")).sort();
      const committed = join(REPO_ROOT, "deploy", sub);
      assert.deepEqual(files(committed), files(join(out, sub)), `deploy/${sub}/ has other files than the chart renders: run scripts/manifests.sh`);
      for (const f of files(committed)) {
        assert.equal(readFileSync(join(committed, f), "utf8"), readFileSync(join(out, sub, f), "utf8"), `deploy/${sub}/${f} differs from the chart: edit the chart, then run scripts/manifests.sh`);
      }
    }
  });

  void it("installs into classcache-system only, which the code fixes, and says so", async () => {
    const r = await run(helmBin, ["template", "classcache", CHART, "--namespace", "classcache"]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /classcache installs into the namespace classcache-system only, not "classcache"/);
  });

  void it("refuses values it does not know or that cannot work (values.schema.json)", async () => {
    for (const bad of ["image.digest=latest", "operator.replica=1", "logFormat=xml", "agent.imagePullPolicy=always", "metrics.port=9443", "directory.external.addr=valkey:6379"]) {
      const r = await run(helmBin, ["template", "classcache", CHART, "--namespace", NS, "--set", bad]);
      assert.notEqual(r.code, 0, `--set ${bad} was accepted`);
      assert.match(r.stderr, /schema/i, `--set ${bad}: ${r.stderr}`);
    }
  });

  void it("runs its own image, repository:tag (default tag: appVersion), and gives it to both parts as --image", async () => {
    const chart = readFileSync(join(CHART, "Chart.yaml"), "utf8");
    const appVersion = /^appVersion: "?([^"\n]+)"?$/m.exec(chart)?.[1];
    const defaults = await template();
    for (const name of ["classcache-operator", "classcache-webhook"]) {
      assert.equal(container(defaults, name).image, `ghcr.io/classcache/classcache:${appVersion}`);
      assert.equal(flag(container(defaults, name), "--image"), `ghcr.io/classcache/classcache:${appVersion}`);
    }
    const tagged = await template("--set", "image.repository=registry.example/classcache,image.tag=dev");
    for (const name of ["classcache-operator", "classcache-webhook"]) {
      assert.equal(container(tagged, name).image, "registry.example/classcache:dev");
      assert.equal(flag(container(tagged, name), "--image"), "registry.example/classcache:dev", "the agents, init steps and kits run the chart's own image");
    }
  });

  void it("turns every value into the objects: digest, pull policies and secrets, scheduling, metrics port, the agents' flags (the controller's alone)", async () => {
    const docs = await template("-f", fullValues);
    const controller = container(docs, "classcache-operator");
    const hook = container(docs, "classcache-webhook");
    for (const c of [controller, hook]) {
      assert.equal(c.image, `registry.example/team/classcache@${DIGEST}`, "the digest wins over the tag");
      assert.equal(c.imagePullPolicy, "Always");
      assert.equal(flag(c, "--image"), "registry.example/team/classcache-runtime:1.2.3");
      assert.equal(flag(c, "--log-format"), "text");
      assert.equal(flag(c, "--metrics-port"), "9090");
      assert.ok(c.args.includes("--allow-cluster-sharing"));
      assert.equal(c.ports.find((p) => p.name === "metrics")?.containerPort, 9090);
    }
    assert.deepEqual(hook.args.slice(0, 5), ["operator", "--role", "webhook", "--webhook-cert-dir", "/var/run/classcache/webhook-tls"]);
    assert.ok(controller.args.includes("--observe-jvms"));
    assert.ok(controller.args.includes("--agents-on-control-plane"));
    assert.equal(flag(controller, "--agent-priority-class"), "system-node-critical");
    assert.equal(flag(controller, "--agent-image-pull-policy"), "Never");
    assert.ok(!hook.args.some((a) => a === "--observe-jvms" || a.startsWith("--agent")), "the webhook creates no agents");
    for (const [name, values] of [["classcache-operator", FULL_VALUES.operator], ["classcache-webhook", FULL_VALUES.webhook]] as const) {
      const deployment = find(docs, "Deployment", name);
      const spec = pod(docs, name);
      assert.equal(deployment.spec!["replicas"], values.replicas);
      assert.deepEqual(spec["nodeSelector"], values.nodeSelector);
      assert.deepEqual(spec["tolerations"], values.tolerations);
      assert.deepEqual(spec["affinity"], values.affinity);
      assert.equal(spec["priorityClassName"], values.priorityClassName);
      assert.deepEqual(spec.imagePullSecrets, [{ name: "registry-credentials" }]);
      assert.deepEqual(spec.containers[0]!["resources" as keyof Container], values.resources);
      assert.equal(deployment.spec!.template!.metadata.annotations?.["prometheus.io/port"], "9090");
    }
    assert.deepEqual((find(docs, "ServiceAccount", "classcache-agent") as { imagePullSecrets?: unknown }).imagePullSecrets, [{ name: "registry-credentials" }], "the agents the operator creates pull with them too");
    find(docs, "Namespace", NS);

    const defaults = await template();
    const plain = container(defaults, "classcache-operator");
    assert.equal(flag(plain, "--agent-image-pull-policy"), "IfNotPresent", "by default the agents pull as the operator does");
    for (const f of ["--observe-jvms", "--agents-on-control-plane", "--agent-priority-class", "--allow-cluster-sharing"]) assert.ok(!plain.args.includes(f), `${f} is off by default`);
    assert.ok(!defaults.some((d) => d.kind === "Namespace"), "helm creates the namespace (--create-namespace), not the chart");
  });

  void it("renders a ServiceMonitor (and the headless Service it selects) only when asked", async () => {
    const defaults = await template();
    assert.ok(!defaults.some((d) => d.kind === "ServiceMonitor" || d.metadata.name === "classcache-metrics"));
    const docs = await template("-f", fullValues, "--set", "metrics.serviceMonitor.enabled=true");
    const monitor = find(docs, "ServiceMonitor", "classcache") as Doc & { spec: { selector: { matchLabels: Record<string, string> }; endpoints: Record<string, string>[]; namespaceSelector: unknown } };
    assert.equal(monitor.apiVersion, "monitoring.coreos.com/v1");
    assert.equal(monitor.metadata.labels?.["release"], "prometheus");
    assert.deepEqual(monitor.spec.endpoints, [{ port: "metrics", path: "/metrics", scheme: "http", interval: "30s", scrapeTimeout: "10s" }]);
    assert.deepEqual(monitor.spec.namespaceSelector, { matchNames: [NS] });
    const service = find(docs, "Service", "classcache-metrics") as Doc & { spec: { selector: Record<string, string>; clusterIP: string; ports: { port: number; targetPort: string }[] } };
    assert.ok(Object.entries(monitor.spec.selector.matchLabels).every(([k, v]) => service.metadata.labels?.[k] === v), "the ServiceMonitor selects the metrics Service");
    assert.ok(!Object.entries(monitor.spec.selector.matchLabels).every(([k, v]) => find(docs, "Service", "classcache-webhook").metadata.labels?.[k] === v), "and not the webhook's");
    assert.equal(service.spec.clusterIP, "None");
    assert.deepEqual(service.spec.selector, { "app.kubernetes.io/part-of": "classcache" }, "the controller, the webhook and the node agents");
    assert.deepEqual(service.spec.ports.map((p) => [p.port, p.targetPort]), [[9090, "metrics"]]);
  });

  void describe("on a real API server", () => {
    let env: TestEnv;
    let admin: KubeClient;
    let kubeconfig: string;
    const install = (...args: string[]) => helm(...args, "--namespace", NS, "--kubeconfig", kubeconfig);

    before(async () => {
      env = await startTestEnv({ dir: join(dir, "testenv") });
      kubeconfig = env.kubeconfigPath;
      admin = KubeClient.load({ kubeconfigPath: kubeconfig });
    });
    after(async () => {
      await env?.stop();
    });

    void it("accepts every object of a fully configured rendering with strict field validation (server-side dry run), before the install", async () => {
      const docs = await template("-f", fullValues, "--set", "metrics.serviceMonitor.enabled=true");
      // The test API server has no Prometheus Operator: the ServiceMonitor's shape is checked above.
      const applicable = docs.filter((d) => d.kind !== "ServiceMonitor");
      assert.ok(applicable.length >= 20);
      // Before anything is installed, so the dry run judges these objects alone (not merged into
      // existing ones); the namespace is created for real, as helm's --create-namespace would.
      await admin.apply(Namespaces, find(docs, "Namespace", NS), { fieldManager: "classcache-chart-test" });
      for (const d of applicable) {
        const rt = await admin.discover(d.apiVersion, d.kind);
        assert.ok(rt, `the server serves ${d.kind} ${d.apiVersion}`);
        await admin.apply(rt, d, { fieldManager: "classcache-chart-test", dryRun: true, fieldValidation: "Strict", ...(d.metadata.namespace ? { namespace: d.metadata.namespace } : {}) });
      }
    });

    void it("helm install: the command of docs/chart.md creates the CRD, the accounts, RBAC, admission policies, both Deployments and the Service", async () => {
      await install("install", "classcache", CHART, "--create-namespace", "--set", "image.repository=registry.example/classcache,image.tag=test");
      const crd = await admin.get<KubeObject & { status?: { conditions?: { type: string; status: string }[] } }>(CustomResourceDefinitions, "classcaches.classcache.dev");
      assert.ok(crd.status?.conditions?.some((c) => c.type === "Established" && c.status === "True"));
      for (const sa of ["classcache-operator", "classcache-webhook", "classcache-agent"]) await admin.get(ServiceAccounts, sa, { namespace: NS });
      for (const p of ["classcache-operator-writes", "classcache-operator-builds-need-a-classcache", "classcache-operator-patches-need-a-classcache"]) await admin.get(ValidatingAdmissionPolicies, p);
      await admin.get(Services, "classcache-webhook", { namespace: NS });
      for (const name of ["classcache-operator", "classcache-webhook"]) {
        const d = await admin.get<Doc>(Deployments, name, { namespace: NS });
        const c = d.spec!.template!.spec.containers[0]!;
        assert.equal(c.image, "registry.example/classcache:test");
        assert.equal(flag(c, "--image"), "registry.example/classcache:test");
      }
    });

    void it("helm upgrade: changed values reach the Deployments", async () => {
      await install("upgrade", "classcache", CHART, "--reuse-values", "--set", "allowClusterSharing=true,agent.observeJvms=true,webhook.replicas=3");
      const controller = await admin.get<Doc>(Deployments, "classcache-operator", { namespace: NS });
      const hook = await admin.get<Doc>(Deployments, "classcache-webhook", { namespace: NS });
      const args = (d: Doc) => d.spec!.template!.spec.containers[0]!.args;
      assert.ok(args(controller).includes("--allow-cluster-sharing") && args(controller).includes("--observe-jvms"));
      assert.ok(args(hook).includes("--allow-cluster-sharing"));
      assert.equal(hook.spec!["replicas"], 3);
      assert.equal(hook.spec!.template!.spec.containers[0]!.image, "registry.example/classcache:test", "--reuse-values kept the image");
    });

    void it("helm uninstall: removes everything it installed but the CRD (in crds/: the ClassCaches and their finalizers stay)", async () => {
      await install("uninstall", "classcache");
      const gone = async (call: Promise<unknown>, what: string) => {
        try {
          await call;
        } catch (err) {
          if (isNotFound(err)) return;
          throw err;
        }
        assert.fail(`${what} is still there`);
      };
      await gone(admin.get(Deployments, "classcache-operator", { namespace: NS }), "the controller");
      await gone(admin.get(Deployments, "classcache-webhook", { namespace: NS }), "the webhook");
      await gone(admin.get(ValidatingAdmissionPolicies, "classcache-operator-writes"), "the admission policy");
      await gone(admin.get(ClusterRoles, "classcache-operator"), "the ClusterRole");
      await gone(admin.get(ServiceAccounts, "classcache-agent", { namespace: NS }), "the agents' service account");
      await admin.get(CustomResourceDefinitions, "classcaches.classcache.dev");
    });
  });
});
