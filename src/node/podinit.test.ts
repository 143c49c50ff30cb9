import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { Manifest } from "../archive/manifest.ts";
import { LocalStore } from "../store/store.ts";
import { planPod } from "./podinit.ts";

const ROOT = "/var/lib/classcache";
const REF = "e".repeat(64);

describe("pod-init's plan", () => {
  let dir: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "classcache-podinit-"));
  });

  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("finds the archive in its scope's view alone, at the paths the archive was built with, and nothing in another scope's", async () => {
    const store = await LocalStore.open(join(dir, "store"));
    const work = await store.workDir("test");
    await writeFile(join(work, "app.jar"), "app");
    await writeFile(join(work, "archive"), "archive");
    const layout = await store.addLayout([{ path: "app.jar", tempPath: join(work, "app.jar") }]);
    const archive = await store.addBlob(join(work, "archive"));
    const file = `blobs/sha256/${archive.sha256}`;
    const key = "d".repeat(64);
    const m = {
      key,
      inputs: { app: { digests: ["1".repeat(64)] } },
      layout,
      archive: { kind: "cds", ...archive, file },
      runtime: { launch: { kind: "jar", jar: `layouts/${layout.id}/app.jar` }, jvmOptions: ["-Xshare:auto", `-XX:SharedArchiveFile={root}/${file}`], appArgs: [] },
    } as unknown as Manifest;
    await store.publishManifest(m);
    await store.setRef("shop", `${REF}.amd64`, key, 1);

    const plan = (scope: string) =>
      planPod({ ref: REF, arch: "amd64", store: store.viewPath(scope), root: ROOT, out: dir, fallback: ["-jar", "/app.jar"], fallbackJvm: [], shareMemory: false });
    const shop = await plan("shop");
    assert.equal(shop.archive, true, shop.reason);
    assert.deepEqual(shop.jvm, ["-Xshare:auto", `-XX:SharedArchiveFile=${ROOT}/${file}`]);
    assert.deepEqual(shop.launch, ["-jar", `${ROOT}/layouts/${layout.id}/app.jar`]);
    const rival = await plan("rival");
    assert.equal(rival.archive, false);
    assert.deepEqual(rival.launch, ["-jar", "/app.jar"]);
  });
});
