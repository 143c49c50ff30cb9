import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { launchCommandFor, probeReport, type PodWithProbe } from "./launch.ts";

const JOB = "classcache-build-0123456789";
const JAVA = "/opt/java/openjdk/bin/java";
const ended = (terminated: { exitCode?: number; message?: string; finishedAt?: string }, last = false): PodWithProbe => ({
  status: { initContainerStatuses: [{ name: "classcache-kit", state: { terminated: { exitCode: 0 } } }, { name: "classcache-probe", ...(last ? { lastState: { terminated } } : { state: { terminated } }) }] },
});
const record = (command: string[]) => JSON.stringify({ command, workingDir: "/" });

describe("what a build Job's launch probe said", () => {
  test("is the command the newest ended probe recorded", () => {
    const said = probeReport(
      [
        ended({ exitCode: 0, message: record([JAVA, "-jar", "/old.jar"]), finishedAt: "2026-01-01T00:00:01Z" }),
        ended({ exitCode: 0, message: `${record([JAVA, "-Xmx1g", "-jar", "/app.jar"])}\n`, finishedAt: "2026-01-01T00:00:02Z" }, true),
      ],
      JOB,
    );
    assert.deepEqual(said, { command: [JAVA, "-Xmx1g", "-jar", "/app.jar"] });
  });

  test("is nothing while no probe has ended", () => {
    assert.equal(probeReport([], JOB), undefined);
    assert.equal(probeReport([{ status: { initContainerStatuses: [{ name: "classcache-probe", state: {} }] } }, {}], JOB), undefined);
  });

  test("is LaunchNotJava when the ENTRYPOINT ended well without a record: it ran no java", () => {
    const said = probeReport([ended({ exitCode: 0 })], JOB);
    assert.ok(said && "problem" in said);
    assert.equal(said.problem.reason, "LaunchNotJava");
    assert.match(said.problem.message, new RegExp(`build Job ${JOB} recorded nothing.*set spec\\.launch\\.command`));
  });

  test("is LaunchUnknown, in the probe's or the ENTRYPOINT's own words, when it could not record a usable launch", () => {
    const cases: [Parameters<typeof ended>[0], RegExp][] = [
      [{ exitCode: 0, message: JSON.stringify({ error: "the image's ENTRYPOINT changed JAVA_TOOL_OPTIONS" }) }, /could not record the image's java launch: the image's ENTRYPOINT changed JAVA_TOOL_OPTIONS; set spec\.launch\.command/],
      [{ exitCode: 0, message: JSON.stringify({ command: ["/bin/sh", "-c", "java -jar /app.jar"] }) }, /starts with "\/bin\/sh", not java/],
      [{ exitCode: 0, message: '{"command": [' }, /not JSON/],
      [{ exitCode: 127, message: "exec /docker-entrypoint.sh: no such file or directory" }, /exited with code 127 .* before the launch probe recorded a java launch: exec \/docker-entrypoint\.sh: no such file/],
      [{ exitCode: 1 }, /exited with code 1 in build Job/],
    ];
    for (const [t, message] of cases) {
      const said = probeReport([ended(t)], JOB);
      assert.ok(said && "problem" in said, JSON.stringify(t));
      assert.equal(said.problem.reason, "LaunchUnknown");
      assert.match(said.problem.message, message);
    }
  });

  test("takes a record even from a container that exited badly afterwards (a script that went on after java)", () => {
    assert.deepEqual(probeReport([ended({ exitCode: 2, message: record([JAVA, "-jar", "/app.jar"]) })], JOB), { command: [JAVA, "-jar", "/app.jar"] });
  });
});

describe("the command a recorded launch means for the patch", () => {
  const recorded = [JAVA, "-Xmx1g", "-jar", "/app.jar", "--server.port=8080", "--spring.profiles.active=prod"];

  test("is the recorded command line without the container's own args, which the patch keeps", () => {
    assert.deepEqual(launchCommandFor(recorded, { args: ["--spring.profiles.active=prod"] }), { command: recorded.slice(0, 5) });
    assert.deepEqual(launchCommandFor(recorded, { args: ["--server.port=8080", "--spring.profiles.active=prod"] }), { command: recorded.slice(0, 4) });
  });

  test("is all of it for a container without args of its own: the image's CMD is part of the command then", () => {
    assert.deepEqual(launchCommandFor(recorded, {}), { command: recorded });
    assert.deepEqual(launchCommandFor(recorded, { args: [] }), { command: recorded });
  });

  test("is refused when the ENTRYPOINT did not hand the container's args to java unchanged", () => {
    for (const args of [["--server.port=9090"], [...recorded], ["--spring.profiles.active=prod", "--server.port=8080"]]) {
      const r = launchCommandFor(recorded, { args });
      assert.ok("problem" in r, args.join(" "));
      assert.equal(r.problem.reason, "LaunchUnknown");
      assert.match(r.problem.message, /does not end with the container's args as given.*spec\.launch\.command/);
    }
  });
});
