/**
 * A controller turns informer events into keys on a work queue and runs a reconciler on them with
 * N workers. The primary type's events enqueue the object's own key; each watched secondary type
 * maps its objects to primary keys (usually through the owner reference). Because the queue
 * de-duplicates and never hands one key to two workers, a burst of changes to one object is one
 * reconcile, and reconciles of one object never overlap.
 *
 * A deleted object's key is enqueued like any other: the reconciler finds nothing in the cache and
 * cleans up what the object left behind; returning normally then forgets the key.
 */
import type { KubeObject } from "../../kube/types.ts";
import { keyOf } from "../../kube/types.ts";
import type { Logger } from "../../runtime/log.ts";
import type { Runnable } from "../../runtime/runnable.ts";
import { realClock, timeoutSignal, type Clock } from "./clock.ts";
import type { EventHandler, Informer } from "./informer.ts";
import type { ControllerMetrics, ReconcileResult } from "./metrics.ts";
import { TerminalError, type Reconciler, type Result } from "./reconcile.ts";
import { ExponentialBackoffRateLimiter, WorkQueue, type RateLimiter } from "./workqueue.ts";

/** A secondary type and which primary keys a change to one of its objects concerns. */
export interface SecondaryWatch {
  readonly informer: Informer<KubeObject>;
  readonly map: (obj: KubeObject) => string[];
}

export function watchSecondary<S extends KubeObject>(informer: Informer<S>, map: (obj: S) => string[]): SecondaryWatch {
  return { informer, map: (obj) => map(obj as S) };
}

/** Maps an object to its controlling owner of `kind` (same namespace): the usual secondary mapping. */
export function toControllerOwner(kind: string, apiGroup?: string): (obj: KubeObject) => string[] {
  return (obj) => {
    const ref = obj.metadata.ownerReferences?.find(
      (r) => r.controller === true && r.kind === kind && (apiGroup === undefined || r.apiVersion.split("/")[0] === apiGroup),
    );
    if (!ref) return [];
    return [obj.metadata.namespace ? `${obj.metadata.namespace}/${ref.name}` : ref.name];
  };
}

export interface ControllerOptions<P extends KubeObject> {
  name: string;
  /** The primary type: one reconcile per object of it. */
  for: Informer<P>;
  watches?: SecondaryWatch[];
  reconcile: Reconciler;
  /** Parallel reconciles of different keys (default 1). */
  workers?: number;
  /** Retry delays of failed keys (default 5 ms doubling to 5 min). */
  rateLimiter?: RateLimiter<string>;
  /** Fail start() if the informers have not listed within this time (default 2 min). */
  cacheSyncTimeoutMs?: number;
  logger: Logger;
  clock?: Clock;
  metrics?: ControllerMetrics;
}

export class Controller<P extends KubeObject = KubeObject> implements Runnable {
  readonly name: string;
  readonly queue: WorkQueue<string>;
  readonly #opts: ControllerOptions<P>;
  readonly #clock: Clock;
  readonly #log: Logger;
  #started = false;

  constructor(opts: ControllerOptions<P>) {
    this.#opts = opts;
    this.name = `controller/${opts.name}`;
    this.#clock = opts.clock ?? realClock;
    this.#log = opts.logger.with({ controller: opts.name });
    this.queue = new WorkQueue<string>({
      clock: this.#clock,
      rateLimiter: opts.rateLimiter ?? new ExponentialBackoffRateLimiter<string>(),
    });
    opts.metrics?.watchQueue(opts.name, () => this.queue.length);
  }

  /** Runs until `signal` aborts: in-flight reconciles get the aborted signal and are awaited. Once only. */
  async start(signal: AbortSignal): Promise<void> {
    if (this.#started) throw new Error(`${this.name} was already started`);
    this.#started = true;
    const removers = this.#register();
    const stop = (): void => this.queue.shutDown();
    signal.addEventListener("abort", stop, { once: true });
    try {
      if (!(await this.#waitForCaches(signal))) return;
      const workers = Math.max(1, this.#opts.workers ?? 1);
      this.#log.info("starting workers", { workers });
      await Promise.all(Array.from({ length: workers }, () => this.#work(signal)));
      this.#log.info("workers stopped");
    } finally {
      signal.removeEventListener("abort", stop);
      this.queue.shutDown();
      for (const remove of removers) remove();
    }
  }

  #register(): (() => void)[] {
    const enqueue = (key: string): void => this.queue.add(key);
    const primary: EventHandler<P> = {
      onAdd: (obj) => enqueue(keyOf(obj)),
      onUpdate: (_old, obj) => enqueue(keyOf(obj)),
      onDelete: (obj) => enqueue(keyOf(obj)),
    };
    const removers = [this.#opts.for.addHandler(primary)];
    for (const w of this.#opts.watches ?? []) {
      const mapped = (obj: KubeObject): void => w.map(obj).forEach(enqueue);
      removers.push(
        w.informer.addHandler({
          onAdd: mapped,
          // Both: a changed label or owner can move the object from one primary to another.
          onUpdate: (old, obj) => new Set([...w.map(old), ...w.map(obj)]).forEach(enqueue),
          onDelete: mapped,
        }),
      );
    }
    return removers;
  }

  async #waitForCaches(signal: AbortSignal): Promise<boolean> {
    const limitMs = this.#opts.cacheSyncTimeoutMs ?? 120_000;
    const deadline = timeoutSignal(this.#clock, limitMs, "cache sync timeout");
    const informers = [this.#opts.for, ...(this.#opts.watches ?? []).map((w) => w.informer)];
    try {
      const wait = AbortSignal.any([signal, deadline.signal]);
      const synced = await Promise.all(informers.map((i) => i.waitForSync(wait)));
      if (synced.every(Boolean)) return true;
      if (signal.aborted) return false;
      const pending = informers.filter((i) => !i.hasSynced()).map((i) => i.name);
      throw new Error(`${this.name}: ${pending.join(", ")} did not sync within ${limitMs} ms`);
    } finally {
      deadline.cancel();
    }
  }

  async #work(signal: AbortSignal): Promise<void> {
    for (;;) {
      const key = await this.queue.get();
      if (key === undefined) return;
      try {
        await this.#reconcileOne(key, signal);
      } finally {
        this.queue.done(key);
      }
    }
  }

  async #reconcileOne(key: string, signal: AbortSignal): Promise<void> {
    const started = this.#clock.now();
    const metrics = this.#opts.metrics;
    const record = (result: ReconcileResult): void => {
      metrics?.reconciles.inc({ controller: this.#opts.name, result });
      metrics?.reconcileSeconds.observe({ controller: this.#opts.name }, (this.#clock.now() - started) / 1000);
    };
    let result: Result | void;
    try {
      result = await this.#opts.reconcile(key, signal);
    } catch (err) {
      if (signal.aborted) return; // stopping; whoever runs next reconciles everything anyway
      const error = err instanceof Error ? err.message : String(err);
      if (err instanceof TerminalError) {
        record("terminal_error");
        this.queue.forget(key);
        this.#log.error("reconcile failed; not retrying", { key, error });
        return;
      }
      record("error");
      metrics?.queueRetries.inc({ name: this.#opts.name });
      this.queue.addRateLimited(key);
      this.#log.warn("reconcile failed; retrying", { key, error, attempt: this.queue.numRequeues(key) });
      return;
    }
    this.queue.forget(key);
    const requeueAfter = result?.requeueAfter ?? 0;
    record(requeueAfter > 0 ? "requeue_after" : "success");
    if (requeueAfter > 0) this.queue.addAfter(key, requeueAfter);
    this.#log.debug("reconciled", { key, ms: Math.round(this.#clock.now() - started), ...(requeueAfter > 0 ? { requeueAfter } : {}) });
  }
}
