/**
 * A work queue with client-go's guarantees:
 *  - an item is in the queue at most once, however often it is added (adds coalesce);
 *  - an item is never handed to two workers at once: added while being processed, it waits and
 *    is queued again when its worker calls done();
 *  - addAfter delays an item (the earliest of several delays wins); addRateLimited delays it by
 *    its own exponential backoff, which forget() resets.
 * Items are compared with SameValueZero (use strings such as "namespace/name").
 */
import { realClock, type Clock, type Timer } from "./clock.ts";

export interface RateLimiter<T> {
  /** The delay before `item` is retried; counts a failure. */
  when(item: T): number;
  /** Success: the next failure starts from the base delay again. */
  forget(item: T): void;
  numRequeues(item: T): number;
}

export interface ExponentialBackoffOptions {
  /** Delay after the first failure (default 5 ms). */
  baseDelayMs?: number;
  /** Never more than this (default 5 min). */
  maxDelayMs?: number;
}

/** base · 2^failures, capped: 5 ms, 10 ms, 20 ms … 5 min, per item (client-go's ItemExponentialFailureRateLimiter). */
export class ExponentialBackoffRateLimiter<T> implements RateLimiter<T> {
  readonly #base: number;
  readonly #max: number;
  readonly #failures = new Map<T, number>();

  constructor(opts: ExponentialBackoffOptions = {}) {
    this.#base = opts.baseDelayMs ?? 5;
    this.#max = opts.maxDelayMs ?? 5 * 60_000;
  }

  when(item: T): number {
    const failures = this.#failures.get(item) ?? 0;
    this.#failures.set(item, failures + 1);
    return Math.min(this.#base * 2 ** failures, this.#max);
  }

  forget(item: T): void {
    this.#failures.delete(item);
  }

  numRequeues(item: T): number {
    return this.#failures.get(item) ?? 0;
  }
}

export interface WorkQueueOptions<T> {
  clock?: Clock;
  rateLimiter?: RateLimiter<T>;
}

export class WorkQueue<T> {
  readonly #clock: Clock;
  readonly #limiter: RateLimiter<T>;
  /** Waiting to be handed out, in order. */
  readonly #queue: T[] = [];
  /** Needs processing: queued, or added again while being processed. */
  readonly #dirty = new Set<T>();
  /** Handed to a worker, not yet done(). */
  readonly #processing = new Set<T>();
  /** Delayed by addAfter. */
  readonly #delayed = new Map<T, { readyAt: number; timer: Timer }>();
  /** Workers blocked in get(). */
  readonly #getters: ((item: T | undefined) => void)[] = [];
  #shuttingDown = false;

  constructor(opts: WorkQueueOptions<T> = {}) {
    this.#clock = opts.clock ?? realClock;
    this.#limiter = opts.rateLimiter ?? new ExponentialBackoffRateLimiter<T>();
  }

  add(item: T): void {
    if (this.#shuttingDown || this.#dirty.has(item)) return;
    this.#dirty.add(item);
    if (this.#processing.has(item)) return; // queued again by done()
    this.#enqueue(item);
  }

  /** Adds `item` after `delayMs`. While it waits, a shorter delay replaces a longer one, not the reverse. */
  addAfter(item: T, delayMs: number): void {
    if (this.#shuttingDown) return;
    if (delayMs <= 0) {
      this.add(item);
      return;
    }
    const readyAt = this.#clock.now() + delayMs;
    const waiting = this.#delayed.get(item);
    if (waiting && waiting.readyAt <= readyAt) return;
    waiting?.timer.cancel();
    const timer = this.#clock.setTimeout(() => {
      this.#delayed.delete(item);
      this.add(item);
    }, delayMs);
    this.#delayed.set(item, { readyAt, timer });
  }

  /** Adds `item` after its rate limiter's delay (which grows with every call until forget). */
  addRateLimited(item: T): void {
    this.addAfter(item, this.#limiter.when(item));
  }

  /** Items waiting to be handed out (not those being processed or delayed). */
  get length(): number {
    return this.#queue.length;
  }

  forget(item: T): void {
    this.#limiter.forget(item);
  }

  numRequeues(item: T): number {
    return this.#limiter.numRequeues(item);
  }

  /**
   * The next item, waiting for one if needed; undefined once the queue is shutting down. The
   * caller owns the item until it calls done(item).
   */
  get(): Promise<T | undefined> {
    if (this.#shuttingDown) return Promise.resolve(undefined);
    if (this.#queue.length > 0) return Promise.resolve(this.#claim(this.#queue.shift() as T));
    return new Promise((resolve) => this.#getters.push(resolve));
  }

  /** Processing of `item` finished; if it was added meanwhile, it is queued again now. */
  done(item: T): void {
    this.#processing.delete(item);
    if (this.#dirty.has(item) && !this.#shuttingDown) this.#enqueue(item);
  }

  /** Stops handing out items: waiting get()s resolve undefined, delayed adds are dropped. */
  shutDown(): void {
    if (this.#shuttingDown) return;
    this.#shuttingDown = true;
    for (const { timer } of this.#delayed.values()) timer.cancel();
    this.#delayed.clear();
    for (const resolve of this.#getters.splice(0)) resolve(undefined);
  }

  isShuttingDown(): boolean {
    return this.#shuttingDown;
  }

  /** Items ready to be handed out. */
  len(): number {
    return this.#queue.length;
  }

  /** Items waiting for their addAfter delay. */
  delayedLen(): number {
    return this.#delayed.size;
  }

  processing(): number {
    return this.#processing.size;
  }

  #enqueue(item: T): void {
    const getter = this.#getters.shift();
    if (getter) getter(this.#claim(item));
    else this.#queue.push(item);
  }

  #claim(item: T): T {
    this.#dirty.delete(item);
    this.#processing.add(item);
    return item;
  }
}
