/**
 * Optimistic concurrency: read, change, write with the resourceVersion that was read; when someone
 * else wrote in between (409 Conflict), read again and redo the change. Like client-go's
 * retry.RetryOnConflict with its DefaultRetry (5 attempts, 10 ms apart, 10 % jitter).
 */
import { setTimeout as sleep } from "node:timers/promises";
import { isConflict } from "./errors.ts";

export interface RetryOptions {
  attempts?: number;
  delayMs?: number;
  jitter?: number;
  signal?: AbortSignal;
}

/** Runs `fn` (which must re-read what it changes) until it does not fail with 409. */
export async function retryOnConflict<T>(fn: (attempt: number) => Promise<T>, opts: RetryOptions = {}): Promise<T> {
  const attempts = opts.attempts ?? 5;
  const delayMs = opts.delayMs ?? 10;
  const jitter = opts.jitter ?? 0.1;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (err) {
      if (!isConflict(err) || attempt >= attempts) throw err;
    }
    await sleep(delayMs * (1 + Math.random() * jitter), undefined, opts.signal ? { signal: opts.signal } : {});
  }
}
