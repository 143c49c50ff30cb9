import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { directoryConformance } from "./conformance.ts";
import { MemoryDirectory } from "./memory.ts";

directoryConformance("in-memory (fake clock)", () => {
  let now = 1_800_000_000_000;
  const dir = new MemoryDirectory({ now: () => now });
  return Promise.resolve({ dir, advance: (ms: number) => (now += ms), cleanup: () => dir.close() });
});

directoryConformance("in-memory (real time)", () => {
  const dir = new MemoryDirectory();
  return Promise.resolve({ dir, cleanup: () => dir.close() });
});

describe("MemoryDirectory", () => {
  it("keeps only the newest events up to its cap", async () => {
    const dir = new MemoryDirectory({ maxEvents: 3 });
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push(await dir.emit({ type: "published", key: `k${i}`, node: "n" }));
    assert.deepEqual((await dir.readEvents("0", 0)).map((r) => r.id), ids.slice(2));
    assert.deepEqual((await dir.readEvents(ids[0]!, 0)).map((r) => r.event.key), ["k2", "k3", "k4"]);
  });

  it("gives event ids of the stream-id shape that increase even when the clock goes back", async () => {
    let now = 5_000;
    const dir = new MemoryDirectory({ now: () => now });
    const a = await dir.emit({ type: "published", key: "a", node: "n" });
    const b = await dir.emit({ type: "published", key: "b", node: "n" });
    now = 4_000;
    const c = await dir.emit({ type: "published", key: "c", node: "n" });
    now = 6_000;
    const d = await dir.emit({ type: "published", key: "d", node: "n" });
    assert.deepEqual([a, b, c, d], ["5000-0", "5000-1", "5000-2", "6000-0"]);
    assert.deepEqual((await dir.readEvents("5000-1", 0)).map((r) => r.id), [c, d]);
    assert.deepEqual((await dir.readEvents("5000", 0)).map((r) => r.id), [b, c, d], "a bare <ms> means <ms>-0");
  });

  it("rejects a malformed event id", async () => {
    const dir = new MemoryDirectory();
    await assert.rejects(dir.readEvents("latest", 0), /not an event id/);
  });

  it("wakes blocked readers with [] when closed, and refuses calls afterwards", async () => {
    const dir = new MemoryDirectory();
    const t0 = Date.now();
    const reading = dir.readEvents("0", 30_000);
    await dir.close();
    assert.deepEqual(await reading, []);
    assert.ok(Date.now() - t0 < 1_000);
    await assert.rejects(dir.manifest("k"), /closed/);
    assert.equal(await dir.ping(), false);
  });

  it("returns copies, so callers cannot change what it stores", async () => {
    const dir = new MemoryDirectory();
    await dir.announce("k", { node: "n1", url: "http://a", zone: "z" }, 1000);
    (await dir.holders("k"))[0]!.url = "http://changed";
    assert.equal((await dir.holders("k"))[0]!.url, "http://a");
    await dir.emit({ type: "pulled", key: "k", node: "n", from: ["a"], bytes: 1, ms: 1 });
    const [r] = await dir.readEvents("0", 0);
    if (r?.event.type === "pulled") r.event.from.push("b");
    const [again] = await dir.readEvents("0", 0);
    assert.deepEqual(again?.event, { type: "pulled", key: "k", node: "n", from: ["a"], bytes: 1, ms: 1 });
  });
});
