/**
 * What a reconciler returns. Reconcilers are level-triggered: they get a key, read the current
 * state (the informer's cache, which may no longer have the object: it was deleted), and make the
 * world match. Outcomes are values, not control flow:
 *  - return {}                   done; the key's backoff is reset
 *  - return { requeueAfter: ms } done for now, look again later (polling something external)
 *  - throw an Error              transient: retried with per-key exponential backoff
 *  - throw a TerminalError       retrying cannot help (invalid spec): logged, not retried
 *                                until the object changes again
 */

export interface Result {
  /** Reconcile this key again after this many ms. */
  requeueAfter?: number;
}

export type Reconciler = (key: string, signal: AbortSignal) => Promise<Result | void>;

export class TerminalError extends Error {
  constructor(message: string, opts?: { cause?: unknown }) {
    super(message, opts);
    this.name = "TerminalError";
  }
}
