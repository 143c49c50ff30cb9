import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { MAX_COMMAND_ITEMS, parseLaunchRecord, splitJavaCommand, TERMINATION_MESSAGE_BYTES } from "./probe.ts";

const JAVA = "/opt/java/openjdk/bin/java";
const parse = (v: unknown, max = TERMINATION_MESSAGE_BYTES) => parseLaunchRecord(typeof v === "string" ? v : JSON.stringify(v), max);
const refused = (v: unknown, why: RegExp, max?: number) => {
  const r = parse(v, max);
  assert.ok("error" in r, JSON.stringify(v).slice(0, 80));
  assert.match(r.error, why);
};

describe("the launch probe's record", () => {
  test("is a bounded array of strings starting with java, and an absolute working directory", () => {
    assert.deepEqual(parse({ command: [JAVA, "-Xmx1g", "-jar", "/app.jar", "a b"], workingDir: "/srv" }), { command: [JAVA, "-Xmx1g", "-jar", "/app.jar", "a b"], workingDir: "/srv" });
    assert.deepEqual(parse({ command: ["java", "-cp", "a.jar", "Main"] }), { command: ["java", "-cp", "a.jar", "Main"], workingDir: undefined });
    assert.deepEqual(parse({ error: "the probe said no" }), { error: "the probe said no" });
    assert.equal((parse({ error: "x".repeat(5000) }, 1 << 20) as { error: string }).error.length, 2000, "the probe's own words, bounded");
  });

  test("refuses anything else, saying what is wrong", () => {
    refused("java -jar /app.jar", /not JSON/);
    refused([JAVA, "-jar", "/app.jar"], /not a JSON object/);
    refused(null, /not a JSON object/);
    refused({}, /not an array of 1 to 1024 strings/);
    refused({ command: [] }, /not an array/);
    refused({ command: [JAVA, 42] }, /not an array/);
    refused({ command: [JAVA, "-Dx=\0"] }, /not an array/);
    refused({ command: Array.from({ length: MAX_COMMAND_ITEMS + 1 }, () => "java") }, /not an array/, 1 << 20);
    refused({ command: ["bin/java", "-jar", "/app.jar"] }, /not java or an absolute path to a java/);
    refused({ command: ["/bin/sh", "-c", "java -jar /app.jar"] }, /starts with "\/bin\/sh"/);
    refused({ command: ["/usr/bin/javax", "-jar", "/app.jar"] }, /not java/);
    refused({ command: [JAVA, "-jar", "/app.jar"], workingDir: "srv" }, /workingDir is not an absolute path/);
    refused({ command: [JAVA, "-jar", "/app.jar"], workingDir: 7 }, /workingDir/);
    refused({ command: [JAVA, "-cp", "x".repeat(5000), "Main"] }, /is 50\d\d bytes, more than the 4096 allowed/);
  });

  test("splits a java command into its java, options, launch and app arguments", () => {
    assert.deepEqual(splitJavaCommand([JAVA, "-Xmx1g", "-XX:+UseSerialGC", "-jar", "app.jar", "--port=1", "a b"]), { java: JAVA, options: ["-Xmx1g", "-XX:+UseSerialGC"], launch: { jar: "app.jar" }, args: ["--port=1", "a b"] });
    assert.deepEqual(splitJavaCommand([JAVA, "--add-opens=java.base/java.lang=ALL-UNNAMED", "-cp", "/app/classes:/app/libs/a.jar", "com.x.Main"]), {
      java: JAVA,
      options: ["--add-opens=java.base/java.lang=ALL-UNNAMED"],
      launch: { classPath: "/app/classes:/app/libs/a.jar", mainClass: "com.x.Main" },
      args: [],
    });
    assert.deepEqual(splitJavaCommand([JAVA, "--module-path=/m", "-m", "app/com.x.Main", "x"]), { java: JAVA, options: ["--module-path=/m"], launch: { module: "app/com.x.Main" }, args: ["x"] });
    assert.deepEqual(splitJavaCommand([JAVA, "com.x.Main"]), { problem: '"com.x.Main" comes before any -jar, -cp or -m' });
    assert.deepEqual(splitJavaCommand([JAVA, "-Xmx1g", "-jar"]), { problem: "it names no -jar <jar>, -cp <class path> <main class> or -m <module>" });
  });
});
