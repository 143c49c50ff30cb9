/**
 * Bad input: each case gets a clear message and a non-zero exit, and leaves the store as it was.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { copyFile, mkdir, mkdtemp, readFile, rm, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { demoAppJar, referenceAgentJar } from "../src/demo/fixtures.ts";
import { cli, jdk, type CliResult } from "./support/cli.ts";
import { fixtureJar as compileFixture } from "./support/fixtures.ts";
import { snapshot } from "./support/store.ts";

const run = promisify(execFile);

let tmp: string;
let store: string;
let app: string;
let agent: string;
let java: string;

function fixtureJar(name: string, manifest: [string, string][] = []): Promise<string> {
  return compileFixture(java, name, tmp, manifest);
}

/** Runs a failing command and checks it changed nothing in the store. */
async function fails(args: string[], dir = store): Promise<CliResult> {
  const before = await snapshot(dir);
  const r = await cli(...args);
  assert.notEqual(r.code, 0, `expected failure, got success:\n${r.stdout}`);
  assert.deepEqual(await snapshot(dir), before, "the store changed");
  return r;
}

before(async () => {
  [app, agent, java] = await Promise.all([demoAppJar(), referenceAgentJar(), jdk(17)]);
  tmp = await mkdtemp(join(tmpdir(), "classcache-errors-"));
  store = join(tmp, "store");
  await mkdir(store);
  // A store with one good archive in it, which every failure below must leave alone.
  const ok = await cli("build", "--classpath", await fixtureJar("Hang"), "--main", "Hang", "--store", store, "--java", java, "--ready-log", "waiting forever");
  assert.equal(ok.code, 0, ok.stderr);
});

after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe("classcache build refuses bad input", () => {
  it("a file that is not a jar", async () => {
    const notJar = join(tmp, "notes.txt");
    await writeFile(notJar, "hello\n");
    const r = await fails(["build", "--app", notJar, "--store", store, "--java", java]);
    assert.match(r.stderr, /app .*notes\.txt is not a valid jar/);
    // In a build Job, the same words go where the kubelet reads a container's end (the operator shows them).
    const terminationLog = join(tmp, "termination-log");
    const cliPath = join(import.meta.dirname, "..", "src", "cli.ts");
    const exit = await promisify(execFile)(process.execPath, [cliPath, "build", "--app", notJar, "--store", store, "--java", java], { env: { ...process.env, CLASSCACHE_TERMINATION_LOG: terminationLog } }).then(
      () => 0,
      (e: { code: number }) => e.code,
    );
    assert.equal(exit, 1);
    assert.match(await readFile(terminationLog, "utf8"), /^error: app .*notes\.txt is not a valid jar/);
  });

  it("a corrupt (truncated) jar", async () => {
    const broken = join(tmp, "broken.jar");
    await copyFile(app, broken);
    await truncate(broken, 4_000_000);
    const r = await fails(["build", "--app", broken, "--store", store, "--java", java]);
    assert.match(r.stderr, /broken\.jar is (not a valid|a corrupt) jar/);
  });

  it("a fat jar that is not Spring Boot, with advice to use --classpath", async () => {
    const r = await fails(["build", "--app", agent, "--store", store, "--java", java]);
    assert.match(r.stderr, /is not a Spring Boot fat jar/);
    assert.match(r.stderr, /hint: .*--classpath/);
  });

  it("an app that crashes in training, with the app's own error", async () => {
    const crash = await fixtureJar("Crash");
    const r = await fails(["build", "--classpath", crash, "--main", "Crash", "--store", store, "--java", java]);
    assert.match(r.stderr, /the training run failed: the JVM exited with exit code 1/);
    assert.match(r.stderr, /database url is not configured/);
  });

  it("an app that hangs in training, stopped at the deadline", async () => {
    const hang = join(tmp, "Hang.jar");
    const r = await fails(["build", "--classpath", hang, "--main", "Hang", "--arg", "again", "--store", store, "--java", java, "--timeout", "5"]);
    assert.match(r.stderr, /timed out after 5 s waiting for the app to exit/);
  });

  it("an agent jar without Premain-Class", async () => {
    const r = await fails(["build", "--app", app, "--agent", app, "--profile", "reference", "--store", store, "--java", java]);
    assert.match(r.stderr, /has no Premain-Class in its manifest/);
  });

  it("an agent that loads but does not instrument: the build fails with the agent's own words and publishes nothing", async () => {
    const broken = await fixtureJar("BrokenAgent", [["Premain-Class", "BrokenAgent"]]);
    const r = await fails(["build", "--app", app, "--agent", broken, "--profile", "reference", "--store", store, "--java", java, "--warmup-url", "/api/owners"]);
    assert.match(r.stderr, /the agent's instrumentation did not fire in the verification boot/);
    assert.match(r.stderr, /nothing was published/);
    assert.match(r.stderr, /ERROR agent disabled: no license key configured/, "the agent's own words");
  });

  it("an unknown profile, naming the ones that exist", async () => {
    const r = await fails(["build", "--app", app, "--agent", agent, "--profile", "newrelic", "--store", store, "--java", java]);
    assert.match(r.stderr, /unknown agent profile "newrelic"/);
    assert.match(r.stderr, /reference/);
  });

  it("a directory that is not a JDK", async () => {
    const r = await fails(["build", "--app", app, "--store", store, "--java", tmp]);
    assert.match(r.stderr, /is not a JDK/);
  });

  it("usage errors exit 2", async () => {
    const r = await fails(["build", "--classpath", app, "--store", store]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--classpath needs --main/);
  });
});

describe("classcache build on a store it cannot write", () => {
  // Root ignores permission bits, so read-only and full stores are real mounts (CI runs as root).
  let mounts: string[] = [];
  before(() => assert.equal(process.getuid?.(), 0, "these tests mount file systems and need root (CI runs as root)"));
  after(async () => {
    for (const m of mounts.reverse()) await run("umount", [m]).catch(() => {});
    mounts = [];
  });

  it("a read-only store", async () => {
    const ro = join(tmp, "ro-store");
    await mkdir(ro);
    await run("mount", ["-t", "tmpfs", "-o", "size=8m", "tmpfs", ro]);
    mounts.push(ro);
    await run("mount", ["-o", "remount,ro", ro]);
    const r = await fails(["build", "--app", app, "--store", ro, "--java", java], ro);
    assert.match(r.stderr, /not writable/);
    assert.match(r.stderr, /hint: pass a writable directory/);
  });

  it("a store that fills up during the build, leaving nothing half-written", async () => {
    const full = join(tmp, "full-store");
    await mkdir(full);
    await run("mount", ["-t", "tmpfs", "-o", "size=24m", "tmpfs", full]);
    mounts.push(full);
    assert.equal((await cli("inspect", "--store", full)).code, 0); // an empty store, opened once
    const r = await fails(["build", "--app", app, "--store", full, "--java", java], full);
    assert.match(r.stderr, /the store at .* is full/);
  });
});
