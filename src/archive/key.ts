/**
 * The archive key: a sha256 over a canonical encoding of every input that decides whether a
 * JVM accepts an archive, or what the archive holds. Same inputs give the same key on any
 * machine; any input that would make the JVM reject the archive gives a different key.
 */
import { canonicalJson, sha256Hex } from "../util/hash.ts";
import type { AgentMode } from "./profile.ts";

/** Bump when the archive, layout or manifest format changes in a way old archives can't follow. */
export const FORMAT_VERSION = 2;

/** Bump when extraction would lay out different bytes for the same fat jar. */
export const EXTRACTOR_VERSION = 1;

export type ArchiveKind = "cds" | "aot";

export interface KeyInputs {
  format: number;
  /**
   * Whose archive this is: the namespace for a namespace-scoped archive, "" for one shared
   * across the cluster (or built outside one). A build in one scope can neither satisfy nor
   * pre-empt a key of another, even from the same jar and JDK.
   */
  scope: string;
  archiveKind: ArchiveKind;
  mode: AgentMode;
  app: {
    kind: "boot" | "classpath";
    /** sha256 of the fat jar, or of each class-path jar in order. */
    digests: string[];
    mainClass: string;
    args: string[];
    extractor: number;
  };
  jvm: {
    vendor: string;
    vmVendor: string;
    runtimeVersion: string;
    vmVersion: string;
    libjvmSha256: string;
    arch: string;
  };
  /** Effective flags under the workload's options: GC, compressed oops/class pointers, object headers. */
  vmFlags: {
    gc: string;
    useCompressedOops: boolean;
    useCompressedClassPointers: boolean;
    useCompactObjectHeaders: boolean;
    objectAlignmentInBytes: number;
  };
  /** The workload's own JVM options, in order. */
  jvmOptions: string[];
  agent: { sha256: string; configSha256: string | null } | null;
  /** The whole profile document as written. */
  profile: unknown;
  training: {
    exit: "on-refresh" | "on-ready" | "on-exit";
    readyUrl: string | null;
    readyLog: string | null;
    warmupUrls: string[];
  };
}

export function archiveKey(inputs: KeyInputs): string {
  return sha256Hex(canonicalJson(inputs));
}

export const KEY_PATTERN = /^[0-9a-f]{64}$/;

/** A scope: "" (cluster-wide) or a namespace name (a DNS label). */
export const SCOPE_PATTERN = /^$|^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/** Short form for people: the first 12 hex digits. */
export function shortKey(key: string): string {
  return key.slice(0, 12);
}
