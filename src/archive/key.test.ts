import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { archiveKey, type KeyInputs } from "./key.ts";

function inputs(): KeyInputs {
  return {
    format: 1,
    scope: "shop",
    archiveKind: "cds",
    mode: "none",
    app: { kind: "boot", digests: ["a".repeat(64)], mainClass: "com.example.App", args: [], extractor: 1 },
    jvm: { vendor: "Debian", vmVendor: "Debian", runtimeVersion: "17.0.15+6", vmVersion: "17.0.15+6", libjvmSha256: "b".repeat(64), arch: "amd64" },
    vmFlags: { gc: "G1GC", useCompressedOops: true, useCompressedClassPointers: true, useCompactObjectHeaders: false, objectAlignmentInBytes: 8 },
    jvmOptions: [],
    agent: null,
    profile: null,
    training: { exit: "on-refresh", readyUrl: null, readyLog: null, warmupUrls: [] },
  };
}

describe("archive key", () => {
  it("does not depend on the order fields were built in", () => {
    const a = inputs();
    const reverse = (v: unknown): unknown =>
      v && typeof v === "object" && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).reverse().map(([k, x]) => [k, reverse(x)])) : v;
    const b = reverse(a) as KeyInputs;
    assert.notDeepEqual(Object.keys(b), Object.keys(a));
    assert.equal(archiveKey(a), archiveKey(b));
    assert.match(archiveKey(a), /^[0-9a-f]{64}$/);
  });

  it("changes with every input that decides whether the JVM accepts the archive", () => {
    const base = archiveKey(inputs());
    const variants: [string, (k: KeyInputs) => void][] = [
      ["app content", (k) => (k.app.digests = ["c".repeat(64)])],
      ["JVM patch release", (k) => (k.jvm.runtimeVersion = "17.0.16+8")],
      ["JVM build bytes", (k) => (k.jvm.libjvmSha256 = "d".repeat(64))],
      ["vendor", (k) => (k.jvm.vendor = "Eclipse Adoptium")],
      ["arch", (k) => (k.jvm.arch = "arm64")],
      ["GC", (k) => (k.vmFlags.gc = "ParallelGC")],
      ["compressed oops", (k) => (k.vmFlags.useCompressedOops = false)],
      ["compact headers", (k) => (k.vmFlags.useCompactObjectHeaders = true)],
      ["workload option", (k) => (k.jvmOptions = ["-Xmx8g"])],
      ["agent", (k) => (k.agent = { sha256: "e".repeat(64), configSha256: null })],
      ["agent config", (k) => (k.agent = { sha256: "e".repeat(64), configSha256: "f".repeat(64) })],
      ["profile content", (k) => (k.profile = { spec: { mode: "baked" } })],
      ["mode", (k) => (k.mode = "baked")],
      ["archive kind", (k) => (k.archiveKind = "aot")],
      ["training", (k) => (k.training.warmupUrls = ["/api"])],
      ["format", (k) => (k.format = 2)],
      ["scope", (k) => (k.scope = "another-team")],
      ["cluster-wide scope", (k) => (k.scope = "")],
      ["extractor", (k) => (k.app.extractor = 2)],
    ];
    const seen = new Set([base]);
    for (const [what, change] of variants) {
      const k = inputs();
      change(k);
      const key = archiveKey(k);
      assert.ok(!seen.has(key), `${what} must change the key`);
      seen.add(key);
    }
  });
});
