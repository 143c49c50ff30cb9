/**
 * The ClassCache resource, classcache.dev/v1: its types, condition types and reasons, the
 * defaults the server applies (resolveSpec re-applies them for objects that skipped server
 * defaulting) and the checks its CRD's CEL rules cannot make (validateClassCache, for the webhook).
 * The schema itself is deploy/chart/classcache/crds/classcache.dev_classcaches.yaml (copied to
 * deploy/crds/ by scripts/manifests.sh); docs/classcache-resource.md explains every field.
 */
import { type AgentMode, type AgentProfile, catalogFiles, catalogNames, parseProfile } from "../../archive/profile.ts";
import { resourceType } from "../../kube/resource.ts";
import type { KubeObject } from "../../kube/types.ts";
import { ClasscacheError } from "../../runtime/errors.ts";

export const GROUP = "classcache.dev";
export const VERSION = "v1";
export const API_VERSION = `${GROUP}/${VERSION}`;
export const KIND = "ClassCache";
export const ClassCaches = resourceType(API_VERSION, KIND, "classcaches");

export type WorkloadKind = "Deployment" | "StatefulSet" | "DaemonSet";
export const WORKLOAD_KINDS: readonly WorkloadKind[] = ["Deployment", "StatefulSet", "DaemonSet"];
export type PatchMode = "Owned" | "Webhook";
export type Sharing = "Namespace" | "Cluster";

/** The spec as stored: every field optional except workloadRef.name (server defaults may be missing). */
export interface ClassCacheSpec {
  workloadRef: { apiVersion?: string; kind?: string; name: string };
  /** The container that runs the JVM; default: the first. */
  container?: string;
  app?: { image?: string; jarPath?: string; extractorImage?: string };
  agent?: { image?: string; jarPath?: string; configPath?: string };
  /** A catalog profile name. profileYAML wins when both are set (as in cluster-classcache). */
  profile?: string;
  profileYAML?: string;
  mode?: AgentMode;
  /** Accepted from cluster-classcache and ignored (see IGNORED_FIELDS). */
  primerImage?: string;
  /** Accepted from cluster-classcache and ignored (see IGNORED_FIELDS). */
  archiveDir?: string;
  patchMode?: PatchMode;
  training?: { exitOnRefresh?: boolean; readyUrl?: string; warmupUrls?: string[]; timeoutSeconds?: number };
  memorySharing?: boolean;
  sharing?: Sharing;
  launch?: { mainClass?: string; command?: string[] };
  valkey?: {
    create?: boolean;
    addr?: string;
    image?: string;
    storageSize?: string;
    storageClassName?: string;
    passwordSecretRef?: { name: string; key: string };
  };
}

/** metav1.Condition. */
export interface Condition {
  type: ConditionType | (string & {});
  status: "True" | "False" | "Unknown";
  observedGeneration?: number;
  /** RFC 3339, seconds precision. */
  lastTransitionTime: string;
  reason: string;
  message: string;
}

export interface ArchiveStatus {
  /** "amd64", "arm64". */
  arch?: string;
  /** The JVM identity, e.g. "Eclipse Adoptium 25.0.3+9". */
  jvm?: string;
  key: string;
  /** Nodes that hold a verified copy. */
  holders?: number;
  /** Hit rate of the verification boot, 0..1. */
  hitRate?: number;
  /**
   * Whether the verification boot proved the agent's instrumentation fires: true, or null when
   * it cannot be proven (no agent, or a profile without evidence). Never false: such a build
   * fails and publishes nothing.
   */
  instrumented?: boolean | null;
  builtAt?: string;
}

export interface LaunchStatus {
  ref: string;
  /** java, its options, -jar <jar> or -cp <class path> <main>, and the app's arguments. */
  command: string[];
}

export interface ClassCacheStatus {
  observedGeneration?: number;
  phase?: Phase | (string & {});
  /** Key of the archive of the workload's current pod template (field of cluster-classcache). */
  archiveKey?: string;
  /** The archive reference the workload's pods are pointed at. */
  ref?: string;
  lastError?: string;
  /** Nodes holding a verified copy of the archive (field of cluster-classcache). */
  readyPeers?: number;
  /** workloadHitRate for people, e.g. "97.4%" (the printer column shows it as written). */
  hitRate?: string;
  /** Share of classes the workload's running JVMs loaded from the archive, 0..1. */
  workloadHitRate?: number;
  /**
   * The sha256 of the app jar the workload's pods run, where their jar checks found it is not the
   * one the archive was built from (a tag pushed again): an input of the ref, so it is built for.
   */
  appDigest?: string;
  /**
   * The java launch the app container's image runs (its ENTRYPOINT; the container has no
   * command), as the launch probe of the build for `ref` recorded it: the pod patch rewrites it.
   * Used for that ref only; a new ref's build records it again.
   */
  launch?: LaunchStatus;
  archives?: ArchiveStatus[];
  conditions?: Condition[];
}

export interface ClassCache extends KubeObject {
  apiVersion?: typeof API_VERSION;
  kind?: typeof KIND;
  spec: ClassCacheSpec;
  status?: ClassCacheStatus;
}

export type Phase = "Pending" | "Building" | "Ready" | "Degraded" | "Failed";

export const ConditionTypes = {
  /** The workload's pods are told to use a verified archive. */
  Ready: "Ready",
  /** A verified archive for the workload's current pod template exists in the cluster. */
  ArchiveAvailable: "ArchiveAvailable",
  /** The workload (Owned) or its pods (Webhook) get the archive flags. */
  WorkloadPatched: "WorkloadPatched",
  /** Something works worse than asked: ignored fields, a low hit rate, an unreachable directory. */
  Degraded: "Degraded",
} as const;
export type ConditionType = (typeof ConditionTypes)[keyof typeof ConditionTypes];

/** Condition reasons (CamelCase, as metav1.Condition requires). */
export const Reasons = {
  // Ready
  Ready: "Ready",
  Reconciling: "Reconciling",
  InvalidSpec: "InvalidSpec",
  // ArchiveAvailable
  ArchiveVerified: "ArchiveVerified",
  BuildPending: "BuildPending",
  Building: "Building",
  BuildFailed: "BuildFailed",
  VerificationFailed: "VerificationFailed",
  /** The build Job's offer was refused by the operator (wrong scope, owner, key or signature): nothing published. */
  OfferRejected: "OfferRejected",
  // WorkloadPatched
  Patched: "Patched",
  InjectedByWebhook: "InjectedByWebhook",
  WorkloadNotFound: "WorkloadNotFound",
  ContainerNotFound: "ContainerNotFound",
  LaunchUnknown: "LaunchUnknown",
  LaunchNotJava: "LaunchNotJava",
  /** Webhook mode: the pod template lacks the label that sends its pods to the webhook. */
  InjectLabelMissing: "InjectLabelMissing",
  PatchFailed: "PatchFailed",
  PodSecurityForbidsHostPath: "PodSecurityForbidsHostPath",
  // Degraded
  AsExpected: "AsExpected",
  IgnoredFields: "IgnoredFields",
  LowHitRate: "LowHitRate",
  DirectoryUnavailable: "DirectoryUnavailable",
  ClusterSharingNotAllowed: "ClusterSharingNotAllowed",
  /** The cluster's shared parts could not all be applied (e.g. the directory's storage). */
  DirectoryNotUpdated: "DirectoryNotUpdated",
  /** The pods' jar checks found another app than the archive's under the same image (a tag pushed again): built for anew. */
  AppChanged: "AppChanged",
} as const;
export type Reason = (typeof Reasons)[keyof typeof Reasons];

/** Finalizer the operator puts on every ClassCache it manages. */
export const FINALIZER = "classcache.dev/cleanup";

/** The defaults of the CRD (deploy/chart/classcache/crds), in one place; cluster-classcache's where it had one. */
export const DEFAULTS = {
  workloadApiVersion: "apps/v1",
  workloadKind: "Deployment",
  appJarPath: "/app.jar",
  agentJarPath: "/agent.jar",
  patchMode: "Owned",
  trainingTimeoutSeconds: 300,
  memorySharing: true,
  sharing: "Namespace",
  valkeyCreate: true,
  valkeyImage: "valkey/valkey:7.2-alpine",
  valkeyStorageSize: "256Mi",
} as const;

export const MAX_WARMUP_URLS = 16;

/** cluster-classcache's defaults for the fields classcache ignores (a migrated object carries them). */
const ORIGINAL_DEFAULTS = { primerImage: "classcache-primer:v0.9-universal", archiveDir: "/var/lib/classcache" } as const;

/** What each ignored field was, and why classcache does not use it. */
export const IGNORED_FIELDS = {
  primerImage:
    "spec.primerImage is ignored: classcache builds the archive with the workload's own JVM image and distributes it with its own node agent, so no user-chosen image runs on every node",
  archiveDir:
    "spec.archiveDir is ignored: archives live in the node agent's store, never in a user-chosen host path mounted on every node",
} as const;

/** The spec with every default applied and the profile resolved. */
export interface ResolvedSpec {
  workloadRef: { apiVersion: string; kind: WorkloadKind; name: string };
  /** undefined: the first container of the pod template. */
  container: string | undefined;
  app: { image: string | undefined; jarPath: string; extractorImage: string | undefined };
  /** undefined when there is no agent image (then mode is none). */
  agent: { image: string; jarPath: string; configPath: string | undefined } | undefined;
  mode: AgentMode;
  /** How the agent runs in each phase; undefined when mode is none. Its runtime.javaagent agrees with mode. */
  profile: AgentProfile | undefined;
  /** Where the profile came from. */
  profileSource: "catalog" | "inline" | "agent-defaults" | "none";
  patchMode: PatchMode;
  training: {
    /** undefined: decide from the app (true for Spring Boot apps). */
    exitOnRefresh: boolean | undefined;
    readyUrl: string | undefined;
    warmupUrls: string[];
    timeoutSeconds: number;
  };
  memorySharing: boolean;
  sharing: Sharing;
  /** undefined: read the command from the pod template. */
  launch: { mainClass: string | undefined; command: string[] | undefined } | undefined;
  valkey: {
    create: boolean;
    addr: string | undefined;
    image: string;
    storageSize: string;
    storageClassName: string | undefined;
    passwordSecretRef: { name: string; key: string } | undefined;
  };
  /** The ignored fields that were set, as given. */
  ignored: { primerImage?: string; archiveDir?: string };
}

/**
 * Applies the CRD's defaults and resolves the profile. `warnings` say what was set but is not
 * used, and why. Throws a ClasscacheError ("input") when the spec cannot be used at all (an
 * unknown profile, an invalid profileYAML, an unsupported workload kind): the reconciler turns it
 * into Ready=False/InvalidSpec. validateClassCache reports the same problems without throwing.
 */
export function resolveSpec(cc: Pick<ClassCache, "spec">): { spec: ResolvedSpec; warnings: string[] } {
  const s: ClassCacheSpec = cc.spec ?? ({} as ClassCacheSpec);
  const warnings: string[] = [];
  const workloadRef = resolveWorkloadRef(s.workloadRef);
  const agent = nonEmpty(s.agent?.image)
    ? { image: s.agent.image, jarPath: orDefault(s.agent.jarPath, DEFAULTS.agentJarPath), configPath: orUndefined(s.agent.configPath) }
    : undefined;
  const { profile, profileSource, mode } = resolveAgent(s, agent, warnings);
  const spec: ResolvedSpec = {
    workloadRef,
    container: orUndefined(s.container),
    app: {
      image: orUndefined(s.app?.image),
      jarPath: orDefault(s.app?.jarPath, DEFAULTS.appJarPath),
      extractorImage: orUndefined(s.app?.extractorImage),
    },
    agent,
    mode,
    profile,
    profileSource,
    patchMode: s.patchMode ?? DEFAULTS.patchMode,
    training: resolveTraining(s.training),
    memorySharing: s.memorySharing ?? DEFAULTS.memorySharing,
    sharing: s.sharing ?? DEFAULTS.sharing,
    launch: resolveLaunch(s.launch),
    valkey: resolveValkey(s.valkey),
    ignored: ignoredFields(s, warnings),
  };
  return { spec, warnings };
}

function resolveWorkloadRef(ref: ClassCacheSpec["workloadRef"] | undefined): ResolvedSpec["workloadRef"] {
  if (!nonEmpty(ref?.name)) {
    throw new ClasscacheError("input", "spec.workloadRef.name is not set", { hint: "name the Deployment, StatefulSet or DaemonSet to accelerate" });
  }
  const kind = orDefault(ref.kind, DEFAULTS.workloadKind);
  if (!isWorkloadKind(kind)) {
    throw new ClasscacheError("input", `spec.workloadRef.kind ${kind} is not supported`, { hint: `use one of ${WORKLOAD_KINDS.join(", ")}` });
  }
  return { apiVersion: orDefault(ref.apiVersion, DEFAULTS.workloadApiVersion), kind, name: ref.name };
}

function resolveTraining(t: ClassCacheSpec["training"]): ResolvedSpec["training"] {
  return {
    exitOnRefresh: t?.exitOnRefresh,
    readyUrl: orUndefined(t?.readyUrl),
    warmupUrls: [...(t?.warmupUrls ?? [])],
    timeoutSeconds: t?.timeoutSeconds ?? DEFAULTS.trainingTimeoutSeconds,
  };
}

function resolveLaunch(l: ClassCacheSpec["launch"]): ResolvedSpec["launch"] {
  const mainClass = orUndefined(l?.mainClass);
  const command = l?.command?.length ? [...l.command] : undefined;
  return mainClass === undefined && command === undefined ? undefined : { mainClass, command };
}

/** spec.valkey with its defaults (the rest of the spec is not needed to choose the directory). */
export function resolveValkey(v: ClassCacheSpec["valkey"]): ResolvedSpec["valkey"] {
  const valkey: ResolvedSpec["valkey"] = {
    create: v?.create ?? DEFAULTS.valkeyCreate,
    addr: orUndefined(v?.addr),
    image: orDefault(v?.image, DEFAULTS.valkeyImage),
    storageSize: orDefault(v?.storageSize, DEFAULTS.valkeyStorageSize),
    storageClassName: orUndefined(v?.storageClassName),
    passwordSecretRef: v?.passwordSecretRef ? { name: v.passwordSecretRef.name, key: v.passwordSecretRef.key } : undefined,
  };
  if (!valkey.create && valkey.addr === undefined) {
    throw new ClasscacheError("input", "spec.valkey.create is false but spec.valkey.addr is not set", {
      hint: "give the host:port of an existing Valkey or Redis, or set spec.valkey.create: true",
    });
  }
  return valkey;
}

/** The ignored fields that are set, each with a warning saying why it is ignored. */
function ignoredFields(s: ClassCacheSpec, warnings: string[]): ResolvedSpec["ignored"] {
  const ignored: ResolvedSpec["ignored"] = {};
  for (const field of ["primerImage", "archiveDir"] as const) {
    const value = s[field];
    if (!nonEmpty(value)) continue;
    ignored[field] = value;
    const note = value === ORIGINAL_DEFAULTS[field] ? ` (${JSON.stringify(value)} is cluster-classcache's default; the field can be removed)` : "";
    warnings.push(`${IGNORED_FIELDS[field]}${note}`);
  }
  return ignored;
}

/** The profile and mode: spec.mode wins, else the profile's mode, else none. */
function resolveAgent(
  s: ClassCacheSpec,
  agent: ResolvedSpec["agent"],
  warnings: string[],
): { profile: AgentProfile | undefined; profileSource: ResolvedSpec["profileSource"]; mode: AgentMode } {
  const inline = nonEmpty(s.profileYAML);
  const named = nonEmpty(s.profile);
  if ((inline || named) && !agent) {
    throw new ClasscacheError("input", "a profile is set but spec.agent.image is not", {
      hint: "set spec.agent.image to the image that holds the agent jar (agents inside a primer image are not used), or remove the profile",
    });
  }
  if (s.mode !== undefined && s.mode !== "none" && !agent) {
    throw new ClasscacheError("input", `spec.mode ${s.mode} needs spec.agent.image`, { hint: "set spec.agent.image, or use mode none" });
  }
  if (inline && named) {
    warnings.push(`spec.profile ${JSON.stringify(s.profile)} is ignored: spec.profileYAML is set and takes precedence (as in cluster-classcache); remove one of them`);
  }
  let profile: AgentProfile | undefined;
  let profileSource: ResolvedSpec["profileSource"] = "none";
  if (inline) {
    profile = parseProfile(s.profileYAML ?? "", "in spec.profileYAML");
    profileSource = "inline";
  } else if (named) {
    profile = catalogProfile(s.profile ?? "");
    profileSource = "catalog";
  }
  if (agent && !profile) {
    if (s.mode === undefined || s.mode === "none") {
      if (s.mode === undefined) {
        warnings.push("spec.agent is set without spec.profile or spec.mode, so the agent is not used: set spec.profile (or spec.mode hybrid|baked) to archive it");
      }
      return { profile: undefined, profileSource: "none", mode: "none" };
    }
    profile = agentDefaultProfile(agent, s.mode);
    profileSource = "agent-defaults";
  }
  const mode: AgentMode = s.mode ?? profile?.mode ?? "none";
  if (!profile) return { profile: undefined, profileSource: "none", mode };
  if (mode === "none") {
    warnings.push("spec.mode is none, so the profile is not used: the archive holds no agent classes and classcache does not start the agent; remove spec.mode to use the profile's mode");
    return { profile: undefined, profileSource: "none", mode };
  }
  // An explicit mode decides whether the agent runs at run time; the rest of the profile stays.
  const runtimeAgent = mode === "hybrid";
  if (profile.runtime.javaagent !== runtimeAgent) profile = { ...profile, mode, runtime: { ...profile.runtime, javaagent: runtimeAgent } };
  return { profile, profileSource, mode };
}

/** A profile for an agent image without one: the agent's jar at its path in the agent image. */
function agentDefaultProfile(agent: NonNullable<ResolvedSpec["agent"]>, mode: "hybrid" | "baked"): AgentProfile {
  const source = {
    apiVersion: API_VERSION,
    kind: "AgentProfile",
    metadata: { name: "agent" },
    spec: { mode, agent: { jar: agent.jarPath, ...(agent.configPath ? { config: agent.configPath } : {}) }, build: {}, runtime: { javaagent: mode === "hybrid" } },
  };
  return parseProfile(JSON.stringify(source), "derived from spec.agent");
}

let catalogCache: Map<string, AgentProfile> | undefined;

/** A catalog profile by name (parsed once). */
function catalogProfile(name: string): AgentProfile {
  catalogCache ??= new Map(Object.entries(catalogFiles()).map(([file, text]) => [file.slice(0, -".yaml".length), parseProfile(text, `catalog profile ${file}`)]));
  const p = catalogCache.get(name);
  if (!p) {
    throw new ClasscacheError("input", `spec.profile ${JSON.stringify(name)} is not a catalog profile`, {
      hint: `use one of ${catalogNames().join(", ")}, or give the profile inline in spec.profileYAML`,
    });
  }
  return p;
}

/**
 * What the CRD's CEL rules cannot check: the profile exists, profileYAML is a valid
 * AgentProfile, training URLs reach only the app itself. One message per problem, each saying
 * what is wrong and what to do; empty when the object is acceptable. For the admission webhook
 * (CREATE and UPDATE); it never throws.
 */
export function validateClassCache(obj: unknown): string[] {
  if (!isRecord(obj)) return ["the object is not a ClassCache: expected a JSON object"];
  const spec = obj.spec;
  if (!isRecord(spec)) return ["spec is missing: a ClassCache needs at least spec.workloadRef.name"];
  const problems: string[] = [];
  const workloadRef = spec.workloadRef;
  if (!isRecord(workloadRef) || !nonEmpty(workloadRef.name)) {
    problems.push("spec.workloadRef.name is missing: name the Deployment, StatefulSet or DaemonSet whose pods should boot from the archive");
  } else if (workloadRef.kind !== undefined && !isWorkloadKind(workloadRef.kind)) {
    problems.push(`spec.workloadRef.kind ${JSON.stringify(workloadRef.kind)} is not supported: use ${WORKLOAD_KINDS.join(", ")}`);
  }
  problems.push(...profileProblems(spec));
  problems.push(...trainingProblems(spec.training));
  return problems;
}

function profileProblems(spec: Record<string, unknown>): string[] {
  if (nonEmpty(spec.profileYAML)) {
    try {
      parseProfile(spec.profileYAML, "in spec.profileYAML");
      return [];
    } catch (err) {
      return [describeProfileError(err)];
    }
  }
  if (spec.profile !== undefined && typeof spec.profile !== "string") return ["spec.profile must be a string: the name of a catalog profile"];
  if (nonEmpty(spec.profile) && !catalogNames().includes(spec.profile)) {
    return [`spec.profile ${JSON.stringify(spec.profile)} is not a catalog profile: use one of ${catalogNames().join(", ")}, or give the profile inline in spec.profileYAML`];
  }
  return [];
}

function describeProfileError(err: unknown): string {
  if (!(err instanceof ClasscacheError)) return `spec.profileYAML cannot be read: ${String(err)}`;
  const cause = err.cause instanceof Error ? `: ${err.cause.message.split("\n")[0]}` : "";
  const details = err.details ? `: ${err.details.split("\n").join("; ")}` : "";
  const hint = err.hint ? ` (${err.hint})` : "";
  return `spec.profileYAML: ${err.message.replace(/^agent profile in spec\.profileYAML /, "the profile ")}${cause}${details}${hint}`;
}

const LOCAL_HOSTS = new Set(["localhost", "127.0.0.1", "[::1]"]);

function trainingProblems(training: unknown): string[] {
  if (training === undefined) return [];
  if (!isRecord(training)) return ["spec.training must be an object"];
  const problems: string[] = [];
  const check = (field: string, u: unknown): void => {
    const why = localUrlProblem(u);
    if (why) problems.push(`${field} ${JSON.stringify(u)} ${why}: use an http(s) URL to the app itself, e.g. http://localhost:8080/actuator/health — training reaches only the app it runs`);
  };
  if (training.readyUrl !== undefined) check("spec.training.readyUrl", training.readyUrl);
  const urls = training.warmupUrls;
  if (urls !== undefined) {
    if (!Array.isArray(urls)) problems.push("spec.training.warmupUrls must be a list of URLs");
    else {
      if (urls.length > MAX_WARMUP_URLS) problems.push(`spec.training.warmupUrls has ${urls.length} entries: at most ${MAX_WARMUP_URLS} are allowed`);
      urls.forEach((u, i) => check(`spec.training.warmupUrls[${i}]`, u));
    }
  }
  return problems;
}

/** Why `u` is not an http(s) URL to the loopback host, or undefined when it is one. */
function localUrlProblem(u: unknown): string | undefined {
  if (typeof u !== "string") return "is not a string";
  let url: URL;
  try {
    url = new URL(u);
  } catch {
    return "is not a URL";
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") return `uses ${url.protocol.slice(0, -1)}, not http or https`;
  if (url.username || url.password) return "carries credentials";
  if (!LOCAL_HOSTS.has(url.hostname)) return `points at ${url.hostname}, not localhost or 127.0.0.1`;
  return undefined;
}

function isWorkloadKind(k: unknown): k is WorkloadKind {
  return typeof k === "string" && (WORKLOAD_KINDS as readonly string[]).includes(k);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function nonEmpty(v: unknown): v is string {
  return typeof v === "string" && v !== "";
}

function orUndefined(v: string | undefined): string | undefined {
  return nonEmpty(v) ? v : undefined;
}

function orDefault<T extends string>(v: string | undefined, fallback: T): string | T {
  return nonEmpty(v) ? v : fallback;
}
