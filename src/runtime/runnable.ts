/**
 * Everything long-running has one shape: `start(signal)` runs until the signal aborts (then
 * returns once it has stopped) or until it fails (then rejects). A RunGroup runs several as one:
 * the first failure, or the outer signal, stops all of them, and it waits for them to stop.
 */
import type { Logger } from "./log.ts";

export interface Runnable {
  readonly name: string;
  /** Resolves after `signal` aborted and everything was cleaned up; rejects on failure. */
  start(signal: AbortSignal): Promise<void>;
}

/** A runnable of a group failed; `cause` is what it threw. */
export class RunnableError extends Error {
  readonly runnable: string;
  constructor(runnable: string, cause: unknown) {
    super(`${runnable} failed: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
    this.name = "RunnableError";
    this.runnable = runnable;
  }
}

/** Some runnables were still running when the shutdown deadline passed. */
export class ShutdownTimeoutError extends Error {
  readonly pending: string[];
  constructor(group: string, pending: string[], timeoutMs: number) {
    super(`${group}: ${pending.join(", ")} did not stop within ${timeoutMs} ms`);
    this.name = "ShutdownTimeoutError";
    this.pending = pending;
  }
}

export interface RunGroupOptions {
  /** How long to wait for the runnables once they were told to stop (default 30 s). */
  shutdownTimeoutMs?: number;
  logger?: Logger;
  /** Schedules the shutdown deadline and returns its cancel function (a fake in tests). */
  setTimer?: (fn: () => void, ms: number) => () => void;
}

const realTimer = (fn: () => void, ms: number): (() => void) => {
  const t = setTimeout(fn, ms);
  return () => clearTimeout(t);
};

/** True for what a runnable throws because it was told to stop, rather than because it broke. */
export function isAbortError(err: unknown, signal: AbortSignal): boolean {
  if (!signal.aborted) return false;
  return err === signal.reason || (err instanceof Error && err.name === "AbortError");
}

/** Resolves when `signal` aborts. */
export function aborted(signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => signal.addEventListener("abort", () => resolve(), { once: true }));
}

export class RunGroup implements Runnable {
  readonly name: string;
  readonly #runnables: Runnable[];
  readonly #opts: RunGroupOptions;

  constructor(name: string, runnables: Iterable<Runnable>, opts: RunGroupOptions = {}) {
    this.name = name;
    this.#runnables = [...runnables];
    this.#opts = opts;
  }

  /**
   * Starts every runnable. Resolves when all returned (normally after `signal` aborted). When one
   * fails, the others are aborted and the group rejects with a RunnableError for the first failure
   * once they stopped — or the deadline passed; a deadline passed on a plain shutdown is a
   * ShutdownTimeoutError. A runnable that returns early (a one-shot task) stops nothing.
   */
  async start(signal: AbortSignal): Promise<void> {
    const ctl = new AbortController();
    const forward = (): void => ctl.abort(signal.reason);
    if (signal.aborted) forward();
    else signal.addEventListener("abort", forward, { once: true });

    const log = this.#opts.logger;
    const running = new Set<Runnable>(this.#runnables);
    let failure: RunnableError | undefined;
    const runs = this.#runnables.map(async (r) => {
      try {
        await r.start(ctl.signal);
      } catch (err) {
        if (!isAbortError(err, ctl.signal)) {
          log?.error("runnable failed", { group: this.name, runnable: r.name, error: (err as Error)?.message ?? String(err) });
          failure ??= new RunnableError(r.name, err);
          ctl.abort(failure);
        }
      } finally {
        running.delete(r);
      }
    });
    const all = Promise.all(runs);
    try {
      await Promise.race([all, aborted(ctl.signal)]);
      if (running.size > 0) {
        log?.debug("stopping runnables", { group: this.name, running: names(running) });
        const timeoutMs = this.#opts.shutdownTimeoutMs ?? 30_000;
        if (!(await settlesWithin(all, timeoutMs, this.#opts.setTimer ?? realTimer))) {
          const late = new ShutdownTimeoutError(this.name, names(running), timeoutMs);
          log?.error("runnables did not stop in time", { group: this.name, running: late.pending, timeoutMs });
          throw failure ?? late;
        }
      }
      if (failure) throw failure;
    } finally {
      signal.removeEventListener("abort", forward);
    }
  }
}

function names(rs: Iterable<Runnable>): string[] {
  return [...rs].map((r) => r.name);
}

/** Waits for `p` at most `ms`; true when it settled in time. */
export async function settlesWithin(p: Promise<unknown>, ms: number, setTimer = realTimer): Promise<boolean> {
  let cancel: (() => void) | undefined;
  const deadline = new Promise<false>((resolve) => (cancel = setTimer(() => resolve(false), ms)));
  try {
    return await Promise.race([p.then(() => true as const, () => true as const), deadline]);
  } finally {
    cancel?.();
  }
}
