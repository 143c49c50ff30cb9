/**
 * The images the real test cluster runs besides classcache's own (scripts/image/build.ts), built
 * as OCI archives from what this machine has — no registry, no daemon:
 *  - pause: the pod sandbox (scripts/cluster/pause.c, static), as registry.k8s.io/pause:3.10
 *  - app-17 / app-25: the demo Spring Boot app on a JDK, ENTRYPOINT ["java", "-jar", "/app.jar"]
 *    and no CMD — the shape of most Java images (Dockerfile, Jib, Buildpacks)
 *  - agent: the reference agent jar at /agent/agent.jar, and `cp` (the agent init step copies it)
 *  - valkey: the directory; Debian's redis-server and redis-cli under Valkey's names, tagged as
 *    the managed directory's default image, so a ClassCache that names no image works here
 *
 *   node src/testenv/images.ts <pause|app-17|app-25|agent|valkey> <out.oci.tar>
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { baseEntries, busyboxEntries, hostFiles, sharedLibraries, treeEntries, writeImage, type Entry, type WrittenImage } from "../../scripts/image/oci.ts";
import { nodeArch } from "../util/arch.ts";
import { DEFAULTS } from "../operator/api/v1.ts";
import { demoAppJar, referenceAgentJar, REPO } from "../demo/fixtures.ts";

export const TEST_IMAGES = {
  pause: "registry.k8s.io/pause:3.10",
  "app-17": "classcache.test/demo-app:jdk17",
  "app-25": "classcache.test/demo-app:jdk25",
  agent: "classcache.test/reference-agent:1",
  valkey: DEFAULTS.valkeyImage,
} as const;
export type TestImage = keyof typeof TEST_IMAGES;

const JAVA_HOME_IN_IMAGE = "/opt/java/openjdk";

/** The JDK of a feature release on this machine (Debian's 17, Temurin's 25). */
export function jdkHome(feature: 17 | 25): string {
  const dirs = readdirSync("/usr/lib/jvm").filter((d) => new RegExp(`(^|-)${feature}([.-]|$)`).test(d) && existsSync(join("/usr/lib/jvm", d, "bin", "java")));
  const home = dirs.sort()[0];
  if (!home) throw new Error(`no JDK ${feature} in /usr/lib/jvm`);
  return join("/usr/lib/jvm", home);
}

/** A JDK as image entries at /opt/java/openjdk, with the host libraries it links against. */
async function jdkEntries(home: string): Promise<Entry[]> {
  const elf = execFileSync("find", [home, "-type", "f", "(", "-name", "*.so", "-o", "-path", "*/bin/*", ")"], { encoding: "utf8" }).split("\n").filter(Boolean);
  const { libs, interpreter } = await sharedLibraries(elf);
  if (!interpreter) throw new Error(`no ELF interpreter found for ${home}/bin/java`);
  const outside = libs.filter((l) => !l.startsWith(`${home}/`));
  return [...treeEntries(home, JAVA_HOME_IN_IMAGE, { exclude: (r) => r === "src.zip" || r.startsWith("jmods") || r.startsWith("demo") || r.startsWith("man") }), ...hostFiles([...outside, interpreter])];
}

export async function buildTestImage(kind: TestImage, out: string): Promise<WrittenImage> {
  const name = TEST_IMAGES[kind];
  const arch = nodeArch();
  switch (kind) {
    case "pause": {
      const work = mkdtempSync(join(tmpdir(), "classcache-pause-"));
      try {
        const bin = join(work, "pause");
        execFileSync("gcc", ["-static", "-O2", "-s", "-o", bin, join(REPO, "scripts/cluster/pause.c")]);
        return await writeImage({ name, arch, layers: [[{ path: "pause", type: "file", source: bin, mode: 0o755 }]], config: { Entrypoint: ["/pause"], User: "65535:65535" } }, out);
      } finally {
        rmSync(work, { recursive: true, force: true });
      }
    }
    case "app-17":
    case "app-25": {
      const home = jdkHome(kind === "app-17" ? 17 : 25);
      const app = await demoAppJar();
      return writeImage(
        {
          name,
          arch,
          layers: [[...baseEntries(), ...(await jdkEntries(home))], [{ path: "app.jar", type: "file", source: app, mode: 0o644 }]],
          config: {
            Entrypoint: ["java", "-jar", "/app.jar"],
            Env: [`JAVA_HOME=${JAVA_HOME_IN_IMAGE}`, `PATH=${JAVA_HOME_IN_IMAGE}/bin:/usr/bin:/bin`],
            User: "65532:65532",
            WorkingDir: "/",
          },
        },
        out,
      );
    }
    case "agent":
      return writeImage(
        { name, arch, layers: [[...baseEntries(), ...busyboxEntries(["sh", "cp"]), { path: "agent/agent.jar", type: "file", source: await referenceAgentJar(), mode: 0o644 }]], config: { Entrypoint: ["/bin/sh"], User: "65532:65532" } },
        out,
      );
    case "valkey": {
      const server = "/usr/bin/redis-server";
      const cli = "/usr/bin/redis-cli";
      const { libs, interpreter } = await sharedLibraries([server, cli]);
      return writeImage(
        {
          name,
          arch,
          layers: [
            [
              ...baseEntries(),
              ...busyboxEntries(["sh", "grep"]),
              ...hostFiles([...libs, ...(interpreter ? [interpreter] : [])]),
              { path: "usr/local/bin/valkey-server", type: "file", source: server, mode: 0o755 },
              { path: "usr/local/bin/valkey-cli", type: "file", source: cli, mode: 0o755 },
              { path: "data", type: "dir", mode: 0o755, uid: 999, gid: 999 },
            ],
          ],
          config: { Entrypoint: ["valkey-server"], Env: ["PATH=/usr/local/bin:/usr/bin:/bin"], User: "999:999", WorkingDir: "/data" },
        },
        out,
      );
    }
  }
}

if (import.meta.main) {
  const [kind, out] = process.argv.slice(2);
  if (!kind || !out || !(kind in TEST_IMAGES)) {
    process.stderr.write(`usage: node src/testenv/images.ts <${Object.keys(TEST_IMAGES).join("|")}> <out.oci.tar>\n`);
    process.exit(2);
  }
  const img = await buildTestImage(kind as TestImage, out);
  process.stdout.write(`${out}\n${img.name}@${img.digest}\n`);
}
