/**
 * The training run: the app's own JVM runs the app once with an archive-writing option. It
 * stops after Spring's context refresh, after readiness and warm-up requests, or when the app
 * exits on its own; every wait has a deadline, and a crash or hang becomes a clear error.
 */
import { readFile, stat } from "node:fs/promises";
import { ClasscacheError } from "../runtime/errors.ts";
import { describeExit, JvmProcess, ProcessError } from "../jvm/process.ts";
import { cleanJvmEnv, viewCommand, type PathView } from "../jvm/launch.ts";
import type { TrainingExit, TrainingRequest } from "./plan.ts";

export const BOOT_STARTED = /Started \S+ in \d+(?:\.\d+)? seconds/;

export interface TrainingRun {
  java: string;
  view: PathView;
  /** JVM options, then the launch (-jar … / -cp … Main), then app arguments. */
  args: string[];
  exit: TrainingExit;
  training: TrainingRequest;
  /** The base URL a path-only ready/warm-up URL resolves against (a Boot app's chosen port). */
  baseUrl: string | undefined;
  /** The archive file the JVM writes, as this process sees it (none for a capture run). */
  output: string | undefined;
  /** JVM stdout/stderr. */
  logFile: string;
  /** The file the JVM's -Xlog:cds/aot output goes to (for error messages). */
  cdsLogFile: string;
  what: string;
}

export interface TrainingResult {
  durationMs: number;
  warmups: { url: string; status: number | string }[];
}

export function resolveUrl(url: string, base: string | undefined): string {
  if (/^https?:\/\//.test(url)) return url;
  if (!base) throw new ClasscacheError("usage", `URL ${url} has no host`, { hint: "give a full URL (http://host:port/path); a path alone only works for Spring Boot apps" });
  return new URL(url, base).toString();
}

export async function runTraining(r: TrainingRun): Promise<TrainingResult> {
  const cmd = viewCommand(r.java, r.args, r.view);
  const jvm = JvmProcess.start({ command: cmd.command, args: cmd.args, env: cleanJvmEnv(), logFile: r.logFile });
  const warmups: TrainingResult["warmups"] = [];
  try {
    if (r.exit === "on-ready") {
      await waitReady(jvm, r.training, r.baseUrl);
      for (const u of r.training.warmupUrls) warmups.push({ url: u, status: await get(resolveUrl(u, r.baseUrl)) });
      // A graceful stop runs the JVM's exit path, which writes the archive.
      const e = await jvm.stop(Math.max(30_000, r.training.timeoutMs / 2));
      if (e.signal === "SIGKILL") throw new ProcessError(`the JVM did not stop within the grace period after SIGTERM`, jvm.tail());
    } else {
      const e = await Promise.race([
        jvm.exited,
        new Promise<never>((_, reject) =>
          setTimeout(() => reject(new ProcessError(`timed out after ${Math.round(r.training.timeoutMs / 1000)} s waiting for the app to exit`, jvm.tail())), r.training.timeoutMs).unref(),
        ),
      ]);
      if (e.code !== 0) throw new ProcessError(`the JVM exited with ${describeExit(e)}`, jvm.tail());
    }
  } catch (err) {
    jvm.kill();
    await jvm.exited;
    if (err instanceof ProcessError) {
      throw new ClasscacheError("training", `${r.what} failed: ${err.message}`, {
        details: err.tail,
        hint: `the app must start and ${r.exit === "on-exit" ? "exit" : "become ready"} within --timeout; full output in ${r.logFile}`,
      });
    }
    throw err;
  }
  const st = r.output === undefined ? undefined : await stat(r.output).catch(() => undefined);
  if (r.output !== undefined && (!st || st.size === 0)) {
    const cdsLog = await readFile(r.cdsLogFile, "utf8").catch(() => "");
    throw new ClasscacheError("training", `${r.what} ended but the JVM wrote no archive`, {
      details: [...cdsLog.split("\n").filter((l) => /warn|error|Error|Skipping|[Ff]ail/.test(l)).slice(-10), jvm.tail(10)].join("\n"),
      hint: `see ${r.logFile} and ${r.cdsLogFile}`,
    });
  }
  return { durationMs: Math.round(jvm.elapsedMs()), warmups };
}

export async function waitReady(jvm: JvmProcess, t: TrainingRequest, baseUrl: string | undefined): Promise<number> {
  if (t.readyUrl) return (await jvm.waitForUrl(resolveUrl(t.readyUrl, baseUrl), t.timeoutMs)).ms;
  const re = t.readyLog ? new RegExp(t.readyLog) : BOOT_STARTED;
  return (await jvm.waitForLine(re, t.timeoutMs, `the log line /${re.source}/`)).ms;
}

async function get(url: string): Promise<number | string> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(30_000) });
    await res.arrayBuffer();
    return res.status;
  } catch (err) {
    return (err as Error).message;
  }
}
