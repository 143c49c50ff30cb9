/**
 * Leader election on a coordination.k8s.io/v1 Lease, with client-go's algorithm:
 *
 *  - Every candidate reads the Lease every retryPeriod. The holder renews it (renewTime) by an
 *    update carrying the resourceVersion it read, so of two concurrent writers one gets 409 and
 *    loses. Nobody else takes a Lease while it is valid.
 *  - Validity is judged by the candidate's own clock: the Lease is valid until
 *    leaseDurationSeconds after the moment this candidate *saw it change* — never by comparing
 *    renewTime with the local clock, so clock skew between nodes does not matter.
 *  - A leader that cannot renew within renewDeadline stops leading (its leadership signal aborts,
 *    start() rejects with LeadershipLostError). renewDeadline < leaseDuration leaves the gap in
 *    which the old leader has stopped before anyone else may start.
 *  - On a graceful stop the leader releases the Lease (empty holder, 1 s duration), so the next
 *    candidate takes over at its next retry instead of after leaseDuration.
 */
import type { KubeClient } from "../../kube/client.ts";
import { isConflict } from "../../kube/errors.ts";
import { apiVersionOf, Leases } from "../../kube/resource.ts";
import { microTime, type Lease, type LeaseSpec } from "../../kube/types.ts";
import type { Logger } from "../../runtime/log.ts";
import type { Runnable } from "../../runtime/runnable.ts";
import { realClock, sleep, timeoutSignal, type Clock } from "./clock.ts";

export type LeaseClient = Pick<KubeClient, "getLease" | "createLease" | "updateLease">;

export interface LeaderElectorOptions {
  client: LeaseClient;
  namespace: string;
  /** The Lease's name: one per group of candidates (e.g. "classcache-operator"). */
  name: string;
  /** Unique per candidate, e.g. the Pod name plus a random suffix. */
  identity: string;
  /** How long a Lease stays valid without renewal (default 15 s; stored in whole seconds). */
  leaseDurationMs?: number;
  /** A leader that has not renewed for this long gives up (default 10 s). */
  renewDeadlineMs?: number;
  /** Time between attempts to acquire or renew (default 2 s). */
  retryPeriodMs?: number;
  /** Release the Lease when stopped by the signal (default true). */
  releaseOnCancel?: boolean;
  /** Called when this candidate becomes leader; `leadership` aborts when it stops being leader. */
  onStartedLeading?: (leadership: AbortSignal) => void;
  /** Called when leadership ends (lost, or released on stop). */
  onStoppedLeading?: () => void;
  /** Called when the observed holder changes ("" = nobody). */
  onNewLeader?: (identity: string) => void;
  logger: Logger;
  clock?: Clock;
  random?: () => number;
}

export class LeadershipLostError extends Error {
  constructor(identity: string, lease: string, sinceMs: number) {
    super(`${identity} lost the lease ${lease}: not renewed for ${Math.round(sinceMs)} ms`);
    this.name = "LeadershipLostError";
  }
}

const JITTER = 0.2;

export class LeaderElector implements Runnable {
  readonly name: string;
  /** May be turned off before stopping, e.g. when leader-only work did not stop in time. */
  releaseOnCancel: boolean;
  readonly #o: Required<Pick<LeaderElectorOptions, "leaseDurationMs" | "renewDeadlineMs" | "retryPeriodMs">> & LeaderElectorOptions;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #random: () => number;
  #started = false;
  #leadership: AbortController | undefined;
  #observedRaw = "";
  #observedTime = 0;
  #observedLease: Lease | undefined;
  #observedHolder: string | undefined;
  #resolveLeading: (signal: AbortSignal | undefined) => void = () => {};
  readonly #leading: Promise<AbortSignal | undefined>;

  constructor(opts: LeaderElectorOptions) {
    this.#o = { leaseDurationMs: 15_000, renewDeadlineMs: 10_000, retryPeriodMs: 2_000, ...opts };
    const { leaseDurationMs, renewDeadlineMs, retryPeriodMs } = this.#o;
    if (!(leaseDurationMs > renewDeadlineMs)) throw new Error("leaseDurationMs must be greater than renewDeadlineMs");
    if (!(renewDeadlineMs > retryPeriodMs * (1 + JITTER))) throw new Error("renewDeadlineMs must be greater than 1.2 × retryPeriodMs");
    if (!opts.identity) throw new Error("a leader election identity is required");
    this.name = `leader-election/${opts.namespace}/${opts.name}`;
    this.releaseOnCancel = opts.releaseOnCancel ?? true;
    this.#clock = opts.clock ?? realClock;
    this.#random = opts.random ?? Math.random;
    this.#log = opts.logger.with({ lease: `${opts.namespace}/${opts.name}`, identity: opts.identity });
    this.#leading = new Promise((resolve) => (this.#resolveLeading = resolve));
  }

  isLeader(): boolean {
    return this.#leadership !== undefined && !this.#leadership.signal.aborted;
  }

  /** The holder last seen in the Lease ("" when released, undefined before the first read). */
  leader(): string | undefined {
    return this.#observedHolder;
  }

  /** Resolves with the leadership signal once leading; with undefined if start() ends without leading. */
  whenLeading(): Promise<AbortSignal | undefined> {
    return this.#leading;
  }

  /** Campaigns, then leads until `signal` aborts (resolves, after releasing) or renewal fails (rejects). */
  async start(signal: AbortSignal): Promise<void> {
    if (this.#started) throw new Error(`${this.name} was already started`);
    this.#started = true;
    try {
      if (!(await this.#acquire(signal))) return;
      const leadership = new AbortController();
      this.#leadership = leadership;
      this.#log.info("started leading");
      this.#resolveLeading(leadership.signal);
      this.#o.onStartedLeading?.(leadership.signal);
      const lostAfterMs = await this.#renew(signal);
      if (lostAfterMs !== undefined) {
        const err = new LeadershipLostError(this.#o.identity, `${this.#o.namespace}/${this.#o.name}`, lostAfterMs);
        this.#log.error("leadership lost", { notRenewedForMs: Math.round(lostAfterMs) });
        leadership.abort(err);
        this.#o.onStoppedLeading?.();
        throw err;
      }
      leadership.abort(signal.reason);
      if (this.releaseOnCancel) await this.#release();
      this.#log.info("stopped leading");
      this.#o.onStoppedLeading?.();
    } finally {
      this.#resolveLeading(undefined);
    }
  }

  async #acquire(signal: AbortSignal): Promise<boolean> {
    this.#log.info("campaigning for leadership");
    while (!signal.aborted) {
      if (await this.#tryAcquireOrRenew(signal, this.#o.renewDeadlineMs)) return true;
      // Retry after the (jittered) retry period, or right when the Lease we saw expires if that
      // is sooner: a crashed leader is replaced up to a retry period earlier.
      const retryMs = this.#o.retryPeriodMs * (1 + this.#random() * JITTER);
      await sleep(this.#clock, Math.min(retryMs, Math.max(0, this.#expiresAt() - this.#clock.now()) + 1), signal);
    }
    return false;
  }

  /** Renews every retryPeriod; returns how long it had not renewed when it gave up, or undefined when aborted. */
  async #renew(signal: AbortSignal): Promise<number | undefined> {
    let renewedAt = this.#clock.now();
    for (;;) {
      await sleep(this.#clock, this.#o.retryPeriodMs, signal);
      if (signal.aborted) return undefined;
      const attemptAt = this.#clock.now();
      const remaining = renewedAt + this.#o.renewDeadlineMs - attemptAt;
      if (remaining > 0 && (await this.#tryAcquireOrRenew(signal, remaining))) {
        renewedAt = attemptAt;
        continue;
      }
      if (signal.aborted) return undefined;
      const since = this.#clock.now() - renewedAt;
      if (since >= this.#o.renewDeadlineMs) return since;
    }
  }

  /** One round: read, and write if the Lease is ours or free. At most `limitMs` of waiting for the server. */
  async #tryAcquireOrRenew(signal: AbortSignal, limitMs: number): Promise<boolean> {
    const limit = timeoutSignal(this.#clock, limitMs, "lease request took too long");
    try {
      return await this.#attempt(AbortSignal.any([signal, limit.signal]));
    } catch (err) {
      if (signal.aborted) return false;
      if (isConflict(err)) this.#log.debug("lost a race for the lease", { error: (err as Error).message });
      else this.#log.warn("cannot acquire or renew the lease", { error: (err as Error).message });
      return false;
    } finally {
      limit.cancel();
    }
  }

  async #attempt(signal: AbortSignal): Promise<boolean> {
    const { client, namespace, name, identity } = this.#o;
    const now = this.#clock.now();
    const lease = await client.getLease(namespace, name, { signal });
    if (!lease) {
      const fresh: Lease = {
        apiVersion: apiVersionOf(Leases),
        kind: Leases.kind,
        metadata: { name, namespace },
        spec: this.#record(now, undefined),
      };
      this.#observe(await client.createLease(fresh, { signal }), now);
      return true;
    }
    this.#observe(lease, now);
    const holder = lease.spec?.holderIdentity ?? "";
    if (holder !== "" && holder !== identity && this.#observedValid(now)) return false;
    // The resourceVersion from the read makes this a compare-and-swap: 409 if anyone wrote since.
    this.#observe(await client.updateLease({ ...lease, spec: this.#record(now, lease.spec ?? {}) }, { signal }), now);
    return true;
  }

  #record(now: number, old: LeaseSpec | undefined): LeaseSpec {
    const mine = old?.holderIdentity === this.#o.identity;
    return {
      holderIdentity: this.#o.identity,
      leaseDurationSeconds: Math.max(1, Math.ceil(this.#o.leaseDurationMs / 1000)),
      acquireTime: mine && old?.acquireTime ? old.acquireTime : microTime(now),
      renewTime: microTime(now),
      leaseTransitions: old === undefined ? 0 : (old.leaseTransitions ?? 0) + (mine ? 0 : 1),
    };
  }

  /** Remembers the Lease and, when its record changed, the local time at which that was seen. */
  #observe(lease: Lease, now: number): void {
    const s = lease.spec ?? {};
    const raw = JSON.stringify([s.holderIdentity ?? "", s.leaseDurationSeconds, s.acquireTime, s.renewTime, s.leaseTransitions]);
    if (raw !== this.#observedRaw) {
      this.#observedRaw = raw;
      this.#observedTime = now;
    }
    this.#observedLease = lease;
    const holder = s.holderIdentity ?? "";
    if (holder !== this.#observedHolder) {
      this.#observedHolder = holder;
      this.#log.info("leader observed", { holder });
      this.#o.onNewLeader?.(holder);
    }
  }

  #observedValid(now: number): boolean {
    return this.#expiresAt() > now;
  }

  /** When the observed Lease expires by this candidate's clock (if nobody renews it). */
  #expiresAt(): number {
    const seconds = this.#observedLease?.spec?.leaseDurationSeconds ?? 0;
    return this.#observedTime + seconds * 1000;
  }

  /** Hands the Lease back: no holder, valid for 1 s. Best effort (a 409 means it is no longer ours anyway). */
  async #release(): Promise<void> {
    const lease = this.#observedLease;
    if (lease?.spec?.holderIdentity !== this.#o.identity) return;
    const now = microTime(this.#clock.now());
    const released: Lease = {
      ...lease,
      spec: { holderIdentity: "", leaseDurationSeconds: 1, acquireTime: now, renewTime: now, leaseTransitions: lease.spec.leaseTransitions ?? 0 },
    };
    const limit = timeoutSignal(this.#clock, this.#o.renewDeadlineMs, "releasing the lease took too long");
    try {
      this.#observe(await this.#o.client.updateLease(released, { signal: limit.signal }), this.#clock.now());
      this.#log.info("released the lease");
    } catch (err) {
      this.#log.warn("cannot release the lease", { error: (err as Error).message });
    } finally {
      limit.cancel();
    }
  }
}
