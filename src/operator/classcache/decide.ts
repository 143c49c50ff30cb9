/**
 * Decide: one pure function from what a pass observed (and the time) to what the ClassCache's
 * status should say and the writes that get the world there, in the order they are made. The
 * conditions come from the policies (policies.ts); nothing here reads or writes.
 */
import { isDeepStrictEqual } from "node:util";
import type { Holder } from "../../directory/directory.ts";
import type { KubeObject } from "../../kube/types.ts";
import type { Result } from "../runtime/reconcile.ts";
import { ConditionTypes, FINALIZER, type ArchiveStatus, type ClassCache, type ClassCacheStatus, type LaunchStatus, type ResolvedSpec } from "../api/v1.ts";
import { INJECT_LABEL, PATCHING_LABEL } from "../constants.ts";
import { injectPod, type InjectionInput, type InjectionOutcome } from "../inject.ts";
import { buildDeadlineSeconds, buildJob } from "../objects/buildjob.ts";
import type { Built } from "../objects/meta.ts";
import { launchCommandFor, launchPending } from "../policies/launch.ts";
import type { Verdict } from "../publish.ts";
import { Conditions } from "./conditions.ts";
import type { Deleting, Live, Observed, WorkloadView } from "./observe.ts";
import { appChanged,
  archiveVerified,
  awaitsBuild,
  buildCreated,
  buildState,
  clusterSharingRefused,
  directoryNotUpdated,
  directoryUnavailable,
  ignoredFields,
  invalidSpec,
  notes,
  notPatched,
  nothingBound,
  patched,
  patchFailed,
  podSecurityForbids,
  readiness,
  verificationFailed,
  webhookInjection,
  workloadNotFound,
} from "./policies.ts";
import { fromEntrypoint, isPatched, ownedPatch, restoreTemplate, type WorkloadRef } from "./workload.ts";

export interface EventNote {
  type: "Normal" | "Warning";
  reason: string;
  action: string;
  note: string;
}

/** A build grant to sign (act signs it, with a one-time build key, when the Job's UID is known). */
export interface GrantRequest {
  namespace: string;
  scope: string;
  ref: string;
  /** "<namespace>/<name>" of the ClassCache. */
  classCache: string;
  /** The ClassCache's UID. */
  owner: string;
  deadlineSeconds: number;
}

export type Action =
  | { kind: "addFinalizer"; finalizers: string[] }
  | { kind: "removeFinalizer"; finalizers: string[] }
  /** Sign, publish and bind an accepted offer, or remove a refused one. */
  | { kind: "takeOffer"; scope: string; ref: string; arch: string; owner: string; verdict: Verdict }
  /** Sign the arch's binding and manifest again with the current key; the event is recorded if anything was. */
  | { kind: "signAgain"; ref: string; arch: string; event: EventNote }
  | { kind: "createBuildJob"; job: Built; grant: GrantRequest }
  | { kind: "ensureGrantSecret"; grant: GrantRequest }
  /** Owned mode: the whole template first where the env is not as patched (`template`), then the apply of our fields. */
  | { kind: "patchWorkload"; workload: WorkloadRef; template: unknown[] | undefined; config: KubeObject }
  /** Put the template back (`restore`, a JSON patch), then release every field we applied. */
  | { kind: "unpatchWorkload"; workload: WorkloadRef; restore: unknown[] }
  /** Remove the ref's bindings from the directory, for every arch. */
  | { kind: "unbindRef"; ref: string }
  | { kind: "recordEvent"; event: EventNote }
  | { kind: "log"; level: "info" | "warn"; message: string; fields: Record<string, unknown> }
  | { kind: "applyStatus"; status: ClassCacheStatus };

export interface Plan {
  /** In the order they are made; the status, where it changes, last. */
  actions: Action[];
  /** The status the ClassCache should have after this pass (undefined where the pass does not get that far). */
  status?: ClassCacheStatus;
  /**
   * An action's effect has to be read back before the rest can be decided (an offer taken now
   * binds the ref): act, then observe again at once instead of writing a status.
   */
  observeAgain?: boolean;
  result: Result;
}

export function decide(o: Observed, now: number): Plan {
  switch (o.stage) {
    case "gone":
      return { actions: [], result: {} };
    case "unfinalized":
      // The update brings the ClassCache back for its first full pass.
      return { actions: [{ kind: "addFinalizer", finalizers: [...(o.classCache.metadata.finalizers ?? []), FINALIZER] }], result: {} };
    case "deleting":
      return finalize(o);
    case "live":
      return decideLive(o, now);
  }
}

/**
 * Deletion: the workload put back as it was, the ref's bindings removed from the directory
 * (unless another ClassCache still uses the ref), then the finalizer goes.
 */
function finalize(o: Deleting): Plan {
  const cc = o.classCache;
  const actions: Action[] = [];
  const w = o.workload;
  if (w && isPatched(w.object)) actions.push({ kind: "unpatchWorkload", workload: refOf(w.kind, w.object), restore: restoreTemplate(w.object, o.classCache.metadata.name!) });
  if (o.ref && o.directory.present && !o.refShared) {
    // An unreachable directory must not keep the ClassCache forever: a leftover binding is
    // signed, names an archive for inputs nobody uses any more, and goes with the store's GC.
    if (o.directory.reachable) actions.push({ kind: "unbindRef", ref: o.ref });
    else actions.push({ kind: "log", level: "warn", message: "directory unreachable; the ref's bindings stay in it", fields: { ref: o.ref.slice(0, 12) } });
  }
  actions.push({ kind: "removeFinalizer", finalizers: (cc.metadata.finalizers ?? []).filter((f) => f !== FINALIZER) });
  actions.push({ kind: "log", level: "info", message: "classcache removed", fields: { classcache: `${cc.metadata.namespace}/${cc.metadata.name}` } });
  return { actions, result: {} };
}

function decideLive(o: Live, now: number): Plan {
  const cc = o.classCache;
  const conditions = new Conditions(cc, now);
  const status: ClassCacheStatus = { observedGeneration: cc.metadata.generation ?? 0 };
  if ("error" in o.spec) {
    conditions.set(ConditionTypes.Ready, invalidSpec(o.spec.error));
    return settle(cc, { ...status, phase: "Failed", lastError: o.spec.error }, conditions, [], {});
  }
  const { spec, warnings } = o.spec;
  conditions.set(ConditionTypes.Degraded, ignoredFields(warnings));
  const w = o.workload;
  if (!w) {
    const missing = workloadNotFound(spec.workloadRef.kind, cc.metadata.namespace, spec.workloadRef.name);
    conditions.set(ConditionTypes.WorkloadPatched, missing);
    conditions.set(ConditionTypes.Ready, missing);
    return settle(cc, { ...status, phase: "Pending" }, conditions, [], {});
  }
  const sharing = clusterSharingRefused(spec, o.settings.allowClusterSharing);
  if (sharing) conditions.set(ConditionTypes.Degraded, sharing);
  status.ref = w.ref;
  // The content the pods run is an input of the ref: a new one means a new ref, and a new build, next pass.
  const content = w.app.digest !== undefined && w.app.digest !== cc.status?.appDigest;
  const appDigest = content ? w.app.digest : cc.status?.appDigest;
  if (appDigest) status.appDigest = appDigest;

  const offers = offerActions(cc, w);
  if (offers.accepted) return { actions: offers.actions, observeAgain: true, result: { requeueAfter: o.settings.pollMs } };
  const archive = archiveOf(w, offers.refused, conditions, status);
  const problems = directoryNotUpdated(o.clusterProblems);
  if (problems) conditions.set(ConditionTypes.Degraded, problems);
  const changed = appChanged(w.app);
  if (changed) conditions.set(ConditionTypes.Degraded, changed);
  const build = awaitsBuild(w) ? buildActions(cc, spec, w, o.settings.image, conditions) : [];

  const launch = entrypointLaunch(cc, spec, w);
  if (launch.status) status.launch = launch.status;
  const forbidden = podSecurityForbids(w.podSecurity, cc.metadata.namespace) ?? launch.blocked;
  const injected = forbidden ? { spec: w.clean, outcome: forbidden } : injectPod(w.clean, launch.input);
  const patch = workloadPatch(o, spec, w, injected, archive.available ? status.archiveKey : undefined);
  conditions.set(ConditionTypes.WorkloadPatched, patch.check);

  const ready = archive.available && patch.patched;
  const readyMessage = `pods of ${w.kind} ${spec.workloadRef.name} start from archive ${status.archiveKey?.slice(0, 12)} on nodes that hold it`;
  const summary = readiness(conditions, ready, readyMessage, patch.patched);
  conditions.set(ConditionTypes.Ready, summary.ready);
  status.phase = summary.phase;
  const actions = [...offers.actions, ...archive.actions, ...build, ...patch.actions];
  return settle(cc, status, conditions, actions, { requeueAfter: ready ? o.settings.readyPollMs : o.settings.pollMs });
}

/** The status with its conditions; applied only where it differs from the stored one, so an unchanged pass writes nothing. */
function settle(cc: ClassCache, status: ClassCacheStatus, conditions: Conditions, actions: Action[], result: Result): Plan {
  const next: ClassCacheStatus = { ...status, conditions: conditions.list() };
  const same = isDeepStrictEqual(plain(cc.status ?? {}), plain(next));
  return { actions: same ? actions : [...actions, { kind: "applyStatus", status: next }], status: next, result };
}

/** As the API server stores it: no undefined fields. */
function plain(v: unknown): unknown {
  return JSON.parse(JSON.stringify(v)) as unknown;
}

/** Every offer waiting for the ref is taken: signed and bound if it is a build of this ClassCache's, removed if not. */
function offerActions(cc: ClassCache, w: WorkloadView): { actions: Action[]; accepted: boolean; refused: string | undefined } {
  const actions: Action[] = [];
  let accepted = false;
  let refused: string | undefined;
  if (!w.directory.reachable) return { actions, accepted, refused };
  for (const { arch, verdict } of w.directory.offers) {
    actions.push({ kind: "takeOffer", scope: w.scope, ref: w.ref, arch, owner: cc.metadata.uid ?? "", verdict });
    if (verdict.ok) {
      accepted = true;
      actions.push({ kind: "recordEvent", event: { type: "Normal", reason: "ArchivePublished", action: "Publish", note: notes.published(verdict.manifest.key, arch, w.ref) } });
    } else {
      refused = verdict.reason;
      actions.push({ kind: "log", level: "warn", message: "offer refused", fields: { classcache: `${cc.metadata.namespace}/${cc.metadata.name}`, ref: w.ref.slice(0, 12), scope: w.scope, arch, reason: verdict.reason } });
      actions.push({ kind: "recordEvent", event: { type: "Warning", reason: "OfferRefused", action: "Publish", note: notes.refused(w.ref, arch, verdict.reason) } });
    }
  }
  return { actions, accepted, refused };
}

/** The archive: the directory's signed binding of the ref, per arch, into ArchiveAvailable (and Degraded) and the status. */
function archiveOf(w: WorkloadView, refused: string | undefined, conditions: Conditions, status: ClassCacheStatus): { available: boolean; actions: Action[] } {
  const d = w.directory;
  if (!d.reachable) {
    const unavailable = directoryUnavailable();
    conditions.set(ConditionTypes.ArchiveAvailable, unavailable.archive);
    conditions.set(ConditionTypes.Degraded, unavailable.degraded);
    return { available: false, actions: [] };
  }
  const actions: Action[] = [];
  const archives: ArchiveStatus[] = [];
  const users: Holder[] = [];
  for (const a of d.archives) {
    if (!a.verified) {
      conditions.set(ConditionTypes.ArchiveAvailable, verificationFailed(a.arch, a.problem));
      status.archives = archives;
      return { available: false, actions };
    }
    if (a.signedByOlderKey && d.signingKey !== undefined) {
      actions.push({ kind: "signAgain", ref: w.ref, arch: a.arch, event: { type: "Normal", reason: "SignedAgain", action: "Rotate", note: notes.signedAgain(w.ref, a.arch, a.key, d.signingKey) } });
    }
    users.push(...a.holders);
    archives.push({ arch: a.arch, key: a.key, holders: a.holders.filter((h) => h.complete !== false).length, ...a.summary });
  }
  const first = archives[0];
  if (!first) {
    conditions.set(ConditionTypes.ArchiveAvailable, nothingBound(w.ref, refused));
    return { available: false, actions };
  }
  status.archives = archives;
  status.archiveKey = first.key;
  status.readyPeers = first.holders ?? 0;
  const verified = archiveVerified(first, users);
  status.hitRate = verified.hitRate;
  if (verified.workloadHitRate !== undefined) status.workloadHitRate = verified.workloadHitRate;
  if (verified.degraded) conditions.set(ConditionTypes.Degraded, verified.degraded);
  conditions.set(ConditionTypes.ArchiveAvailable, verified.archive);
  return { available: true, actions };
}

/**
 * The launch of an app container started by its image's ENTRYPOINT (no command, no
 * spec.launch.command): what this ref's build recorded with its launch probe — kept in
 * status.launch once read, for the webhook and later passes — or why the workload waits for it,
 * or cannot be patched. Other containers' launches are the pod spec's.
 */
function entrypointLaunch(cc: ClassCache, spec: ResolvedSpec, w: WorkloadView): { input: InjectionInput; status?: LaunchStatus; blocked?: InjectionOutcome } {
  const container = w.clean.containers.find((c) => c.name === w.container);
  if (!container || !fromEntrypoint(spec, container)) return { input: w.input };
  const kept = cc.status?.launch?.ref === w.ref ? cc.status.launch : undefined;
  const probe = w.build.probe;
  const recorded = kept?.command ?? (probe && "command" in probe ? probe.command : undefined);
  if (!recorded) return { input: w.input, blocked: probe && "problem" in probe ? probe.problem : launchPending(container.name, w.build.name) };
  const status = { ref: w.ref, command: recorded };
  const launch = launchCommandFor(recorded, container);
  if ("problem" in launch) return { input: w.input, status, blocked: launch.problem };
  return { input: { ...w.input, launchCommand: launch.command }, status };
}

/** One build Job per ref, with its one-ref grant; its state goes into ArchiveAvailable. */
function buildActions(cc: ClassCache, spec: ResolvedSpec, w: WorkloadView, image: string, conditions: Conditions): Action[] {
  const ns = cc.metadata.namespace!;
  const b = w.build;
  const grant: GrantRequest = { namespace: ns, scope: w.scope, ref: w.ref, classCache: `${ns}/${cc.metadata.name}`, owner: cc.metadata.uid ?? "", deadlineSeconds: buildDeadlineSeconds(spec.training) };
  if (b.job) {
    conditions.set(ConditionTypes.ArchiveAvailable, buildState(cc, { ...b, job: b.job }));
    // The Secret follows a running Job: made here again if the operator stopped in between.
    return b.job.failed || b.job.succeeded ? [] : [{ kind: "ensureGrantSecret", grant }];
  }
  const job = buildJob({
    classCache: { name: cc.metadata.name!, namespace: ns, uid: cc.metadata.uid ?? "" },
    ref: w.ref,
    scope: w.scope,
    podTemplate: { ...w.object.spec.template, spec: w.clean },
    containerName: w.container!,
    jarPath: spec.app.jarPath,
    probeLaunch: fromEntrypoint(spec, w.clean.containers.find((c) => c.name === w.container)),
    ...(spec.agent ? { agent: { image: spec.agent.image, jarPath: spec.agent.jarPath, ...(spec.agent.configPath ? { configPath: spec.agent.configPath } : {}) } } : {}),
    ...(cc.spec.profileYAML ? { profileYAML: cc.spec.profileYAML } : cc.spec.profile ? { profile: cc.spec.profile } : {}),
    mode: spec.mode,
    training: {
      timeoutSeconds: spec.training.timeoutSeconds,
      warmupUrls: spec.training.warmupUrls,
      ...(spec.training.readyUrl ? { readyUrl: spec.training.readyUrl } : {}),
      ...(spec.training.exitOnRefresh !== undefined ? { exitOnRefresh: spec.training.exitOnRefresh } : {}),
    },
    kitImage: image,
    ...(w.input.storeVolume ? { storeVolume: w.input.storeVolume } : {}),
  });
  conditions.set(ConditionTypes.ArchiveAvailable, buildCreated(b.name));
  return [
    { kind: "createBuildJob", job, grant },
    { kind: "recordEvent", event: { type: "Normal", reason: "BuildStarted", action: "Build", note: notes.buildStarted(b.name, w.ref) } },
  ];
}

/**
 * The workload: Owned mode applies the patch to the template; Webhook mode, or a launch that
 * cannot be patched, leaves the template clean (taking out an earlier patch).
 */
function workloadPatch(o: Live, spec: ResolvedSpec, w: WorkloadView, injected: ReturnType<typeof injectPod>, archiveKey: string | undefined): { check: ReturnType<typeof patched>; patched: boolean; actions: Action[] } {
  const target = refOf(w.kind, w.object);
  const unpatch: Action[] = isPatched(w.object) ? [{ kind: "unpatchWorkload", workload: target, restore: restoreTemplate(w.object, o.classCache.metadata.name!) }] : [];
  if (!injected.outcome.patched) return { check: notPatched(injected.outcome), patched: false, actions: unpatch };
  if (spec.patchMode === "Webhook") {
    const check = webhookInjection(o.classCache, w.kind, target.name, w.object.spec.template.metadata?.labels?.[INJECT_LABEL]);
    return { check, patched: check.status === "True", actions: unpatch };
  }
  if (o.patchFailure !== undefined) return { check: patchFailed(w.kind, target.name, o.patchFailure), patched: false, actions: [] };
  // The archive's key joins the template once it is bound: that rolls the workload onto it.
  const write = ownedPatch(w.kind, w.object, w.ref, injected, o.classCache.metadata.name!, archiveKey);
  // What this operator applied last, to the workload as that apply left it: applying it again changes nothing.
  const last = w.lastApplied;
  // A change that stopped before its last write left the patching label: written again, to its end.
  const unchanged = write.template === undefined && last !== undefined && last.resourceVersion === w.object.metadata.resourceVersion && last.body === JSON.stringify(write.config) && w.object.metadata.labels?.[PATCHING_LABEL] === undefined;
  return { check: patched(injected.outcome), patched: true, actions: unchanged ? [] : [{ kind: "patchWorkload", workload: target, template: write.template, config: write.config }] };
}

function refOf(kind: WorkloadRef["kind"], w: KubeObject): WorkloadRef {
  return { kind, name: w.metadata.name!, namespace: w.metadata.namespace! };
}
