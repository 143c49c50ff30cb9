/**
 * Deciding what to build: a pure function from the facts gathered about the app, the JDK, the
 * agent and the request to the archive's plan and key inputs. No I/O here.
 */
import { EXTRACTOR_VERSION, FORMAT_VERSION, type KeyInputs } from "../archive/key.ts";
import type { AgentMode, AgentProfile } from "../archive/profile.ts";
import type { JdkIdentity } from "../jvm/jdk.ts";
import { capabilities } from "../jvm/jdk.ts";
import type { Plan } from "../jvm/options.ts";
import { ClasscacheError } from "../runtime/errors.ts";
import type { AppInfo } from "./extract.ts";

export interface TrainingRequest {
  readyUrl: string | undefined;
  readyLog: string | undefined;
  warmupUrls: string[];
  timeoutMs: number;
}

export type TrainingExit = "on-refresh" | "on-ready" | "on-exit";

export interface BuildFacts {
  app: AppInfo & { digests: string[] };
  appArgs: string[];
  jvmOptions: string[];
  jdk: JdkIdentity;
  agent: { sha256: string; configSha256: string | null; profile: AgentProfile } | null;
  training: TrainingRequest;
  /** The namespace the archive is for, "" for cluster-wide (see KeyInputs.scope). */
  scope: string;
}

export interface BuildPlan {
  plan: Omit<Plan, "agent">;
  mode: AgentMode;
  exit: TrainingExit;
  keyInputs: KeyInputs;
  /** Things the user should know about this build (shown in output and kept in the manifest). */
  notes: string[];
}

export const TESTING_FLAG_NOTE =
  "baked mode on this JDK keeps agent-transformed classes with -XX:+AllowArchivingWithJavaAgent, which the JVM documents as a testing-only flag; it must also be on at run time";

export function trainingExit(app: AppInfo, t: TrainingRequest): TrainingExit {
  if (t.readyUrl || t.readyLog || t.warmupUrls.length > 0) return "on-ready";
  return app.kind === "boot" ? "on-refresh" : "on-exit";
}

export function planBuild(f: BuildFacts): BuildPlan {
  const caps = capabilities(f.jdk.feature);
  if (!Number.isFinite(f.jdk.feature) || !caps.dynamicArchive) {
    throw new ClasscacheError("input", `JDK ${f.jdk.runtimeVersion || "?"} at ${f.jdk.home} is too old for class-data archives of apps`, {
      hint: "dynamic CDS needs JDK 13 or newer (classcache supports 17+); pass a newer JDK with --java",
    });
  }
  if (f.jdk.flags.gc === "ZGC" && f.jdk.feature < 25) {
    throw new ClasscacheError("input", `the JVM options select ZGC, which cannot use a dynamic CDS archive on JDK ${f.jdk.feature}`, {
      hint: "drop -XX:+UseZGC for this workload or use JDK 25+",
    });
  }
  const mode: AgentMode = f.agent ? f.agent.profile.mode : "none";
  const kind = caps.aotCache ? "aot" : "cds";
  const notes: string[] = [];
  let bakedStrategy: Plan["bakedStrategy"] = null;
  if (mode === "baked") {
    bakedStrategy = caps.dropsTransformedClasses ? "weave" : "allow-archiving";
    notes.push(
      bakedStrategy === "weave"
        ? "baked mode on this JDK: the JVM drops agent-transformed classes from archives, so classcache captures the transformed classes, weaves them into copies of their jars and builds a stock archive over those"
        : TESTING_FLAG_NOTE,
    );
  }
  if (mode === "hybrid") {
    notes.push("hybrid mode trains with the agent's jar on the boot class path but without its transforms; at run time the live agent transforms the classes it instruments again, and the rest come from the archive");
  }
  const exit = trainingExit(f.app, f.training);
  const keyInputs: KeyInputs = {
    format: FORMAT_VERSION,
    scope: f.scope,
    archiveKind: kind,
    mode,
    app: { kind: f.app.kind, digests: f.app.digests, mainClass: f.app.mainClass, args: f.appArgs, extractor: EXTRACTOR_VERSION },
    jvm: {
      vendor: f.jdk.vendor,
      vmVendor: f.jdk.vmVendor,
      runtimeVersion: f.jdk.runtimeVersion,
      vmVersion: f.jdk.vmVersion,
      libjvmSha256: f.jdk.libjvmSha256,
      arch: f.jdk.arch,
    },
    vmFlags: { ...f.jdk.flags },
    jvmOptions: f.jvmOptions,
    agent: f.agent ? { sha256: f.agent.sha256, configSha256: f.agent.configSha256 } : null,
    profile: f.agent ? f.agent.profile.source : null,
    training: { exit, readyUrl: f.training.readyUrl ?? null, readyLog: f.training.readyLog ?? null, warmupUrls: f.training.warmupUrls },
  };
  return { plan: { kind, mode, feature: f.jdk.feature, bakedStrategy }, mode, exit, keyInputs, notes };
}
