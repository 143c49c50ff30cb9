import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { generateBuildKey, generateSigningKey, signBuild, signerFromPem, signGrant, trustStoreFromPems } from "../../archive/signing.ts";
import { offerName } from "../../directory/common.ts";
import { MemoryDirectory } from "../../directory/memory.ts";
import type { KubeClient } from "../../kube/client.ts";
import type { EventRecorder } from "../../kube/events.ts";
import type { KubeObject } from "../../kube/types.ts";
import type { Logger } from "../../runtime/log.ts";
import { sampleManifest } from "../../../test/support/manifest.ts";
import { FINALIZER, resolveSpec, type ClassCache, type ClassCacheStatus } from "../api/v1.ts";
import type { Informer } from "../runtime/informer.ts";
import { ClassCacheReconciler } from "./reconciler.ts";
import { cleanTemplate, injectionFor, type Workload } from "./workload.ts";

const IMAGE = "registry.example/classcache:test";

const cc: ClassCache = {
  apiVersion: "classcache.dev/v1",
  kind: "ClassCache",
  metadata: { name: "shop", namespace: "shop", uid: "uid-shop", generation: 1, resourceVersion: "7", finalizers: [FINALIZER] },
  spec: { workloadRef: { name: "shop" } },
};

const workload: Workload = {
  apiVersion: "apps/v1",
  kind: "Deployment",
  metadata: { name: "shop", namespace: "shop", resourceVersion: "100" },
  spec: { template: { metadata: { labels: { app: "shop" } }, spec: { containers: [{ name: "app", image: "registry.example/shop:1.0", command: ["java", "-jar", "/app.jar"] }] } } },
};

const informer = <T extends KubeObject>(items: T[]): Informer<T> =>
  ({ get: (key: string) => items.find((o) => `${o.metadata.namespace}/${o.metadata.name}` === key), list: () => items }) as unknown as Informer<T>;

const silent: Logger = { debug() {}, info() {}, warn() {}, error() {}, with: () => silent };

/** A reconciler over fixed caches, a memory directory and a client that records its writes (and fails the template's patch if asked). */
function setUp(opts: { failTemplateWrite?: boolean } = {}) {
  const keys = generateSigningKey();
  const signer = signerFromPem(keys.privatePem);
  const trust = trustStoreFromPems([keys.publicPem]);
  const directory = new MemoryDirectory();
  const writes: string[] = [];
  const statuses: ClassCacheStatus[] = [];
  const events: string[] = [];
  const client = {
    patch: (_rt: unknown, name: string, _body: unknown, o: { type: string }) => {
      writes.push(`patch ${o.type} ${name}`);
      if (opts.failTemplateWrite && o.type === "json") return Promise.reject(new Error("the object has been modified"));
      return Promise.resolve({ metadata: { name } });
    },
    apply: (_rt: unknown, obj: KubeObject) => {
      writes.push(`apply ${obj.kind}`);
      return Promise.resolve({ ...obj, metadata: { ...obj.metadata, uid: "uid-of-it", resourceVersion: "101" } });
    },
    applyStatus: (_rt: unknown, obj: KubeObject & { status: ClassCacheStatus }) => {
      writes.push("applyStatus");
      statuses.push(obj.status);
      return Promise.resolve(obj);
    },
    create: (_rt: unknown, obj: KubeObject) => {
      writes.push(`create ${obj.kind}`);
      return Promise.resolve(obj);
    },
  } as unknown as KubeClient;
  const recorder = { record: (_o: unknown, _type: string, reason: string) => Promise.resolve(void events.push(reason)) } as unknown as EventRecorder;
  const reconciler = new ClassCacheReconciler({
    client,
    classCaches: informer([cc]),
    workloads: { Deployment: informer([workload]), StatefulSet: informer<Workload>([]), DaemonSet: informer<Workload>([]) },
    namespaces: informer<KubeObject>([]),
    jobs: informer<KubeObject>([]),
    events: recorder,
    log: silent,
    image: IMAGE,
    directory: () => Promise.resolve({ directory, trust, signer, problems: [] }),
  });
  const { ref } = injectionFor(cc, resolveSpec(cc).spec, cleanTemplate(workload), IMAGE);
  return { reconciler, directory, signer, trust, ref, writes, statuses, events };
}

const condition = (s: ClassCacheStatus | undefined, type: string) => s?.conditions?.find((c) => c.type === type);

void describe("the ClassCache reconciler, gather → decide → act", () => {
  void it("takes a build's offer and reports the archive it bound in the same reconcile", async () => {
    const { reconciler, directory, signer, ref, writes, statuses, events } = setUp();
    const manifest = sampleManifest({ scope: "shop" });
    const buildKey = generateBuildKey();
    const now = Date.now();
    const grant = signGrant({ scope: "shop", ref, classCache: "shop/shop", owner: "uid-shop", buildKey: buildKey.publicKey, issuedAt: now, expiresAt: now + 3600_000 }, signer);
    await directory.bind(offerName(ref, "amd64"), JSON.stringify({ grant, build: signBuild(manifest, signerFromPem(buildKey.privatePem)), node: "node-a" }));

    const result = await reconciler.reconcile("shop/shop", new AbortController().signal);
    assert.deepEqual(events, ["ArchivePublished"]);
    assert.equal(await directory.binding(offerName(ref, "amd64")), undefined, "the offer is taken");
    assert.equal(statuses.length, 1, "one status, written once the binding was read back");
    assert.equal(statuses[0]?.archiveKey, manifest.key);
    assert.equal(condition(statuses[0], "ArchiveAvailable")?.reason, "ArchiveVerified");
    assert.equal(statuses[0]?.phase, "Ready");
    assert.deepEqual(result, { requeueAfter: 60_000 });
    assert.ok(!writes.some((w) => w.startsWith("apply Job")), "no build for a ref that is bound");
  });

  void it("says PatchFailed when the template's write fails, after the pass's other writes, and looks again at the next poll", async () => {
    const { reconciler, writes, statuses } = setUp({ failTemplateWrite: true });
    const result = await reconciler.reconcile("shop/shop", new AbortController().signal);
    assert.deepEqual(writes, ["create Secret", "apply Job", "patch json shop", "applyStatus"]);
    assert.equal(condition(statuses[0], "WorkloadPatched")?.reason, "PatchFailed");
    assert.equal(condition(statuses[0], "WorkloadPatched")?.message, "patching Deployment shop failed: the object has been modified");
    assert.equal(condition(statuses[0], "ArchiveAvailable")?.reason, "Building");
    assert.deepEqual(result, { requeueAfter: 30_000 });
  });
});
