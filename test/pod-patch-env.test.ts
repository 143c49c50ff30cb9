/**
 * The pod patch keeps the user's JVM options, proven on real processes: a real JVM started with
 * the env the patch produces (after Kubernetes' `$(VAR)` expansion, simulated exactly as the
 * kubelet does it) gets the user's JAVA_TOOL_OPTIONS byte for byte and its JDK_JAVA_OPTIONS from a
 * Secret next to jvm.args; and on a real kube-apiserver an Owned-mode patch of a Deployment keeps
 * the env in order and is put back exactly.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { after, before, describe, it } from "node:test";
import type { KubeClient } from "../src/kube/client.ts";
import { ApiError } from "../src/kube/errors.ts";
import { Deployments, Pods } from "../src/kube/resource.ts";
import type { KubeObject } from "../src/kube/types.ts";
import { ClassCaches, type ClassCache } from "../src/operator/api/v1.ts";
import { ARGS_DIR, ORIGINAL_LAUNCH_ANNOTATION } from "../src/operator/constants.ts";
import { injectPod, type EnvVar, type InjectionInput, type PodSpec } from "../src/operator/inject.ts";
import type { Operator } from "../src/operator/operator.ts";
import { argfile } from "../src/node/podinit.ts";
import { cli, jdk } from "./support/cli.ts";
import { startOperatorCluster, until, type OperatorCluster } from "./support/operator.ts";

const run = promisify(execFile);

/** Key sources for the simulated kubelet: name → key → value. */
interface Sources {
  secrets?: Record<string, Record<string, string>>;
  configMaps?: Record<string, Record<string, string>>;
}

/**
 * `$(NAME)` expansion as the kubelet does it (k8s.io/kubernetes third_party/forked/golang/expansion):
 * a known NAME is replaced, an unknown one left as written, `$$` gives `$`, any other `$` stays.
 */
function expand(input: string, vars: ReadonlyMap<string, string>): string {
  let out = "";
  for (let i = 0; i < input.length; i++) {
    if (input[i] !== "$" || i + 1 >= input.length) {
      out += input[i];
      continue;
    }
    const next = input[i + 1];
    const close = next === "(" ? input.indexOf(")", i + 2) : -1;
    if (next === "$") {
      out += "$";
      i += 1;
    } else if (close >= 0) {
      const name = input.slice(i + 2, close);
      out += vars.has(name) ? vars.get(name) : `$(${name})`;
      i = close;
    } else {
      out += `$${next}`;
      i += 1;
    }
  }
  return out;
}

/**
 * A container's environment as the kubelet builds it (pkg/kubelet makeEnvironmentVariables), env
 * only: each value expanded against the variables defined before it; a key reference resolved,
 * and skipped — no variable at all — when it is optional and missing.
 */
function kubeletEnv(env: EnvVar[], sources: Sources = {}): Map<string, string> {
  const vars = new Map<string, string>();
  for (const e of env) {
    let value = e.value ?? "";
    if (value !== "") value = expand(value, vars);
    else if (e.valueFrom) {
      const ref = (e.valueFrom.secretKeyRef ?? e.valueFrom.configMapKeyRef) as { name: string; key: string; optional?: boolean } | undefined;
      if (!ref) throw new Error(`the simulated kubelet resolves key references only: ${JSON.stringify(e)}`);
      const from = e.valueFrom.secretKeyRef ? sources.secrets : sources.configMaps;
      const found = from?.[ref.name]?.[ref.key];
      if (found === undefined) {
        if (ref.optional) continue;
        throw new Error(`couldn't find key ${ref.key} in ${ref.name}`);
      }
      value = found;
    }
    vars.set(e.name, value);
  }
  return vars;
}

const MAIN = `
public class Main {
  public static void main(String[] args) {
    System.out.println("greeting=" + System.getProperty("greeting"));
    System.out.println("from.secret=" + System.getProperty("from.secret"));
    System.out.println("from.jvmargs=" + System.getProperty("from.jvmargs"));
    System.out.println("maxHeapMiB=" + Runtime.getRuntime().maxMemory() / (1024 * 1024));
    System.out.println("X=" + System.getenv("X"));
    System.out.println("args=" + String.join(",", args));
  }
}
`;

const REF = "c".repeat(64);
const INPUT: InjectionInput = { ref: REF, scope: "shop", jarPath: "/app.jar", mode: "none", memorySharing: false, image: "classcache:test" };

describe("the patched env on a real JVM", () => {
  let dir: string;
  let java: string;
  let classes: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "classcache-pod-env-"));
    const home = await jdk(17);
    java = join(home, "bin", "java");
    classes = join(dir, "classes");
    await writeFile(join(dir, "Main.java"), MAIN);
    await run(join(home, "bin", "javac"), ["-d", classes, join(dir, "Main.java")]);
  });
  after(() => rm(dir, { recursive: true, force: true }));

  /**
   * The pod as the kubelet would start it: the patch applied, the init step run with its own
   * arguments (no archive on this "node", so launch.args is the pod's own launch), jvm.args given
   * `jvm`, the env expanded, the emptyDir at /classcache standing in a directory of its own.
   */
  async function startPatched(name: string, container: Record<string, unknown>, sources: Sources, jvm: string[]): Promise<{ spec: PodSpec; out: Record<string, string>; code: number; stderr: string }> {
    const { spec, outcome } = injectPod({ containers: [{ name: "app", image: "shop:1", ...container }] }, INPUT);
    assert.equal(outcome.patched, true, outcome.message);
    const args = join(dir, name);
    const init = spec.initContainers!.find((c) => c.name === "classcache-init")!;
    const ran = await cli(...init.args!, `--out=${args}`, `--store=${join(dir, "empty-store")}`);
    assert.equal(ran.code, 0, ran.stderr);
    await writeFile(join(args, "jvm.args"), argfile(jvm));
    const mounted = (s: string) => s.replaceAll(`@${ARGS_DIR}/`, `@${args}/`);
    const app = spec.containers[0]!;
    const env = Object.fromEntries([...kubeletEnv(app.env ?? [], sources)].map(([k, v]) => [k, mounted(v)]));
    const argv = [...app.command!, ...(app.args ?? [])].map(mounted);
    assert.equal(argv[0], "java");
    const r = await run(java, argv.slice(1), { env, timeout: 20_000 }).then(
      (p) => ({ code: 0, stdout: p.stdout, stderr: p.stderr }),
      (e: { code?: number; stdout?: string; stderr?: string }) => ({ code: e.code ?? -1, stdout: e.stdout ?? "", stderr: e.stderr ?? "" }),
    );
    const out = Object.fromEntries(r.stdout.split("\n").filter((l) => l.includes("=")).map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]));
    return { spec, out, code: r.code, stderr: r.stderr };
  }

  it("simulates the kubelet's expansion: earlier variables only, $$ escapes, the rest as written", () => {
    const vars = kubeletEnv(
      [
        { name: "A", value: "a" },
        { name: "B", value: "$(A)-$(C)-$$(A)-$$$(A)-$x-$(" },
        { name: "C", value: "c" },
        { name: "S", valueFrom: { secretKeyRef: { name: "s", key: "k" } } },
        { name: "O", valueFrom: { secretKeyRef: { name: "s", key: "missing", optional: true } } },
        { name: "D", value: "$(S) $(O)" },
      ],
      { secrets: { s: { k: "$(A)" } } },
    );
    assert.equal(vars.get("B"), "a-$(C)-$(A)-$a-$x-$(");
    assert.equal(vars.get("D"), "$(A) $(O)", "a source's value is not expanded again; a missing optional key defines nothing");
    assert.equal(vars.has("O"), false);
  });

  it("gets JAVA_TOOL_OPTIONS with its quoted spaces intact, and a later $(JAVA_TOOL_OPTIONS) reference still expands", async () => {
    const { out, code, stderr } = await startPatched(
      "tool",
      {
        command: ["java", "-cp", classes, "Main"],
        args: ["one"],
        env: [
          { name: "JAVA_TOOL_OPTIONS", value: '-Xshare:on -Dgreeting="hello   world"' },
          { name: "X", value: "$(JAVA_TOOL_OPTIONS) -Dmore" },
        ],
      },
      {},
      [],
    );
    assert.equal(code, 0, stderr);
    assert.equal(out.greeting, "hello   world");
    assert.equal(out.X, ' -Dgreeting="hello   world" -Dmore');
    assert.equal(out.args, "one");
    assert.match(stderr, /Picked up JAVA_TOOL_OPTIONS: {2}-Dgreeting="hello {3}world"$/m);
  });

  it("gets the JDK_JAVA_OPTIONS from a Secret next to the options in jvm.args", async () => {
    const { spec, out, code, stderr } = await startPatched(
      "secret",
      { command: ["java", "-cp", classes, "Main"], env: [{ name: "JDK_JAVA_OPTIONS", valueFrom: { secretKeyRef: { name: "jvm", key: "opts" } } }] },
      { secrets: { jvm: { opts: "-Xmx300m -Dfrom.secret=1" } } },
      ["-Dfrom.jvmargs=yes"],
    );
    assert.equal(spec.containers[0]!.env![0]!.name, "CLASSCACHE_USER_JDK_JAVA_OPTIONS");
    assert.equal(code, 0, stderr);
    assert.equal(out["from.secret"], "1");
    assert.equal(out["from.jvmargs"], "yes");
    assert.ok(Number(out.maxHeapMiB) <= 300 && Number(out.maxHeapMiB) > 200, `-Xmx300m from the Secret: max heap ${out.maxHeapMiB} MiB`);
  });

  it("starts with an optional JDK_JAVA_OPTIONS key missing, which a $(…) reference to it would not", async () => {
    const optional = { name: "JDK_JAVA_OPTIONS", valueFrom: { secretKeyRef: { name: "jvm", key: "opts", optional: true } } };
    const patched = await startPatched("optional", { command: ["java", "-cp", classes, "Main"], env: [optional] }, {}, ["-Dfrom.jvmargs=yes"]);
    assert.equal(patched.code, 0, patched.stderr);
    assert.equal(patched.out["from.jvmargs"], "yes");
    // The same missing key behind a reference: the kubelet leaves `$(…)` as written, the launcher refuses it.
    const referenced = kubeletEnv([{ ...optional, name: "CLASSCACHE_USER_JDK_JAVA_OPTIONS" }, { name: "JDK_JAVA_OPTIONS", value: "$(CLASSCACHE_USER_JDK_JAVA_OPTIONS)" }]);
    const refused = await run(java, ["-cp", classes, "Main"], { env: Object.fromEntries(referenced) }).then(
      () => undefined,
      (e: { code?: number; stderr?: string }) => e,
    );
    assert.ok(refused && refused.code !== 0, "the JVM does not start");
    assert.match(refused.stderr ?? "", /Cannot specify main class in environment variable JDK_JAVA_OPTIONS/);
  });
});

interface Workload extends KubeObject {
  spec: { template: { metadata?: { labels?: Record<string, string> }; spec: PodSpec } };
}

const USER_ENV: EnvVar[] = [
  { name: "A", value: "a" },
  { name: "JDK_JAVA_OPTIONS", valueFrom: { secretKeyRef: { name: "jvm", key: "opts" } } },
  { name: "JAVA_TOOL_OPTIONS", value: '-Dgreeting="hello   world" -Xshare:on' },
  { name: "X", value: "$(JAVA_TOOL_OPTIONS) -Dmore" },
];

function deployment(name: string, env: EnvVar[]): Workload {
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name, namespace: "shop" },
    spec: {
      selector: { matchLabels: { app: name } },
      template: { metadata: { labels: { app: name } }, spec: { containers: [{ name: "app", image: "registry.example/shop:1.0", command: ["java", "-jar", "/app.jar"], env }] } },
    } as Workload["spec"],
  };
}

describe("Owned mode's env on a real API server", () => {
  let cluster: OperatorCluster;
  let client: KubeClient;
  let op: Operator;

  before(async () => {
    cluster = await startOperatorCluster("podenv", ["shop"]);
    ({ client, op } = cluster);
  });
  after(() => cluster?.stop());

  const getDeploy = (name: string) => client.get<Workload>(Deployments, name, { namespace: "shop" });
  const appEnv = async (name: string) => (await getDeploy(name)).spec.template.spec.containers[0]!.env;
  const apply = (name: string, env: EnvVar[]) =>
    client.apply(Deployments, { apiVersion: "apps/v1", kind: "Deployment", metadata: { name, namespace: "shop" }, spec: { template: { spec: { containers: [{ name: "app", env }] } } } }, { fieldManager: "probe", force: true, namespace: "shop" });

  it("merges an applied env by name in place and appends new names, but cannot turn a user's valueFrom into a value", async () => {
    await client.create(Deployments, deployment("probe-a", [USER_ENV[0]!, USER_ENV[2]!, USER_ENV[3]!]), { namespace: "shop" });
    await apply("probe-a", [{ name: "JAVA_TOOL_OPTIONS", value: "-Dt=1 -Xshare:auto" }, { name: "JDK_JAVA_OPTIONS", value: "@/classcache/jvm.args" }]);
    assert.deepEqual((await appEnv("probe-a"))!.map((e) => e.name), ["A", "JAVA_TOOL_OPTIONS", "X", "JDK_JAVA_OPTIONS"]);
    await client.create(Deployments, deployment("probe-b", USER_ENV), { namespace: "shop" });
    const refused = await apply("probe-b", [
      { name: "CLASSCACHE_USER_JDK_JAVA_OPTIONS", valueFrom: { secretKeyRef: { name: "jvm", key: "opts" } } },
      { name: "JDK_JAVA_OPTIONS", value: "@/classcache/jvm.args $(CLASSCACHE_USER_JDK_JAVA_OPTIONS)" },
    ]).then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(refused instanceof ApiError && refused.status === 422, String(refused));
    assert.match(refused.message, /valueFrom: Invalid value: "": may not be specified when `value` is not empty/);
  });

  it("patches a Deployment's env in place, renamed source first, is stable, and puts it back exactly", async () => {
    await client.create(Deployments, deployment("shop", USER_ENV), { namespace: "shop" });
    await client.create(ClassCaches, { apiVersion: "classcache.dev/v1", kind: "ClassCache", metadata: { name: "shop", namespace: "shop" }, spec: { workloadRef: { name: "shop" }, patchMode: "Owned", valkey: cluster.valkey } } as unknown as ClassCache, { namespace: "shop" });
    // The status comes last in a pass, after the template is written and applied.
    await until("patched", async () => (await client.get<ClassCache>(ClassCaches, "shop", { namespace: "shop" })).status?.conditions?.find((c) => c.type === "WorkloadPatched")?.reason === "Patched");
    assert.ok((await getDeploy("shop")).metadata.annotations?.[ORIGINAL_LAUNCH_ANNOTATION]);
    const patched = (await appEnv("shop"))!;
    assert.deepEqual(patched, [
      { name: "A", value: "a" },
      { name: "CLASSCACHE_USER_JDK_JAVA_OPTIONS", valueFrom: { secretKeyRef: { name: "jvm", key: "opts" } } },
      { name: "JDK_JAVA_OPTIONS", value: "@/classcache/jvm.args $(CLASSCACHE_USER_JDK_JAVA_OPTIONS)" },
      { name: "JAVA_TOOL_OPTIONS", value: '-Dgreeting="hello   world" ' },
      { name: "X", value: "$(JAVA_TOOL_OPTIONS) -Dmore" },
    ]);
    const vars = kubeletEnv(patched, { secrets: { jvm: { opts: "-Xmx300m -Dfrom.secret=1" } } });
    assert.equal(vars.get("JDK_JAVA_OPTIONS"), "@/classcache/jvm.args -Xmx300m -Dfrom.secret=1");
    assert.equal(vars.get("X"), '-Dgreeting="hello   world"  -Dmore');
    const managers = (await getDeploy("shop")).metadata.managedFields?.map((m) => `${m.manager}/${m.operation}`) ?? [];
    assert.ok(managers.includes("classcache-operator/Apply"), managers.join(", "));

    const rv = (await getDeploy("shop")).metadata.resourceVersion;
    await op.reconciler!.reconcile("shop/shop", new AbortController().signal);
    await op.reconciler!.reconcile("shop/shop", new AbortController().signal);
    assert.equal((await getDeploy("shop")).metadata.resourceVersion, rv, "a second pass writes nothing");

    await client.delete(ClassCaches, "shop", { namespace: "shop" });
    await until("the ClassCache is gone", () => client.get(ClassCaches, "shop", { namespace: "shop" }).then(() => false, (e: unknown) => e instanceof ApiError && e.status === 404));
    const restored = await getDeploy("shop");
    assert.deepEqual(restored.spec.template.spec.containers[0]!.env, USER_ENV);
    assert.deepEqual(restored.spec.template.spec.containers[0]!.command, ["java", "-jar", "/app.jar"]);
    assert.equal(restored.spec.template.spec.initContainers, undefined);
  });

  it("gives a Pod patched by the webhook the same env, in the same order", async () => {
    await client.create(ClassCaches, { apiVersion: "classcache.dev/v1", kind: "ClassCache", metadata: { name: "web", namespace: "shop" }, spec: { workloadRef: { name: "web" }, patchMode: "Webhook", valkey: cluster.valkey } } as unknown as ClassCache, { namespace: "shop" });
    await until("the webhook knows the ClassCache", () => client.get(ClassCaches, "web", { namespace: "shop" }));
    const pod = await client.create<KubeObject & { spec: PodSpec }>(
      Pods,
      { metadata: { name: "web-1", namespace: "shop", labels: { "classcache.dev/inject": "web" } }, spec: { containers: [{ name: "app", image: "registry.example/shop:1.0", command: ["java", "-jar", "/app.jar"], env: USER_ENV }] } },
      { namespace: "shop" },
    );
    assert.deepEqual(pod.spec.containers[0]!.env!.map((e) => e.name), ["A", "CLASSCACHE_USER_JDK_JAVA_OPTIONS", "JDK_JAVA_OPTIONS", "JAVA_TOOL_OPTIONS", "X"]);
    assert.equal(pod.spec.containers[0]!.env![3]!.value, '-Dgreeting="hello   world" ');
  });
});
