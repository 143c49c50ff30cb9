/**
 * The verification boot: start the app exactly as a workload will run it (the injected options
 * go in through JAVA_TOOL_OPTIONS), measure time-to-ready, count how many loaded classes came
 * from the archive, and — with an agent — prove that its instrumentation fired.
 */
import { open, readFile, stat } from "node:fs/promises";
import type { ArchiveKind } from "../archive/key.ts";
import type { Verification } from "../archive/manifest.ts";
import { archiveProblems, summarizeClassLoads, type ClassSource } from "../jvm/classload.ts";
import { hitRate, readClassCounts } from "../jvm/hsperf.ts";
import { cleanJvmEnv, viewCommand, type PathView } from "../jvm/launch.ts";
import { toJavaToolOptions } from "../jvm/options.ts";
import { JvmProcess, ProcessError } from "../jvm/process.ts";
import { ClasscacheError } from "../runtime/errors.ts";
import type { TrainingExit, TrainingRequest } from "./plan.ts";
import { resolveUrl, waitReady } from "./train.ts";

export interface VerifyRun {
  kind: ArchiveKind;
  java: string;
  view: PathView;
  /** What classcache injects (JAVA_TOOL_OPTIONS). */
  injected: string[];
  /** The command line: the workload's options, verification extras, the launch and app arguments. */
  args: string[];
  exit: TrainingExit;
  training: TrainingRequest;
  baseUrl: string | undefined;
  mainClass: string;
  /** Regex that proves the agent's instrumentation ran; undefined when there is no agent. */
  evidence: RegExp | undefined;
  hasAgent: boolean;
  /** Requests that exercise the instrumentation (warm-up URLs, or "/" for a Boot app). */
  probes: string[];
  logFile: string;
  classLogFile: string;
}

export async function verifyBoot(v: VerifyRun): Promise<Verification> {
  const tags = v.kind === "aot" ? "class+load=info,aot=info,cds=info,class+path=info" : "class+load=info,cds=info,class+path=info";
  const args = [`-Xlog:${tags}:file=${v.classLogFile}::filecount=0`, ...v.args];
  const cmd = viewCommand(v.java, args, { ...v.view, readOnly: true });
  const jvm = JvmProcess.start({
    command: cmd.command,
    args: cmd.args,
    env: cleanJvmEnv({ JAVA_TOOL_OPTIONS: toJavaToolOptions(v.injected) }),
    logFile: v.logFile,
  });
  const warnings: string[] = [];
  let readyMs: number;
  let counts: { shared: number; notShared: number } | undefined;
  let logBytesAtReady: number | undefined;
  let evidence: string | null = null;
  try {
    if (v.exit === "on-exit") {
      await jvm.exited;
      readyMs = jvm.elapsedMs();
    } else {
      readyMs = await waitReady(jvm, v.training, v.baseUrl);
      // The JVM's own counters, at the moment it was ready: exact, and what a node agent reads later.
      counts = await readClassCounts(jvm.pid);
      logBytesAtReady = (await stat(v.classLogFile).catch(() => undefined))?.size;
      if (v.hasAgent && v.evidence) evidence = await probeForEvidence(jvm, v, warnings);
      await jvm.stop(15_000);
    }
  } catch (err) {
    jvm.kill();
    await jvm.exited;
    const problems = archiveProblems(await readFile(v.classLogFile, "utf8").catch(() => ""));
    if (err instanceof ProcessError) {
      throw new ClasscacheError("verification", `the verification boot failed: ${err.message}`, {
        details: [...problems, err.tail].join("\n"),
        hint: `the app ran with the archive and the injected options and did not come up; full output in ${v.logFile}`,
      });
    }
    throw err;
  }
  const log = await readPrefix(v.classLogFile, logBytesAtReady);
  const summary = summarizeClassLoads(log, [v.mainClass]);
  const mainSource = summary.sourceOf.get(v.mainClass);
  if (!mainSource?.startsWith("shared objects file")) {
    const problems = archiveProblems(await readFile(v.classLogFile, "utf8"));
    throw new ClasscacheError("verification", "the JVM did not use the archive it was given", {
      details: [`main class ${v.mainClass} came from ${mainSource ?? "nowhere in the log"}`, ...problems].join("\n"),
      hint: `the JVM's reasons are above; all of -Xlog:cds and class+path is in ${v.classLogFile}`,
    });
  }
  const shared = counts?.shared ?? summary.bySource.archive;
  const total = counts ? counts.shared + counts.notShared : summary.total;
  const notShared: Record<string, number> = {};
  for (const [k, n] of Object.entries(summary.bySource) as [ClassSource, number][]) if (k !== "archive" && n > 0) notShared[k] = n;
  return {
    hitRate: round4(counts ? hitRate(counts) : total ? shared / total : 0),
    sharedClasses: shared,
    totalClasses: total,
    notSharedBySource: notShared,
    readyMs: Math.round(readyMs),
    instrumented: v.hasAgent ? (v.evidence ? evidence !== null : null) : null,
    evidence,
    jvmOptions: v.injected,
    warnings,
  };
}

/** Sends the probe requests, then waits (briefly) for the evidence line. */
async function probeForEvidence(jvm: JvmProcess, v: VerifyRun, warnings: string[]): Promise<string | null> {
  for (const p of v.probes) {
    try {
      const res = await fetch(resolveUrl(p, v.baseUrl), { signal: AbortSignal.timeout(30_000) });
      await res.arrayBuffer();
      if (res.status >= 500) warnings.push(`probe ${p} answered ${res.status}`);
    } catch (err) {
      warnings.push(`probe ${p} failed: ${(err as Error).message}`);
    }
  }
  try {
    // The line that matched, around the match: an agent may print a whole trace on one line.
    const line = (await jvm.waitForLine(v.evidence!, 15_000, "the agent's evidence line")).line.trim();
    const at = Math.max(0, (v.evidence!.exec(line)?.index ?? 0) - 120);
    return line.length <= 400 ? line : `${at > 0 ? "…" : ""}${line.slice(at, at + 400)}…`;
  } catch (err) {
    if (err instanceof ProcessError) return null;
    throw err;
  }
}

async function readPrefix(path: string, bytes: number | undefined): Promise<string> {
  if (bytes === undefined) return readFile(path, "utf8");
  const fh = await open(path, "r");
  try {
    const buf = Buffer.alloc(bytes);
    const { bytesRead } = await fh.read(buf, 0, bytes, 0);
    return buf.subarray(0, bytesRead).toString("utf8");
  } finally {
    await fh.close();
  }
}

function round4(x: number): number {
  return Math.round(x * 10_000) / 10_000;
}
