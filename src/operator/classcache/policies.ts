/**
 * The ClassCache controller's policies: small pure functions from what was observed to what it
 * means for one condition — a Check (status, reason, message), reasons from api/v1.ts — or to
 * the note of an Event. No I/O, no clock.
 */
import { sumClassUsage } from "../../directory/common.ts";
import type { Holder } from "../../directory/directory.ts";
import { ConditionTypes, Reasons, type ArchiveStatus, type ClassCache, type Condition, type ResolvedSpec } from "../api/v1.ts";
import { CSI_DRIVER, INJECT_LABEL, POD_SECURITY_ENFORCE_LABEL } from "../constants.ts";
import type { InjectionOutcome } from "../inject.ts";
import type { Check, Conditions } from "./conditions.ts";
import type { BuildView, DirectoryView } from "./observe.ts";
import type { AppContent } from "../policies/appcontent.ts";

/**
 * The pods' jar checks found they run another app than their archive's (the image behind a tag
 * changed): they start without the archive; status.appDigest, an input of the ref, takes the new
 * content, so a build for it follows and pods patched for the new ref get its archive.
 */
export function appChanged(app: AppContent): Check | undefined {
  if (app.differing === 0 || !app.digest) return undefined;
  return {
    status: "True",
    reason: Reasons.AppChanged,
    message: `${app.differing} pod(s) run an app jar (sha256 ${short(app.digest)}) other than the one their archive was built from — the image behind the tag changed: they start without the archive until one built for this content (status.appDigest) is on their node and they are patched for it`,
  };
}

/** The archs whose bindings the status reports. */
export const ARCHS = ["amd64", "arm64"];

/** Below this share of classes from the archive, a workload is reported Degraded. */
export const LOW_HIT_RATE = 0.8;

const short = (digest: string): string => digest.slice(0, 12);

export function invalidSpec(error: string): Check {
  return { status: "False", reason: Reasons.InvalidSpec, message: error };
}

/** Degraded from the spec alone: fields that are set but not used. */
export function ignoredFields(warnings: string[]): Check {
  return warnings.length
    ? { status: "True", reason: Reasons.IgnoredFields, message: warnings.join("; ") }
    : { status: "False", reason: Reasons.AsExpected, message: "nothing is degraded" };
}

export function workloadNotFound(kind: string, namespace: string | undefined, name: string): Check {
  return { status: "False", reason: Reasons.WorkloadNotFound, message: `${kind} ${namespace}/${name} does not exist (yet); the ClassCache applies as soon as it is created` };
}

/** Degraded where a ClassCache asks to share across the cluster and the admin does not allow it. */
export function clusterSharingRefused(spec: ResolvedSpec, allowed: boolean): Check | undefined {
  if (spec.sharing !== "Cluster" || allowed) return undefined;
  return {
    status: "True",
    reason: Reasons.ClusterSharingNotAllowed,
    message: "spec.sharing is Cluster, but this cluster shares archives only within a namespace (the operator runs without --allow-cluster-sharing): the archive is built and used for this namespace alone",
  };
}

/**
 * No pod patch where the namespace's Pod Security level forbids the hostPath it needs and the CSI
 * driver is not there to serve it instead: the API server would refuse every patched pod and
 * build pod there, so nothing is patched or built.
 */
export function podSecurityForbids(level: string | undefined, namespace: string | undefined): InjectionOutcome | undefined {
  if (!level) return undefined;
  const message = `namespace ${namespace} enforces Pod Security "${level}" (label ${POD_SECURITY_ENFORCE_LABEL}), which forbids the read-only hostPath through which pods read their node's archive store, and the node agent's CSI driver that serves such namespaces (CSIDriver ${CSI_DRIVER}) is not installed; the workload is left as written and its pods start without an archive. Install the chart with csi.enabled=true (the default), or enforce "privileged" in this namespace (keep warn/audit at "${level}" to see everything else).`;
  return { patched: false, reason: Reasons.PodSecurityForbidsHostPath, message };
}

export function directoryUnavailable(): { archive: Check; degraded: Check } {
  return {
    archive: { status: "Unknown", reason: Reasons.DirectoryUnavailable, message: "the directory cannot be reached; pods start without an archive until it can" },
    degraded: { status: "True", reason: Reasons.DirectoryUnavailable, message: "the directory cannot be reached from the operator" },
  };
}

export function verificationFailed(arch: string, problem: string): Check {
  return { status: "False", reason: Reasons.VerificationFailed, message: `the directory's binding or manifest for ${arch} is not signed by the cluster's key: ${problem}` };
}

/** Nothing bound for the ref: a build is pending, or the one offered was refused. */
export function nothingBound(ref: string, refused: string | undefined): Check {
  return refused !== undefined
    ? { status: "False", reason: Reasons.OfferRejected, message: `the build offered for ref ${short(ref)} was refused and nothing was published: ${refused}` }
    : { status: "False", reason: Reasons.BuildPending, message: `no archive for ref ${short(ref)} yet` };
}

/** The build's hit rate, and what the workload's running JVMs really get (from their perf counters, via the agents). */
export function archiveVerified(first: ArchiveStatus, users: Holder[]): { archive: Check; degraded: Check | undefined; hitRate: string; workloadHitRate: number | undefined } {
  const workload = sumClassUsage(users);
  const built = first.hitRate !== undefined ? `${(first.hitRate * 100).toFixed(1)}%` : "unknown";
  let hitRate = built;
  let workloadHitRate: number | undefined;
  let degraded: Check | undefined;
  let inUse = "no JVM maps it yet";
  if (workload.loadedClasses > 0) {
    workloadHitRate = Math.round((workload.sharedClasses / workload.loadedClasses) * 10_000) / 10_000;
    hitRate = `${(workloadHitRate * 100).toFixed(1)}%`;
    inUse = `${workload.jvms} running JVM(s) load ${hitRate} of their classes from it`;
    if (workloadHitRate < LOW_HIT_RATE) {
      degraded = { status: "True", reason: Reasons.LowHitRate, message: `the workload's JVMs load only ${hitRate} of their classes from the archive (the build got ${built}): their class path, JVM options or JDK differ from the build's` };
    }
  }
  const archive: Check = { status: "True", reason: Reasons.ArchiveVerified, message: `archive ${short(first.key)} (${first.arch}) verified, held by ${first.holders ?? 0} node(s), build hit rate ${built}; ${inUse}` };
  return { archive, degraded, hitRate, workloadHitRate };
}

export function directoryNotUpdated(problems: string[]): Check | undefined {
  return problems.length ? { status: "True", reason: Reasons.DirectoryNotUpdated, message: problems.join("; ") } : undefined;
}

/**
 * Whether the archive waits on a build: the directory answers and has nothing for the ref (no
 * binding, verified or not, and no offer), the operator can grant a build, and a build pod could
 * run (the app container exists; the namespace allows the hostPath). A binding that failed
 * verification needs a person, not another build.
 */
export function awaitsBuild(v: { container: string | undefined; podSecurity: string | undefined; directory: DirectoryView }): boolean {
  const d = v.directory;
  return d.reachable && d.signingKey !== undefined && d.archives.length === 0 && d.offers.length === 0 && v.container !== undefined && v.podSecurity === undefined;
}

/** The failed build's own words where the status already says them (read once: a failed Job's pods do not change). */
export function buildFailureSaid(cc: ClassCache, job: string): string | undefined {
  const before = previousCondition(cc, ConditionTypes.ArchiveAvailable);
  const said = before?.reason === Reasons.BuildFailed ? before.message : undefined;
  return said?.startsWith(`build Job ${job} failed: `) ? said : undefined;
}

export function buildCreated(job: string): Check {
  return { status: "False", reason: Reasons.Building, message: `build Job ${job} created` };
}

/** What an existing build Job says: failed (in its own words), ended without a published offer, or running. */
export function buildState(cc: ClassCache, b: BuildView & { job: NonNullable<BuildView["job"]> }): Check {
  const name = b.name;
  if (b.job.failed) {
    const message = buildFailureSaid(cc, name) ?? `build Job ${name} failed: ${b.failure ?? b.job.failed.message ?? "see its pod's log"}; it is not retried until the workload or the ClassCache changes`;
    return { status: "False", reason: Reasons.BuildFailed, message };
  }
  if (b.job.succeeded) {
    // It ended well, yet nothing is bound for this ClassCache: its offer was refused (said
    // once, when it was judged) or never arrived.
    const before = previousCondition(cc, ConditionTypes.ArchiveAvailable);
    const message = before?.reason === Reasons.OfferRejected ? before.message : `build Job ${name} succeeded, but no build it offered was published for this ClassCache; it is not retried until the workload or the ClassCache changes`;
    return { status: "False", reason: Reasons.OfferRejected, message };
  }
  return { status: "False", reason: Reasons.Building, message: `build Job ${name} is running` };
}

/** A launch that cannot be patched, or a namespace that forbids the patch. */
export function notPatched(outcome: InjectionOutcome): Check {
  return { status: "False", reason: outcome.reason, message: outcome.message };
}

/** Webhook mode: the template stays as written; its pods are patched when they carry the label. */
export function webhookInjection(cc: ClassCache, kind: string, workload: string, label: string | undefined): Check {
  const name = cc.metadata.name;
  if (label !== name) {
    return { status: "False", reason: Reasons.InjectLabelMissing, message: `Webhook mode: add the label ${INJECT_LABEL}: ${name} to the pod template of ${kind} ${workload}, so the webhook patches its pods` };
  }
  return { status: "True", reason: Reasons.InjectedByWebhook, message: `pods labelled ${INJECT_LABEL}=${name} are patched when they are created; the template stays as written` };
}

export function patched(outcome: InjectionOutcome): Check {
  return { status: "True", reason: Reasons.Patched, message: outcome.message };
}

export function patchFailed(kind: string, workload: string | undefined, error: string): Check {
  return { status: "False", reason: Reasons.PatchFailed, message: `patching ${kind} ${workload} failed: ${error}` };
}

/** Ready from the other conditions (the archive's when the workload is patched, else the patch's), and the phase. */
export function readiness(conditions: Conditions, ready: boolean, readyMessage: string, workloadPatched: boolean): { ready: Check; phase: string } {
  if (ready) return { ready: { status: "True", reason: Reasons.Ready, message: readyMessage }, phase: "Ready" };
  const blocker = conditions.get(workloadPatched ? ConditionTypes.ArchiveAvailable : ConditionTypes.WorkloadPatched);
  const check: Check = { status: "False", reason: blocker?.reason ?? Reasons.Reconciling, message: blocker?.message ?? "" };
  const reason = conditions.get(ConditionTypes.ArchiveAvailable)?.reason;
  const failed = reason === Reasons.BuildFailed || reason === Reasons.VerificationFailed || reason === Reasons.OfferRejected;
  return { ready: check, phase: failed ? "Failed" : reason === Reasons.Building ? "Building" : "Pending" };
}

export const notes = {
  published: (key: string, arch: string, ref: string) => `archive ${short(key)} (${arch}) built for ref ${short(ref)} signed, published and bound`,
  refused: (ref: string, arch: string, reason: string) => `the build offered for ref ${short(ref)} (${arch}) was refused: ${reason}`,
  signedAgain: (ref: string, arch: string, key: string, keyId: string) => `the binding of ref ${short(ref)} (${arch}) and the manifest of ${short(key)} are now signed with the current key ${keyId}`,
  buildStarted: (job: string, ref: string) => `build Job ${job} created for ref ${short(ref)}`,
};

function previousCondition(cc: ClassCache, type: string): Condition | undefined {
  return cc.status?.conditions?.find((c) => c.type === type);
}
