/**
 * The manifest: everything known about one archive — its key and inputs, where its files are,
 * how a workload JVM must be started to use it, and the proof that it was used.
 * Paths are relative to the store root; JVM options hold `{root}` where the root goes.
 */
import { canonicalJson, HEX64, sha256Hex } from "../util/hash.ts";
import { FORMAT_VERSION, type ArchiveKind, type KeyInputs } from "./key.ts";
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

/** sha256 over the file list: the layout's directory name under layouts/. */
export function layoutId(files: LayoutFile[]): string {
  return sha256Hex(canonicalJson(files.map((f) => [f.path, f.sha256, f.size])));
}

/** More files than any app's class path has: a bound on what one manifest makes a node create. */
export const MAX_LAYOUT_FILES = 20_000;

/** A relative path of plain segments: no `..`, `.`, empty segment, backslash or control character. */
export function isSafeRelativePath(p: unknown): p is string {
  return typeof p === "string" && p.length > 0 && p.length <= 1024 && ![...p].some((c) => c < " " || c === "\\") && p.split("/").every((s) => s !== "" && s !== "." && s !== "..");
}

const hex = (x: unknown): x is string => typeof x === "string" && HEX64.test(x);
const size = (x: unknown): x is number => typeof x === "number" && Number.isSafeInteger(x) && x >= 0;
const obj = (x: unknown): boolean => !!x && typeof x === "object" && !Array.isArray(x);
const strings = (x: unknown): x is string[] => Array.isArray(x) && x.every((s) => typeof s === "string");
const malformed = (what: string) => new Error(`the manifest is malformed: ${what}`);

/**
 * The manifest in `v`, if it has the shape of one of this format: every digest 64 hex digits,
 * every path it names inside the store, its layout id the digest of its files. Throws an Error
 * saying what is wrong. Says nothing about whether its inputs, key or runtime are to be trusted
 * (see admit.ts), only that reading it cannot go outside the store.
 */
export function validateManifest(v: unknown): Manifest {
  const m = v as Manifest;
  if (!obj(m) || !hex(m.key)) throw malformed("key");
  if (m.formatVersion !== FORMAT_VERSION) throw malformed(`format version ${String(m.formatVersion)} is not ${FORMAT_VERSION}`);
  if (!["none", "hybrid", "baked"].includes(m.mode)) throw malformed("mode");
  if (!obj(m.inputs) || !obj(m.jvm) || typeof m.jvm.arch !== "string" || !obj(m.app) || !obj(m.verification) || typeof m.verification.hitRate !== "number") throw malformed("inputs, jvm, app or verification");
  if (!obj(m.archive) || !hex(m.archive.sha256) || m.archive.file !== `blobs/sha256/${m.archive.sha256}` || !size(m.archive.size) || !["cds", "aot"].includes(m.archive.kind)) throw malformed("archive");
  checkLayout(m.layout);
  checkRuntime(m.runtime);
  return m;
}

function checkLayout(layout: Layout): void {
  const files: unknown = layout?.files;
  if (!obj(layout) || !Array.isArray(files) || files.length > MAX_LAYOUT_FILES) throw malformed("layout files");
  const paths = new Set<string>();
  for (const f of files as Partial<LayoutFile>[]) {
    if (!obj(f) || !hex(f.sha256) || !size(f.size) || !isSafeRelativePath(f.path) || paths.has(f.path)) throw malformed(`layout file ${JSON.stringify(f?.path ?? null).slice(0, 200)}`);
    paths.add(f.path);
  }
  if (layout.id !== layoutId(layout.files)) throw malformed("layout id does not match its files");
}

function checkRuntime(r: Manifest["runtime"]): void {
  if (!obj(r) || !strings(r.jvmOptions) || !strings(r.appArgs) || !obj(r.launch)) throw malformed("runtime");
  const l = r.launch;
  if (!(l.kind === "jar" && typeof l.jar === "string") && !(l.kind === "main" && strings(l.classPath) && typeof l.mainClass === "string")) throw malformed("runtime launch");
}
