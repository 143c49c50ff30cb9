/** `classcache build`: the archive engine, from the command line. */
import { shortKey } from "../archive/key.ts";
import type { Manifest } from "../archive/manifest.ts";
import { buildArchive, type BuildRequest } from "../build/pipeline.ts";
import { createLogger } from "../runtime/log.ts";
import { usageError } from "../runtime/errors.ts";
import { defaultStore, parse, type Command } from "./command.ts";

const usage = `
usage: classcache build (--app <fat.jar> | --classpath <a.jar:b.jar> --main <class>) [options]

Builds a class-data archive for an app and its JVM (dynamic CDS on JDK 17–24, AOT cache on
JDK 25+), verifies it with a real boot, and records it in the store under its key.

app
  --app <fat.jar>           a Spring Boot fat jar (extracted deterministically into the store)
  --classpath <a:b:…>       a plain class path of jars, with --main <class>
  --arg <a>                 an app argument (repeatable)
  --jvm-opt=<o>             a JVM option of the workload, e.g. --jvm-opt=-Xmx512m (repeatable)
  --java <JAVA_HOME>        the JDK the workload runs (default: $JAVA_HOME, then java on PATH)

agent
  --agent <jar>             a Java agent jar
  --profile <name|file>     how the agent runs: a catalog name (reference, otel, scouter,
                            apm-v01, pinpoint) or an AgentProfile YAML file
  --agent-config <file>     the agent's config file (part of the key)

training
  --ready-url <url>         ready when this URL answers 2xx (a path like /actuator/health
                            resolves against a Spring Boot app's port)
  --ready-log <regex>       ready when the app prints a matching line
  --warmup-url <url>        a request to send once ready (repeatable)
  --timeout <seconds>       deadline for each JVM run (default 300)
  Without these, a Spring Boot app trains until its context is refreshed
  (-Dspring.context.exit=onRefresh) and a class-path app until it exits.

output
  --store <dir>             the store (default: $CLASSCACHE_STORE or ~/.cache/classcache/store)
  --force                   build again even if the store has this key
  --json                    print the manifest as JSON on stdout
`;

export const buildCommand: Command = {
  name: "build",
  summary: "build, verify and store a class-data archive for an app (and agent)",
  usage,
  async run(argv, io) {
    const { values } = parse("build", argv, {
      app: { type: "string" },
      classpath: { type: "string" },
      main: { type: "string" },
      arg: { type: "string", multiple: true },
      "jvm-opt": { type: "string", multiple: true },
      java: { type: "string" },
      agent: { type: "string" },
      profile: { type: "string" },
      "agent-config": { type: "string" },
      "ready-url": { type: "string" },
      "ready-log": { type: "string" },
      "warmup-url": { type: "string", multiple: true },
      timeout: { type: "string" },
      store: { type: "string" },
      root: { type: "string" },
      force: { type: "boolean" },
      json: { type: "boolean" },
      quiet: { type: "boolean" },
    });
    const timeout = values.timeout === undefined ? 300 : Number(values.timeout);
    if (!Number.isFinite(timeout) || timeout <= 0) throw usageError(`--timeout ${values.timeout} is not a positive number of seconds`);
    if (values["ready-log"] !== undefined) {
      try {
        new RegExp(values["ready-log"]);
      } catch {
        throw usageError(`--ready-log ${values["ready-log"]} is not a valid regular expression`);
      }
    }
    const req: BuildRequest = {
      app: values.app,
      classPath: values.classpath?.split(":").filter(Boolean),
      mainClass: values.main,
      appArgs: values.arg ?? [],
      jvmOptions: values["jvm-opt"] ?? [],
      java: values.java,
      agent: values.agent,
      agentConfig: values["agent-config"],
      profile: values.profile,
      training: { readyUrl: values["ready-url"], readyLog: values["ready-log"], warmupUrls: values["warmup-url"] ?? [], timeoutMs: timeout * 1000 },
      store: values.store ?? defaultStore(io.env),
      root: values.root,
      force: values.force ?? false,
    };
    const quiet = values.quiet || values.json;
    const t0 = Date.now();
    const log = createLogger({ level: "warn" });
    const { manifest, reused } = await buildArchive(req, {
      log,
      onStep: (step) => {
        if (!quiet) io.stderr.write(`  ${((Date.now() - t0) / 1000).toFixed(1).padStart(6)}s  ${step}\n`);
      },
    });
    if (values.json) io.stdout.write(JSON.stringify(manifest, null, 2) + "\n");
    else io.stdout.write(summary(manifest, reused));
    return 0;
  },
};

export function summary(m: Manifest, reused: boolean): string {
  const v = m.verification;
  const lines = [
    `${reused ? "already built" : "built"} ${m.archive.kind === "aot" ? "AOT cache" : "dynamic CDS archive"} ${shortKey(m.key)} (mode ${m.mode})`,
    `  key          ${m.key}`,
    `  jvm          ${m.jvm.vendor} ${m.jvm.runtimeVersion} (${m.jvm.arch})`,
    `  archive      ${(m.archive.size / 1048576).toFixed(1)} MiB  sha256:${m.archive.sha256.slice(0, 16)}…`,
    `  hit rate     ${(v.hitRate * 100).toFixed(1)} %  (${v.sharedClasses} of ${v.totalClasses} classes from the archive at ready)`,
    `  ready in     ${v.readyMs} ms (verification boot)`,
    `  instrumented ${v.instrumented === null ? "n/a (no agent, or the profile names no evidence)" : v.instrumented ? `yes — ${v.evidence}` : "NO"}`,
    `  built in     ${(m.build.durationMs / 1000).toFixed(1)} s`,
    ...m.build.notes.map((n) => `  note         ${n}`),
    ...v.warnings.map((w) => `  warning      ${w}`),
    "",
    `run it:   classcache run ${shortKey(m.key)}`,
    `inject:   JAVA_TOOL_OPTIONS="$(classcache flags ${shortKey(m.key)})"`,
  ];
  return lines.join("\n") + "\n";
}
