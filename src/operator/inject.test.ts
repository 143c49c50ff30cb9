import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { findLaunch, injectPod, stripInjection, type InjectionInput, type PodSpec } from "./inject.ts";

const REF = "a".repeat(64);
const input: InjectionInput = { ref: REF, jarPath: "/app.jar", mode: "none", memorySharing: true, image: "classcache:1" };

function pod(container: Record<string, unknown>): PodSpec {
  return { containers: [{ name: "app", image: "shop:1.2", ...container }, { name: "sidecar", image: "envoy" }] };
}

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
    assert.equal(env.JAVA_TOOL_OPTIONS, "-Dfoo=1 -Xshare:auto", "never -Xshare:on: a stale archive must not stop the JVM");
    assert.equal(env.JDK_JAVA_OPTIONS, "@/classcache/jvm.args");
    assert.equal(env.A, "b");
    assert.deepEqual(spec.containers[1], { name: "sidecar", image: "envoy" }, "other containers are untouched");
    const init = spec.initContainers!.find((c) => c.name === "classcache-init")!;
    assert.ok(init.args!.includes("--fallback=-jar") && init.args!.includes("--fallback=/app.jar") && init.args!.includes("--share-memory"));
    const store = spec.volumes!.find((v) => v.name === "classcache-store") as unknown as { hostPath: { path: string; type: string } };
    assert.deepEqual(store.hostPath, { path: "/var/lib/classcache", type: "DirectoryOrCreate" });
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

  test("copies the agent for a live fallback in hybrid mode only", () => {
    const agent = { image: "otel:2", jarPath: "/javaagent.jar", runtimeOptions: ["-Dotel.metrics.exporter=none"] };
    const hybrid = injectPod(pod({ command: ["java", "-jar", "/app.jar"] }), { ...input, mode: "hybrid", agent });
    const init = hybrid.spec.initContainers!.map((c) => c.name);
    assert.deepEqual(init, ["classcache-agent-jar", "classcache-init"]);
    assert.ok(hybrid.spec.initContainers![1]!.args!.includes("--fallback-jvm=-javaagent:/classcache/agent/agent.jar"));
    const none = injectPod(pod({ command: ["java", "-jar", "/app.jar"] }), { ...input, agent });
    assert.deepEqual(none.spec.initContainers!.map((c) => c.name), ["classcache-init"]);
  });

  test("names the containers when the configured one does not exist", () => {
    const r = injectPod(pod({ command: ["java", "-jar", "/app.jar"] }), { ...input, container: "web" });
    assert.equal(r.outcome.reason, "ContainerNotFound");
    assert.match(r.outcome.message, /app, sidecar/);
  });
});
