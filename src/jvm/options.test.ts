import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { runtimeOptions, toJavaToolOptions, trainingOptions, trainingRunsAgent, withMemorySharing, type Plan } from "./options.ts";

const phase = (javaagent: boolean) => ({ javaagent, bootclasspath: true, extraJvmOpts: [] as string[] });
const agent = { jar: "{root}/layouts/L/agent/a.jar", build: phase(true), runtime: phase(false) };

describe("JVM options", () => {
  it("never inject -Xshare:on or -XX:AOTMode=on: a stale archive must cost speed, not a crash loop", () => {
    for (const kind of ["cds", "aot"] as const) {
      for (const mode of ["none", "hybrid", "baked"] as const) {
        const plan: Plan = { kind, mode, feature: kind === "aot" ? 25 : 17, agent: mode === "none" ? null : { ...agent, runtime: phase(mode === "hybrid") }, bakedStrategy: mode === "baked" ? (kind === "aot" ? "weave" : "allow-archiving") : null };
        const opts = runtimeOptions(plan, { archive: "/a", shareMemory: true });
        assert.ok(opts.includes(kind === "aot" ? "-XX:AOTMode=auto" : "-Xshare:auto"));
        assert.ok(!opts.some((o) => o === "-Xshare:on" || o === "-XX:AOTMode=on"));
        assert.ok(!(kind === "aot" && opts.some((o) => o.startsWith("-Xshare"))), "-Xshare is refused next to -XX:AOTCache");
      }
    }
  });

  it("use -XX:AOTCache on JDK 25 and -XX:SharedArchiveFile before", () => {
    assert.ok(runtimeOptions({ kind: "aot", mode: "none", feature: 25, agent: null, bakedStrategy: null }, { archive: "/x", shareMemory: false }).includes("-XX:AOTCache=/x"));
    assert.ok(runtimeOptions({ kind: "cds", mode: "none", feature: 17, agent: null, bakedStrategy: null }, { archive: "/x", shareMemory: false }).includes("-XX:SharedArchiveFile=/x"));
  });

  it("keep the testing flag of baked mode on JDK 17 in both phases, and the agent off at run time", () => {
    const plan: Plan = { kind: "cds", mode: "baked", feature: 17, agent, bakedStrategy: "allow-archiving" };
    const train = trainingOptions(plan, "/out", "/log");
    const run = runtimeOptions(plan, { archive: "/a", shareMemory: false });
    for (const opts of [train, run]) {
      assert.ok(opts.includes("-XX:+AllowArchivingWithJavaAgent"));
      assert.ok(opts.includes("-Xbootclasspath/a:{root}/layouts/L/agent/a.jar"));
    }
    assert.ok(train.includes("-javaagent:{root}/layouts/L/agent/a.jar"));
    assert.ok(!run.some((o) => o.startsWith("-javaagent")));
  });

  it("train hybrid mode without the agent's transforms, and run it live at run time", () => {
    const hybrid = (feature: number): Plan => ({ kind: feature >= 25 ? "aot" : "cds", mode: "hybrid", feature, agent: { ...agent, runtime: phase(true) }, bakedStrategy: null });
    assert.equal(trainingRunsAgent(hybrid(17)), false);
    assert.equal(trainingRunsAgent(hybrid(25)), false);
    for (const f of [17, 25]) {
      const run = runtimeOptions(hybrid(f), { archive: "/a", shareMemory: false });
      assert.ok(run.includes("-javaagent:{root}/layouts/L/agent/a.jar"));
      assert.ok(run.includes("--add-modules=java.instrument"));
      assert.ok(trainingOptions(hybrid(f), "/o", "/l").includes("--add-modules=java.instrument"));
    }
  });

  it("add relocation mode 0 once, with the diagnostic unlock before every diagnostic option", () => {
    const once = withMemorySharing(["-XX:+UnlockDiagnosticVMOptions", "-XX:+AllowArchivingWithJavaAgent", "-Xshare:auto", "-XX:SharedArchiveFile=/a"]);
    assert.deepEqual(once, ["-XX:+UnlockDiagnosticVMOptions", "-XX:ArchiveRelocationMode=0", "-XX:+AllowArchivingWithJavaAgent", "-Xshare:auto", "-XX:SharedArchiveFile=/a"]);
    assert.deepEqual(withMemorySharing(once), once);
  });

  it("quote options with spaces in JAVA_TOOL_OPTIONS", () => {
    assert.equal(toJavaToolOptions(["-Xshare:auto", "-Dx=a b"]), '-Xshare:auto "-Dx=a b"');
  });
});
