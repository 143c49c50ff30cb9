/**
 * A pod never launches an extracted app whose jars differ from its own image's. The init step
 * (`classcache pod-init --check`, as the pod patch runs it) stages the node's archive; the jar
 * check (`JarCheck`, run with the app's own JVM, as the patch's last init container runs it)
 * switches to it only when the image's jar has the digest the archive was built from. Here the
 * "image" is re-pushed under the same tag with other content, as a registry allows: the pod
 * then starts as without classcache, and the check says why. On JDK 17 and 25, real processes.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { after, before, describe, it } from "node:test";
import { archiveKey } from "../src/archive/key.ts";
import { injectPod } from "../src/operator/inject.ts";
import { sha256File } from "../src/util/hash.ts";
import { cli, jdk } from "./support/cli.ts";
import { sampleManifest } from "./support/manifest.ts";

const run = promisify(execFile);
const REF = "c".repeat(64);

describe("the jar check of a patched pod", () => {
  let dir: string;
  let view: string;
  let appJar: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "classcache-jar-check-"));
    appJar = join(dir, "image", "app.jar");
    await mkdir(join(dir, "image"), { recursive: true });
    await writeFile(appJar, "the application, version 1");
    // The node's view for the pod's scope: a ref, its manifest, the archive and the layout.
    const m = sampleManifest({ scope: "shop" });
    const inputs = { ...m.inputs, app: { ...m.inputs.app, digests: [(await sha256File(appJar)).sha256] } };
    const manifest = { ...m, inputs, key: archiveKey(inputs) };
    view = join(dir, "view");
    await mkdir(join(view, "refs"), { recursive: true });
    await mkdir(join(view, "manifests"), { recursive: true });
    await mkdir(join(view, "blobs", "sha256"), { recursive: true });
    await mkdir(join(view, "layouts", manifest.layout.id), { recursive: true });
    await writeFile(join(view, manifest.archive.file), "archive");
    await writeFile(join(view, "manifests", `${manifest.key}.json`), JSON.stringify(manifest));
    await writeFile(join(view, "refs", `${REF}.amd64`), `${manifest.key}\nissued 1\n`);
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** The init step and the check as the pod patch writes them, with the given JDK as the image's java. */
  async function startPod(java: string, name: string): Promise<{ jvm: string; launch: string; check: { archive: boolean; reason?: string; actual?: string } }> {
    const out = join(dir, name);
    await mkdir(out, { recursive: true });
    const patched = injectPod({ containers: [{ name: "app", image: "shop:1", command: [join(java, "bin", "java"), "-jar", appJar] }] }, { ref: REF, scope: "shop", jarPath: appJar, mode: "none", memorySharing: false, image: "classcache:test" });
    const [init, check] = [patched.spec.initContainers!.find((c) => c.name === "classcache-init")!, patched.spec.initContainers!.find((c) => c.name === "classcache-check")!];
    const args = init.args!.map((a) => (a.startsWith("--out=") ? `--out=${out}` : a));
    const r = await cli(...args, `--store=${view}`, "--root=/var/lib/classcache", `--socket=${join(dir, "no-agent.sock")}`);
    assert.equal(r.code, 0, r.stderr);
    const cmd = check.command!.map((a) => a.replace("/classcache", out));
    const checked = await run(cmd[0]!, cmd.slice(1), { env: { PATH: process.env.PATH ?? "", ...Object.fromEntries((check.env ?? []).map((e) => [e.name, e.value ?? ""])) } });
    return { jvm: await readFile(join(out, "jvm.args"), "utf8"), launch: await readFile(join(out, "launch.args"), "utf8"), check: JSON.parse(checked.stdout.trim()) as { archive: boolean; reason?: string; actual?: string } };
  }

  for (const feature of [17, 25]) {
    it(`switches to the archive only while the image's jar is the one it was built from (JDK ${feature})`, async () => {
      const java = await jdk(feature);
      await writeFile(appJar, "the application, version 1");
      const same = await startPod(java, `same-${feature}`);
      assert.deepEqual(same.check, { archive: true });
      assert.match(same.jvm, /-XX:AOTCache=\/var\/lib\/classcache\/blobs\/sha256\//);
      assert.match(same.launch, /^-jar\n\/var\/lib\/classcache\/layouts\/[0-9a-f]{64}\/app\.jar\n$/);

      // The tag is pushed again with other content: same path, other bytes.
      await writeFile(appJar, "the application, version 2");
      const repushed = await startPod(java, `repushed-${feature}`);
      assert.equal(repushed.check.archive, false);
      assert.equal(repushed.check.reason, "app-jar-differs");
      assert.equal(repushed.check.actual, (await sha256File(appJar)).sha256, "it says which content the pod runs");
      assert.equal(repushed.jvm, "\n", "no archive option");
      assert.equal(repushed.launch, `-jar\n${appJar}\n`, "the pod's own jar, as without classcache");
    });
  }
});
