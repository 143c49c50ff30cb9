import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { sampleManifest } from "../../test/support/manifest.ts";
import { admitManifest, refusedRuntimeOption } from "./admit.ts";
import { archiveKey } from "./key.ts";
import { layoutId, type Manifest } from "./manifest.ts";

const sizes = (m: Manifest) => {
  const s = new Map([[m.archive.sha256, m.archive.size], ...m.layout.files.map((f) => [f.sha256, f.size] as [string, number])]);
  return (sha: string) => s.get(sha);
};

describe("admitting an uploaded build", () => {
  test("derives the runtime from the inputs and the layout, whatever the upload claims", () => {
    const m = sampleManifest({ scope: "shop" });
    const claimed = { ...m, runtime: { launch: { kind: "jar" as const, jar: "/tmp/evil.jar" }, jvmOptions: ["-javaagent:/tmp/evil.jar"], appArgs: ["--evil"] } };
    const admitted = admitManifest(claimed, { scope: "shop", blobSize: sizes(m) });
    assert.deepEqual(admitted.runtime, { launch: { kind: "jar", jar: `layouts/${m.layout.id}/app.jar` }, jvmOptions: ["-XX:AOTMode=auto", `-XX:AOTCache={root}/blobs/sha256/${m.archive.sha256}`], appArgs: [] });
    assert.equal(admitted.jvm.home, "", "where the JDK was in the build's image is nothing a node may start");
  });

  test("refuses another scope's key, a key that is not its inputs' digest, and blobs it did not receive whole", () => {
    const m = sampleManifest({ scope: "victim" });
    assert.throws(() => admitManifest(m, { scope: "tenant-a", blobSize: sizes(m) }), /is for scope "victim", but the build grant is for scope "tenant-a"/);
    assert.throws(() => admitManifest({ ...m, key: "f".repeat(64) }, { scope: "victim", blobSize: sizes(m) }), /is not the digest of its inputs/);
    assert.throws(() => admitManifest(m, { scope: "victim", blobSize: (sha) => (sha === m.archive.sha256 ? 1 : sizes(m)(sha)) }), /has 1 bytes, the manifest says/);
    assert.throws(() => admitManifest(m, { scope: "victim", blobSize: () => undefined }), /was not uploaded/);
  });

  test("takes a class path only from the layout's own jars, and the main class from the inputs", () => {
    const base = sampleManifest();
    const files = [{ path: "lib/a.jar", sha256: "5".repeat(64), size: 10 }, { path: "lib/b.jar", sha256: "6".repeat(64), size: 20 }];
    const id = layoutId(files);
    const inputs = { ...base.inputs, app: { ...base.inputs.app, kind: "classpath" as const, mainClass: "com.x.Main", digests: ["7".repeat(64)] } };
    const m: Manifest = { ...base, inputs, key: archiveKey(inputs), layout: { id, files }, runtime: { ...base.runtime, launch: { kind: "main", classPath: [`layouts/${id}/lib/a.jar`, `layouts/${id}/lib/b.jar`], mainClass: "com.x.Main" } } };
    assert.deepEqual(admitManifest(m, { scope: "", blobSize: sizes(m) }).runtime.launch, m.runtime.launch);
    const outside = { ...m, runtime: { ...m.runtime, launch: { kind: "main" as const, classPath: ["/tmp/evil.jar"], mainClass: "com.x.Main" } } };
    assert.throws(() => admitManifest(outside, { scope: "", blobSize: sizes(m) }), /names "\/tmp\/evil.jar", which is no app jar of its layout/);
    const otherMain = { ...m, runtime: { ...m.runtime, launch: { ...m.runtime.launch, mainClass: "evil.Main" } } };
    assert.throws(() => admitManifest(otherMain, { scope: "", blobSize: sizes(m) }), /not its inputs' main class/);
  });

  test("lets a profile set properties and tuning flags at run time, nothing that loads code, runs a command or names a file", () => {
    for (const ok of ["-Dotel.javaagent.enabled=true", "-Dscouter.config=/opt/agent/agent.conf", "-Xmx512m", "-XX:+UseG1GC", "--add-opens=java.base/java.lang=ALL-UNNAMED"]) assert.equal(refusedRuntimeOption(ok), undefined, ok);
    for (const bad of ["-javaagent:/x.jar", "-agentpath:/x.so", "-Xbootclasspath/a:/x.jar", "-XX:OnError=sh -c id", "-XX:OnOutOfMemoryError=id", "-XX:Flags=/x", "@/etc/args", "-Djava.system.class.loader=Evil", "-Xlog:gc:file=/etc/x", "-cp", "--patch-module=java.base=/x", "-XX:VMOptionsFile=/x", "plain"]) {
      assert.notEqual(refusedRuntimeOption(bad), undefined, bad);
    }
  });
});
