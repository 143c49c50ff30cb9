/**
 * The directory in Valkey (or Redis ≥ 7), for a cluster. Every key is under a prefix
 * (default "classcache:"), so several clusters or test runs can share one server:
 *
 *   <p>manifest:<key>   string      the manifest envelope; written once (SET NX)
 *   <p>holders:<key>    sorted set  member: holder JSON; score: expiry (server epoch ms);
 *                                   the key itself expires with its last member
 *   <p>lease:<key>      string      "<owner>:<token>", with a TTL (SET NX PX)
 *   <p>fence:<key>      string      counter behind the lease tokens (INCR); kept by remove()
 *   <p>failure:<key>    string      BuildFailure JSON, with a TTL (SET PX)
 *   <p>events           stream      field "event": DirectoryEvent JSON (XADD MAXLEN ~ 10000)
 *
 * Holder expiry uses the server's clock (TIME inside the scripts), like the lease and failure
 * TTLs do, so nodes whose clocks disagree still agree on who holds what.
 *
 * Connections: one for commands, and a small pool for blocking XREADs, so a reader waiting for
 * events never stalls anything else. When the server goes away, ioredis reconnects (with a
 * backoff capped at `reconnectMaxDelayMs`); commands issued meanwhile wait for the connection
 * and fail only after `commandTimeoutMs`. A blocked readEvents returns [] by its own deadline
 * (blockMs plus a grace) even if the server never answers, and its XREAD is resent on
 * reconnection, so a reader blocked across a restart still sees the events emitted after it.
 */
import { createHash } from "node:crypto";
import { Redis, type RedisOptions } from "ioredis";
import { ClasscacheError } from "../runtime/errors.ts";
import { discardLogger, type Logger } from "../runtime/log.ts";
import {
  checkName,
  checkTtl,
  holderJson,
  isBuildFailure,
  isDirectoryEvent,
  isHolder,
  normalizeHolder,
  MAX_EVENTS,
  parseEventId,
  READ_COUNT,
  sleepUnlessAborted,
  sortHolders,
} from "./common.ts";
import type { BuildFailure, Directory, DirectoryEvent, EventRecord, Holder, Lease } from "./directory.ts";

export interface ValkeyDirectoryOptions {
  /** redis://[:password@]host[:port][/db] (also valkey://; rediss:// and valkeys:// for TLS). */
  url: string;
  /** Prefix of every key (default "classcache:"). */
  prefix?: string;
  log?: Logger;
  /** Events kept in the stream, approximately (default 10000). */
  maxEvents?: number;
  /** How long a command may wait (for a reconnection, say) before it fails (default 15 s). */
  commandTimeoutMs?: number;
  /** How long ping() waits for PONG (default 2 s). */
  pingTimeoutMs?: number;
  /** Longest pause between reconnection attempts (default 1 s). */
  reconnectMaxDelayMs?: number;
  /** Name of the connections in CLIENT LIST (default "classcache"; readers add "-events"). */
  clientName?: string;
}

/** The parts of a directory URL; `where` names the server without the password, for messages. */
export interface ValkeyAddress {
  host: string;
  port: number;
  username: string | undefined;
  password: string | undefined;
  db: number;
  tls: boolean;
  where: string;
}

const SCHEMES: Record<string, boolean> = { "redis:": false, "valkey:": false, "rediss:": true, "valkeys:": true };

export function parseValkeyUrl(url: string): ValkeyAddress {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new ClasscacheError("input", "the directory URL is not a URL", { hint: "use redis://:<password>@<host>:<port>/<db> (or valkey://…)" });
  }
  const tls = SCHEMES[u.protocol];
  if (tls === undefined) {
    throw new ClasscacheError("input", `the directory URL has scheme ${u.protocol} where redis:, valkey:, rediss: or valkeys: was expected`, {
      hint: "use redis://:<password>@<host>:<port>/<db> (or valkey://…)",
    });
  }
  const host = u.hostname.replace(/^\[(.*)\]$/, "$1") || "127.0.0.1";
  const port = u.port ? Number(u.port) : 6379;
  const dbText = u.pathname.replace(/^\//, "");
  const db = dbText === "" ? 0 : Number(dbText);
  if (!Number.isInteger(db) || db < 0) throw new ClasscacheError("input", `the directory URL names database ${JSON.stringify(dbText)}, not a number`);
  const username = u.username ? decodeURIComponent(u.username) : undefined;
  const password = u.password ? decodeURIComponent(u.password) : undefined;
  return { host, port, username, password, db, tls, where: `${u.protocol}//${u.host}/${db}` };
}

/** A Lua script run by SHA1 (EVALSHA), sent in full only when the server does not know it yet (after a restart). */
interface Script {
  lua: string;
  sha: string;
}

function script(lua: string): Script {
  return { lua, sha: createHash("sha1").update(lua).digest("hex") };
}

/** Server time in ms, inside a script. */
const NOW = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)`;

const SCRIPTS = {
  /** KEYS: manifest, lease. ARGV: envelope, "<owner>:<token>". → {1} | {0, current|false} */
  publishWithLease: script(`local current = redis.call('GET', KEYS[1])
if current then return {0, current} end
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return {0, false} end
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return {1, false}`),
  /** KEYS: manifest. ARGV: expected, next. → 1 | 0 */
  replace: script(`if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2]) return 1 end
return 0`),
  /** KEYS: lease, fence. ARGV: owner, ttl ms. → token | nil. Atomic, so tokens are granted in order. */
  acquire: script(`if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. token, 'NX', 'PX', ARGV[2])
return token`),
  /** KEYS: lease. ARGV: "<owner>:<token>", ttl ms. → 1 | 0 */
  renew: script(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0`),
  /** KEYS: lease. ARGV: "<owner>:<token>". → 1 | 0 */
  release: script(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`),
  /** KEYS: holders. ARGV: node, holder JSON, ttl ms. Replaces the node's entry; the set expires with its last member. */
  announce: script(`${NOW}
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local ok, h = pcall(cjson.decode, m)
  if not ok or type(h) ~= 'table' or h.node == ARGV[1] then redis.call('ZREM', KEYS[1], m) end
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], last[2])
return 1`),
  /** KEYS: holders. ARGV: node. */
  withdraw: script(`for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local ok, h = pcall(cjson.decode, m)
  if not ok or type(h) ~= 'table' or h.node == ARGV[1] then redis.call('ZREM', KEYS[1], m) end
end
return 1`),
  /** KEYS: holders. Drops expired members, returns the rest. */
  holders: script(`${NOW}
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, -1)`),
};

/** Extra wait, past blockMs, for a blocking read's answer before the connection is given up as dead. */
const READ_GRACE_MS = 1_000;
/** Idle blocking-read connections kept for reuse. */
const MAX_IDLE_READERS = 4;

type ReadOutcome = { kind: "reply"; value: unknown } | { kind: "error"; error: unknown } | { kind: "timeout" } | { kind: "abort" };

export class ValkeyDirectory implements Directory {
  readonly prefix: string;
  /** The server, without the password (for messages). */
  readonly where: string;
  private readonly log: Logger;
  private readonly maxEvents: number;
  private readonly pingTimeoutMs: number;
  private readonly readerOptions: RedisOptions;
  private readonly redis: Redis;
  private readonly idleReaders: Redis[] = [];
  private readonly readers = new Set<Redis>();
  private closed = false;

  constructor(opts: ValkeyDirectoryOptions) {
    const addr = parseValkeyUrl(opts.url);
    this.where = addr.where;
    this.prefix = opts.prefix ?? "classcache:";
    this.log = (opts.log ?? discardLogger).with({ directory: addr.where });
    this.maxEvents = opts.maxEvents ?? MAX_EVENTS;
    this.pingTimeoutMs = opts.pingTimeoutMs ?? 2_000;
    const maxDelay = opts.reconnectMaxDelayMs ?? 1_000;
    const base: RedisOptions = {
      host: addr.host,
      port: addr.port,
      db: addr.db,
      ...(addr.username === undefined ? {} : { username: addr.username }),
      ...(addr.password === undefined ? {} : { password: addr.password }),
      ...(addr.tls ? { tls: { servername: addr.host } } : {}),
      connectTimeout: 5_000,
      retryStrategy: (times) => Math.min(50 * times, maxDelay),
      // Commands wait (in the offline queue) for a reconnection; commandTimeout bounds the wait.
      maxRetriesPerRequest: null,
      lazyConnect: false,
    };
    const name = opts.clientName ?? "classcache";
    this.redis = new Redis({ ...base, connectionName: name, commandTimeout: opts.commandTimeoutMs ?? 15_000 });
    this.watch(this.redis, "commands");
    // No commandTimeout for blocking reads: their deadline is blockMs, enforced in readEvents.
    this.readerOptions = { ...base, connectionName: `${name}-events` };
  }

  private key(kind: string, key: string): string {
    return `${this.prefix}${kind}:${key}`;
  }

  private get eventsKey(): string {
    return `${this.prefix}events`;
  }

  async publish(key: string, envelope: string, lease?: Lease): Promise<{ published: boolean; envelope: string | undefined }> {
    checkName("key", key);
    return this.run("publish", async () => {
      if (!lease) {
        const previous = await this.redis.set(this.key("manifest", key), envelope, "NX", "GET");
        return previous === null ? { published: true, envelope } : { published: false, envelope: previous };
      }
      const reply = await this.eval(SCRIPTS.publishWithLease, [this.key("manifest", key), this.key("lease", lease.key)], [envelope, leaseValue(lease)]);
      const [won, current] = Array.isArray(reply) ? (reply as unknown[]) : [];
      if (won === 1) return { published: true, envelope };
      return { published: false, envelope: typeof current === "string" ? current : undefined };
    });
  }

  async manifest(key: string): Promise<string | undefined> {
    return this.run("read a manifest", async () => (await this.redis.get(this.key("manifest", key))) ?? undefined);
  }

  async replaceManifest(key: string, expected: string, next: string): Promise<boolean> {
    checkName("key", key);
    return this.run("replace a manifest", async () => (await this.eval(SCRIPTS.replace, [this.key("manifest", key)], [expected, next])) === 1);
  }

  async keys(): Promise<string[]> {
    return this.run("list keys", async () => {
      const start = this.key("manifest", "");
      const pattern = start.replace(/[*?[\]\\]/g, "\\$&") + "*";
      const out = new Set<string>();
      let cursor = "0";
      do {
        const [next, batch] = await this.redis.scan(cursor, "MATCH", pattern, "COUNT", 1000);
        cursor = next;
        for (const k of batch) out.add(k.slice(start.length));
      } while (cursor !== "0");
      return [...out].sort();
    });
  }

  async bind(name: string, value: string): Promise<string> {
    checkName("name", name);
    return this.run("bind a name", async () => (await this.redis.set(this.key("binding", name), value, "NX", "GET")) ?? value);
  }

  async binding(name: string): Promise<string | undefined> {
    return this.run("read a binding", async () => (await this.redis.get(this.key("binding", name))) ?? undefined);
  }

  async unbind(name: string): Promise<void> {
    await this.run("remove a binding", () => this.redis.del(this.key("binding", name)));
  }

  async remove(key: string): Promise<void> {
    await this.run("remove a key", () =>
      this.redis.del(this.key("manifest", key), this.key("holders", key), this.key("lease", key), this.key("failure", key)),
    );
  }

  async announce(key: string, holder: Holder, ttlMs: number): Promise<void> {
    checkName("key", key);
    checkName("node", holder.node);
    checkTtl(ttlMs);
    await this.run("announce a holder", () => this.eval(SCRIPTS.announce, [this.key("holders", key)], [holder.node, holderJson(holder), ttlMs]));
  }

  async withdraw(key: string, node: string): Promise<void> {
    await this.run("withdraw a holder", () => this.eval(SCRIPTS.withdraw, [this.key("holders", key)], [node]));
  }

  async holders(key: string): Promise<Holder[]> {
    return this.run("list holders", async () => {
      const members = await this.eval(SCRIPTS.holders, [this.key("holders", key)], []);
      const out: Holder[] = [];
      for (const m of Array.isArray(members) ? (members as unknown[]) : []) {
        const h = typeof m === "string" ? parseJson(m) : undefined;
        if (isHolder(h)) out.push(normalizeHolder(h));
      }
      return sortHolders(out);
    });
  }

  async acquireLease(key: string, owner: string, ttlMs: number): Promise<Lease | undefined> {
    checkName("key", key);
    checkName("owner", owner);
    checkTtl(ttlMs);
    return this.run("acquire a lease", async () => {
      const token = await this.eval(SCRIPTS.acquire, [this.key("lease", key), this.key("fence", key)], [owner, ttlMs]);
      return typeof token === "number" ? { key, owner, token } : undefined;
    });
  }

  async renewLease(lease: Lease, ttlMs: number): Promise<boolean> {
    checkTtl(ttlMs);
    return this.run("renew a lease", async () => (await this.eval(SCRIPTS.renew, [this.key("lease", lease.key)], [leaseValue(lease), ttlMs])) === 1);
  }

  async releaseLease(lease: Lease): Promise<boolean> {
    return this.run("release a lease", async () => (await this.eval(SCRIPTS.release, [this.key("lease", lease.key)], [leaseValue(lease)])) === 1);
  }

  async leaseOwner(key: string): Promise<string | undefined> {
    return this.run("read a lease", async () => {
      const value = await this.redis.get(this.key("lease", key));
      if (value === null) return undefined;
      const colon = value.lastIndexOf(":");
      return colon < 0 ? value : value.slice(0, colon);
    });
  }

  async recordFailure(key: string, failure: BuildFailure, ttlMs: number): Promise<void> {
    checkName("key", key);
    checkTtl(ttlMs);
    const json = JSON.stringify({ node: failure.node, message: failure.message, attempts: failure.attempts, retryAt: failure.retryAt });
    await this.run("record a failure", () => this.redis.set(this.key("failure", key), json, "PX", ttlMs));
  }

  async failure(key: string): Promise<BuildFailure | undefined> {
    return this.run("read a failure", async () => {
      const json = await this.redis.get(this.key("failure", key));
      const f = json === null ? undefined : parseJson(json);
      return isBuildFailure(f) ? f : undefined;
    });
  }

  async clearFailure(key: string): Promise<void> {
    await this.run("clear a failure", () => this.redis.del(this.key("failure", key)));
  }

  async emit(event: DirectoryEvent): Promise<string> {
    return this.run("emit an event", async () => {
      const id = await this.redis.xadd(this.eventsKey, "MAXLEN", "~", this.maxEvents, "*", "event", JSON.stringify(event));
      if (id === null) throw new Error("XADD returned no id");
      return id;
    });
  }

  /**
   * XREAD BLOCK on a connection of its own. Returns [] when blockMs passes, when `signal` aborts
   * (the read is cut short with CLIENT UNBLOCK, or its connection dropped), and when the server
   * cannot be reached (after waiting out blockMs, so a caller's loop does not spin).
   */
  async readEvents(after: string, blockMs: number, signal?: AbortSignal): Promise<EventRecord[]> {
    parseEventId(after);
    if (this.closed) throw this.closedError();
    if (signal?.aborted) return [];
    if (blockMs <= 0) {
      return this.run("read events", async () =>
        this.parseRead(await this.redis.xread("COUNT", READ_COUNT, "STREAMS", this.eventsKey, after)),
      );
    }
    const started = Date.now();
    const conn = this.takeReader();
    const clientId = conn.client("ID").then(
      (id) => id,
      () => undefined,
    );
    const read = conn.xread("COUNT", READ_COUNT, "BLOCK", blockMs, "STREAMS", this.eventsKey, after);
    const outcome = await race(read, blockMs + READ_GRACE_MS, signal);
    switch (outcome.kind) {
      case "reply":
        this.giveBack(conn);
        return this.parseRead(outcome.value);
      case "abort":
        void this.unblock(conn, clientId, read);
        return [];
      case "timeout":
        this.log.debug("a blocking read got no answer in time; dropping its connection");
        this.drop(conn);
        return [];
      case "error":
        if (isReplyError(outcome.error)) {
          this.giveBack(conn);
          throw this.wrap("read events", outcome.error);
        }
        this.drop(conn);
        if (this.closed) return [];
        this.log.debug("a blocking read failed", { error: errorMessage(outcome.error) });
        await sleepUnlessAborted(blockMs - (Date.now() - started), signal);
        return [];
    }
  }

  async lastEventId(): Promise<string> {
    return this.run("read the last event id", async () => {
      const [last] = await this.redis.xrevrange(this.eventsKey, "+", "-", "COUNT", 1);
      return last ? last[0] : "0";
    });
  }

  /** True when the server answers PING within pingTimeoutMs. Never throws. */
  async ping(): Promise<boolean> {
    if (this.closed) return false;
    // While reconnecting, say so at once rather than queue a PING behind the outage.
    if (["reconnecting", "close", "end"].includes(this.redis.status)) return false;
    const outcome = await race(this.redis.ping(), this.pingTimeoutMs, undefined);
    return outcome.kind === "reply" && outcome.value === "PONG";
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const r of this.readers) r.disconnect();
    this.readers.clear();
    this.idleReaders.length = 0;
    if (this.redis.status === "ready") {
      await race(this.redis.quit(), 1_000, undefined);
    }
    this.redis.disconnect();
  }

  private takeReader(): Redis {
    const idle = this.idleReaders.pop();
    if (idle) return idle;
    const r = new Redis(this.readerOptions);
    this.watch(r, "events");
    this.readers.add(r);
    return r;
  }

  private giveBack(conn: Redis): void {
    if (this.closed || this.idleReaders.length >= MAX_IDLE_READERS) this.drop(conn);
    else this.idleReaders.push(conn);
  }

  private drop(conn: Redis): void {
    this.readers.delete(conn);
    conn.disconnect();
  }

  /** After an abort: unblock the pending XREAD so its connection can be reused, or drop the connection. */
  private async unblock(conn: Redis, clientId: Promise<number | undefined>, read: Promise<unknown>): Promise<void> {
    const settled = read.then(
      () => true,
      () => true,
    );
    let unblocked: unknown = 0;
    if (conn.status === "ready" && this.redis.status === "ready" && !this.closed) {
      const id = await clientId;
      if (id !== undefined) unblocked = await this.redis.client("UNBLOCK", id, "TIMEOUT").catch(() => 0);
    }
    if (unblocked !== 1) {
      this.drop(conn);
      return;
    }
    await settled;
    this.giveBack(conn);
  }

  private parseRead(reply: unknown): EventRecord[] {
    // [[stream, [[id, [field, value, …]], …]]] or null
    if (!Array.isArray(reply)) return [];
    const stream = reply[0] as unknown;
    if (!Array.isArray(stream) || !Array.isArray(stream[1])) return [];
    const out: EventRecord[] = [];
    for (const entry of stream[1] as unknown[]) {
      if (!Array.isArray(entry) || typeof entry[0] !== "string" || !Array.isArray(entry[1])) continue;
      const id = entry[0];
      const fields = entry[1] as unknown[];
      const at = fields.indexOf("event");
      const raw = at >= 0 ? fields[at + 1] : undefined;
      const event = typeof raw === "string" ? parseJson(raw) : undefined;
      if (!isDirectoryEvent(event)) {
        this.log.warn("skipping an unreadable event", { id });
        continue;
      }
      out.push({ id, time: parseEventId(id).ms, event });
    }
    return out;
  }

  private async eval(s: Script, keys: string[], args: (string | number)[]): Promise<unknown> {
    try {
      return await this.redis.evalsha(s.sha, keys.length, ...keys, ...args);
    } catch (err) {
      if (!errorMessage(err).startsWith("NOSCRIPT")) throw err;
      return this.redis.eval(s.lua, keys.length, ...keys, ...args);
    }
  }

  private async run<T>(op: string, fn: () => Promise<T>): Promise<T> {
    if (this.closed) throw this.closedError();
    try {
      return await fn();
    } catch (err) {
      throw this.wrap(op, err);
    }
  }

  private closedError(): ClasscacheError {
    return new ClasscacheError("internal", `the Valkey directory (${this.where}) is closed`);
  }

  private wrap(op: string, err: unknown): ClasscacheError {
    if (err instanceof ClasscacheError) return err;
    const msg = errorMessage(err);
    if (this.closed) return this.closedError();
    if (/WRONGPASS|NOAUTH|invalid password|AUTH failed/i.test(msg)) {
      return new ClasscacheError("input", `Valkey at ${this.where} refused authentication (AUTH): ${msg}`, {
        hint: "check the password in the directory URL (redis://:<password>@<host>:<port>/<db>)",
        cause: err,
      });
    }
    if (!isReplyError(err)) {
      return new ClasscacheError("input", `cannot ${op}: Valkey at ${this.where} is unreachable (${msg})`, {
        hint: "check that the server runs and the directory URL's host and port; commands are retried while it restarts",
        cause: err,
      });
    }
    return new ClasscacheError("internal", `cannot ${op} in Valkey at ${this.where}: ${msg}`, { cause: err });
  }

  /** Logs connection losses and recoveries of the command connection once each, not every failed attempt. */
  private watch(conn: Redis, role: "commands" | "events"): void {
    conn.on("error", (err: Error) => this.log.debug("directory connection error", { role, error: err.message }));
    if (role !== "commands") return;
    let lost = false;
    conn.on("close", () => {
      if (lost || this.closed) return;
      lost = true;
      this.log.warn("lost the connection to the directory; reconnecting");
    });
    conn.on("ready", () => {
      if (!lost) return;
      lost = false;
      this.log.info("reconnected to the directory");
    });
  }
}

function leaseValue(lease: Lease): string {
  return `${lease.owner}:${lease.token}`;
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** An error the server answered with (as opposed to a connection problem). */
function isReplyError(err: unknown): boolean {
  return err instanceof Error && err.name === "ReplyError";
}

/** The first of: the promise's outcome, `ms` passing, `signal` aborting. Cleans up after itself. */
function race(p: Promise<unknown>, ms: number, signal: AbortSignal | undefined): Promise<ReadOutcome> {
  return new Promise((resolve) => {
    const finish = (o: ReadOutcome): void => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      resolve(o);
    };
    const onAbort = (): void => finish({ kind: "abort" });
    const timer = setTimeout(() => finish({ kind: "timeout" }), ms);
    signal?.addEventListener("abort", onAbort, { once: true });
    p.then(
      (value) => finish({ kind: "reply", value }),
      (error: unknown) => finish({ kind: "error", error }),
    );
  });
}
