/**
 * The launch probe against real JVMs (JDK 17 and 25), started the way an image's ENTRYPOINT
 * starts them — `java … -jar app.jar …`, `java … -cp … Main …`, through a shell — with the probe
 * in JAVA_TOOL_OPTIONS after the user's own options, as a build pod's probe container has it:
 * the record names exactly the launch, without what came from the environment; main never
 * runs; the JVM ends with status 0. An ENTRYPOINT that runs no java leaves no record, and the
 * build says so; one that changes JAVA_TOOL_OPTIONS itself is refused.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, realpath, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { Manifest } from "../src/archive/manifest.ts";
import { demoAppJar } from "../src/demo/fixtures.ts";
import { EXPECTED_TOOL_OPTIONS, launchInputs, launchProbeJar, parseLaunchRecord, TERMINATION_MESSAGE_BYTES } from "../src/build/probe.ts";
import { probeReport } from "../src/operator/policies/launch.ts";
import { cli } from "./support/cli.ts";
import { fixtureJar } from "./support/fixtures.ts";

const JDKS = [
  { name: "JDK 17", home: "/usr/lib/jvm/java-17-openjdk-amd64" },
  { name: "JDK 25", home: "/usr/lib/jvm/temurin-25-jdk-amd64" },
].filter((j) => existsSync(join(j.home, "bin", "java")));

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs argv in `cwd` with exactly `env` (and PATH), as a container runtime runs an ENTRYPOINT. */
function run(argv: string[], cwd: string, env: Record<string, string>): Promise<Ran> {
  return new Promise((resolve) => {
    execFile(argv[0]!, argv.slice(1), { cwd, env: { PATH: process.env.PATH ?? "/usr/bin:/bin", ...env }, timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stdout, stderr });
    });
  });
}

void describe("the launch probe, in real JVMs started as an ENTRYPOINT starts them", { skip: JDKS.length === 0 && "no JDK 17 or 25 here" }, () => {
  let dir: string;
  let probe: string;
  let app: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "classcache-probe-"));
    probe = await launchProbeJar();
    app = await fixtureJar(JDKS[0]!.home, "Launched", dir, [["Main-Class", "Launched"]]);
  });
  after(() => rm(dir, { recursive: true, force: true }));

  let n = 0;
  /** What a build pod's probe container sets: the user's JAVA_TOOL_OPTIONS, then the probe; the same value again to compare. */
  async function probeEnv(user: string, extra: Record<string, string> = {}): Promise<{ env: Record<string, string>; record: string; log: string }> {
    const out = join(dir, `run-${++n}`);
    await mkdir(out);
    const record = join(out, "launch.json");
    const log = join(out, "termination-log");
    await writeFile(log, "");
    const tool = `${user ? `${user} ` : ""}-javaagent:${probe}=${record}`;
    return { env: { JAVA_TOOL_OPTIONS: tool, [EXPECTED_TOOL_OPTIONS]: tool, CLASSCACHE_TERMINATION_LOG: log, ...extra }, record, log };
  }

  for (const jdk of JDKS) {
    void it(`${jdk.name}: records java -Xmx300m -XX:+UseSerialGC -jar app.jar and its args exactly, leaving out the environment's options, and ends the JVM before main`, async () => {
      const java = join(jdk.home, "bin", "java");
      const { env, record, log } = await probeEnv("-Dteam='shop floor' -Xlog:disable", { JDK_JAVA_OPTIONS: "-Xss1m", _JAVA_OPTIONS: "-Dunder=1" });
      const r = await run([java, "-Xmx300m", "-XX:+UseSerialGC", "-jar", "Launched.jar", "arg1", "two words"], dir, env);
      assert.equal(r.code, 0, r.stderr);
      assert.doesNotMatch(r.stdout, /main ran/, "main never runs");
      const text = await readFile(record, "utf8");
      assert.deepEqual(JSON.parse(text), {
        command: [join(await realpath(jdk.home), "bin", "java"), "-Xmx300m", "-XX:+UseSerialGC", "-jar", "Launched.jar", "arg1", "two words"],
        workingDir: dir,
      });
      assert.equal(await readFile(log, "utf8"), text, "the operator reads the same from the termination message");
      // What the build takes from it: the JDK, the plain jar as a class path with its Main-Class, the options and arguments.
      assert.deepEqual(await launchInputs(record, (f) => readFile(f, "utf8")), {
        java: await realpath(jdk.home),
        app: undefined,
        classPath: [app],
        mainClass: "Launched",
        jvmOptions: ["-Xmx300m", "-XX:+UseSerialGC"],
        appArgs: ["arg1", "two words"],
      });
    });

    void it(`${jdk.name}: records java … -cp <class path> <main> through a shell that execs it, with the class path as the JVM has it`, async () => {
      const java = join(jdk.home, "bin", "java");
      const { env, record } = await probeEnv("-Dteam=shop", { JAVA_OPTS: "-Xmx128m -Dmode=probe" });
      const script = `exec ${java} $JAVA_OPTS --add-opens java.base/java.lang=ALL-UNNAMED -cp Launched.jar:lib/* Launched "$@"`;
      const r = await run(["/bin/sh", "-c", script, "sh", "--server.port=8080", ""], dir, env);
      assert.equal(r.code, 0, r.stderr);
      assert.doesNotMatch(r.stdout, /main ran/);
      assert.deepEqual(JSON.parse(await readFile(record, "utf8")), {
        command: [join(await realpath(jdk.home), "bin", "java"), "-Xmx128m", "-Dmode=probe", "--add-opens=java.base/java.lang=ALL-UNNAMED", "-cp", "Launched.jar:lib/*", "Launched", "--server.port=8080", ""],
        workingDir: dir,
      });
    });
  }

  const jdk = JDKS[JDKS.length - 1]!;

  void it("records the Spring Boot demo app's java -jar launch, which the build takes as the fat jar it is", async () => {
    const boot = await demoAppJar();
    const java = join(jdk.home, "bin", "java");
    const { env, record } = await probeEnv("-XX:+UseSerialGC");
    const r = await run([java, "-Xmx256m", "-jar", boot, "--server.port=0"], "/", env);
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stdout, /Started|Spring/, "the app never starts");
    assert.deepEqual(JSON.parse(await readFile(record, "utf8")), { command: [join(await realpath(jdk.home), "bin", "java"), "-Xmx256m", "-jar", boot, "--server.port=0"], workingDir: "/" });
    const inputs = await launchInputs(record, (f) => readFile(f, "utf8"));
    assert.deepEqual({ app: inputs.app, classPath: inputs.classPath, mainClass: inputs.mainClass, jvmOptions: inputs.jvmOptions, appArgs: inputs.appArgs }, { app: boot, classPath: undefined, mainClass: undefined, jvmOptions: ["-Xmx256m"], appArgs: ["--server.port=0"] });
  });

  void it("gives classcache build --launch-file the launch to train: the recorded JDK, jar, options and arguments make the archive", async () => {
    const java = join(JDKS[0]!.home, "bin", "java");
    const slow = await fixtureJar(JDKS[0]!.home, "Slow", dir, [["Main-Class", "Slow"]]);
    const { env, record } = await probeEnv("-Dteam=shop");
    assert.equal((await run([java, "-Xmx64m", "-XX:+UseSerialGC", "-jar", "Slow.jar", "100"], dir, env)).code, 0);
    const r = await cli("build", `--launch-file=${record}`, `--store=${join(dir, "store")}`, "--ready-log=ready", "--timeout=60", "--json");
    assert.equal(r.code, 0, r.stderr);
    const m = JSON.parse(r.stdout) as Manifest;
    assert.equal(m.jvm.home, await realpath(JDKS[0]!.home));
    assert.deepEqual(m.app, { kind: "classpath", source: slow, mainClass: "Slow", args: ["100"] });
    assert.deepEqual(m.inputs.jvmOptions, ["-Xmx64m", "-XX:+UseSerialGC"], "the workload's options, not the environment's");
    assert.equal(m.inputs.vmFlags.gc, "SerialGC");
    assert.ok(m.verification.hitRate > 0.9, String(m.verification.hitRate));
    // The flags it replaces cannot come with it.
    const mixed = await cli("build", `--launch-file=${record}`, "--app=/app.jar", `--store=${join(dir, "store")}`);
    assert.equal(mixed.code, 2);
    assert.match(mixed.stderr, /--launch-file names the app, its JVM, options and arguments: leave out --app/);
  });

  void it("leaves no record when the ENTRYPOINT runs no java, and the build then says to set spec.launch.command", async () => {
    const { env, record, log } = await probeEnv("");
    const r = await run(["/bin/sh", "-c", "true"], dir, env);
    assert.equal(r.code, 0);
    assert.equal(existsSync(record), false);
    await assert.rejects(launchInputs(record, (f) => readFile(f, "utf8")), (err: Error & { hint?: string }) => {
      assert.match(err.message, /the image's ENTRYPOINT started no JVM: the classcache launch probe recorded no launch/);
      assert.match(err.hint ?? "", /spec\.launch\.command/);
      return true;
    });
    // The operator, from the probe container's end (exit 0, no message): LaunchNotJava.
    const said = probeReport([{ status: { initContainerStatuses: [{ name: "classcache-probe", state: { terminated: { exitCode: 0, message: await readFile(log, "utf8") } } }] } }], "classcache-build-0123456789");
    assert.ok(said && "problem" in said);
    assert.equal(said.problem.reason, "LaunchNotJava");
    assert.match(said.problem.message, /ENTRYPOINT ended without starting java.*spec\.launch\.command/);
  });

  void it("lets a JVM that runs no main class (java -version) run, and records the app's JVM after it", async () => {
    const java = join(jdk.home, "bin", "java");
    const { env, record } = await probeEnv("");
    const r = await run(["/bin/sh", "-c", `${java} -version && exec ${java} -jar Launched.jar`], dir, env);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /version "\d+/, "java -version ran");
    assert.deepEqual((JSON.parse(await readFile(record, "utf8")) as { command: string[] }).command.slice(1), ["-jar", "Launched.jar"]);
  });

  void it("refuses an ENTRYPOINT that changes JAVA_TOOL_OPTIONS itself (as a buildpacks launcher does): its pods would lose them", async () => {
    const java = join(jdk.home, "bin", "java");
    const { env, record, log } = await probeEnv("-Dteam=shop");
    const r = await run(["/bin/sh", "-c", `JAVA_TOOL_OPTIONS="$JAVA_TOOL_OPTIONS -Xmx64m" exec ${java} -jar Launched.jar`], dir, env);
    assert.equal(r.code, 0, r.stderr);
    const said = parseLaunchRecord(await readFile(record, "utf8"), TERMINATION_MESSAGE_BYTES);
    assert.ok("error" in said);
    assert.match(said.error, /changed JAVA_TOOL_OPTIONS before it started java/);
    await assert.rejects(launchInputs(record, (f) => readFile(f, "utf8")), /the image's java launch cannot be used: the image's ENTRYPOINT changed JAVA_TOOL_OPTIONS/);
    const report = probeReport([{ status: { initContainerStatuses: [{ name: "classcache-probe", state: { terminated: { exitCode: 0, message: await readFile(log, "utf8") } } }] } }], "classcache-build-0123456789");
    assert.ok(report && "problem" in report);
    assert.equal(report.problem.reason, "LaunchUnknown");
  });

  void it("keeps a launch longer than a termination message in its file for the build, and says in the message that it is too long", async () => {
    const java = join(jdk.home, "bin", "java");
    const { env, record, log } = await probeEnv("");
    const cp = ["Launched.jar", ...Array.from({ length: 200 }, (_, i) => `lib/dependency-number-${i}.jar`)].join(":");
    const r = await run([java, "-cp", cp, "Launched"], dir, env);
    assert.equal(r.code, 0, r.stderr);
    const full = parseLaunchRecord(await readFile(record, "utf8"), 1 << 20);
    assert.ok("command" in full && full.command.includes(cp));
    const message = await readFile(log, "utf8");
    assert.ok(Buffer.byteLength(message) <= TERMINATION_MESSAGE_BYTES);
    assert.match(message, /"error":"the recorded launch is \d+ bytes, more than the 4096 a termination message holds"/);
  });
});
