/**
 * The ClassCache reconciler: gather (the ClassCache, its workload, the directory's view of
 * its ref), decide (the pod patch, the conditions), act (build Job, workload patch, status),
 * through server-side apply with one field manager (and one guarded JSON patch where apply
 * cannot reorder a template's env), so a pass that changes nothing writes nothing. Deleting a ClassCache puts the workload back as it was and removes its ref's
 * bindings from the directory before the finalizer goes.
 */
import { generateBuildKey, openBinding, openEnvelope, SignatureError, signGrant, type Signer, type TrustStore } from "../archive/signing.ts";
import { sumClassUsage } from "../directory/common.ts";
import type { Directory, Holder } from "../directory/directory.ts";
import type { KubeClient } from "../kube/client.ts";
import { isNotFound } from "../kube/errors.ts";
import type { EventRecorder } from "../kube/events.ts";
import { Jobs, Pods, Secrets } from "../kube/resource.ts";
import type { KubeObject } from "../kube/types.ts";
import type { Logger } from "../runtime/log.ts";
import type { Informer } from "./runtime/informer.ts";
import type { Result } from "./runtime/reconcile.ts";
import { ClassCaches, ConditionTypes, FINALIZER, Reasons, resolveSpec, type ArchiveStatus, type ClassCache, type ClassCacheStatus, type Condition, type ResolvedSpec } from "./api/v1.ts";
import { apply } from "./apply.ts";
import { FIELD_MANAGER, hostPathForbiddenBy, INJECT_LABEL, POD_SECURITY_ENFORCE_LABEL } from "./constants.ts";
import { injectPod, type InjectionInput, type PodSpec, type PodTemplate } from "./inject.ts";
import { buildDeadlineSeconds, buildJob, buildJobName, buildTokenSecret } from "./objects/buildjob.ts";
import { publishOffer, signAgain } from "./publish.ts";
import { cleanTemplate, injectionFor, isPatched, ownedPatch, restoreTemplate, scopeOf, WORKLOAD_TYPES, type Workload } from "./classcache/workload.ts";

/** Below this share of classes from the archive, a workload is reported Degraded. */
const LOW_HIT_RATE = 0.8;

/** The archs whose bindings the status reports. */
const ARCHS = ["amd64", "arm64"];

interface JobObject extends KubeObject {
  status?: { failed?: number; succeeded?: number; conditions?: { type: string; status: string; message?: string }[] };
}

export interface ClassCacheReconcilerOptions {
  client: KubeClient;
  classCaches: Informer<ClassCache>;
  workloads: Record<keyof typeof WORKLOAD_TYPES, Informer<Workload>>;
  /** Namespaces, for the Pod Security level they enforce. */
  namespaces: Informer<KubeObject>;
  jobs: Informer<JobObject>;
  events: EventRecorder;
  log: Logger;
  /** The classcache image: init step of patched pods, kit of build Jobs. */
  image: string;
  /** The directory, the keys its statements are verified with and build grants signed with, once the cluster's parts exist. */
  directory: () => Promise<{ directory: Directory | undefined; trust: TrustStore | undefined; signer?: Signer | undefined; problems?: string[] }>;
  /** Re-check an archive that is not available yet this often (default 30 s). */
  pollMs?: number;
  /** Refresh holders and hit rates of an available archive this often (default 60 s). */
  readyPollMs?: number;
  /** The cluster admin lets ClassCaches with `sharing: Cluster` share archives across namespaces. */
  allowClusterSharing?: boolean;
}

export class ClassCacheReconciler {
  readonly #o: ClassCacheReconcilerOptions;
  readonly #summaries = new Map<string, Pick<ArchiveStatus, "hitRate" | "builtAt" | "jvm">>();

  constructor(opts: ClassCacheReconcilerOptions) {
    this.#o = opts;
  }

  /** ClassCache keys in namespace `ns`: a changed Pod Security label concerns them all. */
  inNamespace(ns: KubeObject): string[] {
    return this.#o.classCaches
      .list()
      .filter((cc) => cc.metadata.namespace === ns.metadata.name)
      .map((cc) => `${cc.metadata.namespace}/${cc.metadata.name}`);
  }

  /** ClassCache keys whose workload is `w`: the secondary-watch mapping. */
  ownersOf(kind: string, w: KubeObject): string[] {
    return this.#o.classCaches
      .list()
      .filter((cc) => cc.metadata.namespace === w.metadata.namespace && cc.spec.workloadRef.name === w.metadata.name && (cc.spec.workloadRef.kind ?? "Deployment") === kind)
      .map((cc) => `${cc.metadata.namespace}/${cc.metadata.name}`);
  }

  async reconcile(key: string, signal: AbortSignal): Promise<Result> {
    const cc = this.#o.classCaches.get(key);
    if (!cc) return {};
    if (cc.metadata.deletionTimestamp) return this.#finalize(cc, signal);
    if (!(cc.metadata.finalizers ?? []).includes(FINALIZER)) {
      await this.#o.client.patch(ClassCaches, cc.metadata.name!, { metadata: { finalizers: [...(cc.metadata.finalizers ?? []), FINALIZER], resourceVersion: cc.metadata.resourceVersion } }, { type: "merge", namespace: cc.metadata.namespace!, signal });
      return {}; // the update brings us back
    }
    // The cluster's shared parts (directory, node agents, keys) exist before anything else.
    const cluster = await this.#o.directory();
    const conditions = new Conditions(cc);
    const status: ClassCacheStatus = { observedGeneration: cc.metadata.generation ?? 0 };
    let spec: ResolvedSpec;
    let warnings: string[];
    try {
      ({ spec, warnings } = resolveSpec(cc));
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      conditions.set(ConditionTypes.Ready, "False", Reasons.InvalidSpec, message);
      await this.#status(cc, { ...status, phase: "Failed", lastError: message }, conditions, signal);
      return {};
    }
    conditions.set(ConditionTypes.Degraded, warnings.length ? "True" : "False", warnings.length ? Reasons.IgnoredFields : Reasons.AsExpected, warnings.length ? warnings.join("; ") : "nothing is degraded");

    const kind = spec.workloadRef.kind;
    const workload = this.#o.workloads[kind].get(`${cc.metadata.namespace}/${spec.workloadRef.name}`);
    if (!workload) {
      const msg = `${kind} ${cc.metadata.namespace}/${spec.workloadRef.name} does not exist (yet); the ClassCache applies as soon as it is created`;
      conditions.set(ConditionTypes.WorkloadPatched, "False", Reasons.WorkloadNotFound, msg);
      conditions.set(ConditionTypes.Ready, "False", Reasons.WorkloadNotFound, msg);
      await this.#status(cc, { ...status, phase: "Pending" }, conditions, signal);
      return {};
    }

    // The workload as its owner wrote it: our own earlier patch taken out.
    const clean = cleanTemplate(workload);
    const { ref, input, container } = injectionFor(cc, spec, clean, this.#o.image, this.#o.allowClusterSharing);
    if (spec.sharing === "Cluster" && !this.#o.allowClusterSharing) {
      conditions.set(ConditionTypes.Degraded, "True", Reasons.ClusterSharingNotAllowed, "spec.sharing is Cluster, but this cluster shares archives only within a namespace (the operator runs without --allow-cluster-sharing): the archive is built and used for this namespace alone");
    }
    status.ref = ref;
    const { injected, forbidden } = this.#inject(cc, clean, input);

    // The archive: the directory's signed binding of the ref, per arch.
    const archive = await this.#archive(cc, scopeOf(cc, spec, this.#o.allowClusterSharing === true), cluster, ref, status, conditions);
    if (cluster.problems?.length) conditions.set(ConditionTypes.Degraded, "True", "DirectoryNotUpdated", cluster.problems.join("; "));
    if (!archive.available && container && !forbidden) await this.#ensureBuild(cc, spec, ref, { ...workload.spec.template, spec: clean }, container, cluster.signer, conditions, signal);

    // The workload.
    const patched = await this.#patchWorkload(cc, spec, workload, ref, injected, conditions, signal);
    const ready = archive.available && patched;
    status.phase = summarize(conditions, ready, `pods of ${kind} ${spec.workloadRef.name} start from archive ${status.archiveKey?.slice(0, 12)} on nodes that hold it`, patched);
    await this.#status(cc, status, conditions, signal);
    return { requeueAfter: ready ? (this.#o.readyPollMs ?? 60_000) : (this.#o.pollMs ?? 30_000) };
  }

  async #archive(cc: ClassCache, scope: string, cluster: { directory: Directory | undefined; trust: TrustStore | undefined; signer?: Signer | undefined }, ref: string, status: ClassCacheStatus, conditions: Conditions): Promise<{ available: boolean }> {
    const { directory, trust } = cluster;
    if (!directory || !trust || !(await directory.ping().catch(() => false))) {
      conditions.set(ConditionTypes.ArchiveAvailable, "Unknown", Reasons.DirectoryUnavailable, "the directory cannot be reached; pods start without an archive until it can");
      conditions.set(ConditionTypes.Degraded, "True", Reasons.DirectoryUnavailable, "the directory cannot be reached from the operator");
      return { available: false };
    }
    const rejected = cluster.signer ? await this.#takeOffers(cc, scope, ref, directory, trust, cluster.signer) : undefined;
    status.archives = [];
    const users: Holder[] = [];
    for (const arch of ARCHS) {
      const text = await directory.binding(`${ref}.${arch}`);
      if (!text) continue;
      try {
        const { key } = openBinding(text, trust, ref, arch);
        if (cluster.signer && (await signAgain(directory, cluster.signer, trust, ref, arch))) {
          await this.#o.events.record(cc, "Normal", "SignedAgain", "Rotate", `the binding of ref ${ref.slice(0, 12)} (${arch}) and the manifest of ${key.slice(0, 12)} are now signed with the current key ${cluster.signer.keyId}`);
        }
        const holders = await directory.holders(key);
        users.push(...holders);
        status.archives.push({ arch, key, holders: holders.filter((h) => h.complete !== false).length, ...(await this.#summary(directory, trust, key)) });
      } catch (err) {
        if (!(err instanceof SignatureError)) throw err;
        conditions.set(ConditionTypes.ArchiveAvailable, "False", Reasons.VerificationFailed, `the directory's binding or manifest for ${arch} is not signed by the cluster's key: ${err.message}`);
        return { available: false };
      }
    }
    const first = status.archives[0];
    if (!first) {
      status.archives = undefined;
      if (rejected) conditions.set(ConditionTypes.ArchiveAvailable, "False", Reasons.OfferRejected, `the build offered for ref ${ref.slice(0, 12)} was refused and nothing was published: ${rejected}`);
      else conditions.set(ConditionTypes.ArchiveAvailable, "False", Reasons.BuildPending, `no archive for ref ${ref.slice(0, 12)} yet`);
      return { available: false };
    }
    status.archiveKey = first.key;
    status.readyPeers = first.holders ?? 0;
    reportHitRates(status, conditions, first, sumClassUsage(users));
    return { available: true };
  }

  /**
   * Signs what a build Job offered for this ClassCache's ref, per arch, where nothing of this
   * ClassCache is bound yet (see publish.ts): the operator is the only signer in a cluster.
   * Returns why an offer was refused, if one was.
   */
  async #takeOffers(cc: ClassCache, scope: string, ref: string, directory: Directory, trust: TrustStore, signer: Signer): Promise<string | undefined> {
    const owner = cc.metadata.uid ?? "";
    let rejected: string | undefined;
    for (const arch of ARCHS) {
      const bound = await directory.binding(`${ref}.${arch}`);
      if (bound !== undefined && boundTo(bound, trust, ref, arch) === owner) continue;
      const r = await publishOffer(directory, signer, { scope, ref, arch, owner, trust }, Date.now());
      if (!r) continue;
      if (r.published) {
        await this.#o.events.record(cc, "Normal", "ArchivePublished", "Publish", `archive ${r.key.slice(0, 12)} (${arch}) built for ref ${ref.slice(0, 12)} signed, published and bound`);
      } else {
        rejected = r.reason;
        this.#o.log.warn("offer refused", { classcache: `${cc.metadata.namespace}/${cc.metadata.name}`, ref: ref.slice(0, 12), scope, arch, reason: r.reason });
        await this.#o.events.record(cc, "Warning", "OfferRefused", "Publish", `the build offered for ref ${ref.slice(0, 12)} (${arch}) was refused: ${r.reason}`);
      }
    }
    return rejected;
  }

  /** What status shows of a key's manifest, verified like the agents verify it; read once per key (a manifest never changes). */
  async #summary(directory: Directory, trust: TrustStore, key: string): Promise<Pick<ArchiveStatus, "hitRate" | "builtAt" | "jvm">> {
    const known = this.#summaries.get(key);
    if (known) return known;
    const envelope = await directory.manifest(key);
    if (!envelope) return {};
    const m = openEnvelope(envelope, trust, key);
    const summary = { hitRate: m.verification.hitRate, builtAt: m.createdAt, jvm: `${m.jvm.vendor} ${m.jvm.runtimeVersion}` };
    this.#summaries.set(key, summary);
    return summary;
  }

  /** One build Job per ref, with its one-ref publishing token; its outcome goes into the conditions. */
  async #ensureBuild(cc: ClassCache, spec: ResolvedSpec, ref: string, template: PodTemplate, container: string, signer: Signer | undefined, conditions: Conditions, signal: AbortSignal): Promise<void> {
    // Only when nothing is built yet: no directory means a build could not publish, and a
    // binding that failed verification needs a person, not another build.
    if (conditions.reasonOf(ConditionTypes.ArchiveAvailable) !== Reasons.BuildPending || !signer) return;
    const ns = cc.metadata.namespace!;
    const name = buildJobName(ref);
    const job = this.#o.jobs.get(`${ns}/${name}`);
    if (job) return this.#buildJobState(cc, spec, ref, job, container, signer, conditions, signal);
    const scope = scopeOf(cc, spec, this.#o.allowClusterSharing === true);
    const jobObject = buildJob({
      classCache: { name: cc.metadata.name!, namespace: ns, uid: cc.metadata.uid ?? "" },
      ref,
      scope,
      podTemplate: template,
      containerName: container,
      jarPath: spec.app.jarPath,
      ...(spec.agent ? { agent: { image: spec.agent.image, jarPath: spec.agent.jarPath, ...(spec.agent.configPath ? { configPath: spec.agent.configPath } : {}) } } : {}),
      ...(cc.spec.profileYAML ? { profileYAML: cc.spec.profileYAML } : cc.spec.profile ? { profile: cc.spec.profile } : {}),
      mode: spec.mode,
      training: {
        timeoutSeconds: spec.training.timeoutSeconds,
        warmupUrls: spec.training.warmupUrls,
        ...(spec.training.readyUrl ? { readyUrl: spec.training.readyUrl } : {}),
        ...(spec.training.exitOnRefresh !== undefined ? { exitOnRefresh: spec.training.exitOnRefresh } : {}),
      },
      kitImage: this.#o.image,
    });
    const created = await apply(this.#o.client, Jobs, jobObject, { namespace: ns, signal });
    await this.#grantBuild(cc, scope, ref, { name, uid: created.metadata.uid ?? "" }, buildDeadlineSeconds(spec.training), signer, signal);
    await this.#o.events.record(cc, "Normal", "BuildStarted", "Build", `build Job ${name} created for ref ${ref.slice(0, 12)}`);
    conditions.set(ConditionTypes.ArchiveAvailable, "False", Reasons.Building, `build Job ${name} created`);
  }

  /** What an existing build Job says: failed (in its own words), ended without a published offer, or running. */
  async #buildJobState(cc: ClassCache, spec: ResolvedSpec, ref: string, job: JobObject, container: string, signer: Signer, conditions: Conditions, signal: AbortSignal): Promise<void> {
    const ns = cc.metadata.namespace!;
    const name = job.metadata.name!;
    const before = cc.status?.conditions?.find((c) => c.type === ConditionTypes.ArchiveAvailable);
    const failed = job.status?.conditions?.find((c) => c.type === "Failed" && c.status === "True");
    if (failed) {
      const said = before?.reason === Reasons.BuildFailed ? before.message : undefined;
      const message = said?.startsWith(`build Job ${name} failed: `)
        ? said // read once: a failed Job's pods do not change
        : `build Job ${name} failed: ${(await this.#whyBuildFailed(ns, name, container, signal)) ?? failed.message ?? "see its pod's log"}; it is not retried until the workload or the ClassCache changes`;
      conditions.set(ConditionTypes.ArchiveAvailable, "False", Reasons.BuildFailed, message);
    } else if (job.status?.succeeded) {
      // It ended well, yet nothing is bound for this ClassCache: its offer was refused (said
      // once, when it was judged) or never arrived.
      const message = before?.reason === Reasons.OfferRejected ? before.message : `build Job ${name} succeeded, but no build it offered was published for this ClassCache; it is not retried until the workload or the ClassCache changes`;
      conditions.set(ConditionTypes.ArchiveAvailable, "False", Reasons.OfferRejected, message);
    } else {
      // The Secret follows the Job: made here again if the operator stopped in between.
      await this.#grantBuild(cc, scopeOf(cc, spec, this.#o.allowClusterSharing === true), ref, { name, uid: job.metadata.uid ?? "" }, buildDeadlineSeconds(spec.training), signer, signal);
      conditions.set(ConditionTypes.ArchiveAvailable, "False", Reasons.Building, `build Job ${name} is running`);
    }
  }

  /**
   * The build Job's grant and one-time build key, in a Secret the Job owns (its pod waits for
   * it): the grant is good for this scope and ref only and a while longer than the Job may
   * run; node agents verify it with the public key (see BuildGrant). The build key's public
   * half is in the grant; with the private half the build signs what it offers.
   */
  async #grantBuild(cc: ClassCache, scope: string, ref: string, job: { name: string; uid: string }, deadlineSeconds: number, signer: Signer, signal: AbortSignal): Promise<void> {
    const ns = cc.metadata.namespace!;
    const buildKey = generateBuildKey();
    const now = Date.now();
    const token = signGrant({ scope, ref, classCache: `${ns}/${cc.metadata.name}`, owner: cc.metadata.uid ?? "", buildKey: buildKey.publicKey, issuedAt: now, expiresAt: now + (deadlineSeconds + 3600) * 1000 }, signer);
    const owner = { apiVersion: "batch/v1", kind: "Job", name: job.name, uid: job.uid };
    try {
      await this.#o.client.create(Secrets, buildTokenSecret(ns, ref, { token, key: buildKey.privatePem }, owner), { namespace: ns, fieldManager: FIELD_MANAGER, signal });
    } catch (err) {
      if ((err as { status?: number }).status !== 409) throw err;
    }
  }

  /**
   * What the build container of a failed build Job's newest pod said when it ended: classcache's
   * own error (written to its termination log), else the log's tail or the runtime's reason.
   */
  async #whyBuildFailed(namespace: string, job: string, container: string, signal: AbortSignal): Promise<string | undefined> {
    type Terminated = { exitCode?: number; reason?: string; message?: string; finishedAt?: string };
    type PodStatus = { containerStatuses?: { name: string; state?: { terminated?: Terminated }; lastState?: { terminated?: Terminated } }[] };
    const pods = await this.#o.client.list<KubeObject & { status?: PodStatus }>(Pods, { namespace, labelSelector: `batch.kubernetes.io/job-name=${job}`, signal }).catch(() => undefined);
    const ended = (pods?.items ?? [])
      .map((p) => p.status?.containerStatuses?.find((c) => c.name === container))
      .map((c) => c?.state?.terminated ?? c?.lastState?.terminated)
      .filter((t): t is Terminated => t !== undefined && t.exitCode !== 0)
      .sort((a, b) => (b.finishedAt ?? "").localeCompare(a.finishedAt ?? ""));
    const t = ended[0];
    if (!t) return undefined;
    const text = t.message?.trim();
    return text ? (text.length > 1500 ? `…${text.slice(-1500)}` : text) : `${t.reason ?? "terminated"} (exit code ${t.exitCode ?? "unknown"})`;
  }

  /**
   * The pod patch, or none where the namespace's Pod Security level forbids the hostPath it needs:
   * the API server would refuse every patched pod and build pod there, so nothing is patched or built.
   */
  #inject(cc: ClassCache, clean: PodSpec, input: InjectionInput): { injected: ReturnType<typeof injectPod>; forbidden: boolean } {
    const level = hostPathForbiddenBy(this.#o.namespaces.get(cc.metadata.namespace!));
    if (!level) return { injected: injectPod(clean, input), forbidden: false };
    const message = `namespace ${cc.metadata.namespace} enforces Pod Security "${level}" (label ${POD_SECURITY_ENFORCE_LABEL}), which forbids the read-only hostPath through which pods read their node's archive store; the workload is left as written and its pods start without an archive. To use classcache here, enforce "privileged" in this namespace (keep warn/audit at "${level}" to see everything else).`;
    return { injected: { spec: clean, outcome: { patched: false, reason: Reasons.PodSecurityForbidsHostPath, message } }, forbidden: true };
  }

  /** Owned: apply the patch to the template. Webhook, or a launch that cannot be patched: leave the template clean. */
  async #patchWorkload(cc: ClassCache, spec: ResolvedSpec, w: Workload, ref: string, injected: ReturnType<typeof injectPod>, conditions: Conditions, signal: AbortSignal): Promise<boolean> {
    const kind = spec.workloadRef.kind;
    if (!injected.outcome.patched) {
      if (isPatched(w)) await this.#unpatch(kind, w, signal);
      conditions.set(ConditionTypes.WorkloadPatched, "False", injected.outcome.reason, injected.outcome.message);
      return false;
    }
    if (spec.patchMode === "Webhook") {
      if (isPatched(w)) await this.#unpatch(kind, w, signal);
      const label = w.spec.template.metadata?.labels?.[INJECT_LABEL];
      if (label !== cc.metadata.name) {
        conditions.set(ConditionTypes.WorkloadPatched, "False", "InjectLabelMissing", `Webhook mode: add the label ${INJECT_LABEL}: ${cc.metadata.name} to the pod template of ${kind} ${w.metadata.name}, so the webhook patches its pods`);
        return false;
      }
      conditions.set(ConditionTypes.WorkloadPatched, "True", Reasons.InjectedByWebhook, `pods labelled ${INJECT_LABEL}=${cc.metadata.name} are patched when they are created; the template stays as written`);
      return true;
    }
    const { template, config } = ownedPatch(kind, w, ref, injected);
    try {
      if (template) await this.#o.client.patch(WORKLOAD_TYPES[kind], w.metadata.name!, template, { type: "json", namespace: w.metadata.namespace!, fieldManager: FIELD_MANAGER, signal });
      await apply(this.#o.client, WORKLOAD_TYPES[kind], config as Workload, { namespace: w.metadata.namespace!, signal });
    } catch (err) {
      const message = `patching ${kind} ${w.metadata.name} failed: ${err instanceof Error ? err.message : String(err)}`;
      conditions.set(ConditionTypes.WorkloadPatched, "False", Reasons.PatchFailed, message);
      return false;
    }
    conditions.set(ConditionTypes.WorkloadPatched, "True", Reasons.Patched, injected.outcome.message);
    return true;
  }

  /** Puts the template back as its owner wrote it, then drops every field this manager applied. */
  async #unpatch(kind: keyof typeof WORKLOAD_TYPES, w: Workload, signal: AbortSignal): Promise<void> {
    const rt = WORKLOAD_TYPES[kind];
    const ops = restoreTemplate(w);
    await this.#o.client.patch(rt, w.metadata.name!, ops, { type: "json", namespace: w.metadata.namespace!, fieldManager: FIELD_MANAGER, signal });
    // An empty apply releases whatever this manager still owns (nothing of ours is left to remove).
    await apply(this.#o.client, rt, { apiVersion: "apps/v1", kind, metadata: { name: w.metadata.name, namespace: w.metadata.namespace } }, { namespace: w.metadata.namespace!, signal });
  }

  async #finalize(cc: ClassCache, signal: AbortSignal): Promise<Result> {
    if (!(cc.metadata.finalizers ?? []).includes(FINALIZER)) return {};
    const kind = (cc.spec.workloadRef.kind ?? "Deployment") as keyof typeof WORKLOAD_TYPES;
    const rt = WORKLOAD_TYPES[kind];
    if (rt) {
      try {
        const w = await this.#o.client.get<Workload>(rt, cc.spec.workloadRef.name, { namespace: cc.metadata.namespace!, signal });
        if (isPatched(w)) await this.#unpatch(kind, w, signal);
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
    }
    const ref = cc.status?.ref;
    const { directory } = await this.#o.directory();
    if (ref && directory) {
      // Only if no other ClassCache (another namespace with cluster sharing) still uses the ref.
      const shared = this.#o.classCaches.list().some((o) => o !== cc && !o.metadata.deletionTimestamp && o.status?.ref === ref);
      // An unreachable directory must not keep the ClassCache forever: a leftover binding is
      // signed, names an archive for inputs nobody uses any more, and goes with the store's GC.
      if (!shared && (await directory.ping().catch(() => false))) for (const arch of ARCHS) await directory.unbind(`${ref}.${arch}`);
      else if (!shared) this.#o.log.warn("directory unreachable; the ref's bindings stay in it", { ref: ref.slice(0, 12) });
    }
    await this.#o.client.patch(
      ClassCaches,
      cc.metadata.name!,
      { metadata: { finalizers: (cc.metadata.finalizers ?? []).filter((f) => f !== FINALIZER), resourceVersion: cc.metadata.resourceVersion } },
      { type: "merge", namespace: cc.metadata.namespace!, signal },
    );
    this.#o.log.info("classcache removed", { classcache: `${cc.metadata.namespace}/${cc.metadata.name}` });
    return {};
  }

  async #status(cc: ClassCache, status: ClassCacheStatus, conditions: Conditions, signal: AbortSignal): Promise<void> {
    const body = { apiVersion: "classcache.dev/v1", kind: "ClassCache", metadata: { name: cc.metadata.name, namespace: cc.metadata.namespace }, status: { ...status, conditions: conditions.list() } };
    await apply(this.#o.client, ClassCaches, body, { namespace: cc.metadata.namespace!, signal, subresource: "status" });
  }
}

/** The owner of a binding that verifies, else undefined. */
function boundTo(text: string, trust: TrustStore, ref: string, arch: string): string | undefined {
  try {
    return openBinding(text, trust, ref, arch).owner;
  } catch {
    return undefined;
  }
}

/** The build's hit rate, and what the workload's running JVMs really get (from their perf counters, via the agents). */
function reportHitRates(status: ClassCacheStatus, conditions: Conditions, first: ArchiveStatus, workload: ReturnType<typeof sumClassUsage>): void {
  const built = first.hitRate !== undefined ? `${(first.hitRate * 100).toFixed(1)}%` : "unknown";
  status.hitRate = built;
  let inUse = "no JVM maps it yet";
  if (workload.loadedClasses > 0) {
    status.workloadHitRate = Math.round((workload.sharedClasses / workload.loadedClasses) * 10_000) / 10_000;
    status.hitRate = `${(status.workloadHitRate * 100).toFixed(1)}%`;
    inUse = `${workload.jvms} running JVM(s) load ${status.hitRate} of their classes from it`;
    if (status.workloadHitRate < LOW_HIT_RATE) {
      conditions.set(ConditionTypes.Degraded, "True", Reasons.LowHitRate, `the workload's JVMs load only ${status.hitRate} of their classes from the archive (the build got ${built}): their class path, JVM options or JDK differ from the build's`);
    }
  }
  conditions.set(ConditionTypes.ArchiveAvailable, "True", Reasons.ArchiveVerified, `archive ${first.key.slice(0, 12)} (${first.arch}) verified, held by ${first.holders ?? 0} node(s), build hit rate ${built}; ${inUse}`);
}

/** Sets Ready from the other conditions and returns the phase. */
function summarize(conditions: Conditions, ready: boolean, readyMessage: string, patched: boolean): string {
  const blocker = patched ? ConditionTypes.ArchiveAvailable : ConditionTypes.WorkloadPatched;
  if (ready) conditions.set(ConditionTypes.Ready, "True", Reasons.Ready, readyMessage);
  else conditions.set(ConditionTypes.Ready, "False", conditions.reasonOf(blocker) ?? Reasons.Reconciling, conditions.messageOf(blocker) ?? "");
  if (ready) return "Ready";
  const reason = conditions.reasonOf(ConditionTypes.ArchiveAvailable);
  return reason === Reasons.BuildFailed || reason === Reasons.VerificationFailed || reason === Reasons.OfferRejected ? "Failed" : reason === Reasons.Building ? "Building" : "Pending";
}

/** The conditions of one pass; a condition whose status did not change keeps its transition time. */
class Conditions {
  readonly #previous: Map<string, Condition>;
  readonly #next = new Map<string, Condition>();
  readonly #generation: number;

  constructor(cc: ClassCache) {
    this.#previous = new Map((cc.status?.conditions ?? []).map((c) => [c.type, c]));
    this.#generation = cc.metadata.generation ?? 0;
  }

  set(type: string, status: Condition["status"], reason: string, message: string): void {
    const prev = this.#previous.get(type);
    const lastTransitionTime = prev && prev.status === status ? prev.lastTransitionTime : new Date().toISOString().replace(/\.\d+Z$/, "Z");
    this.#next.set(type, { type, status, observedGeneration: this.#generation, lastTransitionTime, reason, message: message.slice(0, 32_000) });
  }

  statusOf(type: string): string | undefined {
    return this.#next.get(type)?.status;
  }
  reasonOf(type: string): string | undefined {
    return this.#next.get(type)?.reason;
  }
  messageOf(type: string): string | undefined {
    return this.#next.get(type)?.message;
  }

  list(): Condition[] {
    const order = [ConditionTypes.Ready, ConditionTypes.ArchiveAvailable, ConditionTypes.WorkloadPatched, ConditionTypes.Degraded];
    return [...this.#next.values()].sort((a, b) => order.indexOf(a.type as never) - order.indexOf(b.type as never));
  }
}
