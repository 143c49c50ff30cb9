import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Redis } from "ioredis";
import { isAlive } from "./processes.ts";
import { findServerBinary, startRedis } from "./redis.ts";

describe("startRedis", () => {
  let tmp: string;
  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), "classcache-redis-"));
  });
  after(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  it("runs a password-protected server with an fsynced append-only file on the host it is given", async () => {
    const server = await startRedis({ dir: join(tmp, "a"), password: "p@ss word", host: "127.0.0.2" });
    const client = new Redis({ host: "127.0.0.2", port: server.port, password: "p@ss word", lazyConnect: true });
    try {
      assert.equal(server.url, `redis://:p%40ss%20word@127.0.0.2:${server.port}/0`);
      await client.set("k", "v");
      const [, appendonly] = await client.config("GET", "appendonly");
      const [, fsync] = await client.config("GET", "appendfsync");
      const [, save] = await client.config("GET", "save");
      assert.deepEqual([appendonly, fsync, save], ["yes", "always", ""]);
      assert.equal((await stat(join(server.dir, "redis.conf"))).mode & 0o777, 0o600, "the password is in a private file, not argv");
      assert.doesNotMatch(await readFile(`/proc/${server.pid()}/cmdline`, "utf8"), /p@ss/);
      const anonymous = new Redis({ host: "127.0.0.2", port: server.port, lazyConnect: true, retryStrategy: () => null });
      anonymous.on("error", () => {});
      await assert.rejects(anonymous.get("k"), /NOAUTH/);
      anonymous.disconnect();
      assert.equal(await reachable("127.0.0.1", server.port), false, "bound to 127.0.0.2 only");

      const pid = server.pid();
      await server.restart();
      assert.equal(isAlive(pid), false);
      assert.equal(await client.get("k"), "v", "the data survives a graceful restart");
      await client.set("k2", "v2");
      await server.kill();
      await server.restart();
      assert.equal(await client.get("k2"), "v2", "and a crash");
    } finally {
      client.disconnect();
      await server.stop();
    }
    const pid = server.pid();
    assert.equal(pid, 0, "no process after stop()");
    await server.stop(); // idempotent
  });

  it("says how to install redis-server when it is not on PATH", async () => {
    const path = process.env["PATH"];
    process.env["PATH"] = tmp;
    try {
      await assert.rejects(findServerBinary(), /redis-server not found on PATH: install redis-server \(scripts\/setup\.sh does\)/);
    } finally {
      process.env["PATH"] = path;
    }
  });
});

function reachable(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host, port });
    s.on("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.on("error", () => resolve(false));
  });
}
