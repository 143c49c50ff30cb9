/**
 * The runtime kit (scripts/kit.sh): the directory the image keeps at /opt/classcache and build
 * Jobs copy into the workload's image. It must run on its own — its Node, its sources, its
 * dependencies, its precompiled capture agent, jar check and launch probe — with nothing from
 * this checkout on PATH.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { cp, mkdir, mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { KIT_PROBE_JAR, LAUNCH_RECORD } from "../src/build/probe.ts";
import { REPO } from "../src/demo/fixtures.ts";
import { MOUNTS } from "../src/operator/constants.ts";
import { KIT_COMMAND } from "../src/operator/objects/buildjob.ts";

const run = promisify(execFile);
const CLEAN_ENV = { PATH: "/usr/bin:/bin", HOME: "/nonexistent" };

describe("the runtime kit", () => {
  let dir: string;
  let kit: string;
  let root: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "classcache-kit-"));
    await run("sh", [join(REPO, "scripts", "kit.sh"), join(dir, "built")], { maxBuffer: 1 << 24 });
    // As a build Job does: copied into another directory (an emptyDir), run from there — here, into
    // an otherwise empty root at the path the Job mounts it.
    root = join(dir, "root");
    kit = join(root, MOUNTS.kit);
    await cp(join(dir, "built"), kit, { recursive: true });
  });

  after(() => rm(dir, { recursive: true, force: true }));

  it("runs classcache with its own Node and nothing else on PATH", async () => {
    const { stdout } = await run(join(kit, "bin", "classcache"), ["--version"], { env: CLEAN_ENV });
    assert.match(stdout, /^classcache \d+\.\d+\.\d+/);
    const help = await run(join(kit, "bin", "classcache"), ["build", "--help"], { env: CLEAN_ENV });
    assert.match(help.stdout, /--publish-to unix:<sock>/);
  });

  it("runs a pod's init step", async () => {
    const out = join(dir, "args");
    await mkdir(out);
    await run(join(kit, "bin", "classcache"), ["pod-init", `--ref=${"a".repeat(64)}`, `--out=${out}`, `--store=${join(dir, "no-store")}`, "--fallback=-jar", "--fallback=/app.jar"], { env: CLEAN_ENV });
    assert.equal(await readFile(join(out, "launch.args"), "utf8"), "-jar\n/app.jar\n");
  });

  it("runs the build Job's command in an image with neither a shell nor a C library (distroless, Alpine)", async () => {
    // The root holds the kit and nothing else: no /bin/sh, no libc, no loader of its own.
    assert.deepEqual(await readdir(root), [MOUNTS.kit.slice(1)]);
    const chrooted = (...args: string[]) => run("/usr/sbin/chroot", [root, ...KIT_COMMAND, ...args], { env: {} });
    assert.match((await chrooted("--version")).stdout, /^classcache \d+\.\d+\.\d+/);
    await mkdir(join(root, "out"));
    await chrooted("pod-init", `--ref=${"a".repeat(64)}`, "--out=/out", "--store=/no-store", "--fallback=-jar", "--fallback=/app.jar");
    assert.equal(await readFile(join(root, "out", "launch.args"), "utf8"), "-jar\n/app.jar\n");
    // A build whose launch probe recorded nothing (the ENTRYPOINT ran no java) says so where the operator reads it.
    const failed = await run("/usr/sbin/chroot", [root, ...KIT_COMMAND, "build", `--launch-file=${LAUNCH_RECORD}`, "--store=/out/store"], { env: { CLASSCACHE_TERMINATION_LOG: "/out/termination-log" } }).then(
      () => undefined,
      (e: unknown) => e as { code?: number },
    );
    assert.equal(failed?.code, 1);
    assert.match(await readFile(join(root, "out", "termination-log"), "utf8"), /^error: the image's ENTRYPOINT started no JVM: the classcache launch probe recorded no launch\nhint: .*spec\.launch\.command/);
  });

  it("carries the capture agent, the jar check and the launch probe compiled from their own sources, so neither a build Job's image nor the classcache image needs javac", async () => {
    for (const [name, file] of [["capture-agent", "build/capture/CaptureAgent.java"], ["jar-check", "node/check/JarCheck.java"], ["launch-probe", "build/probe/LaunchProbe.java"]] as const) {
      const digest = createHash("sha256").update(await readFile(join(kit, "app", "src", file))).digest("hex").slice(0, 16);
      assert.ok(existsSync(join(kit, "cache", "tools", `${name}-${digest}.jar`)), name);
    }
    // The probe again where build Jobs name it (-javaagent in their probe init container).
    const probe = await readFile(join(kit, KIT_PROBE_JAR));
    const digest = createHash("sha256").update(await readFile(join(kit, "app", "src", "build", "probe", "LaunchProbe.java"))).digest("hex").slice(0, 16);
    assert.deepEqual(probe, await readFile(join(kit, "cache", "tools", `launch-probe-${digest}.jar`)));
    assert.equal(existsSync(join(kit, "app", "node_modules", "typescript")), false, "no dev dependencies");
  });
});
