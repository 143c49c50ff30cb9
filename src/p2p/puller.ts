/**
 * Pulling a blob from the nodes that hold it: nearest first, around busy holders, resuming
 * with a Range request when a holder dies or stalls mid-transfer, and trusting no byte until
 * the whole blob matches its sha256. Holders whose bytes fail verification are quarantined.
 */
import { createHash, type Hash } from "node:crypto";
import { open, rm, type FileHandle } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import type { Holder } from "../directory/directory.ts";
import { ClasscacheError } from "../runtime/errors.ts";
import type { Logger } from "../runtime/log.ts";
import { HEX64 } from "../util/hash.ts";
import type { PeerMetrics } from "./metrics.ts";

/**
 * The order to try holders in: never this node, never a quarantined one, each node once; those
 * in this node's zone first, then the rest, each group shuffled (Fisher–Yates with `random`) so
 * that pullers spread over holders instead of all starting at the same one.
 */
export function orderHolders(holders: Holder[], self: { node: string; zone: string }, quarantined: (node: string) => boolean, random: () => number): Holder[] {
  const seen = new Set<string>();
  const near: Holder[] = [];
  const far: Holder[] = [];
  for (const h of holders) {
    if (h.node === self.node || seen.has(h.node) || quarantined(h.node) || !isPeerUrl(h.url)) continue;
    seen.add(h.node);
    (h.zone === self.zone ? near : far).push(h);
  }
  return [...shuffle(near, random), ...shuffle(far, random)];
}

/**
 * Whether a holder's URL is one a peer server has — http(s), a host and maybe a port, nothing
 * else — before the node's token is sent to it: whoever can write to the directory writes holder
 * entries, and a URL with credentials, a path, a query or a fragment is not a peer's but a way
 * to have the token sent somewhere (or a request made) on that writer's behalf.
 */
export function isPeerUrl(url: string): boolean {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return false;
  }
  return (u.protocol === "http:" || u.protocol === "https:") && u.hostname !== "" && u.username === "" && u.password === "" && (u.pathname === "/" || u.pathname === "") && u.search === "" && u.hash === "" && !url.includes("?") && !url.includes("#");
}

function shuffle<T>(xs: T[], random: () => number): T[] {
  for (let i = xs.length - 1; i > 0; i--) {
    const j = Math.min(i, Math.floor(random() * (i + 1)));
    [xs[i], xs[j]] = [xs[j]!, xs[i]!];
  }
  return xs;
}

/** Nodes not to pull from until a time: those that sent bytes that failed verification. */
export class Quarantine {
  private readonly until = new Map<string, number>();
  private readonly now: () => number;

  constructor(now: () => number = Date.now) {
    this.now = now;
  }

  /** Quarantines `node` for `ms` from now (never shortening a longer quarantine). */
  add(node: string, ms: number): void {
    const until = this.now() + ms;
    if ((this.until.get(node) ?? 0) < until) this.until.set(node, until);
  }

  has(node: string): boolean {
    const until = this.until.get(node);
    if (until === undefined) return false;
    if (until > this.now()) return true;
    this.until.delete(node);
    return false;
  }

  /** Quarantined nodes and when each leaves quarantine (epoch ms). */
  entries(): { node: string; until: number }[] {
    return [...this.until.keys()].filter((n) => this.has(n)).map((node) => ({ node, until: this.until.get(node)! }));
  }
}

export interface PullOptions {
  sha256: string;
  size: number;
  /** In the order to try them (see orderHolders). */
  holders: Holder[];
  /**
   * Asked for the current holders when every holder left is busy: new ones (nodes that finished
   * their own pull meanwhile) are tried first, so a hot holder's load fans out to its peers.
   */
  refreshHolders?: () => Promise<Holder[]>;
  token: string;
  /** A temp path, created exclusively; on success it holds the verified blob, on failure it is gone. */
  dest: string;
  quarantine: Quarantine;
  signal?: AbortSignal;
  log: Logger;
  metrics?: PeerMetrics;
  /** Deadline for the whole pull, retries included. Default 10 minutes. */
  timeoutMs?: number;
  /** A holder that sends no byte (headers included) for this long counts as stalled. Default 15 s. */
  stallMs?: number;
  /** How long holders whose bytes failed verification stay quarantined. Default 10 minutes. */
  quarantineMs?: number;
}

export interface PullResult {
  /** Nodes whose bytes make up the blob, in order. */
  from: string[];
  /** Bytes received from holders, including any thrown away (a failed verification, a Range ignored). */
  bytes: number;
}

/** What happened with one holder, for the error when no holder could serve the blob. */
export interface HolderReport {
  node: string;
  outcomes: string[];
}

export class PullError extends ClasscacheError {
  readonly holders: HolderReport[];

  constructor(message: string, holders: HolderReport[]) {
    const details = holders.map((h) => `${h.node}: ${h.outcomes.join("; ")}`).join("\n");
    super("not-found", message, { details, hint: "the holders' logs and /metrics say more; the node can build the archive itself" });
    this.name = "PullError";
    this.holders = holders;
  }
}

/** A local write failed (store full, read-only): the holders are not to blame, the pull stops. */
class LocalWriteError extends Error {}

const MAX_QUEUED_BYTES = 8 << 20;

/**
 * Writes chunks at increasing positions of a file, one `writev` at a time: chunks that arrive
 * while a write is in flight go out together in the next one, so the network, the hash and the
 * disk work at the same time. More than MAX_QUEUED_BYTES waiting makes `push` wait.
 */
/** writev until every byte is written: a nearly full disk takes part of a write before it fails with ENOSPC. */
async function writevAll(fh: FileHandle, bufs: Uint8Array[], at: number): Promise<void> {
  let rest = bufs;
  let pos = at;
  while (rest.length) {
    const { bytesWritten } = await fh.writev(rest, pos);
    if (bytesWritten <= 0) throw new Error(`writing at ${pos} made no progress`);
    pos += bytesWritten;
    let n = bytesWritten;
    while (n > 0 && rest.length) {
      const first = rest[0]!;
      if (first.length <= n) {
        n -= first.length;
        rest = rest.slice(1);
      } else {
        rest = [first.subarray(n), ...rest.slice(1)];
        n = 0;
      }
    }
  }
}

class ChunkWriter {
  private readonly fh: FileHandle;
  private readonly dest: string;
  private pos = 0;
  private queue: Uint8Array[] = [];
  private queued = 0;
  private inflight: Promise<void> | undefined;
  private failure: unknown;

  constructor(fh: FileHandle, dest: string) {
    this.fh = fh;
    this.dest = dest;
  }

  async push(chunk: Uint8Array): Promise<void> {
    this.check();
    this.queue.push(chunk);
    this.queued += chunk.length;
    if (!this.inflight) this.start();
    else if (this.queued >= MAX_QUEUED_BYTES) await this.inflight;
    this.check();
  }

  /** Waits until everything pushed is written. */
  async flush(): Promise<void> {
    while (this.inflight) await this.inflight;
    this.check();
  }

  /** Empties the file (after flushing); writing starts again at 0. */
  async reset(): Promise<void> {
    await this.flush();
    try {
      await this.fh.truncate(0);
    } catch (err) {
      throw new LocalWriteError(`cannot truncate ${this.dest}`, { cause: err });
    }
    this.pos = 0;
  }

  private start(): void {
    const bufs = this.queue;
    const at = this.pos;
    this.pos += this.queued;
    this.queue = [];
    this.queued = 0;
    this.inflight = writevAll(this.fh, bufs, at).then(
      () => {
        this.inflight = undefined;
        if (this.queue.length) this.start();
      },
      (err: unknown) => {
        this.inflight = undefined;
        this.failure = err;
      },
    );
  }

  private check(): void {
    if (this.failure !== undefined) throw new LocalWriteError(`cannot write ${this.dest}`, { cause: this.failure });
  }
}

const MAX_FAILURES_PER_HOLDER = 3;
/** How many times a holder may answer 404 (still pulling that blob) before it is given up. */
const MAX_NOT_YET = 30;

/**
 * Downloads a blob into `dest` from the first holder that serves it, hashing as it goes. See
 * the module comment for what happens when holders are busy, die, stall or lie. Errors of the
 * local file system (ENOSPC, EROFS…) are thrown as they are, after `dest` is removed.
 */
export async function pullBlob(opts: PullOptions): Promise<PullResult> {
  if (!HEX64.test(opts.sha256)) throw new ClasscacheError("usage", `"${opts.sha256}" is not a sha256 digest (64 lowercase hex digits)`);
  if (!Number.isSafeInteger(opts.size) || opts.size < 0) throw new ClasscacheError("usage", `blob size must be a non-negative integer, got ${opts.size}`);
  const timeoutMs = opts.timeoutMs ?? 600_000;
  const deadline = AbortSignal.timeout(timeoutMs);
  const signal = opts.signal ? AbortSignal.any([opts.signal, deadline]) : deadline;
  signal.throwIfAborted();
  const fh = await open(opts.dest, "wx", 0o644);
  const pull = new Pull(opts, fh, signal, Date.now() + timeoutMs);
  let ok = false;
  try {
    const result = await pull.run();
    ok = true;
    return result;
  } catch (err) {
    const aborted = opts.signal?.aborted ?? false;
    opts.metrics?.pulls.inc({ outcome: aborted ? "aborted" : "failed" });
    if (aborted) throw opts.signal!.reason;
    if (deadline.aborted) throw new PullError(`could not pull sha256:${opts.sha256} within ${timeoutMs} ms`, pull.reports());
    throw err instanceof LocalWriteError ? err.cause : err;
  } finally {
    await fh.close().catch(() => {});
    if (!ok) await rm(opts.dest, { force: true });
  }
}

class Pull {
  private readonly o: PullOptions;
  private readonly out: ChunkWriter;
  private readonly signal: AbortSignal;
  private readonly deadlineAt: number;
  private readonly stallMs: number;
  private readonly started = performance.now();
  private readonly log: Logger;
  private pending: Holder[];
  private readonly retryAt = new Map<string, number>();
  private readonly failures = new Map<string, number>();
  private readonly history = new Map<string, { outcome: string; times: number }[]>();
  private hash: Hash = createHash("sha256");
  private have = 0;
  private received = 0;
  private from: string[] = [];

  constructor(o: PullOptions, fh: FileHandle, signal: AbortSignal, deadlineAt: number) {
    this.o = o;
    this.out = new ChunkWriter(fh, o.dest);
    this.signal = signal;
    this.deadlineAt = deadlineAt;
    this.stallMs = o.stallMs ?? 15_000;
    this.log = o.log.with({ sha256: o.sha256 });
    this.pending = [...o.holders];
  }

  async run(): Promise<PullResult> {
    if (this.o.size === 0 && (await this.verified())) return this.done();
    for (;;) {
      this.signal.throwIfAborted();
      const next = this.next();
      if (next === undefined) throw this.exhausted();
      if ("waitMs" in next) {
        if (await this.refresh()) continue;
        await sleep(next.waitMs, undefined, { signal: this.signal });
        continue;
      }
      if ((await this.attempt(next)) && (await this.verified())) return this.done();
    }
  }

  /** Adds holders that appeared since the pull began, in front. True if there were any. */
  private async refresh(): Promise<boolean> {
    if (!this.o.refreshHolders) return false;
    const known = new Set([...this.pending.map((h) => h.node), ...this.history.keys()]);
    const fresh = (await this.o.refreshHolders().catch(() => [] as Holder[])).filter((h) => !known.has(h.node) && !this.o.quarantine.has(h.node));
    if (fresh.length === 0) return false;
    this.pending = [...fresh, ...this.pending];
    return true;
  }

  reports(): HolderReport[] {
    return [...this.history].map(([node, list]) => ({ node, outcomes: list.map((x) => (x.times > 1 ? `${x.outcome} (×${x.times})` : x.outcome)) }));
  }

  /** The next holder to try, or how long to wait for a busy one, or undefined when none is left. */
  private next(): Holder | { waitMs: number } | undefined {
    const now = Date.now();
    let earliest = Infinity;
    for (const h of [...this.pending]) {
      if (this.o.quarantine.has(h.node)) {
        this.drop(h, "quarantined");
        continue;
      }
      const at = this.retryAt.get(h.node) ?? 0;
      if (at <= now) return h;
      earliest = Math.min(earliest, at);
    }
    if (earliest === Infinity) return undefined;
    if (earliest >= this.deadlineAt) return undefined; // still busy at the deadline
    return { waitMs: earliest - now };
  }

  /** One request to one holder. True when the file now holds `size` bytes. */
  private async attempt(h: Holder): Promise<boolean> {
    const ac = new AbortController();
    const stall = setTimeout(() => ac.abort(), this.stallMs);
    const offset = this.have;
    if (offset > 0) {
      this.o.metrics?.resumes.inc();
      this.log.info("resuming pull", { from: h.node, offset });
    }
    const headers: Record<string, string> = { Authorization: `Bearer ${this.o.token}` };
    if (offset > 0) {
      headers.Range = `bytes=${offset}-`;
      headers["If-Range"] = `"sha256:${this.o.sha256}"`;
    }
    const url = `${h.url.replace(/\/+$/, "")}/v1/blobs/sha256:${this.o.sha256}`;
    try {
      const res = await fetch(url, { headers, signal: AbortSignal.any([this.signal, ac.signal]), redirect: "error" });
      return await this.response(h, res, offset, stall);
    } catch (err) {
      if (err instanceof LocalWriteError) throw err;
      this.signal.throwIfAborted();
      const reason = ac.signal.aborted ? `stalled (no byte for ${this.stallMs} ms)` : describe(err);
      this.failed(h, offset, reason);
      return false;
    } finally {
      clearTimeout(stall);
    }
  }

  private async response(h: Holder, res: Response, offset: number, stall: NodeJS.Timeout): Promise<boolean> {
    const { size, sha256 } = this.o;
    if (res.status === 503) {
      await res.body?.cancel();
      const ms = retryAfterMs(res.headers.get("retry-after"));
      this.retryAt.set(h.node, Date.now() + ms);
      this.note(h.node, "busy (503)");
      return false;
    }
    if (res.status === 404 && (this.failures.get(h.node) ?? 0) < MAX_NOT_YET) {
      // A holder still pulling the archive serves the blobs it has; this one may come soon.
      await res.body?.cancel();
      this.failures.set(h.node, (this.failures.get(h.node) ?? 0) + 1);
      this.retryAt.set(h.node, Date.now() + 1000);
      this.pending = [...this.pending.filter((x) => x.node !== h.node), h];
      this.note(h.node, "does not have it yet (404)");
      return false;
    }
    const length = res.headers.get("content-length");
    let skip = 0;
    if (res.status === 200) {
      if (length !== null && Number(length) !== size) return this.liar(h, res, `sent ${length} bytes for a blob of ${size}`);
      skip = offset; // the holder ignored the Range: read past what we have
    } else if (res.status === 206 && offset > 0) {
      const want = `bytes ${offset}-${size - 1}/${size}`;
      const got = res.headers.get("content-range");
      if (got !== want) return this.liar(h, res, `answered Content-Range ${got ?? "(none)"} to a request for ${want}`);
    } else {
      await res.body?.cancel();
      this.drop(h, `answered ${res.status}`);
      return false;
    }
    if (!res.body) return this.liar(h, res, "sent no body");
    for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
      stall.refresh();
      this.received += chunk.length;
      this.o.metrics?.bytesPulled.inc(chunk.length);
      let c = chunk;
      if (skip > 0) {
        const n = Math.min(skip, c.length);
        skip -= n;
        c = c.subarray(n);
        if (c.length === 0) continue;
      }
      if (this.have + c.length > size) return this.liar(h, res, `sent more than ${size} bytes`);
      await this.write(c);
      if (this.from.at(-1) !== h.node) this.from.push(h.node);
    }
    if (this.have < size) {
      this.failed(h, offset, `ended the body after ${this.have - offset} bytes`);
      return false;
    }
    this.note(h.node, offset > 0 ? `sent bytes ${offset}-${size - 1}` : "sent the blob");
    this.log.debug("pulled bytes", { from: h.node, offset, bytes: size - offset, sha256 });
    return true;
  }

  private async write(c: Uint8Array): Promise<void> {
    this.hash.update(c);
    this.have += c.length;
    await this.out.push(c);
  }

  /** Checks the bytes against size and sha256; on a mismatch quarantines whoever sent them and starts over. */
  private async verified(): Promise<boolean> {
    await this.out.flush();
    const got = this.hash.digest("hex");
    if (this.have === this.o.size && got === this.o.sha256) return true;
    const bad = [...new Set(this.from)];
    this.log.warn("pulled bytes failed verification", { got, holders: bad });
    for (const node of bad) {
      this.quarantine(node);
      this.note(node, `sent bytes that failed verification (sha256 ${got}), quarantined`);
    }
    await this.restart();
    return false;
  }

  /** A holder that broke the protocol (wrong size or range): quarantined, and its bytes thrown away. */
  private async liar(h: Holder, res: Response, what: string): Promise<boolean> {
    await res.body?.cancel().catch(() => {});
    this.quarantine(h.node);
    this.log.warn("holder broke the protocol", { holder: h.node, what });
    this.note(h.node, `${what}, quarantined`);
    if (this.from.includes(h.node)) await this.restart();
    return false;
  }

  private quarantine(node: string): void {
    this.o.quarantine.add(node, this.o.quarantineMs ?? 600_000);
    this.o.metrics?.peersQuarantined.inc();
    this.pending = this.pending.filter((x) => x.node !== node);
  }

  private async restart(): Promise<void> {
    await this.out.reset();
    this.hash = createHash("sha256");
    this.have = 0;
    this.from = [];
  }

  /** A transfer that broke: a holder that made progress may be tried again later, others not. */
  private failed(h: Holder, offset: number, reason: string): void {
    const got = this.have - offset;
    const failures = (this.failures.get(h.node) ?? 0) + 1;
    this.failures.set(h.node, failures);
    this.log.warn("pull from holder failed", { holder: h.node, offset, bytes: got, reason });
    if (got > 0 && failures < MAX_FAILURES_PER_HOLDER) {
      this.note(h.node, `failed after ${got} bytes: ${reason}`);
      this.pending = [...this.pending.filter((x) => x.node !== h.node), h];
    } else {
      this.drop(h, got > 0 ? `failed after ${got} bytes: ${reason}` : reason);
    }
  }

  private drop(h: Holder, outcome: string): void {
    this.note(h.node, outcome);
    this.pending = this.pending.filter((x) => x.node !== h.node);
  }

  private note(node: string, outcome: string): void {
    const list = this.history.get(node) ?? [];
    const last = list.at(-1);
    if (last?.outcome === outcome) last.times++;
    else list.push({ outcome, times: 1 });
    this.history.set(node, list);
  }

  private exhausted(): PullError {
    const { sha256, size, holders } = this.o;
    if (holders.length === 0) return new PullError(`no holder to pull sha256:${sha256} from`, []);
    return new PullError(`could not pull sha256:${sha256} (${size} bytes) from any of ${holders.length} holders`, this.reports());
  }

  private done(): PullResult {
    const ms = Math.round(performance.now() - this.started);
    this.o.metrics?.pulls.inc({ outcome: "ok" });
    this.log.info("pulled blob", { bytes: this.o.size, received: this.received, from: this.from, ms });
    return { from: this.from, bytes: this.received };
  }
}

/** Retry-After in seconds or as an HTTP date, clamped to 0.1–30 s; 1 s when absent or unreadable. */
function retryAfterMs(header: string | null): number {
  if (header === null) return 1000;
  const secs = /^\d+$/.test(header.trim()) ? Number(header) * 1000 : Date.parse(header) - Date.now();
  return Number.isFinite(secs) ? Math.min(30_000, Math.max(100, secs)) : 1000;
}

/** fetch's errors say "fetch failed" / "terminated"; the cause says what happened. */
function describe(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = err.cause as (Error & { code?: string }) | undefined;
  if (!cause) return err.message;
  return `${err.message}: ${cause.code ?? cause.message}`;
}
