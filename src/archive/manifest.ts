/**
 * The manifest: everything known about one archive — its key and inputs, where its files are,
 * how a workload JVM must be started to use it, and the proof that it was used.
 * Paths are relative to the store root; JVM options hold `{root}` where the root goes.
 */
import type { ArchiveKind, KeyInputs } from "./key.ts";
import type { AgentMode } from "./profile.ts";

export const ROOT_PLACEHOLDER = "{root}";

export interface LayoutFile {
  /** Relative to the layout directory. */
  path: string;
  sha256: string;
  size: number;
}

export interface Layout {
  /** sha256 over the file list: the layout's directory name under layouts/. */
  id: string;
  files: LayoutFile[];
}

export type Launch =
  | { kind: "jar"; jar: string } // java -jar layouts/<id>/app.jar (class path from its manifest)
  | { kind: "main"; classPath: string[]; mainClass: string };

export interface Verification {
  /** Classes from the archive / all classes loaded, when the app was ready (JVM perf counters). */
  hitRate: number;
  sharedClasses: number;
  totalClasses: number;
  /** Classes not from the archive at readiness, by where they came from (class+load log). */
  notSharedBySource: Record<string, number>;
  readyMs: number;
  /** Did the agent's instrumentation fire? null when there is no agent. */
  instrumented: boolean | null;
  /** The output line that proved it, when it did. */
  evidence: string | null;
  /** The VM options the verification boot ran with, after `{root}` was filled in. */
  jvmOptions: string[];
  warnings: string[];
}

export interface Manifest {
  formatVersion: number;
  key: string;
  mode: AgentMode;
  createdAt: string;
  inputs: KeyInputs;
  jvm: { home: string; feature: number; runtimeVersion: string; vendor: string; arch: string; relocatableClassPath: boolean };
  app: { kind: "boot" | "classpath"; source: string; mainClass: string; args: string[] };
  agent: { name: string; sha256: string; profile: string; mode: AgentMode } | null;
  layout: Layout;
  /** Where the JVMs saw the store during the build. On JDKs without class-path relocation (< 19) workloads must see it at the same path. */
  root: string;
  archive: { kind: ArchiveKind; sha256: string; size: number; file: string };
  runtime: { launch: Launch; jvmOptions: string[]; appArgs: string[] };
  /** How baked mode got the agent's transformed classes in, and which it could not. */
  baked: {
    strategy: "allow-archiving" | "weave";
    wovenClasses: number | null;
    wovenJars: string[];
    /** Transformed classes whose instrumentation is lost with the agent off (first 50). */
    unbaked: { name: string; reason: string }[];
    unbakedCount: number;
  } | null;
  verification: Verification;
  build: { durationMs: number; trainingMs: number; host: string; classcacheVersion: string; notes: string[] };
}
