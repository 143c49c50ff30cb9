/**
 * An informer keeps an in-memory copy of one resource type (optionally narrowed by namespace and
 * selectors) and tells handlers what changed: list once, then watch from the list's
 * resourceVersion, forever.
 *
 *  - A watch that the server ends (timeoutSeconds) is restarted at once from the last
 *    resourceVersion seen (events and bookmarks advance it); nothing is missed.
 *  - A watch that fails (connection refused, reset, 5xx) is retried from there with backoff.
 *  - 410 Gone means the server no longer has the history from that resourceVersion (etcd was
 *    compacted, the watch cache was rebuilt): the informer lists again and diffs the list against
 *    its cache — adds and updates for what appeared or changed, deletes (finalStateUnknown) for
 *    what vanished while it was not watching.
 *  - Resync re-delivers every cached object to onUpdate(obj, obj) periodically, so level-triggered
 *    reconcilers see everything again even if a change was lost in a handler.
 *
 * Handlers run synchronously on the informer's loop: keep them short (enqueue a key) and treat the
 * objects as read-only — they are the cache.
 */
import type { KubeClient } from "../../kube/client.ts";
import { isGone } from "../../kube/errors.ts";
import { describeResource, type ResourceType } from "../../kube/resource.ts";
import { keyOf, type KubeObject, type WatchEvent } from "../../kube/types.ts";
import type { Logger } from "../../runtime/log.ts";
import type { Runnable } from "../../runtime/runnable.ts";
import { Backoff, type BackoffOptions } from "./backoff.ts";
import { realClock, sleep, type Clock, type Timer } from "./clock.ts";

export interface EventHandler<T extends KubeObject> {
  onAdd?(obj: T): void;
  onUpdate?(oldObj: T, newObj: T): void;
  /** `finalStateUnknown`: the delete was inferred from a relist; `obj` is the last state the cache had. */
  onDelete?(obj: T, info: { finalStateUnknown: boolean }): void;
}

export type ListerWatcher = Pick<KubeClient, "list" | "watch">;

export interface InformerOptions {
  client: ListerWatcher;
  resource: ResourceType;
  /** Omit for all namespaces. */
  namespace?: string;
  labelSelector?: string;
  fieldSelector?: string;
  /** Re-deliver every cached object to onUpdate this often; 0 (default) never. */
  resyncPeriodMs?: number;
  /** Server-side lifetime of each watch; default 5–10 min at random, as client-go (spreads the reconnects). */
  watchTimeoutSeconds?: number;
  /** Delays between failed lists/watches (default 800 ms doubling to 30 s). */
  backoff?: BackoffOptions;
  pageSize?: number;
  logger: Logger;
  clock?: Clock;
  name?: string;
}

export interface InformerStats {
  lists: number;
  /** Watches opened. */
  watches: number;
  /** Lists caused by 410 Gone. */
  expired: number;
  /** Failed lists or watches (other than 410). */
  errors: number;
  bookmarks: number;
  resyncs: number;
}

/** A watch that ends this soon without delivering anything is treated as a failure (no hot loop). */
const MIN_HEALTHY_WATCH_MS = 1000;

export class Informer<T extends KubeObject = KubeObject> implements Runnable {
  readonly name: string;
  readonly #opts: InformerOptions;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #cache = new Map<string, T>();
  readonly #handlers = new Set<EventHandler<T>>();
  readonly #syncWaiters = new Set<(synced: boolean) => void>();
  readonly #stats: InformerStats = { lists: 0, watches: 0, expired: 0, errors: 0, bookmarks: 0, resyncs: 0 };
  #resourceVersion: string | undefined;
  #synced = false;
  #started = false;
  #stopped = false;

  constructor(opts: InformerOptions) {
    this.#opts = opts;
    this.#clock = opts.clock ?? realClock;
    this.name = opts.name ?? `informer/${describeResource(opts.resource)}${opts.namespace ? `/${opts.namespace}` : ""}`;
    this.#log = opts.logger.with({ informer: this.name });
  }

  /**
   * Adds a handler; returns its removal. Added after the first list, it is first given an onAdd
   * for every cached object, so late handlers (a controller started on election) miss nothing.
   */
  addHandler(handler: EventHandler<T>): () => void {
    this.#handlers.add(handler);
    if (this.#synced) for (const obj of this.#cache.values()) this.#call("onAdd", () => handler.onAdd?.(obj));
    return () => this.#handlers.delete(handler);
  }

  hasSynced(): boolean {
    return this.#synced;
  }

  /** True once the first list is in the cache; false if `signal` aborted or the informer stopped first. */
  waitForSync(signal?: AbortSignal): Promise<boolean> {
    if (this.#synced) return Promise.resolve(true);
    if (this.#stopped || signal?.aborted) return Promise.resolve(false);
    return new Promise((resolve) => {
      const done = (synced: boolean): void => {
        this.#syncWaiters.delete(done);
        signal?.removeEventListener("abort", onAbort);
        resolve(synced);
      };
      const onAbort = (): void => done(false);
      this.#syncWaiters.add(done);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  /** The cached object with key "namespace/name" (or "name"). */
  get(key: string): T | undefined {
    return this.#cache.get(key);
  }

  list(): T[] {
    return [...this.#cache.values()];
  }

  keys(): string[] {
    return [...this.#cache.keys()];
  }

  /** The resourceVersion the next watch starts from. */
  resourceVersion(): string | undefined {
    return this.#resourceVersion;
  }

  stats(): Readonly<InformerStats> {
    return { ...this.#stats };
  }

  async start(signal: AbortSignal): Promise<void> {
    if (this.#started) throw new Error(`${this.name} was already started`);
    this.#started = true;
    const stopResync = this.#startResync(signal);
    const backoff = new Backoff(this.#opts.backoff);
    let needList = true;
    try {
      while (!signal.aborted) {
        try {
          if (needList) {
            await this.#relist(signal);
            needList = false;
            backoff.reset();
          }
          const healthy = await this.#watch(signal);
          if (healthy) backoff.reset();
          else await sleep(this.#clock, backoff.next(), signal);
        } catch (err) {
          if (signal.aborted) break;
          if (isGone(err)) {
            this.#stats.expired++;
            this.#log.info("resourceVersion expired; relisting", { resourceVersion: this.#resourceVersion, error: (err as Error).message });
            needList = true;
            continue;
          }
          this.#stats.errors++;
          const delayMs = backoff.next();
          this.#log.warn(needList ? "list failed" : "watch failed", { error: (err as Error).message, retryInMs: delayMs });
          await sleep(this.#clock, delayMs, signal);
        }
      }
    } finally {
      stopResync();
      this.#stopped = true;
      for (const done of [...this.#syncWaiters]) done(false);
    }
  }

  async #relist(signal: AbortSignal): Promise<void> {
    const o = this.#opts;
    this.#stats.lists++;
    const list = await o.client.list<T>(o.resource, {
      ...(o.namespace === undefined ? {} : { namespace: o.namespace }),
      ...(o.labelSelector === undefined ? {} : { labelSelector: o.labelSelector }),
      ...(o.fieldSelector === undefined ? {} : { fieldSelector: o.fieldSelector }),
      ...(o.pageSize === undefined ? {} : { pageSize: o.pageSize }),
      signal,
    });
    if (signal.aborted) return;
    this.#replace(list.items, list.metadata.resourceVersion);
  }

  /** Makes the cache equal to a fresh list, telling handlers about every difference. */
  #replace(items: T[], resourceVersion: string | undefined): void {
    const fresh = new Map(items.map((o) => [keyOf(o), o] as const));
    const gone: T[] = [];
    for (const [key, old] of this.#cache) if (!fresh.has(key)) gone.push(old);
    let added = 0;
    let updated = 0;
    for (const [key, obj] of fresh) {
      const old = this.#cache.get(key);
      this.#cache.set(key, obj);
      if (old === undefined) {
        added++;
        this.#emit("onAdd", (h) => h.onAdd?.(obj));
      } else if (old.metadata.resourceVersion !== obj.metadata.resourceVersion) {
        updated++;
        this.#emit("onUpdate", (h) => h.onUpdate?.(old, obj));
      }
    }
    for (const old of gone) {
      this.#cache.delete(keyOf(old));
      this.#emit("onDelete", (h) => h.onDelete?.(old, { finalStateUnknown: true }));
    }
    this.#resourceVersion = resourceVersion;
    this.#log.debug("listed", { objects: fresh.size, added, updated, deleted: gone.length, resourceVersion });
    if (!this.#synced) {
      this.#synced = true;
      for (const done of [...this.#syncWaiters]) done(true);
    }
  }

  /** One watch, until the server ends it. False when it ended at once without any event. */
  async #watch(signal: AbortSignal): Promise<boolean> {
    const o = this.#opts;
    const startedAt = this.#clock.now();
    let events = 0;
    this.#stats.watches++;
    const timeoutSeconds = o.watchTimeoutSeconds ?? Math.floor(300 * (1 + Math.random()));
    const stream = o.client.watch<T>(o.resource, {
      ...(o.namespace === undefined ? {} : { namespace: o.namespace }),
      ...(o.labelSelector === undefined ? {} : { labelSelector: o.labelSelector }),
      ...(o.fieldSelector === undefined ? {} : { fieldSelector: o.fieldSelector }),
      ...(this.#resourceVersion === undefined ? {} : { resourceVersion: this.#resourceVersion }),
      allowWatchBookmarks: true,
      timeoutSeconds,
      signal,
    });
    for await (const event of stream) {
      events++;
      this.#apply(event);
    }
    const healthy = events > 0 || this.#clock.now() - startedAt >= MIN_HEALTHY_WATCH_MS;
    this.#log.debug("watch ended", { events, resourceVersion: this.#resourceVersion, healthy });
    return healthy;
  }

  #apply(event: WatchEvent<T>): void {
    if (event.type === "BOOKMARK") {
      this.#stats.bookmarks++;
      this.#resourceVersion = event.resourceVersion;
      return;
    }
    const obj = event.object;
    const key = keyOf(obj);
    const old = this.#cache.get(key);
    if (event.type === "DELETED") {
      this.#cache.delete(key);
      this.#emit("onDelete", (h) => h.onDelete?.(obj, { finalStateUnknown: false }));
    } else {
      this.#cache.set(key, obj);
      if (old === undefined) this.#emit("onAdd", (h) => h.onAdd?.(obj));
      else this.#emit("onUpdate", (h) => h.onUpdate?.(old, obj));
    }
    this.#resourceVersion = obj.metadata.resourceVersion ?? this.#resourceVersion;
  }

  #startResync(signal: AbortSignal): () => void {
    const period = this.#opts.resyncPeriodMs ?? 0;
    if (period <= 0) return () => {};
    const tick = (): void => {
      if (signal.aborted) return;
      if (this.#synced) {
        this.#stats.resyncs++;
        for (const obj of this.#cache.values()) this.#emit("onUpdate", (h) => h.onUpdate?.(obj, obj));
      }
      timer = this.#clock.setTimeout(tick, period);
    };
    let timer: Timer = this.#clock.setTimeout(tick, period);
    return () => timer.cancel();
  }

  #emit(what: keyof EventHandler<T>, fn: (h: EventHandler<T>) => void): void {
    for (const h of this.#handlers) this.#call(what, () => fn(h));
  }

  #call(what: string, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.#log.error("event handler failed", { handler: what, error: (err as Error)?.message ?? String(err) });
    }
  }
}
