import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { parseAllDocuments } from "yaml";
import { INJECT_LABEL, MOUNTS, REF_ANNOTATION, REF_LABEL, STORE_ROOT, STORE_RUN_DIR } from "../constants.ts";
import { BASELINE_CAPABILITIES, BUILD_MEMORY_HEADROOM, buildJob, buildJobName, buildTokenSecret, memoryBytes, probeEnv, refHex, withBuildHeadroom, type BuildJobInput } from "./buildjob.ts";
import type { Container, EnvVar, PodSpec, Volume } from "./meta.ts";
import { buildInput, REF, workloadTemplate } from "./testing.ts";

function podSpec(input: BuildJobInput): PodSpec {
  const job = buildJob(input) as unknown as { spec: { template: { spec: PodSpec } } };
  return job.spec.template.spec;
}

function appContainer(spec: PodSpec): Container {
  assert.equal(spec.containers.length, 1);
  return spec.containers[0]!;
}

function hostPaths(spec: PodSpec): Volume[] {
  return (spec.volumes ?? []).filter((v) => v.hostPath !== undefined);
}

void describe("buildJob", () => {
  void it("is named after the first 10 hex digits of the ref and owned by the ClassCache", () => {
    const job = buildJob(buildInput());
    assert.equal(job.metadata.name, "classcache-build-0123456789");
    assert.equal(job.metadata.namespace, "shop-ns");
    assert.deepEqual(job.metadata.ownerReferences, [
      { apiVersion: "classcache.dev/v1", kind: "ClassCache", name: "shop", uid: "6f1c2c7e-1d0e-4a57-9d43-1a2b3c4d5e6f", controller: true, blockOwnerDeletion: true },
    ]);
    assert.equal(job.metadata.annotations?.[REF_ANNOTATION], REF);
    assert.equal(job.metadata.labels?.[REF_LABEL]?.length, 63);
    const spec = job["spec"] as Record<string, unknown>;
    assert.equal(spec["backoffLimit"], 2);
    assert.equal(spec["activeDeadlineSeconds"], 120 * 3 + 300);
    assert.equal(spec["ttlSecondsAfterFinished"], 3600);
  });

  void it("mounts exactly one host path, the store's run directory, read-only, whatever the workload and the ClassCache say", () => {
    const hostile = buildInput({
      jarPath: "/var/lib/kubelet/../../etc/shadow",
      containerName: "app",
      agent: { image: "a:1", jarPath: "/", configPath: "/host/etc/passwd" },
      profileYAML: "name: x\nhostPath: /",
      ref: "sha256:ffffffffffffffffffff",
    });
    for (const input of [buildInput(), hostile, buildInput({ agent: undefined, arch: undefined })]) {
      const spec = podSpec(input);
      assert.deepEqual(hostPaths(spec), [{ name: "classcache-agent-run", hostPath: { path: STORE_RUN_DIR, type: "Directory" } }]);
      const mounts = [...(spec.initContainers ?? []), ...spec.containers].flatMap((c) => c.volumeMounts ?? []);
      for (const m of mounts.filter((m) => m.name === "classcache-agent-run")) assert.equal(m.readOnly, true);
      assert.ok(!mounts.some((m) => m.name === "host-logs"), "the workload's hostPath volume is not mounted");
    }
  });

  void it("keeps only the named app container, without probes, lifecycle hooks or ports, and keeps the init containers", () => {
    const spec = podSpec(buildInput());
    const app = appContainer(spec);
    assert.equal(app.name, "app");
    for (const field of ["livenessProbe", "readinessProbe", "startupProbe", "lifecycle", "ports"]) assert.equal(app[field], undefined, field);
    assert.deepEqual(
      spec.initContainers?.map((c) => c.name),
      ["classcache-kit", "classcache-agent", "classcache-agent-config", "migrate"],
    );
    assert.equal(spec["restartPolicy"], "Never");
  });

  void it("keeps the workload's image, env, resources (memory plus classcache's headroom), volumes, service account and scheduling", () => {
    const tpl = workloadTemplate();
    const spec = podSpec(buildInput());
    const app = appContainer(spec);
    assert.equal(app.image, "registry.example/shop@sha256:aaaa");
    assert.deepEqual(app["resources"], withBuildHeadroom(tpl.spec.containers[0]!["resources"] as Parameters<typeof withBuildHeadroom>[0]));
    assert.deepEqual(app["envFrom"], [{ configMapRef: { name: "shop-env" } }]);
    assert.deepEqual(
      app.env?.filter((e) => !e.name.startsWith("CLASSCACHE_")),
      [
        { name: "SPRING_PROFILES_ACTIVE", value: "prod" },
        { name: "DB_PASSWORD", valueFrom: { secretKeyRef: { name: "db", key: "password" } } },
      ],
    );
    assert.ok(!app.env?.some((e) => e.name === "CLASSCACHE_STORE"), "the workload cannot steer the build tool through CLASSCACHE_*");
    assert.deepEqual(app.volumeMounts?.[0], { name: "config", mountPath: "/config", readOnly: true });
    assert.ok(!app.volumeMounts?.some((m) => m.mountPath.startsWith(`${STORE_ROOT}/`)), "no workload mount inside the build's store");
    assert.ok(spec.volumes?.some((v) => v.name === "config" && v.configMap?.name === "shop-config"));
    assert.equal(spec["serviceAccountName"], "shop");
    assert.deepEqual(spec["imagePullSecrets"], [{ name: "regcred" }]);
    assert.deepEqual(spec["securityContext"], tpl.spec["securityContext"]);
    assert.deepEqual(spec["tolerations"], tpl.spec["tolerations"]);
    assert.deepEqual(spec.nodeSelector, { pool: "jvm", "kubernetes.io/arch": "arm64" });
    const affinity = spec["affinity"] as Record<string, unknown>;
    assert.ok(affinity["nodeAffinity"]);
    assert.equal(affinity["podAntiAffinity"], undefined, "anti-affinity to its own replicas would strand a one-off pod");
    assert.equal(spec["topologySpreadConstraints"], undefined);
  });

  void it("brings nothing of the host from the workload: no host namespace, privileged container or capability beyond the baseline", () => {
    const tpl = workloadTemplate();
    Object.assign(tpl.spec, { hostNetwork: true, hostPID: true, hostIPC: true });
    tpl.spec.containers[0]!["securityContext"] = { privileged: true, runAsUser: 1000, capabilities: { add: ["NET_BIND_SERVICE", "SYS_ADMIN", "SYS_PTRACE"], drop: ["MKNOD"] } };
    tpl.spec.initContainers![0]!["securityContext"] = { privileged: true };
    const spec = podSpec(buildInput({ podTemplate: tpl }));
    for (const field of ["hostNetwork", "hostPID", "hostIPC"]) assert.equal(spec[field], undefined, field);
    assert.deepEqual(appContainer(spec)["securityContext"], { runAsUser: 1000, capabilities: { drop: ["MKNOD"], add: ["NET_BIND_SERVICE"] } });
    assert.equal(spec.initContainers?.find((c) => c.name === "migrate")?.["securityContext"], undefined);
    // An unprivileged workload's security context is kept as it is.
    const plain = workloadTemplate();
    plain.spec.containers[0]!["securityContext"] = { runAsUser: 1000, privileged: false, capabilities: { add: ["CHOWN"] } };
    assert.deepEqual(appContainer(podSpec(buildInput({ podTemplate: plain })))["securityContext"], { runAsUser: 1000, privileged: false, capabilities: { add: ["CHOWN"] } });
  });

  void it("allows exactly the capabilities the admission policy allows", () => {
    const policy = parseAllDocuments(readFileSync(new URL("../../../deploy/rbac/operator-admission.yaml", import.meta.url), "utf8")).map((d) => d.toJS() as { spec?: { variables?: { name: string; expression: string }[] } });
    const expression = policy.flatMap((p) => p.spec?.variables ?? []).find((v) => v.name === "baselineCapabilities")?.expression;
    assert.deepEqual(JSON.parse(expression ?? "null"), BASELINE_CAPABILITIES);
  });

  void it("does not carry the workload's labels, so Services and the webhook leave the training pod alone", () => {
    const job = buildJob(buildInput()) as unknown as { spec: { template: { metadata: { labels: Record<string, string> } } } };
    const labels = job.spec.template.metadata.labels;
    assert.equal(labels["app"], undefined);
    assert.equal(labels[INJECT_LABEL], undefined);
    assert.equal(labels["app.kubernetes.io/component"], "build");
  });

  void it("runs classcache build from the kit with an argument vector, and neither the image's shell nor its C library", () => {
    const app = appContainer(podSpec(buildInput()));
    assert.deepEqual(app.command, [`${MOUNTS.kit}/lib/ld.so`, "--library-path", `${MOUNTS.kit}/lib`, `${MOUNTS.kit}/bin/node`, `${MOUNTS.kit}/app/src/cli.ts`]);
    assert.deepEqual(app.args, [
      "build",
      "--app=/app.jar",
      "--java=auto",
      `--store=${STORE_ROOT}`,
      `--root=${STORE_ROOT}`,
      `--ref=${REF}`,
      "--scope=shop-ns",
      `--publish-to=unix:${MOUNTS.agentRun}/agent.sock`,
      `--build-token-file=${MOUNTS.buildToken}/token`,
      `--build-key-file=${MOUNTS.buildToken}/build.pem`,
      "--mode=hybrid",
      "--agent=/classcache-agent/agent.jar",
      "--agent-config=/classcache-agent/agent-config.properties",
      "--profile=otel",
      "--exit-on-refresh",
      "--ready-url=http://localhost:8080/actuator/health",
      "--warmup-url=http://localhost:8080/orders",
      "--timeout=120",
      "--json",
    ]);
  });

  void it("hands an inline profile to the kit as data and points --profile at the file", () => {
    const yaml = "name: custom\nmode: hybrid\n# $(rm -rf /) '; echo pwned\n";
    const spec = podSpec(buildInput({ profileYAML: yaml }));
    const kit = spec.initContainers?.find((c) => c.name === "classcache-kit");
    assert.deepEqual(kit?.env, [{ name: "CLASSCACHE_PROFILE_YAML", value: yaml }]);
    assert.ok(!kit?.command?.some((a) => a.includes("pwned")), "the profile is never part of the script");
    assert.ok(appContainer(spec).args?.includes(`--profile=${MOUNTS.kit}/profile.yaml`));
  });

  void it("copies the agent jar with a plain cp and mounts the copies read-only", () => {
    const spec = podSpec(buildInput());
    const agent = spec.initContainers?.find((c) => c.name === "classcache-agent");
    assert.deepEqual(agent?.command, ["cp", "/javaagent.jar", "/classcache-agent/agent.jar"]);
    assert.equal(agent?.image, "otel/agent:2");
    const app = appContainer(spec);
    for (const path of [MOUNTS.kit, MOUNTS.agentJar, MOUNTS.buildToken]) {
      assert.equal(app.volumeMounts?.find((m) => m.mountPath === path)?.readOnly, true, path);
    }
    assert.equal(spec.volumes?.find((v) => v.name === "classcache-build-token")?.secret?.secretName, "classcache-build-0123456789");
  });

  void it("drops the agent's init containers and flags without an agent", () => {
    const spec = podSpec(buildInput({ agent: undefined, profile: undefined, mode: "none" }));
    assert.deepEqual(spec.initContainers?.map((c) => c.name), ["classcache-kit", "migrate"]);
    assert.ok(!appContainer(spec).args?.some((a) => a.startsWith("--agent") || a.startsWith("--profile")));
    assert.ok(!spec.volumes?.some((v) => v.name === "classcache-agent"));
  });

  /** The shop with its launch in the image's ENTRYPOINT: no command, args of its own, options in a variable. */
  function entrypointTemplate(env: EnvVar[] = [{ name: "JAVA_TOOL_OPTIONS", value: "-Dteam=shop" }]): ReturnType<typeof workloadTemplate> {
    const tpl = workloadTemplate();
    const app = tpl.spec.containers[0]!;
    delete app.command;
    app.args = ["--server.port=8080"];
    app["workingDir"] = "/srv";
    app.env = [...(app.env ?? []), ...env];
    return tpl;
  }

  void it("with the launch in the image's ENTRYPOINT, runs that ENTRYPOINT with the launch probe last among the init containers, and builds from what it recorded", () => {
    const spec = podSpec(buildInput({ podTemplate: entrypointTemplate(), probeLaunch: true, jvmOptions: ["-Xmx1g"], appArgs: ["--x"] }));
    assert.deepEqual(spec.initContainers?.map((c) => c.name), ["classcache-kit", "classcache-agent", "classcache-agent-config", "migrate", "classcache-probe"]);
    const probe = spec.initContainers.at(-1)!;
    const app = workloadTemplate().spec.containers[0]!;
    // The workload's own container, as it would start: its image, args, working directory, resources and user; no command.
    assert.equal(probe.image, app.image);
    assert.equal(probe.command, undefined, "the image's own ENTRYPOINT runs");
    assert.deepEqual(probe.args, ["--server.port=8080"]);
    assert.equal(probe["workingDir"], "/srv");
    assert.deepEqual(probe["resources"], app["resources"]);
    assert.deepEqual(probe["envFrom"], app["envFrom"]);
    for (const field of ["livenessProbe", "readinessProbe", "startupProbe", "lifecycle", "ports"]) assert.equal(probe[field], undefined, `${field}: an init container may not have one`);
    assert.equal(probe["terminationMessagePolicy"], "FallbackToLogsOnError");
    assert.deepEqual(probe.env, [
      { name: "SPRING_PROFILES_ACTIVE", value: "prod" },
      { name: "DB_PASSWORD", valueFrom: { secretKeyRef: { name: "db", key: "password" } } },
      { name: "JAVA_TOOL_OPTIONS", value: `-Dteam=shop -javaagent:${MOUNTS.kit}/probe/launch-probe.jar=/classcache-probe/launch.json` },
      { name: "CLASSCACHE_PROBE_TOOL_OPTIONS", value: "$(JAVA_TOOL_OPTIONS)" },
    ]);
    assert.deepEqual(probe.volumeMounts, [
      { name: "config", mountPath: "/config", readOnly: true },
      { name: "classcache-kit", mountPath: MOUNTS.kit, readOnly: true },
      { name: "classcache-probe", mountPath: "/classcache-probe" },
    ]);
    assert.deepEqual(spec.volumes?.find((v) => v.name === "classcache-probe"), { name: "classcache-probe", emptyDir: { sizeLimit: "16Mi" } });
    // The build reads the record instead of being told the jar, JDK, options and arguments.
    const build = appContainer(spec);
    assert.deepEqual(build.args?.slice(0, 3), ["build", "--launch-file=/classcache-probe/launch.json", `--store=${STORE_ROOT}`]);
    assert.ok(!build.args?.some((a) => /^--(app|java|jvm-opt|arg)=/.test(a)), build.args?.join(" "));
    assert.deepEqual(build.volumeMounts?.find((m) => m.name === "classcache-probe"), { name: "classcache-probe", mountPath: "/classcache-probe", readOnly: true });
    // Without it, nothing of the probe.
    const plain = podSpec(buildInput());
    assert.ok(![...(plain.initContainers ?? []), ...plain.containers].some((c) => c.name === "classcache-probe" || c.volumeMounts?.some((m) => m.name === "classcache-probe")));
  });

  void it("gives the probe JAVA_TOOL_OPTIONS as the app gets them, the probe after the user's options, wherever they come from", () => {
    const agent = `-javaagent:${MOUNTS.kit}/probe/launch-probe.jar=/classcache-probe/launch.json`;
    const fromSecret = (optional?: boolean): EnvVar => ({ name: "JAVA_TOOL_OPTIONS", valueFrom: { secretKeyRef: { name: "jvm", key: "opts", ...(optional === undefined ? {} : { optional }) } } });
    const expected = { name: "CLASSCACHE_PROBE_TOOL_OPTIONS", value: "$(JAVA_TOOL_OPTIONS)" };
    assert.deepEqual(probeEnv([{ name: "A", value: "1" }]), [{ name: "A", value: "1" }, { name: "JAVA_TOOL_OPTIONS", value: agent }, expected]);
    assert.deepEqual(probeEnv([{ name: "JAVA_TOOL_OPTIONS", value: "" }, { name: "B", value: "$(JAVA_TOOL_OPTIONS)" }]), [{ name: "JAVA_TOOL_OPTIONS", value: agent }, { name: "B", value: "$(JAVA_TOOL_OPTIONS)" }, expected]);
    // From a Secret: kept where it is under another name, and referenced (a later $(JAVA_TOOL_OPTIONS) still expands).
    assert.deepEqual(probeEnv([fromSecret(), { name: "B", value: "x" }]), [
      { name: "CLASSCACHE_USER_JAVA_TOOL_OPTIONS", valueFrom: { secretKeyRef: { name: "jvm", key: "opts" } } },
      { name: "JAVA_TOOL_OPTIONS", value: `$(CLASSCACHE_USER_JAVA_TOOL_OPTIONS) ${agent}` },
      { name: "B", value: "x" },
      expected,
    ]);
    // An optional key may define nothing, and the JVM would refuse the literal reference: the probe alone.
    assert.deepEqual(probeEnv([fromSecret(true)]), [{ name: "JAVA_TOOL_OPTIONS", value: agent }, expected]);
    // The workload cannot steer the probe through CLASSCACHE_*.
    assert.deepEqual(probeEnv([{ name: "CLASSCACHE_PROBE_TOOL_OPTIONS", value: "x" }, { name: "CLASSCACHE_USER_JAVA_TOOL_OPTIONS", value: "y" }]), [{ name: "JAVA_TOOL_OPTIONS", value: agent }, expected]);
  });

  void it("fails on a container the template does not have and on a ref that is not a digest", () => {
    assert.throws(() => buildJob(buildInput({ containerName: "nope" })), /no container "nope"/);
    assert.throws(() => buildJob(buildInput({ ref: "../../etc" })), /not a digest/);
    assert.equal(refHex("ABCDEF0123456"), "abcdef0123456");
  });
});

void describe("buildTokenSecret", () => {
  void it("shares the Job's name and holds the grant and build key under the names the pod reads", () => {
    const owner = { apiVersion: "classcache.dev/v1", kind: "ClassCache", name: "shop", uid: "u", controller: true };
    const s = buildTokenSecret("shop-ns", REF, { token: "gr4nt", key: "k3y" }, owner);
    assert.equal(s.metadata.name, buildJobName(REF));
    assert.equal(s.metadata.namespace, "shop-ns");
    assert.deepEqual(s["stringData"], { token: "gr4nt", "build.pem": "k3y" });
    assert.deepEqual(s.metadata.ownerReferences, [owner]);
  });
});

void describe("the build container's memory", () => {
  void it("is the app's limit and request plus classcache's own headroom, in bytes; no limit stays no limit", () => {
    assert.equal(memoryBytes("768Mi"), 768 * 2 ** 20);
    assert.equal(memoryBytes("1.5Gi"), 1.5 * 2 ** 30);
    assert.equal(memoryBytes("1G"), 1e9);
    assert.equal(memoryBytes("lots"), undefined);
    assert.deepEqual(withBuildHeadroom({ requests: { cpu: "50m", memory: "256Mi" }, limits: { memory: "768Mi" } }), {
      requests: { cpu: "50m", memory: String(256 * 2 ** 20 + BUILD_MEMORY_HEADROOM) },
      limits: { memory: String(768 * 2 ** 20 + BUILD_MEMORY_HEADROOM) },
    });
    assert.deepEqual(withBuildHeadroom({ requests: { cpu: "1" } }), { requests: { cpu: "1" } });
  });
});
