import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ClasscacheError } from "../../runtime/errors.ts";
import { ClassCaches, DEFAULTS, resolveSpec, validateClassCache, type ClassCache, type ClassCacheSpec } from "./v1.ts";

const cc = (spec: Partial<ClassCacheSpec> & Record<string, unknown>): ClassCache => ({
  metadata: { name: "x", namespace: "ns" },
  spec: { workloadRef: { name: "web" }, ...spec },
});

const INLINE = `apiVersion: classcache.dev/v1
kind: AgentProfile
metadata: { name: acme }
spec:
  agent: { jar: /opt/agent/acme.jar }
  build: {}
  runtime: { javaagent: true }
`;

void describe("ClassCaches", () => {
  void it("is the namespaced classcaches resource of classcache.dev/v1", () => {
    assert.deepEqual(ClassCaches, { group: "classcache.dev", version: "v1", kind: "ClassCache", plural: "classcaches", namespaced: true });
  });
});

void describe("resolveSpec", () => {
  void it("applies the CRD's defaults to an object the server did not default", () => {
    const { spec, warnings } = resolveSpec(cc({ app: { image: "app:1" } }));
    assert.deepEqual(warnings, []);
    assert.deepEqual(spec.workloadRef, { apiVersion: "apps/v1", kind: "Deployment", name: "web" });
    assert.deepEqual(spec.app, { image: "app:1", jarPath: "/app.jar", extractorImage: undefined });
    assert.equal(spec.agent, undefined);
    assert.equal(spec.mode, "none");
    assert.equal(spec.profile, undefined);
    assert.equal(spec.patchMode, "Owned");
    assert.deepEqual(spec.training, { exitOnRefresh: undefined, readyUrl: undefined, warmupUrls: [], timeoutSeconds: 300 });
    assert.equal(spec.memorySharing, true);
    assert.equal(spec.sharing, "Namespace");
    assert.equal(spec.container, undefined);
    assert.equal(spec.launch, undefined);
    assert.deepEqual(spec.valkey, {
      create: true,
      addr: undefined,
      image: DEFAULTS.valkeyImage,
      storageSize: "256Mi",
      storageClassName: undefined,
      passwordSecretRef: undefined,
    });
    assert.deepEqual(spec.ignored, {});
  });

  void it("treats empty strings as unset, as a Go client of cluster-classcache sends them", () => {
    const { spec } = resolveSpec(cc({ profile: "", profileYAML: "", primerImage: "", archiveDir: "", app: { jarPath: "" }, container: "" }));
    assert.equal(spec.mode, "none");
    assert.equal(spec.app.jarPath, "/app.jar");
    assert.equal(spec.container, undefined);
    assert.deepEqual(spec.ignored, {});
  });

  void it("maps a catalog profile name to the shipped profile and takes its mode", () => {
    const scouter = resolveSpec(cc({ agent: { image: "scouter:2" }, profile: "scouter" })).spec;
    assert.equal(scouter.profileSource, "catalog");
    assert.equal(scouter.profile?.name, "scouter");
    assert.equal(scouter.mode, "baked");
    assert.deepEqual(scouter.agent, { image: "scouter:2", jarPath: "/agent.jar", configPath: undefined });
    const otel = resolveSpec(cc({ agent: { image: "otel:2" }, profile: "otel" })).spec;
    assert.equal(otel.mode, "hybrid");
    assert.equal(otel.profile?.runtime.javaagent, true);
  });

  void it("lets spec.mode override the profile's mode and keeps the runtime phase consistent with it", () => {
    const { spec } = resolveSpec(cc({ agent: { image: "otel:2" }, profile: "otel", mode: "baked" }));
    assert.equal(spec.mode, "baked");
    assert.equal(spec.profile?.mode, "baked");
    assert.equal(spec.profile?.runtime.javaagent, false);
    assert.deepEqual(spec.profile?.runtime.extraJvmOpts, ["-Dotel.javaagent.enabled=true", "-Dotel.exporter.otlp.protocol=http/protobuf"]);
  });

  void it("drops the profile with a warning under mode none", () => {
    const { spec, warnings } = resolveSpec(cc({ agent: { image: "otel:2" }, profile: "otel", mode: "none" }));
    assert.equal(spec.mode, "none");
    assert.equal(spec.profile, undefined);
    assert.match(warnings.join("\n"), /spec\.mode is none, so the profile is not used/);
  });

  void it("parses an inline profile, which wins over a profile name as in cluster-classcache", () => {
    const { spec, warnings } = resolveSpec(cc({ agent: { image: "acme:1" }, profile: "scouter", profileYAML: INLINE }));
    assert.equal(spec.profileSource, "inline");
    assert.equal(spec.profile?.name, "acme");
    assert.equal(spec.mode, "hybrid");
    assert.match(warnings.join("\n"), /spec\.profile "scouter" is ignored: spec\.profileYAML is set and takes precedence/);
  });

  void it("derives a profile from spec.agent when a mode is given without one", () => {
    const { spec } = resolveSpec(cc({ agent: { image: "a:1", jarPath: "/a/agent.jar", configPath: "/a/agent.conf" }, mode: "baked" }));
    assert.equal(spec.profileSource, "agent-defaults");
    assert.deepEqual(spec.profile?.agent, { jar: "/a/agent.jar", config: "/a/agent.conf" });
    assert.equal(spec.profile?.build.javaagent, true);
    assert.equal(spec.profile?.runtime.javaagent, false);
  });

  void it("warns that an agent without a profile or mode is not used", () => {
    const { spec, warnings } = resolveSpec(cc({ agent: { image: "a:1" } }));
    assert.equal(spec.mode, "none");
    assert.match(warnings.join("\n"), /spec\.agent is set without spec\.profile or spec\.mode, so the agent is not used/);
  });

  void it("reports primerImage and archiveDir as ignored, saying why, and never uses them", () => {
    const { spec, warnings } = resolveSpec(cc({ primerImage: "classcache-primer:v0.9-universal", archiveDir: "/data/cc" }));
    assert.deepEqual(spec.ignored, { primerImage: "classcache-primer:v0.9-universal", archiveDir: "/data/cc" });
    assert.equal(warnings.length, 2);
    assert.match(warnings[0] ?? "", /spec\.primerImage is ignored: .*no user-chosen image runs on every node .*cluster-classcache's default; the field can be removed/);
    assert.match(warnings[1] ?? "", /spec\.archiveDir is ignored: .*never in a user-chosen host path/);
    assert.doesNotMatch(warnings[1] ?? "", /default/);
  });

  void it("keeps the new fields as given", () => {
    const { spec } = resolveSpec(
      cc({
        container: "app",
        launch: { command: ["java", "-jar", "/app.jar"] },
        training: { exitOnRefresh: false, readyUrl: "http://localhost:8080/health", warmupUrls: ["http://localhost:8080/a"], timeoutSeconds: 60 },
        memorySharing: false,
        sharing: "Cluster",
        valkey: { create: false, addr: "valkey:6379", passwordSecretRef: { name: "vk", key: "password" } },
      }),
    );
    assert.equal(spec.container, "app");
    assert.deepEqual(spec.launch, { mainClass: undefined, command: ["java", "-jar", "/app.jar"] });
    assert.deepEqual(spec.training, { exitOnRefresh: false, readyUrl: "http://localhost:8080/health", warmupUrls: ["http://localhost:8080/a"], timeoutSeconds: 60 });
    assert.equal(spec.memorySharing, false);
    assert.equal(spec.sharing, "Cluster");
    assert.equal(spec.valkey.addr, "valkey:6379");
    assert.deepEqual(spec.valkey.passwordSecretRef, { name: "vk", key: "password" });
  });

  void it("throws an input error, with what to do, for a spec it cannot use", () => {
    const cases: [Partial<ClassCacheSpec> & Record<string, unknown>, RegExp][] = [
      [{ agent: { image: "a" }, profile: "newrelic" }, /spec\.profile "newrelic" is not a catalog profile/],
      [{ agent: { image: "a" }, profileYAML: "spec: [" }, /not valid YAML/],
      [{ profile: "scouter" }, /a profile is set but spec\.agent\.image is not/],
      [{ mode: "hybrid" }, /spec\.mode hybrid needs spec\.agent\.image/],
      [{ valkey: { create: false } }, /spec\.valkey\.addr is not set/],
      [{ workloadRef: { name: "w", kind: "Job" } }, /spec\.workloadRef\.kind Job is not supported/],
    ];
    for (const [spec, message] of cases) {
      assert.throws(
        () => resolveSpec(cc(spec)),
        (e: unknown) => e instanceof ClasscacheError && e.code === "input" && message.test(e.message),
        JSON.stringify(spec),
      );
    }
  });
});

void describe("validateClassCache", () => {
  void it("accepts a resource written for cluster-classcache", () => {
    assert.deepEqual(validateClassCache(cc({ app: { image: "app:1", jarPath: "/work/app.jar" }, agent: { image: "scouter:0.9" }, profile: "scouter", patchMode: "Owned", valkey: { create: true } })), []);
  });

  void it("names the catalog when the profile is not in it", () => {
    assert.deepEqual(validateClassCache(cc({ agent: { image: "a" }, profile: "newrelic" })), [
      'spec.profile "newrelic" is not a catalog profile: use one of apm-v01, datadog, elastic, otel, pinpoint, reference, scouter, or give the profile inline in spec.profileYAML',
    ]);
  });

  void it("says where an inline profile breaks the AgentProfile schema", () => {
    const [problem, ...rest] = validateClassCache(cc({ agent: { image: "a" }, profileYAML: INLINE.replace("build: {}", "build: {}\n  primer: x") }));
    assert.deepEqual(rest, []);
    assert.match(problem ?? "", /^spec\.profileYAML: the profile does not match the AgentProfile schema: \/spec: must NOT have additional properties "primer" \(see docs\/profiles\.md/);
  });

  void it("says when an inline profile is not YAML or contradicts itself", () => {
    assert.match(validateClassCache(cc({ agent: { image: "a" }, profileYAML: "spec: [" })).join(), /^spec\.profileYAML: the profile is not valid YAML \(line 1\)/);
    const contradiction = INLINE.replace("spec:\n", "spec:\n  mode: baked\n");
    assert.match(validateClassCache(cc({ agent: { image: "a" }, profileYAML: contradiction })).join(), /mode baked needs spec\.runtime\.javaagent: false/);
  });

  void it("accepts training URLs to the app itself only", () => {
    assert.deepEqual(
      validateClassCache(cc({ training: { readyUrl: "http://127.0.0.1:8080/ready", warmupUrls: ["http://localhost:8080/a", "https://[::1]:8443/b"] } })),
      [],
    );
    const problems = validateClassCache(
      cc({ training: { readyUrl: "health", warmupUrls: ["http://payments.prod:8080/charge", "file:///etc/passwd", "http://user:pw@localhost/x", "http://169.254.169.254/latest/meta-data"] } }),
    );
    assert.deepEqual(
      problems.map((p) => p.slice(0, p.indexOf(":", p.indexOf('"', p.indexOf('"') + 1)))),
      [
        'spec.training.readyUrl "health" is not a URL',
        'spec.training.warmupUrls[0] "http://payments.prod:8080/charge" points at payments.prod, not localhost or 127.0.0.1',
        'spec.training.warmupUrls[1] "file:///etc/passwd" uses file, not http or https',
        'spec.training.warmupUrls[2] "http://user:pw@localhost/x" carries credentials',
        'spec.training.warmupUrls[3] "http://169.254.169.254/latest/meta-data" points at 169.254.169.254, not localhost or 127.0.0.1',
      ],
    );
    assert.match(problems[0] ?? "", /use an http\(s\) URL to the app itself, e\.g\. http:\/\/localhost:8080\/actuator\/health/);
  });

  void it("refuses more than sixteen warm-up URLs", () => {
    const urls = Array.from({ length: 17 }, (_, i) => `http://localhost:8080/${i}`);
    assert.deepEqual(validateClassCache(cc({ training: { warmupUrls: urls } })), ["spec.training.warmupUrls has 17 entries: at most 16 are allowed"]);
  });

  void it("never throws, whatever it is given", () => {
    for (const v of [null, 3, "x", [], {}, { spec: null }, { spec: { workloadRef: 1, training: 2, profileYAML: 3 } }]) {
      assert.ok(validateClassCache(v).length > 0, JSON.stringify(v));
    }
  });
});
