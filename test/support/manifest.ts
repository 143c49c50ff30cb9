/** A complete, well-formed manifest for tests that sign, verify or show one without building an archive. */
import { archiveKey, FORMAT_VERSION, type KeyInputs } from "../../src/archive/key.ts";
import { layoutId, type Manifest } from "../../src/archive/manifest.ts";

export function sampleManifest(o: { scope?: string; hitRate?: number; kind?: "cds" | "aot"; size?: number; createdAt?: string } = {}): Manifest {
  const kind = o.kind ?? "aot";
  const inputs: KeyInputs = {
    format: FORMAT_VERSION,
    scope: o.scope ?? "",
    archiveKind: kind,
    mode: "none",
    app: { kind: "boot", digests: ["1".repeat(64)], mainClass: "com.example.App", args: [], extractor: 1 },
    jvm: { vendor: "Eclipse Adoptium", vmVendor: "Eclipse Adoptium", runtimeVersion: kind === "aot" ? "25.0.3+9" : "17.0.15+6", vmVersion: "x", libjvmSha256: "2".repeat(64), arch: "amd64" },
    vmFlags: { gc: "G1GC", useCompressedOops: true, useCompressedClassPointers: true, useCompactObjectHeaders: false, objectAlignmentInBytes: 8 },
    jvmOptions: [],
    agent: null,
    profile: null,
    training: { exit: "on-refresh", readyUrl: null, readyLog: null, warmupUrls: [] },
  };
  const files = [{ path: "app.jar", sha256: "3".repeat(64), size: 1000 }];
  const id = layoutId(files);
  const archive = "4".repeat(64);
  return {
    formatVersion: FORMAT_VERSION,
    key: archiveKey(inputs),
    mode: "none",
    createdAt: o.createdAt ?? "2026-01-01T00:00:00Z",
    inputs,
    jvm: { home: "", feature: kind === "aot" ? 25 : 17, runtimeVersion: inputs.jvm.runtimeVersion, vendor: inputs.jvm.vendor, arch: "amd64", relocatableClassPath: true },
    app: { kind: "boot", source: "app.jar", mainClass: "com.example.App", args: [] },
    agent: null,
    layout: { id, files },
    root: "/var/lib/classcache",
    archive: { kind, sha256: archive, size: o.size ?? 10 << 20, file: `blobs/sha256/${archive}` },
    runtime: { launch: { kind: "jar", jar: `layouts/${id}/app.jar` }, jvmOptions: ["-XX:AOTMode=auto", `-XX:AOTCache={root}/blobs/sha256/${archive}`], appArgs: [] },
    baked: null,
    verification: { hitRate: o.hitRate ?? 0.97, sharedClasses: 97, totalClasses: 100, notSharedBySource: {}, readyMs: 1000, instrumented: null, evidence: null, jvmOptions: [], warnings: [] },
    build: { durationMs: 1, trainingMs: 1, host: "test", classcacheVersion: "0.1.0", notes: [] },
  };
}
