/**
 * The directory in one process's memory: for a single node, for tests, and (served over HTTP by
 * http.ts) for several node agents on one machine when there is no Valkey.
 *
 * Expiry is judged lazily against an injectable clock, so tests can move time instead of waiting.
 * Event ids have the shape of Valkey stream ids (`<ms>-<seq>`, the clock's milliseconds and a
 * sequence number within them, never going backwards even if the clock does). A blocked
 * readEvents waits on a wake-up from emit, not a poll; its timeout uses real time.
 */
import { ClasscacheError } from "../runtime/errors.ts";
import {
  checkName,
  checkTtl,
  compareEventIds,
  formatEventId,
  MAX_EVENTS,
  parseEventId,
  READ_COUNT,
  sortHolders,
  normalizeHolder,
  type EventId,
} from "./common.ts";
import type { BuildFailure, Directory, DirectoryEvent, EventRecord, Holder, Lease } from "./directory.ts";

export interface MemoryDirectoryOptions {
  /** Epoch milliseconds; Date.now unless a test injects its own. */
  now?: () => number;
  /** Events retained (default 10000); older ones are dropped. */
  maxEvents?: number;
}

interface Expiring<T> {
  value: T;
  expiresAt: number;
}

interface StoredEvent {
  id: EventId;
  record: EventRecord;
}

export class MemoryDirectory implements Directory {
  private readonly now: () => number;
  private readonly maxEvents: number;
  private readonly manifests = new Map<string, string>();
  private readonly bindings = new Map<string, string>();
  private readonly holderEntries = new Map<string, Map<string, Expiring<Holder>>>();
  private readonly leases = new Map<string, Expiring<{ owner: string; token: number }>>();
  /** Last fencing token per key; survives remove() so tokens never repeat. */
  private readonly fences = new Map<string, number>();
  private readonly failures = new Map<string, Expiring<BuildFailure>>();
  private readonly events: StoredEvent[] = [];
  private lastId: EventId = { ms: 0, seq: 0 };
  private readonly waiters = new Set<() => void>();
  private closed = false;

  constructor(opts: MemoryDirectoryOptions = {}) {
    this.now = opts.now ?? Date.now;
    this.maxEvents = opts.maxEvents ?? MAX_EVENTS;
  }

  publish(key: string, envelope: string, lease?: Lease): Promise<{ published: boolean; envelope: string | undefined }> {
    return this.op(() => {
      checkName("key", key);
      const current = this.manifests.get(key);
      if (current !== undefined) return { published: false, envelope: current };
      if (lease && !this.holdsLease(lease)) return { published: false, envelope: undefined };
      this.manifests.set(key, envelope);
      return { published: true, envelope };
    });
  }

  manifest(key: string): Promise<string | undefined> {
    return this.op(() => this.manifests.get(key));
  }

  replaceManifest(key: string, expected: string, next: string): Promise<boolean> {
    return this.op(() => {
      checkName("key", key);
      if (this.manifests.get(key) !== expected) return false;
      this.manifests.set(key, next);
      return true;
    });
  }

  keys(): Promise<string[]> {
    return this.op(() => [...this.manifests.keys()].sort());
  }

  bind(name: string, value: string): Promise<string> {
    return this.op(() => {
      checkName("name", name);
      const current = this.bindings.get(name);
      if (current !== undefined) return current;
      this.bindings.set(name, value);
      return value;
    });
  }

  binding(name: string): Promise<string | undefined> {
    return this.op(() => this.bindings.get(name));
  }

  unbind(name: string): Promise<void> {
    return this.op(() => {
      this.bindings.delete(name);
    });
  }

  remove(key: string): Promise<void> {
    return this.op(() => {
      this.manifests.delete(key);
      this.holderEntries.delete(key);
      this.leases.delete(key);
      this.failures.delete(key);
    });
  }

  announce(key: string, holder: Holder, ttlMs: number): Promise<void> {
    return this.op(() => {
      checkName("key", key);
      checkName("node", holder.node);
      checkTtl(ttlMs);
      let entries = this.holderEntries.get(key);
      if (!entries) {
        entries = new Map();
        this.holderEntries.set(key, entries);
      }
      entries.set(holder.node, { value: normalizeHolder(holder), expiresAt: this.now() + ttlMs });
    });
  }

  withdraw(key: string, node: string): Promise<void> {
    return this.op(() => {
      const entries = this.holderEntries.get(key);
      entries?.delete(node);
      if (entries?.size === 0) this.holderEntries.delete(key);
    });
  }

  holders(key: string): Promise<Holder[]> {
    return this.op(() => {
      const entries = this.holderEntries.get(key);
      if (!entries) return [];
      const now = this.now();
      for (const [node, e] of entries) if (e.expiresAt <= now) entries.delete(node);
      if (entries.size === 0) this.holderEntries.delete(key);
      return sortHolders([...entries.values()].map((e) => ({ ...e.value })));
    });
  }

  acquireLease(key: string, owner: string, ttlMs: number): Promise<Lease | undefined> {
    return this.op(() => {
      checkName("key", key);
      checkName("owner", owner);
      checkTtl(ttlMs);
      if (this.liveLease(key)) return undefined;
      const token = (this.fences.get(key) ?? 0) + 1;
      this.fences.set(key, token);
      this.leases.set(key, { value: { owner, token }, expiresAt: this.now() + ttlMs });
      return { key, owner, token };
    });
  }

  renewLease(lease: Lease, ttlMs: number): Promise<boolean> {
    return this.op(() => {
      checkTtl(ttlMs);
      if (!this.holdsLease(lease)) return false;
      this.leases.set(lease.key, { value: { owner: lease.owner, token: lease.token }, expiresAt: this.now() + ttlMs });
      return true;
    });
  }

  releaseLease(lease: Lease): Promise<boolean> {
    return this.op(() => {
      if (!this.holdsLease(lease)) return false;
      this.leases.delete(lease.key);
      return true;
    });
  }

  leaseOwner(key: string): Promise<string | undefined> {
    return this.op(() => this.liveLease(key)?.owner);
  }

  recordFailure(key: string, failure: BuildFailure, ttlMs: number): Promise<void> {
    return this.op(() => {
      checkName("key", key);
      checkTtl(ttlMs);
      const value = { node: failure.node, message: failure.message, attempts: failure.attempts, retryAt: failure.retryAt };
      this.failures.set(key, { value, expiresAt: this.now() + ttlMs });
    });
  }

  failure(key: string): Promise<BuildFailure | undefined> {
    return this.op(() => {
      const f = this.failures.get(key);
      if (f && f.expiresAt <= this.now()) this.failures.delete(key);
      else if (f) return { ...f.value };
      return undefined;
    });
  }

  clearFailure(key: string): Promise<void> {
    return this.op(() => {
      this.failures.delete(key);
    });
  }

  emit(event: DirectoryEvent): Promise<string> {
    return this.op(() => {
      const ms = Math.max(Math.floor(this.now()), this.lastId.ms);
      const id = ms === this.lastId.ms ? { ms, seq: this.lastId.seq + 1 } : { ms, seq: 0 };
      this.lastId = id;
      const record: EventRecord = { id: formatEventId(id), time: ms, event: structuredClone(event) };
      this.events.push({ id, record });
      if (this.events.length > this.maxEvents) this.events.splice(0, this.events.length - this.maxEvents);
      const waiters = [...this.waiters];
      this.waiters.clear();
      for (const wake of waiters) wake();
      return record.id;
    });
  }

  async readEvents(after: string, blockMs: number, signal?: AbortSignal): Promise<EventRecord[]> {
    const from = await this.op(() => parseEventId(after));
    const ready = this.eventsAfter(from);
    if (ready.length > 0 || blockMs <= 0 || signal?.aborted || this.closed) return ready;
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.waiters.delete(done);
        signal?.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, blockMs);
      this.waiters.add(done);
      signal?.addEventListener("abort", done, { once: true });
    });
    if (this.closed || signal?.aborted) return [];
    return this.eventsAfter(from);
  }

  lastEventId(): Promise<string> {
    return this.op(() => {
      const last = this.events.at(-1);
      return last ? last.record.id : "0";
    });
  }

  ping(): Promise<boolean> {
    return Promise.resolve(!this.closed);
  }

  /** Wakes every blocked reader (they return []); later calls fail. */
  close(): Promise<void> {
    this.closed = true;
    const waiters = [...this.waiters];
    this.waiters.clear();
    for (const wake of waiters) wake();
    return Promise.resolve();
  }

  private eventsAfter(from: EventId): EventRecord[] {
    // Binary search for the first event after `from`; events are in id order.
    let lo = 0;
    let hi = this.events.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (compareEventIds(this.events[mid]!.id, from) <= 0) lo = mid + 1;
      else hi = mid;
    }
    return this.events.slice(lo, lo + READ_COUNT).map((e) => structuredClone(e.record));
  }

  private liveLease(key: string): { owner: string; token: number } | undefined {
    const l = this.leases.get(key);
    if (!l) return undefined;
    if (l.expiresAt <= this.now()) {
      this.leases.delete(key);
      return undefined;
    }
    return l.value;
  }

  private holdsLease(lease: Lease): boolean {
    const l = this.liveLease(lease.key);
    return l !== undefined && l.owner === lease.owner && l.token === lease.token;
  }

  /** Runs a synchronous operation as a promise: a throw becomes a rejection. */
  private op<T>(fn: () => T): Promise<T> {
    try {
      if (this.closed) throw new ClasscacheError("internal", "the in-memory directory is closed");
      return Promise.resolve(fn());
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
  }
}
