import assert from "node:assert/strict";
import type { AddressInfo } from "node:net";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { ClasscacheError } from "../runtime/errors.ts";
import { directoryConformance } from "./conformance.ts";
import type { Directory } from "./directory.ts";
import { serveEmbeddedDirectory } from "./embedded.ts";
import { createDirectoryServer, HttpDirectory, type DirectoryServer } from "./http.ts";
import { MemoryDirectory } from "./memory.ts";
import { openDirectory, redact } from "./open.ts";
import { ValkeyDirectory } from "./valkey.ts";

const TOKEN = "test-token-0123456789";

async function listen(server: DirectoryServer): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function serve(dir: Directory, maxBlockMs?: number): Promise<{ url: string; server: DirectoryServer }> {
  const server = createDirectoryServer(dir, { token: TOKEN, ...(maxBlockMs === undefined ? {} : { maxBlockMs }) });
  return { url: await listen(server), server };
}

directoryConformance("HTTP (served in-memory, fake clock)", async () => {
  let now = 1_800_000_000_000;
  const backend = new MemoryDirectory({ now: () => now });
  const { url, server } = await serve(backend);
  const dir = new HttpDirectory({ url, token: TOKEN });
  const other = new HttpDirectory({ url, token: TOKEN });
  return {
    dir,
    other,
    advance: (ms: number) => (now += ms),
    cleanup: async () => {
      await dir.close();
      await other.close();
      await server.shutdown();
      await backend.close();
    },
  };
});

describe("HttpDirectory and the directory server", () => {
  it("answers 401 to a request without the right bearer token", async () => {
    const { url, server } = await serve(new MemoryDirectory());
    try {
      for (const authorization of [undefined, "Bearer wrong", `Basic ${TOKEN}`, "Bearer "]) {
        const res = await fetch(`${url}/v1/keys`, { method: "POST", body: "{}", headers: authorization ? { authorization } : {} });
        assert.equal(res.status, 401, String(authorization));
        assert.match(res.headers.get("www-authenticate") ?? "", /^Bearer/);
        await res.arrayBuffer();
      }
      const client = new HttpDirectory({ url, token: "wrong" });
      await assert.rejects(client.keys(), /rejected the token \(401\)/);
      assert.equal(await client.ping(), false);
    } finally {
      await server.shutdown();
    }
  });

  it("answers 404, 405 and 400 to unknown methods, GETs and malformed bodies", async () => {
    const { url, server } = await serve(new MemoryDirectory());
    const post = (path: string, body: string, method = "POST"): Promise<Response> =>
      fetch(`${url}${path}`, { method, headers: { authorization: `Bearer ${TOKEN}` }, ...(method === "GET" ? {} : { body }) });
    try {
      const cases: [Response, number, RegExp][] = [
        [await post("/v1/flushall", "{}"), 404, /no such directory method/],
        [await post("/v1/constructor", "{}"), 404, /no such directory method/],
        [await post("/v1/keys", "", "GET"), 405, /POST/],
        [await post("/v1/manifest", "not json"), 400, /not JSON/],
        [await post("/v1/manifest", "[1]"), 400, /JSON object/],
        [await post("/v1/manifest", '{"key": 5}'), 400, /key must be a string/],
        [await post("/v1/announce", '{"key": "k", "holder": {"node": "n"}, "ttlMs": 5}'), 400, /holder must be/],
      ];
      for (const [res, status, message] of cases) {
        assert.equal(res.status, status);
        const body = (await res.json()) as { error: { message: string } };
        assert.match(body.error.message, message);
      }
    } finally {
      await server.shutdown();
    }
  });

  it("passes the directory's errors on with their code and hint", async () => {
    const { url, server } = await serve(new MemoryDirectory());
    try {
      const client = new HttpDirectory({ url, token: TOKEN });
      await assert.rejects(client.readEvents("latest", 0), (err: unknown) => err instanceof ClasscacheError && /not an event id/.test(err.message));
      await assert.rejects(client.announce("k", { node: "n", url: "u", zone: "z" }, -1), /invalid TTL/);
    } finally {
      await server.shutdown();
    }
  });

  it("fails clearly when the server is unreachable", async () => {
    const { url, server } = await serve(new MemoryDirectory());
    await server.shutdown();
    const client = new HttpDirectory({ url, token: TOKEN, pingTimeoutMs: 500 });
    await assert.rejects(client.manifest("k"), (err: unknown) => {
      assert.ok(err instanceof ClasscacheError);
      assert.match(err.message, new RegExp(`cannot reach the directory at ${url.replace(/[.]/g, "\\.")} \\(manifest\\): .*ECONNREFUSED`));
      assert.match(err.hint ?? "", /running/);
      return true;
    });
    assert.equal(await client.ping(), false);
    assert.throws(() => new HttpDirectory({ url: "ftp://x", token: TOKEN }), /http: or https:/);
  });

  it("polls again when the server caps a long poll below the wait asked for", async () => {
    const backend = new MemoryDirectory();
    const { url, server } = await serve(backend, 150);
    try {
      const client = new HttpDirectory({ url, token: TOKEN });
      let t0 = Date.now();
      assert.deepEqual(await client.readEvents("0", 600), []);
      assert.ok(Date.now() - t0 >= 550, `waited ${Date.now() - t0} ms of 600`);
      t0 = Date.now();
      const reading = client.readEvents("0", 5_000);
      await sleep(400);
      await backend.emit({ type: "published", key: "k", node: "n" });
      assert.equal((await reading).length, 1);
      assert.ok(Date.now() - t0 < 1_500);
    } finally {
      await server.shutdown();
    }
  });

  it("stops waiting on the server when the client aborts its long poll", async () => {
    const backend = new MemoryDirectory();
    const signals: AbortSignal[] = [];
    const spy = new Proxy(backend, {
      get(target, prop, receiver) {
        if (prop === "readEvents") {
          return (after: string, blockMs: number, signal?: AbortSignal) => {
            if (signal) signals.push(signal);
            return target.readEvents(after, blockMs, signal);
          };
        }
        const v: unknown = Reflect.get(target, prop, receiver);
        return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
    const { url, server } = await serve(spy);
    try {
      const client = new HttpDirectory({ url, token: TOKEN });
      const ac = new AbortController();
      const reading = client.readEvents("0", 20_000, ac.signal);
      await sleep(150);
      assert.equal(signals.length, 1);
      assert.equal(signals[0]!.aborted, false);
      ac.abort();
      assert.deepEqual(await reading, []);
      const deadline = Date.now() + 2_000;
      while (!signals[0]!.aborted && Date.now() < deadline) await sleep(10);
      assert.equal(signals[0]!.aborted, true, "the server saw the client go away");
    } finally {
      await server.shutdown();
    }
  });

  it("ends pending long polls promptly on shutdown, and close() ends a client's", async () => {
    const { url, server } = await serve(new MemoryDirectory());
    const a = new HttpDirectory({ url, token: TOKEN });
    const b = new HttpDirectory({ url, token: TOKEN });
    const t0 = Date.now();
    const readingA = a.readEvents("0", 20_000);
    const readingB = b.readEvents("0", 20_000);
    await sleep(150);
    await b.close();
    assert.deepEqual(await readingB, []);
    await server.shutdown();
    assert.deepEqual(await readingA, []);
    assert.ok(Date.now() - t0 < 2_000, `took ${Date.now() - t0} ms`);
    await assert.rejects(b.keys(), /closed/);
  });

  it("serves an embedded in-memory directory that clients opened from its URL share", async () => {
    const embedded = await serveEmbeddedDirectory({ token: TOKEN });
    try {
      assert.match(embedded.url, /^http:\/\/127\.0\.0\.1:\d+$/);
      const client = openDirectory(embedded.url, { token: TOKEN });
      assert.ok(client instanceof HttpDirectory);
      assert.equal((await client.publish("k", "envelope")).published, true);
      assert.equal(await embedded.directory.manifest("k"), "envelope");
      await client.close();
    } finally {
      await embedded.close();
    }
    assert.throws(() => openDirectory("http://127.0.0.1:1"), /needs a token/);
    assert.throws(() => openDirectory("memcached://:secret@h:1"), (err: unknown) => err instanceof Error && !err.message.includes("secret"));
    const valkey = openDirectory("valkey://:pw@127.0.0.1:1", { prefix: "p:" });
    assert.ok(valkey instanceof ValkeyDirectory);
    await valkey.close();
    assert.equal(redact("redis://:s3cret@h:6379/0"), "redis://:***@h:6379/0");
  });
});
