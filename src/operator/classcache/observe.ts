/**
 * Gather: everything one pass over a ClassCache needs, read into one plain Observed value —
 * from the informers' caches, the directory and the build's pods (for a failed build, once; for
 * the launch an image's ENTRYPOINT makes, until its probe's record is in the status).
 * Reads only: nothing here writes, and nothing here decides what the ClassCache should be.
 */
import { openBinding, openEnvelope, SignatureError, signedBy, type Signer, type TrustStore } from "../../archive/signing.ts";
import type { Directory, Holder } from "../../directory/directory.ts";
import type { KubeClient } from "../../kube/client.ts";
import { isNotFound } from "../../kube/errors.ts";
import { Pods } from "../../kube/resource.ts";
import type { KubeObject } from "../../kube/types.ts";
import { FINALIZER, resolveSpec, type ArchiveStatus, type ClassCache, type ResolvedSpec } from "../api/v1.ts";
import { storeVolumeFor } from "../constants.ts";
import type { InjectionInput, PodSpec } from "../inject.ts";
import { buildJobName, PROBE_CONTAINER } from "../objects/buildjob.ts";
import { appContent, type AppContent, type PodWithChecks } from "../policies/appcontent.ts";
import { probeReport, type ProbeReport } from "../policies/launch.ts";
import { boundTo, judgeOffer, readOffer, type Verdict } from "../publish.ts";
import type { Informer } from "../runtime/informer.ts";
import { ARCHS, awaitsBuild, buildFailureSaid } from "./policies.ts";
import { cleanTemplate, fromEntrypoint, injectionFor, scopeOf, WORKLOAD_TYPES, type Workload, type WorkloadKind, type WorkloadRef } from "./workload.ts";

export interface JobObject extends KubeObject {
  status?: { failed?: number; succeeded?: number; conditions?: { type: string; status: string; message?: string }[] };
}

/** The cluster's shared parts as the operator holds them (see operator.ts). */
export interface Cluster {
  directory: Directory | undefined;
  trust: TrustStore | undefined;
  signer?: Signer | undefined;
  problems?: string[];
}

/** The operator's settings a decision depends on. */
export interface Settings {
  /** The classcache image: init step of patched pods, kit of build Jobs. */
  image: string;
  allowClusterSharing: boolean;
  pollMs: number;
  readyPollMs: number;
}

/** What a pass knows, by how far the ClassCache is in its life. */
export type Observed = Gone | Unfinalized | Deleting | Live;

/** Not in the cache, or deleted with nothing of ours left on it. */
export interface Gone {
  stage: "gone";
}

/** New: without the finalizer yet. */
export interface Unfinalized {
  stage: "unfinalized";
  classCache: ClassCache;
}

/** Being deleted, with the finalizer still on it: what clean-up needs. */
export interface Deleting {
  stage: "deleting";
  classCache: ClassCache;
  /** The workload as the API server has it now; undefined when it is gone (or of no known kind). */
  workload: { kind: WorkloadKind; object: Workload } | undefined;
  /** The ref the ClassCache's status names. */
  ref: string | undefined;
  /** Another live ClassCache (another namespace, sharing the cluster's archives) has the same ref. */
  refShared: boolean;
  /** Whether there is a directory, and (asked only when its bindings would go) whether it answers. */
  directory: { present: boolean; reachable?: boolean };
}

export interface Live {
  stage: "live";
  classCache: ClassCache;
  settings: Settings;
  /** What could not be applied of the cluster's shared parts. */
  clusterProblems: string[];
  spec: { spec: ResolvedSpec; warnings: string[] } | { error: string };
  /** Undefined when the spec cannot be used or the workload does not exist. */
  workload?: WorkloadView;
  /** This pass's write of the template failed with this error (set after the act step, for the status). */
  patchFailure?: string;
}

/** The workload, and what the ClassCache has for it: its ref, the directory's view of the ref, its build. */
export interface WorkloadView {
  kind: WorkloadKind;
  object: Workload;
  /** The template's pod spec as its owner wrote it: our own earlier patch taken out. */
  clean: PodSpec;
  ref: string;
  scope: string;
  /** The app container's name; undefined when spec.container names none of the template's. */
  container: string | undefined;
  input: InjectionInput;
  /**
   * The Pod Security level the namespace enforces, where it forbids the hostPath patched pods
   * mount and the CSI driver that would serve them instead is not installed.
   */
  podSecurity: string | undefined;
  /** What this operator last applied to the workload, and the resourceVersion that apply left. */
  lastApplied: Applied | undefined;
  directory: DirectoryView;
  build: BuildView;
  /** What the jar checks of the workload's pods of this ref say about the app they run. */
  app: AppContent;
}

export interface Applied {
  resourceVersion: string | undefined;
  body: string;
}

export type DirectoryView =
  | { reachable: false }
  | {
      reachable: true;
      /** The id of the key the operator signs with (it takes offers, signs again, grants builds); undefined without one. */
      signingKey: string | undefined;
      /** Offers waiting for archs not bound to this ClassCache, judged. */
      offers: { arch: string; verdict: Verdict }[];
      /** The bound archs in ARCHS order, up to and including the first whose statements do not verify. */
      archives: ArchiveView[];
    };

export type Summary = Pick<ArchiveStatus, "hitRate" | "instrumented" | "builtAt" | "jvm">;

export type ArchiveView =
  | {
      arch: string;
      verified: true;
      key: string;
      owner: string;
      holders: Holder[];
      summary: Summary;
      /** The binding or the key's manifest is signed by an older (still trusted) key than the operator's. */
      signedByOlderKey: boolean;
    }
  | { arch: string; verified: false; problem: string };

export interface BuildView {
  /** The build Job's name for the ref. */
  name: string;
  job: { uid: string; succeeded: boolean; failed: { message?: string | undefined } | undefined } | undefined;
  /** What the failed build's container said when it ended: read from its pod once, while the status does not say it yet. */
  failure: string | undefined;
  /**
   * What the build's launch probe recorded of the ENTRYPOINT's java launch: read from its pod
   * while the container has no command and status.launch has no launch for the ref.
   */
  probe?: ProbeReport;
}

/** The handles the act step writes with; decide sees only what they allow. */
export interface Handles {
  directory?: Directory | undefined;
  trust?: TrustStore | undefined;
  signer?: Signer | undefined;
}

/** What survives from one pass to the next: read-once manifest summaries, and the last apply per workload. */
export interface Memory {
  summaries: Map<string, Summary>;
  applied: Map<string, Applied>;
}

export interface ObserveDeps {
  client: KubeClient;
  classCaches: Informer<ClassCache>;
  workloads: Record<WorkloadKind, Informer<Workload>>;
  namespaces: Informer<KubeObject>;
  /** The node agent's CSI driver is installed (its CSIDriver object exists). */
  csiInstalled: () => boolean;
  jobs: Informer<JobObject>;
  directory: () => Promise<Cluster>;
  settings: Settings;
  memory: Memory;
}

/** Where Memory.applied keeps what was applied to a workload. */
export function appliedKey(w: WorkloadRef): string {
  return `${w.kind}/${w.namespace}/${w.name}`;
}

export async function observe(key: string, deps: ObserveDeps, signal: AbortSignal): Promise<{ observed: Observed; handles: Handles }> {
  const cc = deps.classCaches.get(key);
  if (!cc) return { observed: { stage: "gone" }, handles: {} };
  if (cc.metadata.deletionTimestamp) return observeDeletion(cc, deps, signal);
  // Adding the finalizer ends the pass (its update brings the ClassCache back): nothing else is read.
  if (!(cc.metadata.finalizers ?? []).includes(FINALIZER)) return { observed: { stage: "unfinalized", classCache: cc }, handles: {} };
  // The cluster's shared parts (directory, node agents, keys) exist before anything else.
  const cluster = await deps.directory();
  const handles: Handles = { directory: cluster.directory, trust: cluster.trust, signer: cluster.signer };
  const base = { stage: "live" as const, classCache: cc, settings: deps.settings, clusterProblems: cluster.problems ?? [] };
  let resolved: { spec: ResolvedSpec; warnings: string[] };
  try {
    resolved = resolveSpec(cc);
  } catch (err) {
    return { observed: { ...base, spec: { error: err instanceof Error ? err.message : String(err) } }, handles };
  }
  const { spec } = resolved;
  const kind = spec.workloadRef.kind;
  const object = deps.workloads[kind].get(`${cc.metadata.namespace}/${spec.workloadRef.name}`);
  if (!object) return { observed: { ...base, spec: resolved }, handles };

  const clean = cleanTemplate(object);
  const { ref, input: plain, container } = injectionFor(cc, spec, clean, deps.settings.image, deps.settings.allowClusterSharing);
  const scope = scopeOf(cc, spec, deps.settings.allowClusterSharing);
  const where = storeVolumeFor(deps.namespaces.get(cc.metadata.namespace!), deps.csiInstalled());
  const podSecurity = "forbidden" in where ? where.forbidden : undefined;
  const input: InjectionInput = { ...plain, storeVolume: "volume" in where ? where.volume : undefined };
  const directory = await observeDirectory(cluster, cc, ref, scope, deps.memory);
  // A container started by its image's ENTRYPOINT: its build's probe says the launch, until the status keeps it.
  const needLaunch = fromEntrypoint(spec, clean.containers.find((c) => c.name === container)) && cc.status?.launch?.ref !== ref;
  const build = await observeBuild(cc, ref, container, { awaited: awaitsBuild({ container, podSecurity, directory }), needLaunch }, deps, signal);
  const lastApplied = deps.memory.applied.get(appliedKey({ kind, name: object.metadata.name!, namespace: object.metadata.namespace! }));
  // Pods can only differ from an archive once one was bound: for this ref, or for the content recorded before.
  const app = directory.reachable && (directory.archives.some((a) => a.verified) || cc.status?.appDigest !== undefined) ? await observeApp(deps.client, object, ref, cc.status?.appDigest, signal) : { differing: 0, digest: undefined };
  const workload: WorkloadView = { kind, object, clean, ref, scope, container, input, podSecurity, lastApplied, directory, build, app };
  return { observed: { ...base, spec: resolved, workload }, handles };
}

/**
 * What the workload's pods patched for `ref` report of the app they run: their jar checks'
 * termination messages (see policies/appcontent.ts). Unreadable pods count as nothing said.
 */
async function observeApp(client: KubeClient, w: Workload, ref: string, known: string | undefined, signal: AbortSignal): Promise<AppContent> {
  const labels = (w.spec["selector"] as { matchLabels?: Record<string, string> } | undefined)?.matchLabels;
  if (!labels || Object.keys(labels).length === 0) return { differing: 0, digest: undefined };
  const selector = Object.entries(labels).map(([k, v]) => `${k}=${v}`).join(",");
  const pods = await client.list<KubeObject & PodWithChecks>(Pods, { namespace: w.metadata.namespace!, labelSelector: selector, signal }).catch(() => undefined);
  return appContent(pods?.items ?? [], ref, known);
}

async function observeDeletion(cc: ClassCache, deps: ObserveDeps, signal: AbortSignal): Promise<{ observed: Observed; handles: Handles }> {
  if (!(cc.metadata.finalizers ?? []).includes(FINALIZER)) return { observed: { stage: "gone" }, handles: {} };
  const kind = (cc.spec.workloadRef.kind ?? "Deployment") as WorkloadKind;
  const rt = WORKLOAD_TYPES[kind];
  let workload: Deleting["workload"];
  if (rt) {
    try {
      workload = { kind, object: await deps.client.get<Workload>(rt, cc.spec.workloadRef.name, { namespace: cc.metadata.namespace!, signal }) };
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }
  const ref = cc.status?.ref;
  const cluster = await deps.directory();
  // Only if no other ClassCache (another namespace with cluster sharing) still uses the ref.
  const refShared = ref !== undefined && deps.classCaches.list().some((o) => o !== cc && !o.metadata.deletionTimestamp && o.status?.ref === ref);
  const present = cluster.directory !== undefined;
  const asked = ref && cluster.directory && !refShared ? { reachable: await cluster.directory.ping().catch(() => false) } : {};
  return { observed: { stage: "deleting", classCache: cc, workload, ref, refShared, directory: { present, ...asked } }, handles: { directory: cluster.directory } };
}

/**
 * The directory's view of `ref`: the offers waiting for archs not bound to this ClassCache
 * (judged: only the operator signs, see publish.ts), then each bound arch's statements verified
 * against the cluster's keys, with its holders and its manifest's summary.
 */
async function observeDirectory(cluster: Cluster, cc: ClassCache, ref: string, scope: string, memory: Memory): Promise<DirectoryView> {
  const { directory, trust, signer } = cluster;
  if (!directory || !trust || !(await directory.ping().catch(() => false))) return { reachable: false };
  const owner = cc.metadata.uid ?? "";
  const bindings = new Map<string, string>();
  const offers: { arch: string; verdict: Verdict }[] = [];
  for (const arch of ARCHS) {
    const text = await directory.binding(`${ref}.${arch}`);
    if (text !== undefined) bindings.set(arch, text);
    if (!signer || (text !== undefined && boundTo(text, trust, ref, arch) === owner)) continue;
    const offer = await readOffer(directory, ref, arch);
    if (offer !== undefined) offers.push({ arch, verdict: judgeOffer(offer, { scope, ref, arch, owner, trust }) });
  }
  const archives: ArchiveView[] = [];
  for (const arch of ARCHS) {
    const text = bindings.get(arch);
    if (text === undefined) continue;
    const view = await observeArchive(directory, trust, signer, { ref, arch, text }, memory);
    archives.push(view);
    if (!view.verified) break;
  }
  return { reachable: true, signingKey: signer?.keyId, offers, archives };
}

/** One arch's binding, verified like the agents verify it, and what status shows of it. */
async function observeArchive(directory: Directory, trust: TrustStore, signer: Signer | undefined, b: { ref: string; arch: string; text: string }, memory: Memory): Promise<ArchiveView> {
  try {
    const { key, owner } = openBinding(b.text, trust, b.ref, b.arch);
    const known = memory.summaries.get(key);
    const envelope = signer || !known ? await directory.manifest(key) : undefined;
    const olderManifest = signer !== undefined && envelope !== undefined && signedBy(envelope) !== signer.keyId;
    // Signing it again opens it first: one that does not verify is reported, never signed.
    if (olderManifest) openEnvelope(envelope, trust, key);
    const holders = await directory.holders(key);
    const summary = known ?? (envelope !== undefined ? summaryOf(memory, key, envelope, trust) : {});
    return { arch: b.arch, verified: true, key, owner, holders, summary, signedByOlderKey: signer !== undefined && (signedBy(b.text) !== signer.keyId || olderManifest) };
  } catch (err) {
    if (!(err instanceof SignatureError)) throw err;
    return { arch: b.arch, verified: false, problem: err.message };
  }
}

/** What status shows of a key's manifest, verified; kept once read (a manifest never changes). */
function summaryOf(memory: Memory, key: string, envelope: string, trust: TrustStore): Summary {
  const m = openEnvelope(envelope, trust, key);
  const summary = { hitRate: m.verification.hitRate, instrumented: m.verification.instrumented, builtAt: m.createdAt, jvm: `${m.jvm.vendor} ${m.jvm.runtimeVersion}` };
  memory.summaries.set(key, summary);
  return summary;
}

/**
 * The ref's build Job, from the cache. Where it failed and the archive waits on it, what its
 * container said is read from its newest pod, once: a failed Job's pods do not change, and the
 * status keeps the message once it says it.
 */
async function observeBuild(cc: ClassCache, ref: string, container: string | undefined, need: { awaited: boolean; needLaunch: boolean }, deps: ObserveDeps, signal: AbortSignal): Promise<BuildView> {
  const ns = cc.metadata.namespace!;
  const name = buildJobName(ref);
  const job = deps.jobs.get(`${ns}/${name}`);
  if (!job) return { name, job: undefined, failure: undefined };
  const failed = job.status?.conditions?.find((c) => c.type === "Failed" && c.status === "True");
  const view = { uid: job.metadata.uid ?? "", succeeded: Boolean(job.status?.succeeded), failed: failed ? { message: failed.message } : undefined };
  const said = buildFailureSaid(cc, name);
  const whyFailed = failed !== undefined && need.awaited && container !== undefined && said === undefined;
  if (!whyFailed && !need.needLaunch) return { name, job: view, failure: undefined };
  const pods = (await deps.client.list<BuildPod>(Pods, { namespace: ns, labelSelector: `batch.kubernetes.io/job-name=${name}`, signal }).catch(() => undefined))?.items ?? [];
  const failure = whyFailed ? whyBuildFailed(pods, container) : undefined;
  return { name, job: view, failure, ...(need.needLaunch ? { probe: probeReport(pods, name) } : {}) };
}

type Terminated = { exitCode?: number; reason?: string; message?: string; finishedAt?: string };
type ContainerStatus = { name: string; state?: { terminated?: Terminated }; lastState?: { terminated?: Terminated } };
type BuildPod = KubeObject & { status?: { containerStatuses?: ContainerStatus[]; initContainerStatuses?: ContainerStatus[] } };

/**
 * What the build container of a failed build Job's newest pod said when it ended: classcache's
 * own error (written to its termination log), else the log's tail or the runtime's reason. Where
 * it never ran because the launch probe's run of the image's ENTRYPOINT failed, what that said.
 */
function whyBuildFailed(pods: BuildPod[], container: string): string | undefined {
  const ended = pods
    .map((p) => terminated(p.status?.containerStatuses, container) ?? terminated(p.status?.initContainerStatuses, PROBE_CONTAINER))
    .filter((t): t is Terminated => t !== undefined && t.exitCode !== 0)
    .sort((a, b) => (b.finishedAt ?? "").localeCompare(a.finishedAt ?? ""));
  const t = ended[0];
  if (!t) return undefined;
  const text = t.message?.trim();
  return text ? (text.length > 1500 ? `…${text.slice(-1500)}` : text) : `${t.reason ?? "terminated"} (exit code ${t.exitCode ?? "unknown"})`;
}

function terminated(statuses: ContainerStatus[] | undefined, name: string): Terminated | undefined {
  const c = statuses?.find((s) => s.name === name);
  return c?.state?.terminated ?? c?.lastState?.terminated;
}
