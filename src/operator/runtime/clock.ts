/**
 * Time, injected: the runtime never calls Date.now or setTimeout directly, so tests can drive it
 * with a FakeClock.
 */

export interface Timer {
  cancel(): void;
}

export interface Clock {
  /** Milliseconds since the epoch. The real clock is monotonic (it does not jump with NTP). */
  now(): number;
  setTimeout(fn: () => void, ms: number): Timer;
}

const origin = performance.timeOrigin;

export const realClock: Clock = {
  now: () => origin + performance.now(),
  setTimeout(fn, ms) {
    const t = setTimeout(fn, Math.max(0, ms));
    return { cancel: () => clearTimeout(t) };
  },
};

/** Resolves after `ms`, or as soon as `signal` aborts (it never rejects: check `signal.aborted`). */
export function sleep(clock: Clock, ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      timer.cancel();
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = clock.setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}

/** An AbortSignal that aborts after `ms` of this clock's time; cancel() when no longer needed. */
export function timeoutSignal(clock: Clock, ms: number, reason: string): { signal: AbortSignal; cancel(): void } {
  const ctl = new AbortController();
  const timer = clock.setTimeout(() => ctl.abort(new DOMException(reason, "TimeoutError")), ms);
  return { signal: ctl.signal, cancel: () => timer.cancel() };
}

interface FakeTimer {
  due: number;
  seq: number;
  fn: () => void;
}

/**
 * A clock that moves only when told to. `advance` fires due timers in order and lets the promise
 * callbacks they start run before the next one, so async code driven by timers makes progress.
 */
export class FakeClock implements Clock {
  #now: number;
  #seq = 0;
  readonly #timers = new Set<FakeTimer>();

  constructor(start = Date.UTC(2026, 0, 1)) {
    this.#now = start;
  }

  now(): number {
    return this.#now;
  }

  setTimeout(fn: () => void, ms: number): Timer {
    const t: FakeTimer = { due: this.#now + Math.max(0, ms), seq: this.#seq++, fn };
    this.#timers.add(t);
    return { cancel: () => this.#timers.delete(t) };
  }

  /** Timers not yet fired. */
  pending(): number {
    return this.#timers.size;
  }

  async advance(ms: number): Promise<void> {
    const target = this.#now + ms;
    await settle();
    for (;;) {
      const next = this.#next();
      if (!next || next.due > target) break;
      this.#timers.delete(next);
      this.#now = next.due;
      next.fn();
      await settle();
    }
    this.#now = target;
    await settle();
  }

  #next(): FakeTimer | undefined {
    let best: FakeTimer | undefined;
    for (const t of this.#timers) if (!best || t.due < best.due || (t.due === best.due && t.seq < best.seq)) best = t;
    return best;
  }
}

/** Lets pending promise callbacks (and what they schedule in turn) run. */
export async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}
