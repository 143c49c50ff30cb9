/**
 * The conditions of one pass, built from what the policies say. A condition whose status did not
 * change keeps its transition time; the last word on a condition type wins.
 */
import { ConditionTypes, type ClassCache, type Condition } from "../api/v1.ts";

/** What a policy says about one condition: cert-manager's (status, reason, message). */
export interface Check {
  status: Condition["status"];
  reason: string;
  message: string;
}

const ORDER: string[] = [ConditionTypes.Ready, ConditionTypes.ArchiveAvailable, ConditionTypes.WorkloadPatched, ConditionTypes.Degraded];

/** RFC 3339 at seconds precision, as metav1.Time is written. */
export function transitionTime(now: number): string {
  return new Date(now).toISOString().replace(/\.\d+Z$/, "Z");
}

export class Conditions {
  readonly #previous: Map<string, Condition>;
  readonly #next = new Map<string, Condition>();
  readonly #generation: number;
  readonly #now: number;

  constructor(cc: ClassCache, now: number) {
    this.#previous = new Map((cc.status?.conditions ?? []).map((c) => [c.type, c]));
    this.#generation = cc.metadata.generation ?? 0;
    this.#now = now;
  }

  set(type: string, check: Check): void {
    const prev = this.#previous.get(type);
    const lastTransitionTime = prev && prev.status === check.status ? prev.lastTransitionTime : transitionTime(this.#now);
    this.#next.set(type, { type, status: check.status, observedGeneration: this.#generation, lastTransitionTime, reason: check.reason, message: check.message.slice(0, 32_000) });
  }

  get(type: string): Condition | undefined {
    return this.#next.get(type);
  }

  list(): Condition[] {
    return [...this.#next.values()].sort((a, b) => ORDER.indexOf(a.type) - ORDER.indexOf(b.type));
  }
}
