import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { findLaunch, injectedEnv, injectPod, mergeToolOptions, stripInjection, toolOptions, type EnvVar, type InjectionInput, type PodSpec } from "./inject.ts";

const REF = "a".repeat(64);
const input: InjectionInput = { ref: REF, scope: "shop", jarPath: "/app.jar", mode: "none", memorySharing: true, image: "classcache:1" };

function pod(container: Record<string, unknown>): PodSpec {
  return { containers: [{ name: "app", image: "shop:1.2", ...container }, { name: "sidecar", image: "envoy" }] };
}

const JAVA = { command: ["java", "-jar", "/app.jar"] };
const fromSecret = (name: string, optional?: boolean): EnvVar => ({ name, valueFrom: { secretKeyRef: { name: "jvm", key: "opts", ...(optional === undefined ? {} : { optional }) } } });
const envOf = (spec: PodSpec): EnvVar[] => spec.containers[0]!.env ?? [];

describe("pod injection", () => {
  test("finds the launch of java -jar and java -cp command lines, and nothing in others", () => {
    assert.deepEqual(findLaunch(["java", "-Xmx1g", "-jar", "/app.jar", "--port=1"]), { start: 2, end: 4, launch: ["-jar", "/app.jar"] });
    assert.deepEqual(findLaunch(["/opt/java/bin/java", "-cp", "a.jar:b.jar", "com.x.Main"]), { start: 1, end: 4, launch: ["-cp", "a.jar:b.jar", "com.x.Main"] });
    assert.deepEqual(findLaunch(["sh", "-c", "java -jar /app.jar"]), { problem: "not-java" });
    assert.deepEqual(findLaunch(["java", "com.x.Main"]), { problem: "no-launch" });
  });

  test("rewrites the launch to the argfile, keeps the JVM options and app args, merges the option variables", () => {
    const { spec, outcome, original } = injectPod(
      pod({ command: ["java", "-Xmx512m", "-jar", "/app.jar", "--server.port=8080"], env: [{ name: "JAVA_TOOL_OPTIONS", value: "-Xshare:on -Dfoo=1" }, { name: "A", value: "b" }] }),
      input,
    );
    assert.equal(outcome.patched, true);
    const app = spec.containers[0]!;
    assert.deepEqual(app.command, ["java", "-Xmx512m", "@/classcache/launch.args", "--server.port=8080"]);
    const env = Object.fromEntries((app.env ?? []).map((e) => [e.name, e.value]));
    assert.equal(env.JAVA_TOOL_OPTIONS, " -Dfoo=1", "never -Xshare:on: a stale archive must not stop the JVM; only its characters are cut");
    assert.equal(env.JDK_JAVA_OPTIONS, "@/classcache/jvm.args");
    assert.equal(env.A, "b");
    assert.deepEqual(spec.containers[1], { name: "sidecar", image: "envoy" }, "other containers are untouched");
    const init = spec.initContainers!.find((c) => c.name === "classcache-init")!;
    assert.ok(init.args!.includes("--fallback=-jar") && init.args!.includes("--fallback=/app.jar") && init.args!.includes("--share-memory"));
    const store = spec.volumes!.find((v) => v.name === "classcache-store") as unknown as { hostPath: { path: string; type: string } };
    assert.deepEqual(store.hostPath, { path: "/var/lib/classcache/scopes/shop", type: "DirectoryOrCreate" }, "its namespace's view of the store, not the store");
    assert.ok(app.volumeMounts!.every((m) => m.readOnly), "the app sees the store and the argfiles read-only");
    assert.deepEqual(original?.env.JAVA_TOOL_OPTIONS, { name: "JAVA_TOOL_OPTIONS", value: "-Xshare:on -Dfoo=1" });
  });

  test("is undone exactly by stripInjection, and injecting twice equals injecting once", () => {
    const before = pod({ command: ["java", "-jar", "/app.jar"], env: [{ name: "JAVA_TOOL_OPTIONS", value: "-Dx=1" }], volumeMounts: [{ name: "cfg", mountPath: "/cfg" }] });
    before.volumes = [{ name: "cfg", configMap: { name: "cfg" } }];
    const once = injectPod(before, input);
    assert.deepEqual(stripInjection(once.spec, once.original), before);
    const twice = injectPod(stripInjection(once.spec, once.original), input);
    assert.deepEqual(twice.spec, once.spec);
  });

  test("keeps a JDK_JAVA_OPTIONS from a Secret where it was, under a name of its own, and references it from the JDK_JAVA_OPTIONS right after it", () => {
    const { spec, original } = injectPod(pod({ ...JAVA, env: [{ name: "A", value: "a" }, fromSecret("JDK_JAVA_OPTIONS"), { name: "Z", value: "z" }] }), input);
    assert.deepEqual(envOf(spec), [
      { name: "A", value: "a" },
      { ...fromSecret("CLASSCACHE_USER_JDK_JAVA_OPTIONS") },
      { name: "JDK_JAVA_OPTIONS", value: "@/classcache/jvm.args $(CLASSCACHE_USER_JDK_JAVA_OPTIONS)" },
      { name: "Z", value: "z" },
    ]);
    assert.deepEqual(original?.env.JDK_JAVA_OPTIONS, fromSecret("JDK_JAVA_OPTIONS"));
    // A value of its own is kept byte for byte behind the argfile.
    const valued = injectPod(pod({ ...JAVA, env: [{ name: "JDK_JAVA_OPTIONS", value: "-Xmx300m  -Dq='a  b' $(HEAP)" }] }), input);
    assert.deepEqual(envOf(valued.spec)[0], { name: "JDK_JAVA_OPTIONS", value: "@/classcache/jvm.args -Xmx300m  -Dq='a  b' $(HEAP)" });
  });

  test("leaves a JDK_JAVA_OPTIONS alone and reads jvm.args from the command where a reference to it could stay unresolved", () => {
    const cases: Record<string, Record<string, unknown>> = {
      // A missing optional key defines no variable: `$(…)` would reach the JVM literally and stop it.
      "an optional key": { env: [fromSecret("JDK_JAVA_OPTIONS", true)] },
      "a name already taken": { env: [fromSecret("JDK_JAVA_OPTIONS"), { name: "CLASSCACHE_USER_JDK_JAVA_OPTIONS", value: "mine" }] },
      // envFrom may define it, and an env entry would override it.
      envFrom: { envFrom: [{ configMapRef: { name: "jvm" } }] },
    };
    for (const [what, container] of Object.entries(cases)) {
      const before = pod({ command: ["java", "-Xss1m", "-jar", "/app.jar"], ...container });
      const { spec, original } = injectPod(before, input);
      assert.deepEqual(spec.containers[0]!.command, ["java", "@/classcache/jvm.args", "-Xss1m", "@/classcache/launch.args"], what);
      assert.deepEqual(envOf(spec), before.containers[0]!.env ?? [], `${what}: nothing of the user's env is overridden`);
      assert.deepEqual(stripInjection(spec, original), before, what);
    }
  });

  test("keeps JAVA_TOOL_OPTIONS byte for byte, quoted runs of spaces included, cutting out only the -Xshare option and adding none (next to -XX:AOTCache any -Xshare stops the JVM)", () => {
    assert.equal(mergeToolOptions('-Dgreeting="hello   world"'), '-Dgreeting="hello   world"');
    assert.equal(mergeToolOptions('-Dgreeting="hello   world" -Xshare:on'), '-Dgreeting="hello   world" ');
    assert.equal(mergeToolOptions("-Xshare:on\t-Da='x  -Xshare:on  y'   -Db=2"), "\t-Da='x  -Xshare:on  y'   -Db=2", "a -Xshare inside quotes is a property's text");
    assert.equal(mergeToolOptions('-Xshare:"on" -Dc=3'), " -Dc=3", "quotes inside a token do not hide it from the JVM");
    assert.equal(mergeToolOptions("-Xshare:auto"), "");
    assert.equal(mergeToolOptions(undefined), "");
    // Tokens as the JVM reads them: split on whitespace outside quotes, quotes dropped.
    assert.deepEqual(
      toolOptions(`-Dgreeting="hello   world" -Da='it''s'  -Xshare:on`).map((t) => t.option),
      ["-Dgreeting=hello   world", "-Da=its", "-Xshare:on"],
    );
    const { spec } = injectPod(pod({ ...JAVA, env: [{ name: "JAVA_TOOL_OPTIONS", value: '-Dgreeting="hello   world"' }] }), input);
    assert.equal(envOf(spec)[0]!.value, '-Dgreeting="hello   world"');
  });

  test("replaces the option variables in place, so a later $(JAVA_TOOL_OPTIONS) reference still comes after its target, and appends only variables that did not exist", () => {
    const env: EnvVar[] = [
      { name: "JAVA_TOOL_OPTIONS", value: "-Dteam=shop" },
      { name: "X", value: "$(JAVA_TOOL_OPTIONS) -Dmore" },
      { name: "Y", value: "$(JDK_JAVA_OPTIONS)" },
    ];
    const { spec } = injectPod(pod({ ...JAVA, env }), input);
    assert.deepEqual(envOf(spec), [
      { name: "JAVA_TOOL_OPTIONS", value: "-Dteam=shop" },
      { name: "X", value: "$(JAVA_TOOL_OPTIONS) -Dmore" },
      { name: "Y", value: "$(JDK_JAVA_OPTIONS)" },
      // New, so last: Y's reference stays as unresolved as it was.
      { name: "JDK_JAVA_OPTIONS", value: "@/classcache/jvm.args" },
    ]);
    const names = envOf(spec).map((e) => e.name);
    assert.ok(names.indexOf("JAVA_TOOL_OPTIONS") < names.indexOf("X"));
  });

  test("is undone exactly by stripInjection whatever the option variables were, order and valueFrom included", () => {
    const shapes: Record<string, Record<string, unknown>> = {
      "no env": {},
      "values between others": { env: [{ name: "A", value: "1" }, { name: "JDK_JAVA_OPTIONS", value: "-Xmx1g" }, { name: "JAVA_TOOL_OPTIONS", value: '-Xshare:on -Dg="a   b"' }, { name: "B", value: "$(JAVA_TOOL_OPTIONS)" }] },
      "both from sources": { env: [{ name: "JAVA_TOOL_OPTIONS", valueFrom: { configMapKeyRef: { name: "c", key: "t" } } }, { name: "A", value: "1" }, fromSecret("JDK_JAVA_OPTIONS"), { name: "B", value: "$(JDK_JAVA_OPTIONS)" }] },
      "empty values": { env: [{ name: "JDK_JAVA_OPTIONS" }, { name: "JAVA_TOOL_OPTIONS", value: "" }] },
      "a field as source": { env: [{ name: "JDK_JAVA_OPTIONS", valueFrom: { fieldRef: { fieldPath: "metadata.annotations['jvm']" } } }] },
      "optional source and envFrom": { env: [fromSecret("JDK_JAVA_OPTIONS", true)], envFrom: [{ secretRef: { name: "more" } }] },
    };
    for (const [what, container] of Object.entries(shapes)) {
      const before = pod({ ...JAVA, ...container });
      const once = injectPod(before, input);
      assert.equal(once.outcome.patched, true, what);
      // What the operator keeps: the record as JSON in an annotation.
      const record = JSON.parse(JSON.stringify(once.original)) as typeof once.original;
      assert.deepEqual(stripInjection(once.spec, record), before, what);
      assert.deepEqual(injectPod(stripInjection(once.spec, record), input).spec, once.spec, `${what}: twice equals once`);
    }
  });

  test("still strips a patch an earlier version wrote, which moved the option variables to the end", () => {
    // Written as [JDK_JAVA_OPTIONS, A]; that version's record cannot say where the variable was.
    const earlier = pod({ command: ["java", "@/classcache/launch.args"], env: [{ name: "A", value: "1" }, { name: "JDK_JAVA_OPTIONS", value: "@/classcache/jvm.args -Xmx1g" }, { name: "JAVA_TOOL_OPTIONS", value: "-Xshare:auto" }] });
    const record = { container: "app", command: JAVA.command, env: { JDK_JAVA_OPTIONS: { name: "JDK_JAVA_OPTIONS", value: "-Xmx1g" }, JAVA_TOOL_OPTIONS: null } };
    const clean = stripInjection(earlier, record);
    assert.deepEqual(clean, pod({ ...JAVA, env: [{ name: "A", value: "1" }, { name: "JDK_JAVA_OPTIONS", value: "-Xmx1g" }] }));
    assert.deepEqual(stripInjection(injectPod(clean, input).spec, record), clean, "from then on it stays where it is");
  });

  test("gives Owned mode exactly the env entries the patch wrote", () => {
    const renamed = injectPod(pod({ ...JAVA, env: [{ name: "A", value: "1" }, fromSecret("JDK_JAVA_OPTIONS"), { name: "JAVA_TOOL_OPTIONS", valueFrom: { configMapKeyRef: { name: "c", key: "t" } } }] }), input);
    assert.deepEqual(injectedEnv(envOf(renamed.spec)).map((e) => e.name), ["CLASSCACHE_USER_JDK_JAVA_OPTIONS", "JDK_JAVA_OPTIONS"]);
    const plain = injectPod(pod({ ...JAVA, env: [{ name: "JAVA_TOOL_OPTIONS", value: "-Da=1" }, { name: "CLASSCACHE_USER_JDK_JAVA_OPTIONS", value: "not ours" }] }), input);
    assert.deepEqual(injectedEnv(envOf(plain.spec)).map((e) => e.name), ["JAVA_TOOL_OPTIONS", "JDK_JAVA_OPTIONS"]);
  });

  test("says what to set when the launch comes from the image, and injects nothing", () => {
    const spec = pod({ args: ["--server.port=8080"] });
    const r = injectPod(spec, input);
    assert.equal(r.outcome.patched, false);
    assert.equal(r.outcome.reason, "LaunchUnknown");
    assert.match(r.outcome.message, /spec\.launch\.command/);
    assert.equal(r.spec, spec);
    const withLaunch = injectPod(spec, { ...input, launchCommand: ["java", "-jar", "/app.jar"] });
    assert.deepEqual(withLaunch.spec.containers[0]!.command, ["java", "@/classcache/launch.args"]);
    assert.deepEqual(withLaunch.spec.containers[0]!.args, ["--server.port=8080"]);
  });

  test("patches a container without a command with the launch its image's ENTRYPOINT makes, and strips back to no command at all", () => {
    const java = "/opt/java/openjdk/bin/java";
    const spec = pod({ args: ["--server.port=8080"], env: [{ name: "JAVA_TOOL_OPTIONS", value: "-Dteam=shop" }] });
    const { spec: patched, original } = injectPod(spec, { ...input, launchCommand: [java, "-Xmx300m", "-XX:+UseSerialGC", "-jar", "/app.jar"] });
    const app = patched.containers[0]!;
    assert.deepEqual(app.command, [java, "-Xmx300m", "-XX:+UseSerialGC", "@/classcache/launch.args"]);
    assert.deepEqual(app.args, ["--server.port=8080"]);
    assert.equal(patched.initContainers!.at(-1)!.command![0], java, "the jar check runs the image's own java");
    assert.equal(original?.command, null, "the record says there was no command");
    // Through the annotation's JSON, as Owned mode keeps it.
    const stripped = stripInjection(patched, JSON.parse(JSON.stringify(original)) as typeof original);
    assert.deepEqual(stripped, spec);
    assert.equal("command" in stripped.containers[0]!, false);
  });

  test("copies the agent for a live fallback in hybrid mode only", () => {
    const agent = { image: "otel:2", jarPath: "/javaagent.jar", runtimeOptions: ["-Dotel.metrics.exporter=none"] };
    const hybrid = injectPod(pod({ command: ["java", "-jar", "/app.jar"] }), { ...input, mode: "hybrid", agent });
    const init = hybrid.spec.initContainers!.map((c) => c.name);
    assert.deepEqual(init, ["classcache-agent-jar", "classcache-init", "classcache-check"]);
    assert.ok(hybrid.spec.initContainers![1]!.args!.includes("--fallback-jvm=-javaagent:/classcache/agent/agent.jar"));
    const none = injectPod(pod({ command: ["java", "-jar", "/app.jar"] }), { ...input, agent });
    assert.deepEqual(none.spec.initContainers!.map((c) => c.name), ["classcache-init", "classcache-check"]);
  });

  test("ends with the jar check in the app's own image, with its java, mounts and user, and no options from its environment", () => {
    const app = { command: ["/opt/java/bin/java", "-jar", "/app/app.jar"], volumeMounts: [{ name: "app", mountPath: "/app" }], securityContext: { runAsUser: 1000, runAsNonRoot: true, privileged: true } };
    const patched = injectPod(pod(app), input);
    const check = patched.spec.initContainers!.at(-1)!;
    assert.equal(check.name, "classcache-check");
    assert.equal(check.image, "shop:1.2");
    assert.equal(check.command![0], "/opt/java/bin/java");
    assert.deepEqual(check.command!.slice(-4), ["-cp", "/classcache/jar-check.jar", "dev.classcache.check.JarCheck", "/classcache"]);
    assert.deepEqual(check.volumeMounts, [{ name: "app", mountPath: "/app", readOnly: true }, { name: "classcache-args", mountPath: "/classcache" }]);
    assert.deepEqual(check.env, [{ name: "JAVA_TOOL_OPTIONS", value: "" }, { name: "JDK_JAVA_OPTIONS", value: "" }, { name: "_JAVA_OPTIONS", value: "" }]);
    const sc = check.securityContext as Record<string, unknown>;
    assert.deepEqual([sc.runAsUser, sc.runAsNonRoot, sc.privileged, sc.allowPrivilegeEscalation], [1000, true, undefined, false], "the app's user, none of its privilege");
    assert.ok(patched.spec.initContainers!.find((c) => c.name === "classcache-init")!.args!.includes("--check"));
    assert.deepEqual(stripInjection(patched.spec, patched.original), pod(app), "undone exactly");
  });

  test("mounts only the pod's scope's view of the node store, where the archive expects the store, and for the cluster's scope the cluster's view", () => {
    const hostPaths = (spec: PodSpec) => (spec.volumes ?? []).flatMap((v) => ((v as { hostPath?: unknown }).hostPath ? [(v as unknown as { hostPath: { path: string } }).hostPath.path] : []));
    const mounts = (spec: PodSpec) => [...spec.containers[0]!.volumeMounts!, ...spec.initContainers!.flatMap((c) => c.volumeMounts ?? [])].filter((m) => m.name === "classcache-store");
    const shop = injectPod(pod(JAVA), input).spec;
    assert.deepEqual(hostPaths(shop), ["/var/lib/classcache/scopes/shop"], "the only host path");
    assert.deepEqual(mounts(shop).map((m) => [m.mountPath, m.readOnly]), [["/var/lib/classcache", true], ["/var/lib/classcache", true]], "app and init step see it read-only at the store's path");
    assert.deepEqual(hostPaths(injectPod(pod(JAVA), { ...input, scope: "" }).spec), ["/var/lib/classcache/scopes/_cluster"]);
    assert.throws(() => injectPod(pod(JAVA), { ...input, scope: "../.." }), /is not a scope/);
  });

  test("where Pod Security forbids hostPath: the same view through the agent's CSI driver, no host path, every added container admissible under restricted", () => {
    const csi = (spec: PodSpec) => (spec.volumes ?? []).filter((v) => v["csi"] !== undefined).map((v) => [v.name, v["csi"]]);
    const withAgent: InjectionInput = { ...input, mode: "baked", storeVolume: "csi", agent: { image: "agent:1", jarPath: "/agent.jar", runtimeOptions: [] } };
    const shop = injectPod(pod(JAVA), withAgent).spec;
    assert.deepEqual(csi(shop), [["classcache-store", { driver: "csi.classcache.dev", readOnly: true }]], "the pod's own namespace's view: the plugin takes the namespace from the pod");
    assert.ok(!(shop.volumes ?? []).some((v) => v.hostPath), "no host path");
    assert.deepEqual(csi(injectPod(pod(JAVA), { ...withAgent, scope: "" }).spec), [["classcache-store", { driver: "csi.classcache.dev", readOnly: true, volumeAttributes: { view: "cluster" } }]]);
    for (const c of shop.initContainers!.filter((x) => x.name !== "classcache-check")) {
      const sc = c.securityContext as Record<string, unknown>;
      assert.deepEqual([sc.runAsNonRoot, sc.allowPrivilegeEscalation, sc.capabilities, sc.seccompProfile], [true, false, { drop: ["ALL"] }, { type: "RuntimeDefault" }], `${c.name}: restricted`);
    }
  });

  test("names the containers when the configured one does not exist", () => {
    const r = injectPod(pod({ command: ["java", "-jar", "/app.jar"] }), { ...input, container: "web" });
    assert.equal(r.outcome.reason, "ContainerNotFound");
    assert.match(r.outcome.message, /app, sidecar/);
  });
});
