import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, test } from "node:test";
import { generateSigningKey, trustStoreFromPems } from "../archive/signing.ts";
import { MemoryDirectory } from "../directory/memory.ts";
import { createLogger } from "../runtime/log.ts";
import { LocalStore } from "../store/store.ts";
import { NodeAgent } from "./agent.ts";
import { NodeMetrics } from "./metrics.ts";

describe("NodeAgent: concurrent ensures of one key", () => {
  let dir: string;
  let agent: NodeAgent;
  let directory: MemoryDirectory;
  const key = "f".repeat(64);

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "classcache-agent-"));
    directory = new MemoryDirectory();
    agent = new NodeAgent({
      node: "n1",
      zone: "a",
      url: "http://127.0.0.1:1",
      store: await LocalStore.open(join(dir, "store")),
      root: join(dir, "store"),
      directory,
      trust: trustStoreFromPems([generateSigningKey().publicPem]),
      signer: undefined,
      token: "t".repeat(24),
      log: createLogger({ level: "error", write: () => {} }),
      metrics: new NodeMetrics(),
      leaseTtlMs: 60_000,
    });
  });

  after(async () => {
    await directory.close();
    await rm(dir, { recursive: true, force: true });
  });

  test("a caller that gives up stops waiting without aborting the attempt the others wait on", async () => {
    // Another node builds the key: both callers wait for it on the event stream.
    const lease = await directory.acquireLease(key, "n2", 60_000);
    assert.ok(lease);
    const impatient = new AbortController();
    const first = agent.ensure({ key }, impatient.signal);
    const second = agent.ensure({ key });
    const outcome = { second: "pending" };
    second.then(
      () => (outcome.second = "resolved"),
      (err: unknown) => (outcome.second = err instanceof Error ? err.message : String(err)),
    );
    await sleep(50);
    impatient.abort(new Error("client went away"));
    await assert.rejects(first, /client went away/);
    await sleep(100);
    assert.equal(outcome.second, "pending", "the other caller still waits");
    // The builder fails: the waiting caller sees the failure, so the attempt was alive all along.
    await directory.recordFailure(key, { node: "n2", message: "training JVM crashed", attempts: 1, retryAt: Date.now() + 60_000 }, 60_000);
    await directory.releaseLease(lease);
    await directory.emit({ type: "build-failed", key, node: "n2", message: "training JVM crashed", retryAt: Date.now() + 60_000 });
    await assert.rejects(second, /training JVM crashed/);
  });
});
