/**
 * The node agent's core: `ensure(key)` — make an archive present and verified in this node's
 * store. A local hit is done; else a manifest in the directory is pulled from holders (same
 * zone first, at random, resumable, verified); else one node in the cluster takes the build
 * lease and builds while the others wait on the event stream. A dead builder loses its lease
 * and a waiter takes over; a failed build is recorded with backoff and waiters see it.
 */
import { nodeArch } from "../util/arch.ts";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import type { Manifest } from "../archive/manifest.ts";
import { KEY_PATTERN } from "../archive/key.ts";
import { openBinding, openEnvelope, SignatureError, signManifest, type RefBinding, type Signer, type TrustStore } from "../archive/signing.ts";
import { offerName } from "../directory/common.ts";
import { prepareBuild, type BuildRequest, type BuildResult } from "../build/pipeline.ts";
import type { Directory, Holder, Lease } from "../directory/directory.ts";
import { orderHolders, pullBlob, Quarantine } from "../p2p/puller.ts";
import { ClasscacheError } from "../runtime/errors.ts";
import type { Logger } from "../runtime/log.ts";
import { asStoreError, type Journal, type LocalStore } from "../store/store.ts";
import type { NodeMetrics } from "./metrics.ts";
import { fileId, scanUsage, SmapsCache } from "./usage.ts";

/** What to build if nobody has built the key yet: a build request without store and root. */
export type BuildSpec = Omit<BuildRequest, "store" | "root" | "force">;

export interface EnsureRequest {
  key?: string;
  build?: BuildSpec;
  /**
   * A ClassCache's ref (the digest of a workload's build inputs): the key is looked up from the
   * directory's signed binding, and the node records ref → key in its store.
   */
  ref?: string;
}

/** The JVM's arch naming, as manifests record it (see jvm/jdk.ts). */
export { nodeArch };

export interface EnsureResult {
  key: string;
  /** local: it was here; pulled: from peers; built: this node built it. */
  source: "local" | "pulled" | "built";
  from: string[];
  ms: number;
  manifest: Manifest;
}

export interface AgentOptions {
  node: string;
  zone: string;
  /** This node's peer server, as other nodes reach it. */
  url: string;
  store: LocalStore;
  /** Where workload JVMs on this node see the store. */
  root: string;
  directory: Directory;
  trust: TrustStore;
  /** Only nodes with a signing key build; the others only pull. */
  signer: Signer | undefined;
  token: string;
  log: Logger;
  metrics: NodeMetrics;
  holderTtlMs?: number;
  leaseTtlMs?: number;
  /** First retry delay after a failed build; doubles per attempt up to maxBackoffMs. */
  backoffMs?: number;
  maxBackoffMs?: number;
  /** How long a waiter waits for holders or a build before giving up. */
  waitMs?: number;
  pullConcurrency?: number;
  /** Copies of one blob this node serves before it sends pullers to other complete holders. */
  uploadBudget?: number;
  random?: () => number;
}

export class BuildFailedError extends ClasscacheError {}

export class NodeAgent {
  readonly opts: Required<Omit<AgentOptions, "signer">> & { signer: Signer | undefined };
  readonly quarantine = new Quarantine();
  /** One attempt per key; it is aborted only when every caller waiting on it has aborted. */
  private readonly inflight = new Map<string, { p: Promise<EnsureResult>; ac: AbortController; waiters: number }>();
  /**
   * Blobs of verified manifests being pulled right now, by digest: once one is in the store
   * this node serves it to peers, before its own pull is complete (fan-out, not a hot spot).
   */
  private readonly pulling = new Map<string, number>();
  private readonly pullingKeys = new Set<string>();
  /** How many times each blob was sent to a peer, and which key it belongs to. */
  private readonly served = new Map<string, number>();
  private readonly delivered = new Map<string, number>();
  private readonly blobKeys = new Map<string, string>();
  /** The archive blob of each key in the store, for the heartbeat's usage scan. */
  private readonly archiveOfKey = new Map<string, { sha: string; file: string | undefined }>();
  /** Memory figures of the JVMs mapping an archive: smaps is re-read at most once a minute per JVM. */
  private readonly smaps = new SmapsCache();
  /** When each key was last asked for: recently used keys are kept by gc. */
  private readonly lastEnsured = new Map<string, number>();

  constructor(opts: AgentOptions) {
    this.opts = {
      holderTtlMs: 30_000,
      leaseTtlMs: 30_000,
      backoffMs: 30_000,
      maxBackoffMs: 15 * 60_000,
      waitMs: 15 * 60_000,
      pullConcurrency: 4,
      uploadBudget: 4,
      random: Math.random,
      ...opts,
    };
  }

  private get self(): Holder {
    return { node: this.opts.node, url: this.opts.url, zone: this.opts.zone };
  }

  /** Concurrent ensures of one key on this node share one attempt. */
  async ensure(req: EnsureRequest, signal?: AbortSignal): Promise<EnsureResult> {
    const t0 = performance.now();
    if (req.ref !== undefined && !KEY_PATTERN.test(req.ref)) throw new ClasscacheError("usage", "ref must be 64 lowercase hex digits");
    if (req.key !== undefined && !KEY_PATTERN.test(req.key)) throw new ClasscacheError("usage", "key must be 64 lowercase hex digits");
    if (req.ref) {
      if (req.key || req.build) throw new ClasscacheError("usage", "a ref is only looked up here, never bound (the operator binds refs); ask for a ref alone");
      // The directory's binding named the key: record it locally, without signing and binding it again.
      const binding = await this.resolveRef(req.ref);
      const r = await this.ensure({ key: binding.key }, signal);
      await this.opts.store.setRef(binding.scope, `${req.ref}.${r.manifest.jvm.arch}`, r.key, binding.issuedAt);
      return r;
    }
    const prepared = req.build ? await prepareBuild({ ...req.build, store: this.opts.store.dir, root: this.opts.root }, { log: this.opts.log }) : undefined;
    const key = req.key ?? prepared?.key;
    if (!key) throw new ClasscacheError("usage", "ensure needs a key or a build spec");
    if (prepared && req.key && prepared.key !== req.key) {
      throw new ClasscacheError("input", `the build spec gives key ${prepared.key}, not the requested ${req.key}`, { hint: "the app, JDK, agent or options differ from the ones the key was built for" });
    }
    this.lastEnsured.set(key, Date.now());
    let entry = this.inflight.get(key);
    if (!entry) {
      const build = prepared ? () => prepared.run() : undefined;
      const ac = new AbortController();
      const p = this.ensureKey(key, build, t0, ac.signal).finally(() => this.inflight.delete(key));
      entry = { p, ac, waiters: 0 };
      this.inflight.set(key, entry);
    }
    return this.join(entry, signal);
  }

  /** Waits for a shared attempt; a caller that aborts stops waiting, and the last one to abort stops the attempt. */
  private async join(entry: { p: Promise<EnsureResult>; ac: AbortController; waiters: number }, signal: AbortSignal | undefined): Promise<EnsureResult> {
    signal?.throwIfAborted();
    entry.waiters++;
    if (!signal) return entry.p;
    let onAbort: () => void = () => {};
    const aborted = new Promise<never>((_, reject) => {
      onAbort = () => {
        if (--entry.waiters === 0) entry.ac.abort(signal.reason);
        reject(signal.reason instanceof Error ? signal.reason : new Error("aborted"));
      };
      signal.addEventListener("abort", onAbort, { once: true });
    });
    aborted.catch(() => {}); // observed through the race below
    try {
      return await Promise.race([entry.p, aborted]);
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
  }

  /**
   * Leaves a build Job's offer for the operator: every blob it names is in the store (checked
   * by the caller, see admitManifest), kept there unreferenced until the operator has signed the
   * manifest and bound the ref; then this node's want for the ref pulls it — from itself.
   */
  async offer(ref: string, arch: string, offer: { grant: string; build: string }): Promise<void> {
    const name = offerName(ref, arch);
    // A newer build of the same ref replaces an older offer the operator has not taken yet.
    await this.opts.directory.unbind(name);
    await this.opts.directory.bind(name, JSON.stringify({ ...offer, node: this.opts.node }));
  }

  /**
   * The directory's signed binding for `ref` on this node's arch. One older than the newest this
   * node has recorded for the ref is a replay (an old binding written back) and is refused.
   */
  private async resolveRef(ref: string): Promise<RefBinding> {
    const name = `${ref}.${nodeArch()}`;
    const text = await this.opts.directory.binding(name);
    if (!text) {
      throw new ClasscacheError("not-found", `nothing has been built for ref ${ref.slice(0, 12)} on ${nodeArch()} yet`, { hint: "the ClassCache's build Job publishes it; its status says how far it got" });
    }
    let binding: RefBinding;
    try {
      binding = openBinding(text, this.opts.trust, ref, nodeArch());
    } catch (err) {
      if (!(err instanceof SignatureError)) throw err;
      this.opts.metrics.verificationFailures.inc({ reason: "signature" });
      this.opts.log.warn("binding rejected", { ref: ref.slice(0, 12), reason: err.message });
      throw new ClasscacheError("verification", `the directory's binding of ref ${ref.slice(0, 12)} was rejected: ${err.message}`);
    }
    const known = await this.opts.store.getRef(binding.scope, name);
    if (known && binding.issuedAt < known.issuedAt) {
      this.opts.metrics.verificationFailures.inc({ reason: "replay" });
      this.opts.log.warn("binding rejected", { ref: ref.slice(0, 12), scope: binding.scope, reason: "older than the one this node holds", issuedAt: binding.issuedAt, held: known.issuedAt });
      throw new ClasscacheError("verification", `the directory's binding of ref ${ref.slice(0, 12)} was issued at ${new Date(binding.issuedAt).toISOString()}, before the one this node holds (${new Date(known.issuedAt).toISOString()}): a replayed binding is refused`);
    }
    return binding;
  }

  private async ensureKey(key: string, build: (() => Promise<BuildResult>) | undefined, t0: number, signal?: AbortSignal): Promise<EnsureResult> {
    const { directory: dir, store, log } = this.opts;
    const deadline = Date.now() + this.opts.waitMs;
    for (;;) {
      signal?.throwIfAborted();
      // Read the stream position first, so no event between the checks and the wait is missed.
      const cursor = await dir.lastEventId();
      const local = await store.getManifest(key);
      if (local) {
        await store.touch(key);
        return this.result(key, "local", [], t0, local);
      }
      const envelope = await dir.manifest(key);
      if (envelope) {
        const manifest = this.verify(envelope, key);
        const from = await this.pull(manifest, deadline, signal);
        return this.result(key, "pulled", from, t0, manifest);
      }
      const failure = await dir.failure(key);
      if (failure && failure.retryAt > Date.now()) {
        throw new BuildFailedError("training", `the build of ${key.slice(0, 12)} failed on ${failure.node} (attempt ${failure.attempts}): ${failure.message}`, {
          hint: `the next attempt is allowed after ${new Date(failure.retryAt).toISOString()}`,
        });
      }
      if (build && this.opts.signer) {
        const lease = await dir.acquireLease(key, this.opts.node, this.opts.leaseTtlMs);
        if (lease) {
          const built = await this.buildUnderLease(key, lease, build, failure?.attempts ?? 0);
          if (built) return this.result(key, "built", [], t0, built);
          continue; // lost the race to publish: pull the winner
        }
      } else if (!(await dir.leaseOwner(key))) {
        throw new ClasscacheError("not-found", `no archive for key ${key.slice(0, 12)} in the directory, and ${build ? "this node has no signing key to build it" : "no build spec was given"}`, {
          hint: build ? "run a node with --signing-key, or build where the signing key is" : "pass the build spec (app, JDK, agent) so a node can build it",
        });
      }
      if (Date.now() > deadline) throw new ClasscacheError("not-found", `gave up waiting for key ${key.slice(0, 12)} to be built`);
      log.debug("waiting for another node", { key: key.slice(0, 12) });
      await this.waitForKey(key, cursor, Math.min(this.opts.leaseTtlMs, deadline - Date.now()), signal);
    }
  }

  /** Wakes on any event about `key`, or after `ms` (to re-check a lease that may have expired). */
  private async waitForKey(key: string, cursor: string, ms: number, signal?: AbortSignal): Promise<void> {
    const until = Date.now() + ms;
    let after = cursor;
    while (Date.now() < until) {
      const events = await this.opts.directory.readEvents(after, Math.max(1, until - Date.now()), signal);
      if (events.length === 0) return;
      after = events[events.length - 1]!.id;
      if (events.some((e) => e.event.key === key)) return;
    }
  }

  private verify(envelope: string, key: string): Manifest {
    try {
      return openEnvelope(envelope, this.opts.trust, key);
    } catch (err) {
      if (err instanceof SignatureError) {
        this.opts.metrics.verificationFailures.inc({ reason: "signature" });
        throw new ClasscacheError("verification", `the manifest of ${key.slice(0, 12)} in the directory was rejected: ${err.message}`, {
          hint: "someone wrote a manifest that no trusted key signed; nothing of it was downloaded",
        });
      }
      throw err;
    }
  }

  /** Builds while renewing the lease; publishes with the lease's fencing token. */
  private async buildUnderLease(key: string, lease: Lease, build: () => Promise<{ manifest: Manifest }>, attempts: number): Promise<Manifest | undefined> {
    const { directory: dir, log, metrics } = this.opts;
    await dir.emit({ type: "build-started", key, node: this.opts.node, token: lease.token });
    let lost = false;
    const renew = setInterval(() => {
      dir.renewLease(lease, this.opts.leaseTtlMs).then(
        (ok) => {
          if (!ok) lost = true;
        },
        () => {},
      );
    }, Math.max(200, this.opts.leaseTtlMs / 3));
    const t0 = performance.now();
    try {
      const { manifest } = await build();
      metrics.builds.inc({ result: "ok" });
      metrics.buildSeconds.observe((performance.now() - t0) / 1000);
      if (lost) log.warn("build lease lost during the build", { key: key.slice(0, 12) });
      const { published } = await dir.publish(key, signManifest(manifest, this.opts.signer!), lease);
      if (!published) {
        // Someone else published first (our lease had expired): theirs is the archive for this key.
        await this.opts.store.removeManifest(key);
        return undefined;
      }
      await dir.clearFailure(key);
      await dir.announce(key, this.self, this.opts.holderTtlMs);
      await dir.emit({ type: "published", key, node: this.opts.node });
      this.opts.metrics.hitRate.set({ key: key.slice(0, 12) }, manifest.verification.hitRate);
      return manifest;
    } catch (err) {
      metrics.builds.inc({ result: "failed" });
      const n = attempts + 1;
      const backoff = Math.min(this.opts.backoffMs * 2 ** (n - 1), this.opts.maxBackoffMs);
      const message = failureMessage(err);
      const retryAt = Date.now() + backoff;
      await dir.recordFailure(key, { node: this.opts.node, message, attempts: n, retryAt }, backoff + this.opts.maxBackoffMs);
      await dir.emit({ type: "build-failed", key, node: this.opts.node, message, retryAt });
      throw err;
    } finally {
      clearInterval(renew);
      await dir.releaseLease(lease);
      await dir.emit({ type: "lease-released", key, node: this.opts.node }).catch(() => {});
    }
  }

  /**
   * Pulls every blob of a verified manifest this store lacks, then makes it visible. Downloads
   * run outside the store lock; the final check-link-publish runs under it, so gc cannot remove
   * a blob between the check and the manifest that protects it.
   */
  private async pull(manifest: Manifest, deadline: number, signal?: AbortSignal): Promise<string[]> {
    const { store, directory: dir, metrics } = this.opts;
    const t0 = performance.now();
    const from = new Set<string>();
    let bytes = 0;
    const journal: Journal = { blobs: [], layouts: [] };
    const wanted = [manifest.archive, ...manifest.layout.files];
    for (const b of wanted) {
      this.pulling.set(b.sha256, b.size);
      this.blobKeys.set(b.sha256, manifest.key);
    }
    try {
      for (let round = 0; ; round++) {
        const missing = await this.missingBlobs(manifest);
        if (missing.length > 0) {
          if (round >= 3) throw new ClasscacheError("store", `blobs of ${manifest.key.slice(0, 12)} keep disappearing from the store while it is pulled`);
          const r = await this.download(manifest.key, missing, deadline, journal, signal);
          r.from.forEach((n) => from.add(n));
          bytes += r.bytes;
        }
        const done = await store.withBuildLock(async () => {
          if ((await this.missingBlobs(manifest)).length > 0) return false;
          await store.linkLayout(manifest.layout);
          await store.publishManifest(manifest);
          return true;
        });
        if (done) break;
      }
    } catch (err) {
      metrics.pulls.inc({ result: "failed" });
      // A failed pull leaves the store as it was: blobs it imported and no manifest names go.
      await store.withBuildLock(() => store.rollback(journal)).catch(() => {});
      await dir.withdraw(manifest.key, this.opts.node).catch(() => {});
      throw asStoreError(err, store.dir);
    } finally {
      for (const b of wanted) this.pulling.delete(b.sha256);
      this.pullingKeys.delete(manifest.key);
    }
    // A pull fetched something from peers; an archive whose blobs were all here already (an
    // upload this node received, adopted once published) is "local".
    metrics.pulls.inc({ result: from.size > 0 ? "ok" : "local" });
    metrics.hitRate.set({ key: manifest.key.slice(0, 12) }, manifest.verification.hitRate);
    await dir.announce(manifest.key, this.self, this.opts.holderTtlMs);
    await dir.emit({ type: "pulled", key: manifest.key, node: this.opts.node, from: [...from], bytes, ms: Math.round(performance.now() - t0) });
    return [...from];
  }

  private async missingBlobs(manifest: Manifest): Promise<{ sha256: string; size: number }[]> {
    const wanted = [{ sha256: manifest.archive.sha256, size: manifest.archive.size }, ...manifest.layout.files];
    const missing: { sha256: string; size: number }[] = [];
    for (const b of wanted) if (!missing.some((m) => m.sha256 === b.sha256) && !(await this.opts.store.hasBlob(b.sha256))) missing.push({ sha256: b.sha256, size: b.size });
    return missing;
  }

  /** Downloads blobs from holders, a few at a time, each verified before it becomes a blob. */
  private async download(key: string, blobs: { sha256: string; size: number }[], deadline: number, journal: Journal, signal?: AbortSignal): Promise<{ from: string[]; bytes: number }> {
    const { store, metrics } = this.opts;
    const from = new Set<string>();
    let bytes = 0;
    const work = await store.workDir("pull");
    try {
      // Each node pulls in its own random order, so early pullers hold different blobs to share.
      const queue = shuffle([...blobs], this.opts.random);
      const worker = async () => {
        for (let b = queue.shift(); b; b = queue.shift()) {
          const holders = await this.holdersOf(key, deadline, signal);
          const tmp = join(work, b.sha256);
          const r = await pullBlob({
            sha256: b.sha256,
            size: b.size,
            holders,
            refreshHolders: async () => orderHolders(await this.opts.directory.holders(key), this.self, (n) => this.quarantine.has(n), this.opts.random),
            token: this.opts.token,
            dest: tmp,
            quarantine: this.quarantine,
            signal,
            log: this.opts.log,
            metrics: metrics.peer,
          });
          r.from.forEach((n) => from.add(n));
          bytes += r.bytes;
          if ((await store.importBlob(tmp, b.sha256)).created) journal.blobs.push(b.sha256);
          // A partial holder from its first blob on (never before: pullers would get 404s); heartbeats keep it announced.
          if (!this.pullingKeys.has(key)) {
            this.pullingKeys.add(key);
            await this.opts.directory.announce(key, { ...this.self, complete: false }, this.opts.holderTtlMs);
          }
        }
      };
      await Promise.all(Array.from({ length: Math.min(this.opts.pullConcurrency, blobs.length) }, worker));
    } finally {
      await rm(work, { recursive: true, force: true });
    }
    return { from: [...from], bytes };
  }

  /** Holders to pull from, in order; waits (on events) while there are none. */
  private async holdersOf(key: string, deadline: number, signal?: AbortSignal): Promise<Holder[]> {
    const { directory: dir } = this.opts;
    for (;;) {
      const cursor = await dir.lastEventId();
      const ordered = orderHolders(await dir.holders(key), this.self, (n) => this.quarantine.has(n), this.opts.random);
      if (ordered.length) return ordered;
      if (Date.now() > deadline) throw new ClasscacheError("not-found", `no node holds the archive of ${key.slice(0, 12)} (all quarantined or gone)`);
      await this.waitForKey(key, cursor, Math.min(5_000, deadline - Date.now()), signal);
    }
  }

  private result(key: string, source: EnsureResult["source"], from: string[], t0: number, manifest: Manifest): EnsureResult {
    return { key, source, from, ms: Math.round(performance.now() - t0), manifest };
  }

  /** Size of a blob this node may serve while its own pull of the archive is still running. */
  async servableWhilePulling(sha256: string): Promise<number | undefined> {
    const size = this.pulling.get(sha256);
    return size !== undefined && (await this.opts.store.hasBlob(sha256)) ? size : undefined;
  }

  /** Keys gc must keep: in flight, or asked for within `withinMs`. */
  protectedKeys(withinMs = 3600_000): Set<string> {
    const now = Date.now();
    return new Set([...this.inflight.keys(), ...[...this.lastEnsured].filter(([, t]) => now - t < withinMs).map(([k]) => k)]);
  }

  /** Re-announces every local archive, and every one being pulled as partial (holder entries expire unless heartbeated). */
  async heartbeat(): Promise<void> {
    const { store } = this.opts;
    const keys = await store.keys();
    // A key's archive never changes once its manifest is in the store: read each manifest, and
    // identify its blob file, once.
    const archiveOf = this.archiveOfKey;
    for (const key of archiveOf.keys()) if (!keys.includes(key)) archiveOf.delete(key);
    for (const key of keys) {
      if (archiveOf.has(key)) continue;
      const m = await store.getManifest(key).catch(() => undefined);
      if (m) archiveOf.set(key, { sha: m.archive.sha256, file: await fileId(store.blobPath(m.archive.sha256)).catch(() => undefined) });
    }
    // Which JVMs on this node use each archive: announced with the holding, read by the operator.
    const files = new Map([...archiveOf.values()].map((a) => [a.sha, a.file]));
    const usage = await scanUsage([...new Set([this.opts.root, store.dir])], files, "/proc", this.smaps);
    const { metrics } = this.opts;
    metrics.jvms.reset();
    metrics.liveHitRate.reset();
    metrics.sharingSavedBytes.reset();
    for (const key of keys) {
      const u = usage.get(archiveOf.get(key)?.sha ?? "");
      if (u) {
        const label = { key: key.slice(0, 12) };
        metrics.jvms.set(label, u.jvms);
        if (u.loadedClasses > 0) metrics.liveHitRate.set(label, u.sharedClasses / u.loadedClasses);
        if (u.rssKb !== undefined && u.pssKb !== undefined) metrics.sharingSavedBytes.set(label, (u.rssKb - u.pssKb) * 1024);
      }
      await this.opts.directory.announce(key, u ? { ...this.self, usage: u } : this.self, this.opts.holderTtlMs);
    }
    for (const key of this.pullingKeys) await this.opts.directory.announce(key, { ...this.self, complete: false }, this.opts.holderTtlMs);
  }

  /**
   * May this node send another copy of a blob? Up to `uploadBudget` copies, yes. After that, no
   * if another node holds the whole archive, or if the budget's copies were delivered and other
   * nodes are pulling (those copies are theirs to share): pullers go elsewhere and the load fans
   * out. Each copy served adds a source, so some source always has budget left.
   */
  async admitUpload(sha256: string): Promise<boolean> {
    const n = this.served.get(sha256) ?? 0;
    if (n >= this.opts.uploadBudget) {
      const key = this.blobKeys.get(sha256) ?? (await this.keyOfBlob(sha256));
      const holders = key ? await this.opts.directory.holders(key).catch(() => []) : [];
      const others = holders.filter((h) => h.node !== this.opts.node && !this.quarantine.has(h.node));
      const complete = others.filter((h) => h.complete !== false).length;
      const sharing = (this.delivered.get(sha256) ?? 0) >= this.opts.uploadBudget && others.length > 0;
      if (complete > 0 || sharing) return false;
    }
    this.served.set(sha256, n + 1);
    return true;
  }

  /** A peer received a whole copy of a blob from this node. */
  noteDelivered(sha256: string): void {
    this.delivered.set(sha256, (this.delivered.get(sha256) ?? 0) + 1);
  }

  private async keyOfBlob(sha256: string): Promise<string | undefined> {
    for (const key of await this.opts.store.keys()) {
      const m = await this.opts.store.getManifest(key).catch(() => undefined);
      if (m && (m.archive.sha256 === sha256 || m.layout.files.some((f) => f.sha256 === sha256))) {
        this.blobKeys.set(sha256, key);
        return key;
      }
    }
    return undefined;
  }

  async withdrawAll(): Promise<void> {
    for (const key of await this.opts.store.keys()) await this.opts.directory.withdraw(key, this.opts.node).catch(() => {});
  }
}

/** One line for the failure record: the error, and the line of its details that names the cause. */
function failureMessage(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  const details = err instanceof ClasscacheError ? (err.details ?? "") : "";
  const cause = details.split("\n").find((l) => /(Exception|Error)\b.*:/.test(l))?.trim();
  return cause ? `${message}: ${cause}` : message;
}

function shuffle<T>(xs: T[], random: () => number): T[] {
  for (let i = xs.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [xs[i], xs[j]] = [xs[j]!, xs[i]!];
  }
  return xs;
}
