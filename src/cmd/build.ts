/** `classcache build`: the archive engine, from the command line. */
import { shortKey } from "../archive/key.ts";
import type { Manifest } from "../archive/manifest.ts";
import { buildArchive, type BuildRequest } from "../build/pipeline.ts";
import { launchInputs } from "../build/probe.ts";
import { createLogger } from "../runtime/log.ts";
import { usageError } from "../runtime/errors.ts";
import { defaultStore, parse, type Command } from "./command.ts";
import { readFile } from "node:fs/promises";
import { uploadBuild } from "../node/upload.ts";
import { LocalStore } from "../store/store.ts";
import { signerFromPem } from "../archive/signing.ts";

const usage = `
usage: classcache build (--app <fat.jar> | --classpath <a.jar:b.jar> --main <class> | --launch-file <f>) [options]

Builds a class-data archive for an app and its JVM (dynamic CDS on JDK 17–24, AOT cache on
JDK 25+), verifies it with a real boot, and records it in the store under its key.

app
  --app <fat.jar>           a Spring Boot fat jar (extracted deterministically into the store)
  --classpath <a:b:…>       a plain class path of jars, with --main <class>
  --arg <a>                 an app argument (repeatable)
  --jvm-opt=<o>             a JVM option of the workload, e.g. --jvm-opt=-Xmx512m (repeatable)
  --java <JAVA_HOME>        the JDK the workload runs (default: $JAVA_HOME, then java on PATH)
  --launch-file <f>         the launch the classcache launch probe recorded (JSON): its java,
                            JVM options, jar or class path and main class, and app arguments;
                            instead of --app, --classpath, --main, --arg, --jvm-opt and --java

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

kubernetes (what a ClassCache's build Job passes)
  --ref <ref>               the ClassCache's ref this build is for
  --scope <namespace>       whose archive it is: the ClassCache's namespace, or "" when it is
                            shared across the cluster (default ""); part of the key
  --publish-to unix:<sock>  upload the verified build to the node agent at this socket
  --build-token-file <f>    the ref's build grant from the operator, presented to the agent
  --build-key-file <f>      the build's one-time private key (the grant names its public half):
                            the manifest is signed with it
  --mode <mode>             fail unless the profile runs the agent in this mode
  --exit-on-refresh, --no-exit-on-refresh
                            train a Spring Boot app until its context is refreshed (default), or
                            until --ready-url/--ready-log says it is ready
  --java auto               the same as leaving --java out

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
      "launch-file": { type: "string" },
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
      ref: { type: "string" },
      scope: { type: "string" },
      "publish-to": { type: "string" },
      "build-token-file": { type: "string" },
      "build-key-file": { type: "string" },
      mode: { type: "string" },
      "exit-on-refresh": { type: "boolean" },
      "no-exit-on-refresh": { type: "boolean" },
    });
    const publish = publishTarget(values);
    checkExitFlags(values);
    const timeout = values.timeout === undefined ? 300 : Number(values.timeout);
    if (!Number.isFinite(timeout) || timeout <= 0) throw usageError(`--timeout ${values.timeout} is not a positive number of seconds`);
    if (values["ready-log"] !== undefined) {
      try {
        new RegExp(values["ready-log"]);
      } catch {
        throw usageError(`--ready-log ${values["ready-log"]} is not a valid regular expression`);
      }
    }
    const launch = await launchOf(values);
    const req: BuildRequest = {
      ...launch,
      agent: values.agent,
      agentConfig: values["agent-config"],
      profile: values.profile,
      training: { readyUrl: values["ready-url"], readyLog: values["ready-log"], warmupUrls: values["warmup-url"] ?? [], timeoutMs: timeout * 1000 },
      store: values.store ?? defaultStore(io.env),
      root: values.root,
      force: values.force ?? false,
      scope: values.scope ?? "",
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
    if (values.mode !== undefined && manifest.mode !== values.mode) {
      throw usageError(`the build ran in mode ${manifest.mode}, not the requested ${values.mode}`, "the profile decides how the agent runs; pick a profile of that mode or leave the mode out");
    }
    if (publish) {
      const token = (await readFile(publish.tokenFile, "utf8")).trim();
      const buildSigner = signerFromPem(await readFile(publish.keyFile, "utf8"));
      const store = await LocalStore.open(req.store);
      const r = await uploadBuild(store, manifest, { socket: publish.socket, token, ref: publish.ref, buildSigner });
      if (!quiet) io.stderr.write(`  offered to the node agent: key ${shortKey(r.key)} (${r.status}); the operator signs and publishes it\n`);
    }
    if (values.json) io.stdout.write(JSON.stringify(manifest, null, 2) + "\n");
    else io.stdout.write(summary(manifest, reused));
    return 0;
  },
};

/** The app, its JVM and options: from the flags, or from the launch the probe recorded. */
async function launchOf(v: {
  app?: string | undefined;
  classpath?: string | undefined;
  main?: string | undefined;
  arg?: string[] | undefined;
  "jvm-opt"?: string[] | undefined;
  java?: string | undefined;
  "launch-file"?: string | undefined;
}): Promise<Pick<BuildRequest, "app" | "classPath" | "mainClass" | "appArgs" | "jvmOptions" | "java">> {
  const java = v.java === "auto" ? undefined : v.java;
  const file = v["launch-file"];
  if (file === undefined) return { app: v.app, classPath: v.classpath?.split(":").filter(Boolean), mainClass: v.main, appArgs: v.arg ?? [], jvmOptions: v["jvm-opt"] ?? [], java };
  if (v.app !== undefined || v.classpath !== undefined || v.main !== undefined || v.arg !== undefined || v["jvm-opt"] !== undefined || java !== undefined) {
    throw usageError("--launch-file names the app, its JVM, options and arguments: leave out --app, --classpath, --main, --arg, --jvm-opt and --java");
  }
  return launchInputs(file, (f) => readFile(f, "utf8"));
}

function checkExitFlags(v: { "ready-url"?: string | undefined; "ready-log"?: string | undefined; "warmup-url"?: string[] | undefined; "exit-on-refresh"?: boolean | undefined; "no-exit-on-refresh"?: boolean | undefined; mode?: string | undefined }): void {
  const readyGiven = v["ready-url"] !== undefined || v["ready-log"] !== undefined || (v["warmup-url"]?.length ?? 0) > 0;
  if (v["no-exit-on-refresh"] && !readyGiven) throw usageError("--no-exit-on-refresh needs --ready-url or --ready-log: otherwise nothing says when training is done");
  if (v["exit-on-refresh"] && readyGiven) throw usageError("--exit-on-refresh cannot go with --ready-url, --ready-log or --warmup-url: the app would exit before it is ready");
  if (v.mode !== undefined && !["none", "hybrid", "baked"].includes(v.mode)) throw usageError(`--mode ${v.mode} is not one of none, hybrid, baked`);
}

function publishTarget(v: { ref?: string | undefined; "publish-to"?: string | undefined; "build-token-file"?: string | undefined; "build-key-file"?: string | undefined }): { socket: string; tokenFile: string; keyFile: string; ref: string } | undefined {
  const to = v["publish-to"];
  if (to === undefined) {
    if (v.ref !== undefined || v["build-token-file"] !== undefined || v["build-key-file"] !== undefined) throw usageError("--ref, --build-token-file and --build-key-file go with --publish-to");
    return undefined;
  }
  if (!to.startsWith("unix:")) throw usageError(`--publish-to ${to} is not unix:<socket path>`);
  if (!v.ref || !/^[0-9a-f]{64}$/.test(v.ref)) throw usageError("--publish-to needs --ref <64 hex digits>");
  if (!v["build-token-file"]) throw usageError("--publish-to needs --build-token-file <file>");
  if (!v["build-key-file"]) throw usageError("--publish-to needs --build-key-file <file>");
  return { socket: to.slice("unix:".length), tokenFile: v["build-token-file"], keyFile: v["build-key-file"], ref: v.ref };
}

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
