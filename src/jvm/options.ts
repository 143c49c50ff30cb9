/**
 * JVM options for each phase — training, verification and run time — as pure functions of
 * the archive's plan. Run-time options are what classcache injects into workloads, so they
 * keep the invariant "never break a workload": -Xshare:auto / -XX:AOTMode=auto, never "on".
 */
import type { ArchiveKind } from "../archive/key.ts";
import type { AgentMode, PhaseSpec } from "../archive/profile.ts";

export interface AgentPlan {
  /** Agent jar path as the JVM sees it (may contain {root}). */
  jar: string;
  build: PhaseSpec;
  runtime: PhaseSpec;
}

export interface Plan {
  kind: ArchiveKind;
  mode: AgentMode;
  feature: number;
  agent: AgentPlan | null;
  /**
   * How baked mode gets transformed classes into the archive: "allow-archiving" keeps them via
   * -XX:+AllowArchivingWithJavaAgent (JDK 17–24, a flag the JVM calls testing-only), "weave"
   * builds a stock archive over jars holding the transformed classes (JDK 25+).
   */
  bakedStrategy: "allow-archiving" | "weave" | null;
}

/** The options every phase shares: the agent's jar on the boot class path and the modules it needs. */
function agentBase(plan: Plan, phase: PhaseSpec): string[] {
  if (!plan.agent || plan.mode === "none") return [];
  const out: string[] = [];
  if (phase.bootclasspath) out.push(`-Xbootclasspath/a:${plan.agent.jar}`);
  if (plan.mode === "hybrid") out.push("--add-modules=java.instrument");
  return out;
}

function allowArchiving(plan: Plan): string[] {
  return plan.mode === "baked" && plan.bakedStrategy === "allow-archiving"
    ? ["-XX:+UnlockDiagnosticVMOptions", "-XX:+AllowArchivingWithJavaAgent"]
    : [];
}

/**
 * Does the training JVM run the agent? Only for baked archives built with the testing flag.
 * Hybrid training runs without the agent's transforms: a JDK before 25 refuses -javaagent while
 * dumping unless AllowArchivingWithJavaAgent is on (which would archive transformed classes the
 * live agent must transform again), and JDK 25.0.3 crashes assembling an AOT cache after a
 * large agent (OpenTelemetry) ran in training. Woven baked archives are stock archives: the
 * agent ran in the capture run, not here.
 */
export function trainingRunsAgent(plan: Plan): boolean {
  if (!plan.agent || plan.mode !== "baked" || !plan.agent.build.javaagent) return false;
  return plan.bakedStrategy === "allow-archiving";
}

/** Options of the training run that writes the archive to `output`. */
export function trainingOptions(plan: Plan, output: string, logFile: string, opts: { agent?: boolean } = {}): string[] {
  const a = plan.agent;
  const runAgent = opts.agent ?? trainingRunsAgent(plan);
  const out = [...allowArchiving(plan)];
  if (a) out.push(...agentBase(plan, a.build));
  if (a && runAgent) out.push(`-javaagent:${a.jar}`);
  if (a && plan.mode !== "none") out.push(...a.build.extraJvmOpts, ...(plan.kind === "aot" ? a.build.aotExtraJvmOpts ?? [] : []));
  if (plan.kind === "aot") out.push(`-XX:AOTCacheOutput=${output}`, `-Xlog:aot=info,cds=info:file=${logFile}::filecount=0`);
  else out.push(`-XX:ArchiveClassesAtExit=${output}`, `-Xlog:cds=info,cds+dynamic=info:file=${logFile}::filecount=0`);
  return out;
}

export interface RuntimeOptionsInput {
  archive: string;
  /** Map the archive at its preferred address so JVMs on a node share its read-only pages. */
  shareMemory: boolean;
}

/** The options classcache injects into a workload JVM (JAVA_TOOL_OPTIONS). */
export function runtimeOptions(plan: Plan, input: RuntimeOptionsInput): string[] {
  const a = plan.agent;
  const out: string[] = [...allowArchiving(plan)];
  // "auto": use the archive if it fits, run without it if not. (-Xshare is refused next to -XX:AOTCache.)
  if (plan.kind === "aot") out.push("-XX:AOTMode=auto", `-XX:AOTCache=${input.archive}`);
  else out.push("-Xshare:auto", `-XX:SharedArchiveFile=${input.archive}`);
  if (a) {
    out.push(...agentBase(plan, a.runtime));
    if (plan.mode === "hybrid" && a.runtime.javaagent) out.push(`-javaagent:${a.jar}`);
    if (plan.mode !== "none") out.push(...a.runtime.extraJvmOpts, ...(plan.kind === "aot" ? a.runtime.aotExtraJvmOpts ?? [] : []));
  }
  return input.shareMemory ? withMemorySharing(out) : out;
}

/**
 * Adds -XX:ArchiveRelocationMode=0: the archive is mapped at the address it was built for, so
 * its read-only pages are the same physical pages in every JVM on a node that maps the same
 * file. (Since JDK 20 the default relocates, which makes those pages private.)
 */
export function withMemorySharing(options: string[]): string[] {
  if (options.includes("-XX:ArchiveRelocationMode=0")) return options;
  // The unlock must precede every diagnostic option, so it goes first.
  return ["-XX:+UnlockDiagnosticVMOptions", "-XX:ArchiveRelocationMode=0", ...options.filter((o) => o !== "-XX:+UnlockDiagnosticVMOptions")];
}

/** Renders options as one JAVA_TOOL_OPTIONS value (the JVM splits it on white space; quotes keep spaces). */
export function toJavaToolOptions(options: string[]): string {
  return options.map((o) => (/[\s"']/.test(o) ? `"${o.replaceAll('"', '\\"')}"` : o)).join(" ");
}
