/**
 * Metrics of the controller runtime, named after controller-runtime's so that dashboards and alerts
 * written for Go operators read them unchanged (with the classcache_ prefix): reconciles by result,
 * their duration, the work queue's depth and retries, and whether this replica leads.
 */
import { Counter, Gauge, Histogram, type Registry } from "prom-client";

/** How one reconcile ended. */
export type ReconcileResult = "success" | "requeue_after" | "error" | "terminal_error";

export class ControllerMetrics {
  readonly reconciles: Counter<"controller" | "result">;
  readonly reconcileSeconds: Histogram<"controller">;
  readonly queueRetries: Counter<"name">;
  readonly #queues = new Map<string, () => number>();
  readonly #leaders = new Map<string, () => boolean>();

  constructor(registry: Registry) {
    const queues = this.#queues;
    const leaders = this.#leaders;
    const registers = [registry];
    this.reconciles = new Counter({
      name: "classcache_controller_reconcile_total",
      help: "Reconciles, by controller and result.",
      labelNames: ["controller", "result"] as const,
      registers,
    });
    this.reconcileSeconds = new Histogram({
      name: "classcache_controller_reconcile_time_seconds",
      help: "Time of one reconcile, by controller.",
      labelNames: ["controller"] as const,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    this.queueRetries = new Counter({ name: "classcache_workqueue_retries_total", help: "Keys re-queued after a failed reconcile.", labelNames: ["name"] as const, registers });
    // Read when scraped, so no code path has to remember to update them.
    new Gauge({
      name: "classcache_workqueue_depth",
      help: "Keys waiting in the work queue.",
      labelNames: ["name"] as const,
      registers,
      collect() {
        for (const [name, depth] of queues) this.set({ name }, depth());
      },
    });
    new Gauge({
      name: "classcache_leader_election_master_status",
      help: "1 while this replica holds the leader lease.",
      labelNames: ["name"] as const,
      registers,
      collect() {
        for (const [name, leading] of leaders) this.set({ name }, leading() ? 1 : 0);
      },
    });
  }

  watchQueue(name: string, depth: () => number): void {
    this.#queues.set(name, depth);
  }

  watchLeader(name: string, leading: () => boolean): void {
    this.#leaders.set(name, leading);
  }
}
