/** Controllers driven by real informers against a real kube-apiserver + etcd. */
import assert from "node:assert/strict";
import { after, before, describe, it, type TestContext } from "node:test";
import { ConfigMaps, Secrets } from "../../kube/resource.ts";
import { createNamespace, eventually, startKubeTestEnv, testLogger, type KubeTestEnv } from "../../kube/testing/env.ts";
import type { KubeObject } from "../../kube/types.ts";
import { RunGroup } from "../../runtime/runnable.ts";
import { Controller, toControllerOwner, watchSecondary, type ControllerOptions } from "./controller.ts";
import { Informer } from "./informer.ts";
import { TerminalError, type Reconciler } from "./reconcile.ts";
import { ExponentialBackoffRateLimiter } from "./workqueue.ts";

interface ConfigMap extends KubeObject {
  data?: Record<string, string>;
}

const BASE_DELAY_MS = 100;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

void describe("Controller against a real API server", { timeout: 120_000 }, () => {
  let k: KubeTestEnv;
  before(async () => {
    k = await startKubeTestEnv("controller");
  });
  after(async () => {
    await k?.stop();
  });

  /** ConfigMaps of `ns` are the primary type; Secrets they control are watched. Runs until the test ends. */
  function runController(
    t: TestContext,
    ns: string,
    reconcile: Reconciler,
    extra: Partial<ControllerOptions<ConfigMap>> = {},
  ): { controller: Controller<ConfigMap>; configMaps: Informer<ConfigMap> } {
    const logger = testLogger({ test: ns });
    const configMaps = new Informer<ConfigMap>({ client: k.client, resource: ConfigMaps, namespace: ns, logger });
    const secrets = new Informer({ client: k.client, resource: Secrets, namespace: ns, logger });
    const controller = new Controller<ConfigMap>({
      name: ns,
      for: configMaps,
      watches: [watchSecondary(secrets, toControllerOwner("ConfigMap"))],
      reconcile,
      rateLimiter: new ExponentialBackoffRateLimiter({ baseDelayMs: BASE_DELAY_MS }),
      logger,
      ...extra,
    });
    const ctl = new AbortController();
    const done = new RunGroup(ns, [configMaps, secrets, controller]).start(ctl.signal);
    t.after(async () => {
      ctl.abort();
      await done;
    });
    return { controller, configMaps };
  }

  void it("retries a reconcile that fails twice with growing backoff, then forgets the key", async (t) => {
    const ns = await createNamespace(k.client, "flaky");
    const attempts: number[] = [];
    const { controller } = runController(t, ns, (key) => {
      attempts.push(performance.now());
      if (attempts.length <= 2) return Promise.reject(new Error(`transient failure ${attempts.length} of ${key}`));
      return Promise.resolve({});
    });
    await k.client.create<ConfigMap>(ConfigMaps, { metadata: { name: "cm", namespace: ns } });
    await eventually(() => attempts.length === 3);
    const gaps = [attempts[1]! - attempts[0]!, attempts[2]! - attempts[1]!];
    assert.ok(gaps[0]! >= BASE_DELAY_MS - 5, `first retry after ${gaps[0]} ms`);
    assert.ok(gaps[1]! >= 2 * BASE_DELAY_MS - 5, `second retry after ${gaps[1]} ms`);
    assert.ok(gaps[1]! > gaps[0]!);
    await sleep(4 * BASE_DELAY_MS);
    assert.equal(attempts.length, 3, "not reconciled again after the success");
    assert.equal(controller.queue.numRequeues(`${ns}/cm`), 0, "the backoff was reset");
  });

  void it("reconciles a deleted object's key once more with nothing in the cache, then forgets it", async (t) => {
    const ns = await createNamespace(k.client, "deleted");
    const calls: string[] = [];
    const { controller, configMaps } = runController(t, ns, (key) => {
      calls.push(`${key} ${configMaps.get(key) ? "present" : "gone"}`);
      return Promise.resolve({});
    });
    await k.client.create<ConfigMap>(ConfigMaps, { metadata: { name: "doomed", namespace: ns } });
    await eventually(() => calls.length === 1);
    await k.client.delete(ConfigMaps, "doomed", { namespace: ns });
    await eventually(() => calls.length === 2);
    await sleep(500);
    assert.deepEqual(calls, [`${ns}/doomed present`, `${ns}/doomed gone`]);
    assert.equal(controller.queue.len() + controller.queue.delayedLen(), 0);
    assert.equal(controller.queue.numRequeues(`${ns}/doomed`), 0);
  });

  void it("does not retry a TerminalError", async (t) => {
    const ns = await createNamespace(k.client, "terminal");
    let calls = 0;
    const { controller } = runController(t, ns, () => {
      calls++;
      return Promise.reject(new TerminalError("spec.size must be positive"));
    });
    await k.client.create<ConfigMap>(ConfigMaps, { metadata: { name: "bad", namespace: ns } });
    await eventually(() => calls === 1);
    await sleep(8 * BASE_DELAY_MS);
    assert.equal(calls, 1);
    assert.equal(controller.queue.delayedLen(), 0);
  });

  void it("reconciles again after requeueAfter", async (t) => {
    const ns = await createNamespace(k.client, "requeue");
    const at: number[] = [];
    runController(t, ns, () => {
      at.push(performance.now());
      return Promise.resolve(at.length === 1 ? { requeueAfter: 300 } : {});
    });
    await k.client.create<ConfigMap>(ConfigMaps, { metadata: { name: "poll", namespace: ns } });
    await eventually(() => at.length === 2);
    assert.ok(at[1]! - at[0]! >= 295, `after ${at[1]! - at[0]!} ms`);
    await sleep(500);
    assert.equal(at.length, 2);
  });

  void it("maps a change to an owned Secret to its owner's key", async (t) => {
    const ns = await createNamespace(k.client, "owned");
    const calls: string[] = [];
    runController(t, ns, (key) => {
      calls.push(key);
      return Promise.resolve({});
    });
    const owner = await k.client.create<ConfigMap>(ConfigMaps, { metadata: { name: "owner", namespace: ns } });
    await eventually(() => calls.length === 1);
    const ownerRef = { apiVersion: "v1", kind: "ConfigMap", name: "owner", uid: owner.metadata.uid!, controller: true };
    await k.client.create(Secrets, { metadata: { name: "owned", namespace: ns, ownerReferences: [ownerRef] }, stringData: { a: "b" } });
    await k.client.create(Secrets, { metadata: { name: "unowned", namespace: ns }, stringData: { a: "b" } });
    await eventually(() => calls.length === 2);
    await sleep(300);
    assert.deepEqual(calls, [`${ns}/owner`, `${ns}/owner`]);
  });

  void it("never runs one key in two workers at once, while different keys run in parallel", async (t) => {
    const ns = await createNamespace(k.client, "parallel");
    const running = new Map<string, number>();
    let maxPerKey = 0;
    let maxTotal = 0;
    let calls = 0;
    runController(
      t,
      ns,
      async (key) => {
        calls++;
        running.set(key, (running.get(key) ?? 0) + 1);
        maxPerKey = Math.max(maxPerKey, running.get(key)!);
        maxTotal = Math.max(maxTotal, [...running.values()].reduce((a, b) => a + b, 0));
        await sleep(150);
        running.set(key, running.get(key)! - 1);
        return {};
      },
      { workers: 4 },
    );
    for (const name of ["a", "b", "c"]) await k.client.create<ConfigMap>(ConfigMaps, { metadata: { name, namespace: ns } });
    // Keep changing "a" while it is being reconciled.
    for (let i = 0; i < 10; i++) {
      await k.client.patch(ConfigMaps, "a", { data: { i: String(i) } }, { namespace: ns, type: "merge" });
      await sleep(20);
    }
    await sleep(600);
    assert.equal(maxPerKey, 1);
    assert.ok(maxTotal >= 2, `at most ${maxTotal} at once`);
    assert.ok(calls < 3 + 10, `${calls} reconciles: changes during a reconcile coalesce`);
  });
});
