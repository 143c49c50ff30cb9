/** The informer against a real kube-apiserver + etcd. */
import assert from "node:assert/strict";
import { after, before, describe, it, type TestContext } from "node:test";
import { KubeClient } from "../../kube/client.ts";
import { ConfigMaps, CoreEvents } from "../../kube/resource.ts";
import { compactEtcd } from "../../kube/testing/etcd.ts";
import { createNamespace, eventually, startKubeTestEnv, testLogger, type KubeTestEnv } from "../../kube/testing/env.ts";
import { TcpProxy } from "../../kube/testing/proxy.ts";
import type { KubeObject } from "../../kube/types.ts";
import { Informer, type InformerOptions } from "./informer.ts";

interface ConfigMap extends KubeObject {
  data?: Record<string, string>;
}

/** Runs an informer until the test ends (or stop()) and records what its handlers are told. */
function run<T extends KubeObject>(
  t: TestContext,
  opts: Omit<InformerOptions, "logger">,
): {
  informer: Informer<T>;
  log: string[];
  stop: () => Promise<void>;
} {
  const informer = new Informer<T>({ ...opts, logger: testLogger({ test: "informer" }) });
  const log: string[] = [];
  informer.addHandler({
    onAdd: (o) => log.push(`add ${o.metadata.name}`),
    onUpdate: (old, o) => log.push(old === o ? `resync ${o.metadata.name}` : `update ${o.metadata.name}`),
    onDelete: (o, { finalStateUnknown }) => log.push(`delete ${o.metadata.name}${finalStateUnknown ? " (missed)" : ""}`),
  });
  const ctl = new AbortController();
  const done = informer.start(ctl.signal);
  const stop = async (): Promise<void> => {
    ctl.abort();
    await done;
  };
  t.after(stop);
  return { informer, log, stop };
}

void describe("Informer against a real API server", { timeout: 120_000 }, () => {
  let k: KubeTestEnv;
  before(async () => {
    k = await startKubeTestEnv("informer");
  });
  after(async () => {
    await k?.stop();
  });

  void it("lists what exists, then sees creates, updates and deletes made through the API", async (t) => {
    const ns = await createNamespace(k.client, "crud");
    await k.client.create<ConfigMap>(ConfigMaps, { metadata: { name: "old", namespace: ns } });
    const { informer, log, stop } = run<ConfigMap>(t, { client: k.client, resource: ConfigMaps, namespace: ns });
    assert.equal(await informer.waitForSync(AbortSignal.timeout(10_000)), true);
    assert.deepEqual(log, ["add old"]);

    await k.client.create<ConfigMap>(ConfigMaps, { metadata: { name: "new", namespace: ns }, data: { v: "1" } });
    await k.client.patch(ConfigMaps, "new", { data: { v: "2" } }, { namespace: ns, type: "merge" });
    await k.client.delete(ConfigMaps, "old", { namespace: ns });
    await eventually(() => assert.deepEqual(log, ["add old", "add new", "update new", "delete old"]));
    assert.deepEqual(informer.keys(), [`${ns}/new`]);
    assert.equal(informer.get(`${ns}/new`)?.data?.v, "2");
    assert.deepEqual(informer.stats(), { ...informer.stats(), lists: 1, expired: 0, errors: 0 });
    await stop();
  });

  void it("narrows by label selector and reports an object that stops matching as deleted", async (t) => {
    const ns = await createNamespace(k.client, "selector");
    const { informer, log, stop } = run<ConfigMap>(t, { client: k.client, resource: ConfigMaps, namespace: ns, labelSelector: "app=x" });
    await informer.waitForSync();
    await k.client.create<ConfigMap>(ConfigMaps, { metadata: { name: "in", namespace: ns, labels: { app: "x" } } });
    await k.client.create<ConfigMap>(ConfigMaps, { metadata: { name: "out", namespace: ns, labels: { app: "y" } } });
    await k.client.patch(ConfigMaps, "in", { metadata: { labels: { app: "z" } } }, { namespace: ns, type: "merge" });
    await eventually(() => assert.deepEqual(log, ["add in", "delete in"]));
    await stop();
  });

  void it("restarts the watch each time the server closes it, missing nothing and following bookmarks", async (t) => {
    const ns = await createNamespace(k.client, "restart");
    // The server ends every watch after 3 s (and sends a bookmark 2 s before it does).
    const { informer, log, stop } = run<ConfigMap>(t, { client: k.client, resource: ConfigMaps, namespace: ns, watchTimeoutSeconds: 3 });
    await informer.waitForSync();
    for (let i = 0; i < 4; i++) {
      await k.client.create<ConfigMap>(ConfigMaps, { metadata: { name: `c${i}`, namespace: ns } });
      await new Promise((r) => setTimeout(r, 1700)); // spread over several watches
    }
    await eventually(() => assert.equal(log.length, 4));
    assert.deepEqual(log, ["add c0", "add c1", "add c2", "add c3"]);
    const stats = informer.stats();
    assert.ok(stats.watches >= 3, `watches: ${stats.watches}`);
    assert.equal(stats.lists, 1, "a closed watch is resumed, not relisted");
    assert.equal(stats.errors, 0);

    // A change this watch filters out (another namespace) still advances the watch cache; the
    // next bookmark carries that resourceVersion, and the informer resumes from there.
    const elsewhere = await k.client.create<ConfigMap>(ConfigMaps, { metadata: { name: "elsewhere", namespace: "default" } });
    const bookmarks = informer.stats().bookmarks;
    await eventually(() => informer.stats().bookmarks > bookmarks, 10_000, "another bookmark");
    assert.equal(informer.resourceVersion(), elsewhere.metadata.resourceVersion);
    assert.equal(log.length, 4);
    await stop();
  });

  void it("relists after 410 Gone and reports what changed while it was cut off, the delete included", async (t) => {
    // How the 410 is forced, for real: the informer reaches the API server through a TCP proxy.
    // The test cuts the proxy (a network partition for this client only), changes objects
    // directly, and compacts etcd to the current revision — what kube-apiserver does every 5 min.
    // After healing, the informer resumes its watch from its last resourceVersion, which etcd no
    // longer has: the server answers with an ERROR event, 410 Expired.
    // The type is core/v1 Event because kube-apiserver has no watch cache for Events, so their
    // watches are served by etcd. A ConfigMap watch would be served from the watch cache, which
    // keeps its own history (≥ 75 s, up to 100 Ki events) regardless of compaction; expiring it
    // takes either that much churn or a restart of the API server.
    const ns = await createNamespace(k.client, "gone");
    const proxy = await TcpProxy.start(k.env.server);
    const viaProxy = KubeClient.load({ kubeconfigPath: k.env.kubeconfigPath, server: proxy.url });
    const event = (name: string, message: string): KubeObject => ({
      metadata: { name, namespace: ns },
      involvedObject: { kind: "ConfigMap", name: "x", namespace: ns },
      reason: "Test",
      message,
      type: "Normal",
    });
    for (const name of ["e1", "e2", "e3"]) await k.client.create(CoreEvents, event(name, "first"));
    const { informer, log, stop } = run(t, {
      client: viaProxy,
      resource: CoreEvents,
      namespace: ns,
      backoff: { initialMs: 100, maxMs: 300 },
    });
    await informer.waitForSync();
    await eventually(() => informer.stats().watches >= 1);
    assert.deepEqual(log.sort(), ["add e1", "add e2", "add e3"]);
    log.length = 0;

    proxy.cut();
    await eventually(() => informer.stats().errors >= 1, 10_000, "the informer noticing the cut");
    await k.client.delete(CoreEvents, "e1", { namespace: ns });
    const e2 = await k.client.get(CoreEvents, "e2", { namespace: ns });
    await k.client.update(CoreEvents, { ...e2, message: "second" });
    await k.client.create(CoreEvents, event("e4", "first"));
    await compactEtcd(k.env.ports.etcdClient);
    assert.deepEqual(log, [], "nothing seen while cut off");
    proxy.heal();

    await eventually(() => assert.deepEqual(log.sort(), ["add e4", "delete e1 (missed)", "update e2"]), 15_000);
    assert.deepEqual(informer.keys().sort(), [`${ns}/e2`, `${ns}/e3`, `${ns}/e4`]);
    const stats = informer.stats();
    assert.equal(stats.expired, 1, "one 410");
    assert.equal(stats.lists, 2, "the first list and the relist");
    await stop();
    await proxy.close();
  });

  void it("re-delivers every cached object to onUpdate on each resync", async (t) => {
    const ns = await createNamespace(k.client, "resync");
    for (const name of ["a", "b"]) await k.client.create<ConfigMap>(ConfigMaps, { metadata: { name, namespace: ns } });
    const { informer, log, stop } = run<ConfigMap>(t, { client: k.client, resource: ConfigMaps, namespace: ns, resyncPeriodMs: 200 });
    await informer.waitForSync();
    await eventually(() => informer.stats().resyncs >= 2);
    await stop();
    assert.deepEqual(log.slice(0, 2).sort(), ["add a", "add b"]);
    assert.deepEqual(log.slice(2, 6).sort(), ["resync a", "resync a", "resync b", "resync b"]);
  });

  void it("gives a handler added after the first list an add for everything already cached", async (t) => {
    const ns = await createNamespace(k.client, "late");
    await k.client.create<ConfigMap>(ConfigMaps, { metadata: { name: "a", namespace: ns } });
    const { informer, stop } = run<ConfigMap>(t, { client: k.client, resource: ConfigMaps, namespace: ns });
    await informer.waitForSync();
    const late: string[] = [];
    const remove = informer.addHandler({ onAdd: (o) => late.push(`add ${o.metadata.name}`) });
    assert.deepEqual(late, ["add a"]);
    remove();
    await k.client.create<ConfigMap>(ConfigMaps, { metadata: { name: "b", namespace: ns } });
    await eventually(() => informer.get(`${ns}/b`) !== undefined);
    assert.deepEqual(late, ["add a"], "a removed handler hears nothing more");
    await stop();
  });

  void it("keeps retrying with backoff while the API server cannot be reached, and syncs once it can", async (t) => {
    const proxy = await TcpProxy.start(k.env.server);
    proxy.cut();
    const viaProxy = KubeClient.load({ kubeconfigPath: k.env.kubeconfigPath, server: proxy.url });
    const { informer, stop } = run<ConfigMap>(t, {
      client: viaProxy,
      resource: ConfigMaps,
      namespace: "default",
      backoff: { initialMs: 50, maxMs: 200 },
    });
    await eventually(() => informer.stats().errors >= 3);
    assert.equal(informer.hasSynced(), false);
    proxy.heal();
    assert.equal(await informer.waitForSync(AbortSignal.timeout(10_000)), true);
    await stop();
    await proxy.close();
  });
});
