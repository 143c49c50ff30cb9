import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FakeClock, settle } from "./clock.ts";
import { ExponentialBackoffRateLimiter, WorkQueue } from "./workqueue.ts";

/** Resolves to the item, or to "pending" if get() is still waiting after pending callbacks ran. */
async function peek<T>(p: Promise<T | undefined>): Promise<T | undefined | "pending"> {
  return Promise.race([p, settle().then(() => "pending" as const)]);
}

function newQueue(opts: { baseDelayMs?: number; maxDelayMs?: number } = {}): { q: WorkQueue<string>; clock: FakeClock } {
  const clock = new FakeClock();
  return { q: new WorkQueue<string>({ clock, rateLimiter: new ExponentialBackoffRateLimiter(opts) }), clock };
}

void describe("WorkQueue", () => {
  void it("hands items out in the order they were added, each once however often it was added", async () => {
    const { q } = newQueue();
    for (const item of ["a", "b", "a", "c", "b"]) q.add(item);
    assert.equal(q.len(), 3);
    assert.deepEqual([await q.get(), await q.get(), await q.get()], ["a", "b", "c"]);
    assert.equal(q.len(), 0);
  });

  void it("makes get() wait until an item is added", async () => {
    const { q } = newQueue();
    const got = q.get();
    assert.equal(await peek(got), "pending");
    q.add("a");
    assert.equal(await got, "a");
  });

  void it("never hands an item to a second worker while the first is processing it", async () => {
    const { q } = newQueue();
    q.add("a");
    assert.equal(await q.get(), "a"); // worker 1 has it
    q.add("a");
    q.add("a");
    assert.equal(q.len(), 0, "not queued while being processed");
    const worker2 = q.get();
    assert.equal(await peek(worker2), "pending");
    q.done("a");
    assert.equal(await worker2, "a", "queued again, once, after done()");
    q.done("a");
    assert.equal(await peek(q.get()), "pending", "and not a third time");
  });

  void it("lets other items through while one is being processed", async () => {
    const { q } = newQueue();
    q.add("a");
    assert.equal(await q.get(), "a");
    q.add("a");
    q.add("b");
    assert.equal(await q.get(), "b");
    assert.equal(q.processing(), 2);
  });

  void it("forgets an item after done() when it was not added again", async () => {
    const { q } = newQueue();
    q.add("a");
    await q.get();
    q.done("a");
    assert.equal(q.len(), 0);
    assert.equal(q.processing(), 0);
    assert.equal(await peek(q.get()), "pending");
  });

  void it("delays an item added with addAfter until the clock reaches it", async () => {
    const { q, clock } = newQueue();
    q.addAfter("a", 100);
    assert.equal(q.len(), 0);
    assert.equal(q.delayedLen(), 1);
    await clock.advance(99);
    assert.equal(q.len(), 0);
    await clock.advance(1);
    assert.equal(q.len(), 1);
    assert.equal(await q.get(), "a");
  });

  void it("keeps the earliest of several delays of one item and adds it once", async () => {
    const { q, clock } = newQueue();
    q.addAfter("a", 100);
    q.addAfter("a", 30); // sooner: replaces
    q.addAfter("a", 500); // later: ignored
    assert.equal(q.delayedLen(), 1);
    await clock.advance(30);
    assert.equal(q.len(), 1);
    await clock.advance(1000);
    assert.equal(q.len(), 1, "the replaced and ignored delays add nothing");
  });

  void it("adds at once when the delay is zero or negative", () => {
    const { q } = newQueue();
    q.addAfter("a", 0);
    q.addAfter("b", -5);
    assert.equal(q.len(), 2);
  });

  void it("backs a failing item off exponentially from the base delay and resets on forget", async () => {
    const { q, clock } = newQueue({ baseDelayMs: 5 });
    const readyAfter = async (): Promise<number> => {
      const start = clock.now();
      q.addRateLimited("a");
      while (q.len() === 0) await clock.advance(1);
      const waited = clock.now() - start;
      await q.get();
      q.done("a");
      return waited;
    };
    assert.deepEqual([await readyAfter(), await readyAfter(), await readyAfter(), await readyAfter()], [5, 10, 20, 40]);
    assert.equal(q.numRequeues("a"), 4);
    q.forget("a");
    assert.equal(q.numRequeues("a"), 0);
    assert.equal(await readyAfter(), 5);
  });

  void it("keeps a separate backoff per item", () => {
    const limiter = new ExponentialBackoffRateLimiter<string>({ baseDelayMs: 5 });
    assert.deepEqual([limiter.when("a"), limiter.when("a"), limiter.when("a")], [5, 10, 20]);
    assert.equal(limiter.when("b"), 5);
    limiter.forget("a");
    assert.equal(limiter.when("a"), 5);
    assert.equal(limiter.when("b"), 10);
  });

  void it("caps the backoff at the maximum delay, 5 minutes by default", () => {
    const limiter = new ExponentialBackoffRateLimiter<string>();
    const delays = Array.from({ length: 40 }, () => limiter.when("a"));
    assert.equal(delays[0], 5);
    assert.equal(delays[15], 5 * 2 ** 15); // 163 840 ms, the last uncapped one
    assert.equal(delays[16], 300_000); // 5 · 2^16 = 327 680 ms is over the cap
    assert.equal(Math.max(...delays), 300_000);
    assert.equal(delays.at(-1), 300_000);
    const custom = new ExponentialBackoffRateLimiter<string>({ baseDelayMs: 100, maxDelayMs: 250 });
    assert.deepEqual([custom.when("x"), custom.when("x"), custom.when("x")], [100, 200, 250]);
  });

  void it("wakes waiting workers with undefined on shutdown and then refuses new items", async () => {
    const { q, clock } = newQueue();
    const w1 = q.get();
    const w2 = q.get();
    q.addAfter("later", 50);
    q.shutDown();
    assert.equal(await w1, undefined);
    assert.equal(await w2, undefined);
    q.add("a");
    q.addRateLimited("b");
    await clock.advance(1000);
    assert.equal(q.len(), 0, "neither new nor delayed items arrive");
    assert.equal(await q.get(), undefined);
    assert.equal(q.isShuttingDown(), true);
    assert.equal(clock.pending(), 0, "delayed adds were cancelled");
  });

  void it("does not re-queue an item whose processing ends after shutdown", async () => {
    const { q } = newQueue();
    q.add("a");
    await q.get();
    q.add("a");
    q.shutDown();
    q.done("a");
    assert.equal(q.len(), 0);
  });

  void it("serves several waiting workers in the order they asked", async () => {
    const { q } = newQueue();
    const w1 = q.get();
    const w2 = q.get();
    q.add("a");
    q.add("b");
    assert.deepEqual([await w1, await w2], ["a", "b"]);
  });
});
