/**
 * The classcache image (scripts/image/build.ts): two builds from the same inputs give the same
 * digest, it names a non-root user and an entry point that needs nothing of a base image, and
 * nothing that only tests or benchmarks use is in it. That it runs — operator, webhook, agents,
 * pod init, build kit — is test/cluster.test.ts, on real kubelets.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { buildImage } from "../scripts/image/build.ts";

const dir = mkdtempSync(join(tmpdir(), "classcache-image-test-"));
after(() => rmSync(dir, { recursive: true, force: true }));

/** Reads a blob of an OCI archive by digest. */
function blob(archive: string, digest: string): Buffer {
  return execFileSync("tar", ["-xOf", archive, `blobs/sha256/${digest.slice("sha256:".length)}`], { maxBuffer: 512 << 20 });
}

void describe("the classcache image", { timeout: 600_000 }, () => {
  void it("is reproducible: two builds from the same inputs give the same digest, and it holds only what runs", async () => {
    const a = await buildImage({ out: join(dir, "a.oci.tar") });
    const b = await buildImage({ out: join(dir, "b.oci.tar") });
    assert.equal(a.digest, b.digest);
    assert.deepEqual(readFileSync(join(dir, "a.oci.tar")), readFileSync(join(dir, "b.oci.tar")), "byte for byte");

    const index = JSON.parse(execFileSync("tar", ["-xOf", join(dir, "a.oci.tar"), "index.json"], { encoding: "utf8" })) as { manifests: { digest: string; annotations: Record<string, string> }[] };
    assert.equal(index.manifests[0]!.digest, a.digest);
    assert.equal(index.manifests[0]!.annotations["io.containerd.image.name"], a.name);
    const manifest = JSON.parse(blob(join(dir, "a.oci.tar"), a.digest).toString()) as { config: { digest: string }; layers: { digest: string }[] };
    const config = JSON.parse(blob(join(dir, "a.oci.tar"), manifest.config.digest).toString()) as { config: { User: string; Entrypoint: string[] } };
    assert.equal(config.config.User, "65532:65532");
    assert.deepEqual(config.config.Entrypoint, ["/opt/classcache/bin/classcache"]);

    const layer = join(dir, "layer.tar.gz");
    execFileSync("sh", ["-c", `tar -xOf "$1" "blobs/sha256/$2" > "$3"`, "sh", join(dir, "a.oci.tar"), manifest.layers[0]!.digest.slice(7), layer]);
    const files = execFileSync("tar", ["-tzf", layer], { encoding: "utf8", maxBuffer: 64 << 20 }).split("\n").filter(Boolean);
    for (const needed of ["opt/classcache/bin/classcache", "opt/classcache/bin/node", "opt/classcache/lib/ld.so", "opt/classcache/app/src/cli.ts", "opt/classcache/app/src/node/csi/csi.proto", "opt/classcache/app/src/node/csi/registration.proto", "bin/sh", "bin/mount", "bin/umount", "tmp"]) {
      assert.ok(files.includes(needed) || files.includes(`${needed}/`), `${needed} is in the image`);
    }
    const testOnly = files.filter((f) => /\.test\.ts$|\/src\/testenv\/|\/src\/kube\/testing\/|\/p2p\/testing\.ts$|\/directory\/conformance\.ts$|^opt\/classcache\/app\/(bench|test)\//.test(f));
    assert.deepEqual(testOnly, [], "nothing only tests or benchmarks use");
    // The kit's sources still load without them: the CLI imports every command module up front.
    const root = join(dir, "root");
    execFileSync("mkdir", ["-p", root]);
    execFileSync("tar", ["-xzf", layer, "-C", root]);
    assert.match(execFileSync(join(root, "opt/classcache/bin/classcache"), ["--version"], { encoding: "utf8", env: { PATH: "/usr/bin:/bin" } }), /^classcache \d/);
    const owners = execFileSync("tar", ["-tvzf", layer], { encoding: "utf8", maxBuffer: 64 << 20 }).split("\n").filter(Boolean);
    assert.ok(owners.every((l) => / 0\/0 | 65532\/65532 /.test(l)), "owned by root (or the non-root user's home)");
  });
});
