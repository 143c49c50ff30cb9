/**
 * The archive engine against the real thing: the Spring Boot demo app, the reference agent and
 * the OpenTelemetry agent, on JDK 17 (dynamic CDS) and JDK 25 (AOT cache).
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { Manifest } from "../src/archive/manifest.ts";
import { datadogAgentJar, demoAppJar, elasticAgentJar, otelAgentJar, referenceAgentJar } from "../src/demo/fixtures.ts";
import { readClassCounts } from "../src/jvm/hsperf.ts";
import { freePort } from "../src/jvm/launch.ts";
import { cli, jdk } from "./support/cli.ts";

let app: string;
let refAgent: string;
let otelAgent: string;
let datadogAgent: string;
let elasticAgent: string;
let tmp: string;

before(async () => {
  [app, refAgent, otelAgent, datadogAgent, elasticAgent] = await Promise.all([demoAppJar(), referenceAgentJar(), otelAgentJar(), datadogAgentJar(), elasticAgentJar()]);
  tmp = await mkdtemp(join(tmpdir(), "classcache-build-"));
});

after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

async function build(store: string, ...args: string[]): Promise<Manifest> {
  const r = await cli("build", "--app", app, "--store", store, "--json", ...args);
  assert.equal(r.code, 0, `build failed:\n${r.stderr}`);
  return JSON.parse(r.stdout) as Manifest;
}

for (const feature of [17, 25]) {
  describe(`classcache build on JDK ${feature}`, () => {
    let java: string;
    let store: string;
    before(async () => {
      java = await jdk(feature);
      store = join(tmp, `store-${feature}`);
    });

    it("builds an archive the JVM loads at least 95 % of its classes from", async () => {
      const m = await build(store, "--java", java);
      assert.equal(m.archive.kind, feature >= 25 ? "aot" : "cds");
      assert.equal(m.mode, "none");
      assert.match(m.key, /^[0-9a-f]{64}$/);
      assert.ok(m.verification.hitRate >= 0.95, `hit rate ${m.verification.hitRate}`);
      assert.ok(m.verification.totalClasses > 5000, `a realistic app loads thousands of classes, got ${m.verification.totalClasses}`);
      assert.equal(m.verification.instrumented, null);
      const st = await stat(join(store, m.archive.file));
      assert.equal(st.size, m.archive.size);
      const again = await cli("build", "--app", app, "--store", store, "--java", java);
      assert.equal(again.code, 0);
      assert.match(again.stdout, /^already built/);
    });

    it("bakes the reference agent: its instrumentation fires with the agent off", async () => {
      const m = await build(store, "--java", java, "--agent", refAgent, "--profile", "reference");
      assert.equal(m.mode, "baked");
      assert.ok(m.verification.hitRate >= 0.95, `hit rate ${m.verification.hitRate}`);
      assert.equal(m.verification.instrumented, true);
      assert.match(m.verification.evidence ?? "", /\[reference-agent\] GET \/ -> 404 in \d+ us \(requests=1\)/);
      assert.ok(!m.runtime.jvmOptions.some((o) => o.startsWith("-javaagent")), "baked mode runs without -javaagent");
      const verifyLog = await readFile(join(store, "logs", m.key, "verify.log"), "utf8");
      assert.doesNotMatch(verifyLog, /\[reference-agent\] premain/, "premain must not run in baked mode");
      if (feature >= 25) {
        assert.equal(m.baked?.strategy, "weave");
        assert.ok((m.baked?.wovenClasses ?? 0) >= 1);
        assert.ok(!m.runtime.jvmOptions.includes("-XX:+AllowArchivingWithJavaAgent"), "no testing flag on JDK 25");
      } else {
        assert.equal(m.baked?.strategy, "allow-archiving");
        assert.ok(m.runtime.jvmOptions.includes("-XX:+AllowArchivingWithJavaAgent"));
        assert.ok(m.build.notes.some((n) => /testing-only/.test(n)), "the testing flag is called out");
      }
    });

    it("keeps the OpenTelemetry agent live in hybrid mode, and it still produces spans", async () => {
      const m = await build(store, "--java", java, "--agent", otelAgent, "--profile", "otel");
      assert.equal(m.mode, "hybrid");
      assert.equal(m.verification.instrumented, true);
      assert.match(m.verification.evidence ?? "", /LoggingSpanExporter - 'GET [^']*' : [0-9a-f]{32} [0-9a-f]{16} SERVER/);
      assert.ok(m.runtime.jvmOptions.some((o) => o.startsWith("-javaagent:")));
      assert.ok(m.runtime.jvmOptions.includes("--add-modules=java.instrument"));
      assert.ok(m.verification.sharedClasses > 5000, `app and framework classes still come from the archive (${m.verification.sharedClasses})`);
    });

    it("keeps the Datadog agent live in hybrid mode, and it still traces the web request", async () => {
      const m = await build(store, "--java", java, "--agent", datadogAgent, "--profile", "datadog", "--warmup-url", "/api/owners");
      assert.equal(m.mode, "hybrid");
      assert.equal(m.verification.instrumented, true);
      assert.match(m.verification.evidence ?? "", /"type":"web"/);
      assert.ok((m.verification.evidence ?? "").length <= 402, "the evidence is the match in context, not a whole trace");
      assert.ok(m.runtime.jvmOptions.some((o) => o.startsWith("-javaagent:")));
      assert.ok(!m.runtime.jvmOptions.some((o) => o.startsWith("-Xbootclasspath/a:")), "the agent puts itself on the boot class path");
      assert.ok(m.verification.hitRate > 0.6, `app and framework classes still come from the archive (${m.verification.hitRate})`);
    });

    it("keeps the Elastic agent live in hybrid mode, and it still traces the request to its controller (the extracted app registers no loader file system)", async () => {
      const m = await build(store, "--java", java, "--agent", elasticAgent, "--profile", "elastic", "--warmup-url", "/api/owners");
      assert.equal(m.mode, "hybrid");
      assert.equal(m.verification.instrumented, true);
      assert.match(m.verification.evidence ?? "", /endTransaction 'OwnerController#list'/);
      assert.ok(m.verification.hitRate > 0.6, `app and framework classes still come from the archive (${m.verification.hitRate})`);
    });
  });
}

describe("the archive key", () => {
  it("is the same, over byte- and mtime-identical layouts, when the app is built in two stores", async () => {
    const java = await jdk(25);
    const a = await build(join(tmp, "store-25"), "--java", java);
    const b = await build(join(tmp, "store-other"), "--java", java);
    assert.equal(b.key, a.key);
    assert.deepEqual(b.layout, a.layout);
    for (const f of a.layout.files.slice(0, 5)) {
      const [sa, sb] = await Promise.all([stat(join(tmp, "store-25", "layouts", a.layout.id, f.path)), stat(join(tmp, "store-other", "layouts", b.layout.id, f.path))]);
      assert.equal(sa.mtimeMs, sb.mtimeMs, `${f.path} mtime`);
      assert.equal(sa.size, sb.size);
    }
  });
});

describe("classcache flags and run", () => {
  it("print -Xshare:auto options and start the app from the store, using the archive", async () => {
    const store = join(tmp, "store-17");
    const java = await jdk(17);
    const m = await build(store, "--java", java);
    const flags = await cli("flags", m.key.slice(0, 12), "--store", store, "--share-memory");
    assert.equal(flags.code, 0);
    assert.match(flags.stdout, /^-XX:\+UnlockDiagnosticVMOptions -XX:ArchiveRelocationMode=0 -Xshare:auto -XX:SharedArchiveFile=\S+/);
    assert.doesNotMatch(flags.stdout, /-Xshare:on/);

    const port = await freePort();
    const child = spawn(process.execPath, [join(import.meta.dirname, "..", "src", "cli.ts"), "run", m.key.slice(0, 12), "--store", store, "--", `--server.port=${port}`], { stdio: ["ignore", "pipe", "pipe"] });
    try {
      let out = "";
      child.stdout.on("data", (d: Buffer) => (out += d.toString()));
      const deadline = Date.now() + 120_000;
      while (!/Started \S+ in/.test(out)) {
        assert.ok(Date.now() < deadline, `app did not start:\n${out}`);
        assert.equal(child.exitCode, null, `run exited:\n${out}`);
        await new Promise((r) => setTimeout(r, 200));
      }
      const res = await fetch(`http://127.0.0.1:${port}/api/owners`);
      assert.equal(res.status, 200);
      const owners = (await res.json()) as unknown[];
      assert.ok(owners.length > 0);
      // The JVM's own counters: most classes came from the archive.
      const javaPid = Number(/INFO (\d+) ---/.exec(out)?.[1]);
      const counts = await readClassCounts(javaPid);
      assert.ok(counts, `no perf data for pid ${javaPid}`);
      assert.ok(counts.shared / (counts.shared + counts.notShared) >= 0.9, JSON.stringify(counts));
    } finally {
      child.kill("SIGTERM");
      await new Promise((r) => child.once("exit", r));
    }
  });
});
