/**
 * The directory: what the nodes of a cluster agree on about archives — the one manifest per
 * key (write-once, signed by its builder; the directory stores it, agents verify it), which
 * nodes hold an archive (entries that expire unless heartbeated), who is building a key (a
 * lease with a fencing token), failed builds (with a retry time), and an event stream that
 * waiters block on instead of polling.
 *
 * Implementations: Valkey/Redis (valkey.ts), in memory (memory.ts), and the in-memory one
 * served over HTTP to other processes (http.ts). All pass one conformance suite.
 */

export interface Holder {
  /** Node name, unique in the cluster. */
  node: string;
  /** Base URL of the node's peer server, e.g. http://10.0.0.5:7071 */
  url: string;
  zone: string;
  /** False while the node is still pulling (it serves the blobs it has); absent once it holds them all. */
  complete?: boolean;
  /**
   * The JVMs on the node that have this key's archive mapped right now, and their class counts
   * from their perf counters: the hit rate workloads really get, not only the build's.
   */
  usage?: HolderUsage;
}

export interface HolderUsage {
  jvms: number;
  /** Classes the JVMs loaded from the archive (java.cls.sharedLoadedClasses, summed). */
  sharedClasses: number;
  /** All classes the JVMs loaded (shared and not, summed). */
  loadedClasses: number;
  /**
   * The archive's own mappings in those JVMs, from /proc/<pid>/smaps, summed: ΣRss − ΣPss is the
   * memory sharing the archive saved on the node. ro*: its read-only part, the shareable one.
   */
  rssKb?: number;
  pssKb?: number;
  roRssKb?: number;
  roPssKb?: number;
}

export interface Lease {
  key: string;
  owner: string;
  /** Fencing token: strictly increasing per key across all leases ever granted for it, even across remove(). */
  token: number;
}

export interface BuildFailure {
  node: string;
  message: string;
  /** Consecutive failed attempts for this key. */
  attempts: number;
  /** Epoch ms before which nobody should try again. */
  retryAt: number;
}

export type DirectoryEvent =
  | { type: "build-started"; key: string; node: string; token: number }
  | { type: "published"; key: string; node: string }
  | { type: "build-failed"; key: string; node: string; message: string; retryAt: number }
  | { type: "lease-released"; key: string; node: string }
  | { type: "pulled"; key: string; node: string; from: string[]; bytes: number; ms: number }
  | { type: "removed"; key: string; node: string };

export interface EventRecord {
  /** Opaque, ordered: pass the last one seen to readEvents to continue after it. */
  id: string;
  time: number;
  event: DirectoryEvent;
}

export interface Directory {
  /**
   * Stores `envelope` as the manifest of `key` unless one is there already (first publish
   * wins). With `lease`, publishes only while that lease — same owner and fencing token — is
   * still held, so a builder whose lease expired cannot publish. Returns the manifest in force.
   */
  publish(key: string, envelope: string, lease?: Lease): Promise<{ published: boolean; envelope: string | undefined }>;
  manifest(key: string): Promise<string | undefined>;
  /**
   * Replaces the manifest of `key` only while it is `expected` (compare-and-set): how a manifest
   * is signed again under a new key with no moment where none is published. False when it was
   * not `expected` (changed, or none).
   */
  replaceManifest(key: string, expected: string, next: string): Promise<boolean>;
  /** Every key with a manifest. */
  keys(): Promise<string[]>;
  /**
   * Stores `value` under `name` unless a value is there already (first bind wins), e.g. a
   * signed binding of a ClassCache's ref to the key built for it. Returns the value in force.
   */
  bind(name: string, value: string): Promise<string>;
  binding(name: string): Promise<string | undefined>;
  unbind(name: string): Promise<void>;

  /** Removes a key: its manifest, holders, lease and failure record. */
  remove(key: string): Promise<void>;

  /** Adds or refreshes a holder entry; it expires `ttlMs` after the last announce. */
  announce(key: string, holder: Holder, ttlMs: number): Promise<void>;
  withdraw(key: string, node: string): Promise<void>;
  /** Unexpired holders of `key`. */
  holders(key: string): Promise<Holder[]>;

  /** Takes the build lease of `key` if nobody holds it (SET NX PX semantics). */
  acquireLease(key: string, owner: string, ttlMs: number): Promise<Lease | undefined>;
  /** Extends a lease still held by the same owner and token. False if it was lost. */
  renewLease(lease: Lease, ttlMs: number): Promise<boolean>;
  /** Releases a lease only if still held by the same owner and token (compare-and-delete). */
  releaseLease(lease: Lease): Promise<boolean>;
  /** The owner of the current lease, if any. */
  leaseOwner(key: string): Promise<string | undefined>;

  /** Records a failed build; the record expires after `ttlMs`. */
  recordFailure(key: string, failure: BuildFailure, ttlMs: number): Promise<void>;
  failure(key: string): Promise<BuildFailure | undefined>;
  clearFailure(key: string): Promise<void>;

  /** Appends an event to the stream; returns its id. */
  emit(event: DirectoryEvent): Promise<string>;
  /**
   * Events after `after` ("0" for everything retained), waiting up to `blockMs` for the first
   * one when there are none yet (`blockMs <= 0`: don't wait). At most 1000 events per call.
   * Resolves with [] on timeout or abort.
   */
  readEvents(after: string, blockMs: number, signal?: AbortSignal): Promise<EventRecord[]>;
  /** The id of the newest event ("0" when there is none): read after it to see only new ones. */
  lastEventId(): Promise<string>;

  /** Is the directory reachable? */
  ping(): Promise<boolean>;
  close(): Promise<void>;
}
