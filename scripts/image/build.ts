/**
 * The classcache image, built without a daemon or a base image: the kit (scripts/kit.sh: Node,
 * the C library it links against and its loader, the sources, the production dependencies and
 * the precompiled Java tools) at /opt/classcache, a static busybox for the two shell steps the
 * operator's pods run (`sh -c` copying the kit into build pods) and the CSI node plugin's
 * mount and umount, /tmp, and a non-root user.
 *
 *   npm run -s image -- [--out <file.oci.tar>] [--name <ref>] [--kit <dir>]
 *
 * Prints the archive's path and the image digest. Import with
 *   ctr -n k8s.io images import <file.oci.tar>
 * or push with `skopeo copy oci-archive:<file.oci.tar> docker://<registry>/<repo>:<tag>`.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { nodeArch } from "../../src/util/arch.ts";
import { baseEntries, busyboxEntries, NONROOT, treeEntries, writeImage, type Entry, type WrittenImage } from "./oci.ts";

export const REPO = resolve(import.meta.dirname, "../..");
const VERSION = (JSON.parse(readFileSync(join(REPO, "package.json"), "utf8")) as { version: string }).version;
export const DEFAULT_IMAGE = `ghcr.io/classcache/classcache:${VERSION}`;
/** The shell the operator's pods run, and the mount and umount the CSI node plugin runs; nothing else of busybox. */
const APPLETS = ["sh", "cp", "mount", "umount"];

export function imageEntries(kit: string): Entry[] {
  return [...treeEntries(kit, "opt/classcache"), ...busyboxEntries(APPLETS), ...baseEntries()];
}

export async function buildImage(opts: { out: string; name?: string; kit?: string }): Promise<WrittenImage> {
  let kit = opts.kit;
  let tmp: string | undefined;
  if (!kit) {
    tmp = mkdtempSync(join(tmpdir(), "classcache-kit-"));
    kit = join(tmp, "kit");
    execFileSync("sh", [join(REPO, "scripts/kit.sh"), kit], { stdio: ["ignore", "ignore", "inherit"] });
  }
  try {
    mkdirSync(resolve(opts.out, ".."), { recursive: true });
    return await writeImage(
      {
        name: opts.name ?? DEFAULT_IMAGE,
        arch: nodeArch(),
        layers: [imageEntries(kit)],
        config: {
          Entrypoint: ["/opt/classcache/bin/classcache"],
          Env: ["PATH=/opt/classcache/bin:/bin", "CLASSCACHE_CACHE=/opt/classcache/cache"],
          User: `${NONROOT}:${NONROOT}`,
          WorkingDir: "/",
          Labels: { "org.opencontainers.image.title": "classcache", "org.opencontainers.image.version": VERSION, "org.opencontainers.image.source": "https://github.com/classcache/classcache" },
        },
      },
      opts.out,
    );
  } finally {
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  }
}

if (import.meta.main) {
  const { values } = parseArgs({ options: { out: { type: "string" }, name: { type: "string" }, kit: { type: "string" } } });
  const out = resolve(values.out ?? join(REPO, "dist", `classcache-${VERSION}-${nodeArch()}.oci.tar`));
  const img = await buildImage({ out, ...(values.name ? { name: values.name } : {}), ...(values.kit ? { kit: values.kit } : {}) });
  process.stdout.write(`${out}\n${img.name}@${img.digest}\n${(img.size / 1048576).toFixed(1)} MiB\n`);
}
