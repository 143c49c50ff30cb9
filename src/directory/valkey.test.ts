import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Redis } from "ioredis";
import { ClasscacheError } from "../runtime/errors.ts";
import { startRedis, type RunningRedis } from "../testenv/redis.ts";
import { directoryConformance } from "./conformance.ts";
import type { DirectoryEvent } from "./directory.ts";
import { parseValkeyUrl, ValkeyDirectory, type ValkeyDirectoryOptions } from "./valkey.ts";

const PASSWORD = `pw-${randomBytes(8).toString("hex")}`;
let tmp: string;
let server: RunningRedis;
const open: ValkeyDirectory[] = [];

function directory(opts: Partial<ValkeyDirectoryOptions> & { prefix: string }): ValkeyDirectory {
  const d = new ValkeyDirectory({ url: server.url, ...opts });
  open.push(d);
  return d;
}

const uniquePrefix = (): string => `test-${randomBytes(4).toString("hex")}:`;
const published = (key: string): DirectoryEvent => ({ type: "published", key, node: "n1" });

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), "classcache-valkey-"));
  server = await startRedis({ dir: join(tmp, "shared"), password: PASSWORD });
});

after(async () => {
  await Promise.all(open.map((d) => d.close()));
  await server?.stop();
  await rm(tmp, { recursive: true, force: true });
});

directoryConformance("Valkey", () => {
  const prefix = uniquePrefix();
  const dir = new ValkeyDirectory({ url: server.url, prefix });
  const other = new ValkeyDirectory({ url: server.url.replace(/^redis:/, "valkey:"), prefix });
  return Promise.resolve({
    dir,
    other,
    cleanup: async () => {
      await dir.close();
      await other.close();
    },
  });
});

describe("ValkeyDirectory", () => {
  it("reads redis:// and valkey:// URLs and names the server without the password", () => {
    assert.deepEqual(parseValkeyUrl("valkey://:s%40cret@10.0.0.5:6380/2"), {
      host: "10.0.0.5",
      port: 6380,
      username: undefined,
      password: "s@cret",
      db: 2,
      tls: false,
      where: "valkey://10.0.0.5:6380/2",
    });
    const u = parseValkeyUrl("rediss://user:pw@[::1]");
    assert.deepEqual([u.host, u.port, u.username, u.password, u.db, u.tls], ["::1", 6379, "user", "pw", 0, true]);
    assert.throws(() => parseValkeyUrl("http://host:6379"), /scheme http:/);
    assert.throws(() => parseValkeyUrl("redis://host/x"), /database/);
  });

  it("fails with an error naming authentication when the password is wrong", async () => {
    const dir = new ValkeyDirectory({ url: `redis://:wrong-password@${server.host}:${server.port}`, prefix: uniquePrefix() });
    try {
      await assert.rejects(dir.manifest("k"), (err: unknown) => {
        assert.ok(err instanceof ClasscacheError);
        assert.match(err.message, /refused authentication \(AUTH\)/);
        assert.match(err.message, /WRONGPASS/);
        assert.doesNotMatch(err.message, /wrong-password/);
        assert.match(err.hint ?? "", /password/);
        return true;
      });
      assert.equal(await dir.ping(), false);
    } finally {
      await dir.close();
    }
  });

  it("fails clearly when nothing listens at the address, and ping() says false", async () => {
    const port = await closedPort();
    const dir = new ValkeyDirectory({ url: `redis://:x@127.0.0.1:${port}`, prefix: uniquePrefix(), commandTimeoutMs: 800, pingTimeoutMs: 300 });
    try {
      await assert.rejects(dir.manifest("k"), /cannot read a manifest: Valkey at redis:\/\/127\.0\.0\.1:\d+\/0 is unreachable/);
      assert.equal(await dir.ping(), false);
      const t0 = Date.now();
      assert.deepEqual(await dir.readEvents("0", 300), [], "a blocked read returns [] rather than throwing");
      assert.ok(Date.now() - t0 < 2_500);
    } finally {
      await dir.close();
    }
  });

  it("keeps every key under its prefix, with the documented types and TTLs", async () => {
    const prefix = uniquePrefix();
    const dir = directory({ prefix });
    const raw = new Redis({ host: server.host, port: server.port, password: PASSWORD, lazyConnect: true });
    try {
      const lease = await dir.acquireLease("k", "node-a", 60_000);
      assert.ok(lease);
      await dir.publish("k", "envelope", lease);
      await dir.announce("k", { node: "node-a", url: "http://a:7071", zone: "z" }, 60_000);
      await dir.recordFailure("k", { node: "node-b", message: "m", attempts: 1, retryAt: 5 }, 60_000);
      const id = await dir.emit(published("k"));
      const keys = (await raw.keys(`${prefix}*`)).sort();
      assert.deepEqual(keys, ["events", "failure:k", "fence:k", "holders:k", "lease:k", "manifest:k"].map((k) => prefix + k));
      const type = async (k: string): Promise<string> => raw.type(prefix + k);
      assert.deepEqual(
        await Promise.all(["manifest:k", "holders:k", "lease:k", "fence:k", "failure:k", "events"].map(type)),
        ["string", "zset", "string", "string", "string", "stream"],
      );
      assert.equal(await raw.get(`${prefix}lease:k`), `node-a:${lease.token}`);
      assert.equal(await raw.get(`${prefix}fence:k`), String(lease.token));
      assert.equal(await raw.pttl(`${prefix}manifest:k`), -1, "manifests do not expire");
      assert.equal(await raw.pttl(`${prefix}fence:k`), -1, "nor does the fencing counter");
      for (const k of ["lease:k", "failure:k", "holders:k"]) {
        const ttl = await raw.pttl(prefix + k);
        assert.ok(ttl > 50_000 && ttl <= 60_000, `${k} expires with its TTL (${ttl})`);
      }
      const [member, score] = await raw.zrange(`${prefix}holders:k`, 0, "-1", "WITHSCORES");
      assert.deepEqual(JSON.parse(member!), { node: "node-a", url: "http://a:7071", zone: "z" });
      const serverMs = Number((await raw.time())[0]) * 1000;
      assert.ok(Math.abs(Number(score) - (serverMs + 60_000)) < 5_000, "the score is the expiry in server epoch ms");
      const entries = await raw.xrange(`${prefix}events`, "-", "+");
      assert.deepEqual(entries, [[id, ["event", JSON.stringify(published("k"))]]]);
      assert.deepEqual(await directory({ prefix: uniquePrefix() }).keys(), [], "another prefix sees nothing");
    } finally {
      raw.disconnect();
    }
  });

  it("lists keys with SCAN across many pages, even with glob characters in the prefix", async () => {
    const prefix = `glob*[x]?-${randomBytes(3).toString("hex")}:`;
    const dir = directory({ prefix });
    const decoy = directory({ prefix: prefix.replace("*", "") });
    const keys = Array.from({ length: 2500 }, (_, i) => `key-${String(i).padStart(4, "0")}`);
    await Promise.all(keys.map((k) => dir.publish(k, "e")));
    await decoy.publish("decoy", "e");
    assert.deepEqual(await dir.keys(), keys);
  });

  it("frees an aborted read's connection with CLIENT UNBLOCK, and the next read reuses it", async () => {
    const clientName = `unblock-${randomBytes(4).toString("hex")}`;
    const dir = directory({ prefix: uniquePrefix(), clientName });
    const raw = new Redis({ host: server.host, port: server.port, password: PASSWORD });
    const readers = async (): Promise<{ id: string; blocked: boolean }[]> =>
      String(await raw.client("LIST"))
        .split("\n")
        .filter((line) => line.includes(` name=${clientName}-events `))
        .map((line) => ({ id: /\bid=(\d+)/.exec(line)?.[1] ?? "", blocked: /\bflags=\S*b/.test(line) }));
    try {
      const after = await dir.lastEventId();
      const ac = new AbortController();
      const first = dir.readEvents(after, 20_000, ac.signal);
      await sleep(150);
      const [blocked] = await readers();
      assert.equal(blocked?.blocked, true);
      ac.abort();
      assert.deepEqual(await first, []);
      await sleep(150);
      assert.deepEqual(await readers(), [{ id: blocked.id, blocked: false }], "unblocked, not dropped");
      const second = dir.readEvents(after, 20_000);
      await sleep(150);
      assert.deepEqual(await readers(), [{ id: blocked.id, blocked: true }], "the same connection serves the next read");
      await dir.emit(published("k"));
      assert.equal((await second).length, 1);
    } finally {
      raw.disconnect();
    }
  });

  it("ends a blocked read with [] when closed, and refuses calls afterwards", async () => {
    const dir = new ValkeyDirectory({ url: server.url, prefix: uniquePrefix() });
    const t0 = Date.now();
    const reading = dir.readEvents(await dir.lastEventId(), 20_000);
    await sleep(100);
    await dir.close();
    assert.deepEqual(await reading, []);
    assert.ok(Date.now() - t0 < 1_500);
    await assert.rejects(dir.manifest("k"), /closed/);
    assert.equal(await dir.ping(), false);
  });

  it("serves other commands while a read is blocked", async () => {
    const dir = directory({ prefix: uniquePrefix() });
    await dir.publish("k", "e");
    const reading = dir.readEvents(await dir.lastEventId(), 3_000);
    await sleep(50);
    const t0 = Date.now();
    assert.equal(await dir.manifest("k"), "e");
    assert.ok(Date.now() - t0 < 500, `a command took ${Date.now() - t0} ms during a blocked read`);
    await dir.emit(published("k"));
    assert.equal((await reading).length, 1);
  });
});

describe("ValkeyDirectory across a server restart (append-only file)", () => {
  let restartable: RunningRedis;
  before(async () => {
    restartable = await startRedis({ dir: join(tmp, "restart"), password: PASSWORD });
  });
  after(async () => {
    await restartable?.stop();
  });

  it("keeps what was published and works again without being recreated, and a blocked reader recovers", async () => {
    const prefix = uniquePrefix();
    const dir = new ValkeyDirectory({ url: restartable.url, prefix, pingTimeoutMs: 500 });
    const other = new ValkeyDirectory({ url: restartable.url, prefix });
    try {
      const lease = await dir.acquireLease("k", "builder", 60_000);
      assert.ok(lease);
      assert.equal((await dir.publish("k", "envelope-1", lease)).published, true);
      await dir.emit(published("k"));
      const cursor = await dir.lastEventId();

      const reading = dir.readEvents(cursor, 15_000);
      await sleep(100);
      const pid = restartable.pid();
      await restartable.restart();
      assert.notEqual(restartable.pid(), pid);

      assert.equal(await dir.manifest("k"), "envelope-1");
      assert.deepEqual(await dir.publish("k", "envelope-2"), { published: false, envelope: "envelope-1" });
      assert.equal(await dir.leaseOwner("k"), "builder", "the lease survived too");
      assert.equal(await dir.ping(), true);
      const id = await other.emit(published("after-restart"));
      const got = await reading;
      assert.deepEqual(got.map((r) => [r.id, r.event]), [[id, published("after-restart")]], "the reader blocked across the restart sees the new event");

      // A command issued while the server is down waits for it and succeeds.
      await restartable.stop();
      assert.equal(await dir.ping(), false);
      const pending = dir.manifest("k");
      await sleep(200);
      await restartable.restart();
      assert.equal(await pending, "envelope-1");

      // A crash (SIGKILL) loses nothing acknowledged: every write was fsynced.
      await other.publish("k2", "envelope-3");
      const last = await other.emit(published("k2"));
      await restartable.kill();
      const t0 = Date.now();
      assert.deepEqual(await dir.readEvents(last, 400), [], "a read while the server is down returns []");
      assert.ok(Date.now() - t0 < 3_000, `it took ${Date.now() - t0} ms`);
      await restartable.restart();
      assert.deepEqual(await dir.keys(), ["k", "k2"]);
      assert.equal(await dir.lastEventId(), last);
      const next = await dir.acquireLease("k3", "builder", 1_000);
      assert.ok(next);
    } finally {
      await dir.close();
      await other.close();
    }
  });
});

/** A port nothing listens on (bound, then released). */
async function closedPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve) => s.listen(0, "127.0.0.1", resolve));
  const { port } = s.address() as AddressInfo;
  await new Promise((resolve) => s.close(resolve));
  return port;
}
