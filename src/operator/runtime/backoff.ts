/** Exponential backoff with jitter, for retrying a connection (watch restarts, relists). */

export interface BackoffOptions {
  initialMs?: number;
  maxMs?: number;
  factor?: number;
  /** Adds up to this fraction of the delay at random (0.2: +0..20 %). */
  jitter?: number;
  random?: () => number;
}

export class Backoff {
  readonly #initial: number;
  readonly #max: number;
  readonly #factor: number;
  readonly #jitter: number;
  readonly #random: () => number;
  #attempt = 0;

  constructor(opts: BackoffOptions = {}) {
    this.#initial = opts.initialMs ?? 800;
    this.#max = opts.maxMs ?? 30_000;
    this.#factor = opts.factor ?? 2;
    this.#jitter = opts.jitter ?? 0.2;
    this.#random = opts.random ?? Math.random;
  }

  /** The delay before the next attempt; each call grows it until the maximum. */
  next(): number {
    const base = Math.min(this.#initial * this.#factor ** this.#attempt, this.#max);
    this.#attempt++;
    return Math.round(base * (1 + this.#random() * this.#jitter));
  }

  reset(): void {
    this.#attempt = 0;
  }
}
