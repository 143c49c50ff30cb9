/**
 * The ClassCache controller: per ClassCache, gather everything a pass needs into one Observed
 * value (observe.ts), decide with one pure function what the status says and which writes get
 * the world there (decide.ts, from the policies in policies.ts), then make those writes in order
 * (act.ts). Server-side applies go through one helper with one field manager (apply.ts), and an
 * unchanged status or patch is not written again, so a pass over an unchanged world writes
 * nothing. Deleting a ClassCache puts the workload back as it was and removes its ref's bindings
 * from the directory before the finalizer goes.
 */
import type { EventRecorder } from "../../kube/events.ts";
import type { KubeClient } from "../../kube/client.ts";
import type { KubeObject } from "../../kube/types.ts";
import type { Logger } from "../../runtime/log.ts";
import type { ClassCache } from "../api/v1.ts";
import { CSI_DRIVER } from "../constants.ts";
import type { Informer } from "../runtime/informer.ts";
import type { Result } from "../runtime/reconcile.ts";
import { act } from "./act.ts";
import { decide } from "./decide.ts";
import { observe, type Cluster, type JobObject, type Memory, type ObserveDeps } from "./observe.ts";
import type { Workload, WorkloadKind } from "./workload.ts";

/**
 * Passes in a row within one reconcile: a pass that took an offer looks again at once to report
 * the archive it bound (see Plan.observeAgain); more in a row means offers keep arriving, and the
 * next poll picks them up.
 */
const MAX_ROUNDS = 3;

export interface ClassCacheReconcilerOptions {
  client: KubeClient;
  classCaches: Informer<ClassCache>;
  workloads: Record<WorkloadKind, Informer<Workload>>;
  /** Namespaces, for the Pod Security level they enforce. */
  namespaces: Informer<KubeObject>;
  /** The node agent's CSIDriver object (CSI_DRIVER), if installed: where hostPath is forbidden, pods mount the store through it. */
  csiDrivers?: Informer<KubeObject>;
  jobs: Informer<JobObject>;
  events: EventRecorder;
  log: Logger;
  /** The classcache image: init step of patched pods, kit of build Jobs. */
  image: string;
  /** The directory, the keys its statements are verified with and build grants signed with, once the cluster's parts exist. */
  directory: () => Promise<Cluster>;
  /** Re-check an archive that is not available yet this often (default 30 s). */
  pollMs?: number;
  /** Refresh holders and hit rates of an available archive this often (default 60 s). */
  readyPollMs?: number;
  /** The cluster admin lets ClassCaches with `sharing: Cluster` share archives across namespaces. */
  allowClusterSharing?: boolean;
  /** Wall-clock time in ms (default Date.now): condition transitions, grants and bindings carry it. */
  now?: () => number;
}

export class ClassCacheReconciler {
  readonly #o: ClassCacheReconcilerOptions;
  readonly #memory: Memory = { summaries: new Map(), applied: new Map() };
  readonly #deps: ObserveDeps;
  readonly #now: () => number;

  constructor(opts: ClassCacheReconcilerOptions) {
    this.#o = opts;
    this.#now = opts.now ?? Date.now;
    const settings = { image: opts.image, allowClusterSharing: opts.allowClusterSharing === true, pollMs: opts.pollMs ?? 30_000, readyPollMs: opts.readyPollMs ?? 60_000 };
    this.#deps = { client: opts.client, classCaches: opts.classCaches, workloads: opts.workloads, namespaces: opts.namespaces, csiInstalled: () => opts.csiDrivers?.get(CSI_DRIVER) !== undefined, jobs: opts.jobs, directory: opts.directory, settings, memory: this.#memory };
  }

  /** Every ClassCache: the CSI driver installed or removed changes what the forbidding namespaces get. */
  all(): string[] {
    return this.#o.classCaches.list().map((cc) => `${cc.metadata.namespace}/${cc.metadata.name}`);
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
    for (let round = 1; ; round++) {
      const { observed, handles } = await observe(key, this.#deps, signal);
      const now = this.#now();
      const plan = decide(observed, now);
      const ctx = { client: this.#o.client, events: this.#o.events, log: this.#o.log, classCache: observed.stage === "gone" ? undefined : observed.classCache, handles, memory: this.#memory, now: this.#now, signal };
      const { patchFailure } = await act(plan.actions, ctx);
      if (patchFailure !== undefined && observed.stage === "live") {
        // The template's write failed, after this pass's other writes: the status, which comes
        // last, says why (decided again with the error as one more thing observed).
        const again = decide({ ...observed, patchFailure }, now);
        await act(again.actions.filter((a) => a.kind === "applyStatus"), ctx);
        return again.result;
      }
      if (!plan.observeAgain || round === MAX_ROUNDS) return plan.result;
    }
  }
}
