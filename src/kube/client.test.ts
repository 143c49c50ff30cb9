/** The client against a real kube-apiserver + etcd. */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { createLogger } from "../runtime/log.ts";
import { ApiError, isConflict, isGone } from "./errors.ts";
import { EventRecorder } from "./events.ts";
import { ConfigMaps, CoreEvents, Events } from "./resource.ts";
import { retryOnConflict } from "./retry.ts";
import { compactEtcd } from "./testing/etcd.ts";
import { createNamespace, startKubeTestEnv, Widgets, type KubeTestEnv } from "./testing/env.ts";
import { microTime, type Event, type KubeObject, type WatchEvent } from "./types.ts";

interface ConfigMap extends KubeObject {
  data?: Record<string, string>;
}

interface Widget extends KubeObject {
  spec?: { size?: number; color?: string };
  status?: { phase?: string; observedGeneration?: number };
}

async function rejection(p: Promise<unknown>): Promise<ApiError> {
  const err = await p.then(
    () => assert.fail("expected the request to fail"),
    (e: unknown) => e,
  );
  assert.ok(err instanceof ApiError, `expected an ApiError, got ${String(err)}`);
  return err;
}

void describe("KubeClient against a real API server", { timeout: 120_000 }, () => {
  let k: KubeTestEnv;
  before(async () => {
    k = await startKubeTestEnv("client");
  });
  after(async () => {
    await k?.stop();
  });

  void it("creates, reads, lists with a selector and deletes objects, and maps 404 to an ApiError", async () => {
    const ns = await createNamespace(k.client, "crud");
    const created = await k.client.create<ConfigMap>(ConfigMaps, {
      metadata: { name: "a", namespace: ns, labels: { app: "x" } },
      data: { k: "v" },
    });
    assert.ok(created.metadata.resourceVersion);
    await k.client.create<ConfigMap>(ConfigMaps, { metadata: { name: "b", namespace: ns } });

    const got = await k.client.get<ConfigMap>(ConfigMaps, "a", { namespace: ns });
    assert.deepEqual(got.data, { k: "v" });
    assert.equal(got.kind, "ConfigMap");

    const labelled = await k.client.list<ConfigMap>(ConfigMaps, { namespace: ns, labelSelector: "app=x" });
    assert.deepEqual(labelled.items.map((c) => c.metadata.name), ["a"]);
    assert.equal(labelled.items[0]?.apiVersion, "v1", "list items get their type filled in");
    // A page size of 1 makes the client follow continue tokens.
    const paged = await k.client.list<ConfigMap>(ConfigMaps, { namespace: ns, pageSize: 1 });
    assert.deepEqual(paged.items.map((c) => c.metadata.name).sort(), ["a", "b"]);
    assert.ok(paged.metadata.resourceVersion);

    await k.client.delete(ConfigMaps, "a", { namespace: ns });
    const err = await rejection(k.client.get(ConfigMaps, "a", { namespace: ns }));
    assert.equal(err.status, 404);
    assert.equal(err.reason, "NotFound");
    assert.equal(err.message, 'configmaps "a" not found');
    assert.equal(err.request, `GET /api/v1/namespaces/${ns}/configmaps/a`);
  });

  void it("maps a forbidden request to a 403 ApiError with the server's message, for a watch too", async () => {
    const alice = k.client.impersonating("alice");
    const err = await rejection(alice.list(ConfigMaps, { namespace: "default" }));
    assert.equal(err.status, 403);
    assert.equal(err.reason, "Forbidden");
    assert.match(err.message, /User "alice" cannot list resource "configmaps"/);

    const watchErr = await rejection(
      (async () => {
        for await (const _ of alice.watch(ConfigMaps, { namespace: "default" })) break;
      })(),
    );
    assert.equal(watchErr.status, 403);
    assert.match(watchErr.message, /User "alice" cannot watch resource "configmaps"/);
  });

  void it("rejects an update with a stale resourceVersion with 409, and retryOnConflict succeeds on a fresh read", async () => {
    const ns = await createNamespace(k.client, "conflict");
    await k.client.create<ConfigMap>(ConfigMaps, { metadata: { name: "c", namespace: ns }, data: { n: "0" } });
    const stale = await k.client.get<ConfigMap>(ConfigMaps, "c", { namespace: ns });
    await k.client.update<ConfigMap>(ConfigMaps, { ...stale, data: { n: "1" } }); // someone else
    const err = await rejection(k.client.update<ConfigMap>(ConfigMaps, { ...stale, data: { n: "2" } }));
    assert.equal(err.status, 409);
    assert.equal(err.reason, "Conflict");
    assert.match(err.message, /the object has been modified; please apply your changes to the latest version/);

    // A read-modify-write that another writer interrupts once.
    let interrupted = false;
    const attempts: number[] = [];
    const result = await retryOnConflict(async (attempt) => {
      attempts.push(attempt);
      const cur = await k.client.get<ConfigMap>(ConfigMaps, "c", { namespace: ns });
      if (!interrupted) {
        interrupted = true;
        await k.client.update<ConfigMap>(ConfigMaps, { ...cur, data: { ...cur.data, other: "yes" } });
      }
      return k.client.update<ConfigMap>(ConfigMaps, { ...cur, data: { ...cur.data, n: String(Number(cur.data?.n) + 1) } });
    });
    assert.deepEqual(attempts, [1, 2]);
    assert.deepEqual(result.data, { n: "2", other: "yes" }, "the retry built on the other writer's change");
    await assert.rejects(
      retryOnConflict(() => Promise.reject(new ApiError(409, "always")), { attempts: 3, delayMs: 1 }),
      (e: unknown) => isConflict(e),
    );
  });

  void it("server-side applies: the same apply twice is a no-op, another manager's field is a conflict unless forced", async () => {
    const ns = await createNamespace(k.client, "ssa");
    const desired: ConfigMap = { metadata: { name: "s", namespace: ns, labels: { owner: "op" } }, data: { size: "1" } };
    const first = await k.client.apply(ConfigMaps, desired, { fieldManager: "classcache-operator" });
    const second = await k.client.apply(ConfigMaps, desired, { fieldManager: "classcache-operator" });
    assert.equal(second.metadata.resourceVersion, first.metadata.resourceVersion, "nothing changed, nothing written");

    const theirs: ConfigMap = { metadata: { name: "s", namespace: ns }, data: { size: "2" } };
    const err = await rejection(k.client.apply(ConfigMaps, theirs, { fieldManager: "someone-else", force: false }));
    assert.equal(err.status, 409);
    assert.equal(err.reason, "Conflict");
    assert.match(err.message, /Apply failed with 1 conflict: conflict with "classcache-operator": \.data\.size/);
    assert.deepEqual(
      err.details?.causes?.map((c) => c.field),
      [".data.size"],
    );

    const forced = await k.client.apply(ConfigMaps, theirs, { fieldManager: "someone-else" }); // force: true by default
    assert.equal(forced.data?.size, "2");
    const owners = forced.metadata.managedFields?.map((m) => m.manager).sort();
    assert.deepEqual(owners, ["classcache-operator", "someone-else"]);
  });

  void it("applies the status subresource of a custom resource, which the main resource ignores", async () => {
    const ns = await createNamespace(k.client, "status");
    const w = await k.client.apply<Widget>(
      Widgets,
      { metadata: { name: "w", namespace: ns }, spec: { size: 3 }, status: { phase: "Ignored" } },
      { fieldManager: "op" },
    );
    assert.equal(w.status, undefined, "status written through the main resource is dropped");
    const withStatus = await k.client.applyStatus<Widget>(
      Widgets,
      { metadata: { name: "w", namespace: ns }, status: { phase: "Ready", observedGeneration: 1 } },
      { fieldManager: "op" },
    );
    assert.deepEqual(withStatus.status, { phase: "Ready", observedGeneration: 1 });
    assert.deepEqual(withStatus.spec, { size: 3 }, "and the status apply left the spec alone");
    assert.equal(withStatus.metadata.generation, 1, "status writes do not bump the generation");
  });

  void it("streams watch events in order from a resourceVersion", async () => {
    const ns = await createNamespace(k.client, "watch");
    const start = await k.client.list(ConfigMaps, { namespace: ns });
    const ctl = new AbortController();
    const seen: string[] = [];
    const watching = (async () => {
      for await (const ev of k.client.watch<ConfigMap>(ConfigMaps, {
        namespace: ns,
        resourceVersion: start.metadata.resourceVersion,
        allowWatchBookmarks: true,
        signal: ctl.signal,
      })) {
        if (ev.type !== "BOOKMARK") seen.push(`${ev.type} ${ev.object.metadata.name} ${ev.object.data?.v ?? ""}`.trim());
        if (seen.length === 3) ctl.abort();
      }
    })();
    await k.client.create<ConfigMap>(ConfigMaps, { metadata: { name: "w1", namespace: ns }, data: { v: "1" } });
    await k.client.patch(ConfigMaps, "w1", { data: { v: "2" } }, { namespace: ns, type: "merge" });
    await k.client.delete(ConfigMaps, "w1", { namespace: ns });
    await watching; // an aborted watch ends quietly
    assert.deepEqual(seen, ["ADDED w1 1", "MODIFIED w1 2", "DELETED w1 2"]);
  });

  void it("reports an expired resourceVersion as a 410 ApiError from an ERROR event after etcd compaction", async () => {
    // core/v1 Events have no watch cache in kube-apiserver, so their watches read etcd directly.
    const ns = await createNamespace(k.client, "gone");
    const before = await k.client.list(CoreEvents, { namespace: ns });
    await k.client.create<ConfigMap>(ConfigMaps, { metadata: { name: "c", namespace: ns } });
    // Two writes: etcd keeps the compaction revision itself, so the first one after the list
    // would still be readable.
    for (const name of ["e1", "e2"]) {
      await k.client.create(CoreEvents, {
        metadata: { name, namespace: ns },
        involvedObject: { kind: "ConfigMap", name: "x", namespace: ns },
        reason: "Test",
        message: "m",
        type: "Normal",
      });
    }
    await compactEtcd(k.env.ports.etcdClient);
    const err = await rejection(
      (async () => {
        for await (const _ of k.client.watch(CoreEvents, { namespace: ns, resourceVersion: before.metadata.resourceVersion })) break;
      })(),
    );
    assert.ok(isGone(err));
    assert.equal(err.reason, "Expired");
    assert.equal(err.message, "The resourceVersion for the provided watch is too old.");

    // ConfigMaps are served from the watch cache, which keeps its own event history: the same
    // compacted resourceVersion is still good there (it expires only when the cache drops it).
    const events: WatchEvent<ConfigMap>[] = [];
    const ctl = new AbortController();
    const from = { namespace: ns, resourceVersion: before.metadata.resourceVersion, timeoutSeconds: 5, signal: ctl.signal };
    for await (const ev of k.client.watch<ConfigMap>(ConfigMaps, from)) {
      events.push(ev);
      ctl.abort();
    }
    assert.equal(events[0]?.type, "ADDED", "the creation from before the compaction, replayed from the cache");
    assert.equal(events[0]?.type === "ADDED" && events[0].object.metadata.name, "c");
  });

  void it("writes Lease times as MicroTime and tells a missing Lease apart", async () => {
    const ns = await createNamespace(k.client, "lease");
    assert.equal(await k.client.getLease(ns, "l"), undefined);
    const now = microTime(Date.now());
    const lease = await k.client.createLease({
      metadata: { name: "l", namespace: ns },
      spec: { holderIdentity: "a", leaseDurationSeconds: 3, acquireTime: now, renewTime: now, leaseTransitions: 0 },
    });
    assert.equal(lease.spec?.renewTime, now);
    const updated = await k.client.updateLease({ ...lease, spec: { ...lease.spec, holderIdentity: "b" } });
    assert.equal(updated.spec?.holderIdentity, "b");
    const err = await rejection(k.client.updateLease({ ...lease, spec: { ...lease.spec, holderIdentity: "c" } }));
    assert.equal(err.status, 409);
    const exists = await rejection(k.client.createLease({ metadata: { name: "l", namespace: ns } }));
    assert.equal(exists.reason, "AlreadyExists");
  });

  void it("records events.k8s.io/v1 Events about an object", async () => {
    const ns = await createNamespace(k.client, "events");
    const cm = await k.client.create<ConfigMap>(ConfigMaps, { metadata: { name: "target", namespace: ns } });
    const recorder = new EventRecorder({
      client: k.client,
      reportingController: "classcache.dev/operator",
      reportingInstance: "test-0",
      logger: createLogger({ write: () => {} }),
    });
    const event = await recorder.record(cm, "Normal", "ArchiveBuilt", "Build", "built the archive");
    assert.ok(event);
    const listed = await k.client.list<Event>(Events, { namespace: ns });
    assert.equal(listed.items.length, 1);
    const e = listed.items[0];
    assert.equal(e?.reason, "ArchiveBuilt");
    assert.equal(e?.regarding.kind, "ConfigMap");
    assert.equal(e?.regarding.uid, cm.metadata.uid);

    const alice = new EventRecorder({
      client: k.client.impersonating("alice"),
      reportingController: "classcache.dev/operator",
      reportingInstance: "test-0",
      logger: createLogger({ write: () => {} }),
    });
    assert.equal(await alice.record(cm, "Warning", "X", "Y", "z"), undefined, "a failure is logged, not thrown");
  });
});
