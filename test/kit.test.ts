/**
 * The runtime kit (scripts/kit.sh): the directory the image keeps at /opt/classcache and build
 * Jobs copy into the workload's image. It must run on its own — its Node, its sources, its
 * dependencies, its precompiled capture agent — with nothing from this checkout on PATH.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { cp, mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { REPO } from "../src/demo/fixtures.ts";

const run = promisify(execFile);
const CLEAN_ENV = { PATH: "/usr/bin:/bin", HOME: "/nonexistent" };

describe("the runtime kit", () => {
  let dir: string;
  let kit: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "classcache-kit-"));
    await run("sh", [join(REPO, "scripts", "kit.sh"), join(dir, "built")], { maxBuffer: 1 << 24 });
    // As a build Job does: copied into another directory (an emptyDir), run from there.
    kit = join(dir, "copied");
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

  it("carries the capture agent compiled from its own source, so baked builds need no javac in the app's image", async () => {
    const source = await readFile(join(kit, "app", "src", "build", "capture", "CaptureAgent.java"));
    const digest = createHash("sha256").update(source).digest("hex").slice(0, 16);
    assert.ok(existsSync(join(kit, "cache", "tools", `capture-agent-${digest}.jar`)));
    assert.equal(existsSync(join(kit, "app", "node_modules", "typescript")), false, "no dev dependencies");
  });
});
