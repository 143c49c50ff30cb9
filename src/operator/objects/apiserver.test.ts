/**
 * Every object the operator builds, server-side applied to a real kube-apiserver with strict field
 * validation: first as a dry run, then for real, then again to show a re-apply changes nothing.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { ApiError } from "../../kube/errors.ts";
import { ConfigMaps, DaemonSets, Deployments, Jobs, Namespaces, NetworkPolicies, Secrets, Services, StatefulSets, type ResourceType } from "../../kube/resource.ts";
import { startKubeTestEnv, type KubeTestEnv } from "../../kube/testing/env.ts";
import type { KubeObject } from "../../kube/types.ts";
import { FIELD_MANAGER, SYSTEM_NAMESPACE } from "../constants.ts";
import { agentsDaemonSet, agentTokenSecret, signingKeySecret, trustConfigMap } from "./agents.ts";
import { buildJob, buildTokenSecret } from "./buildjob.ts";
import { directorySecret, directoryService, directoryStatefulSet, generatePassword } from "./directory.ts";
import { classCacheOwner, type Built, type PodTemplate } from "./meta.ts";
import { networkPolicies } from "./networkpolicy.ts";
import { buildInput, REF, workloadTemplate } from "./testing.ts";


const TYPES: Record<string, ResourceType> = {
  Namespace: Namespaces,
  Secret: Secrets,
  ConfigMap: ConfigMaps,
  Service: Services,
  StatefulSet: StatefulSets,
  DaemonSet: DaemonSets,
  Deployment: Deployments,
  Job: Jobs,
  NetworkPolicy: NetworkPolicies,
};

const APP_NS = "shop";

void describe("operator objects against a real API server", { timeout: 180_000 }, () => {
  let k: KubeTestEnv;
  before(async () => {
    k = await startKubeTestEnv("objects");
  });
  after(async () => {
    await k?.stop();
  });

  const typeOf = (o: Built): ResourceType => {
    const rt = TYPES[o.kind];
    assert.ok(rt, `no resource type for ${o.kind}`);
    return rt;
  };
  const apply = async <T extends KubeObject>(o: Built, dryRun: boolean): Promise<T> =>
    (await k.client.apply(typeOf(o), o, { fieldManager: FIELD_MANAGER, fieldValidation: "Strict", dryRun })) as KubeObject as T;

  /** Dry run, real apply, and a second real apply that must be a no-op. */
  async function applyForReal<T extends KubeObject>(o: Built): Promise<T> {
    await apply(o, true);
    const first = await apply<T>(o, false);
    const second = await apply<T>(o, false);
    assert.equal(second.metadata.resourceVersion, first.metadata.resourceVersion, `${o.kind} ${o.metadata.name}: re-applying the same object changed it`);
    return second;
  }

  void it("rejects an unknown field, so the acceptances below mean something", async () => {
    const bad = { ...directoryService(), spec: { ...(directoryService()["spec"] as object), replicas: 1 } };
    await assert.rejects(apply(bad, true), (err: unknown) => err instanceof ApiError && /replicas/.test(err.message));
  });

  void it("accepts the system namespace's objects: directory, agents, key material, network policies", async () => {
    await apply({ apiVersion: "v1", kind: "Namespace", metadata: { name: SYSTEM_NAMESPACE } }, false);
    // A StatefulSet's volumeClaimTemplates are immutable: this variant is only tried before the real one exists.
    await apply(directoryStatefulSet({ storageSize: "1Gi", storageClassName: "standard", image: "valkey/valkey:8.1" }), true);
    const objects: Built[] = [
      directorySecret(generatePassword()),
      directoryService(),
      directoryStatefulSet(),
      agentTokenSecret("0123456789abcdef0123456789abcdef"),
      signingKeySecret("-----BEGIN PRIVATE KEY-----\n…\n-----END PRIVATE KEY-----\n", "-----BEGIN PUBLIC KEY-----\n…\n-----END PUBLIC KEY-----\n"),
      trustConfigMap("-----BEGIN PUBLIC KEY-----\n…\n-----END PUBLIC KEY-----\n"),
      agentsDaemonSet({ image: "ghcr.io/classcache/classcache:0.1.0" }),
      agentsDaemonSet({
        image: "ghcr.io/classcache/classcache:0.1.0",
        priorityClassName: "system-node-critical",
        controlPlane: true,
        imagePullPolicy: "Never",
        observeJvms: true,
        directory: { addr: "redis.infra.svc:6379", passwordSecret: { name: "external-redis", key: "password" } },
      }),
      ...networkPolicies({ metricsPort: 9090 }),
      ...networkPolicies(),
    ];
    for (const o of objects) await applyForReal(o);
    const ds = await k.client.get<KubeObject & { spec: { template: { spec: { containers: { args: string[] }[] } } } }>(DaemonSets, "classcache-agent", {
      namespace: SYSTEM_NAMESPACE,
    });
    assert.ok(ds.spec.template.spec.containers[0]?.args.includes("redis://redis.infra.svc:6379"), "the last apply won");
  });

  void it("accepts a build Job made from a stored Deployment's pod template, and its token Secret", async () => {
    await apply({ apiVersion: "v1", kind: "Namespace", metadata: { name: APP_NS } }, false);
    const template = workloadTemplate();
    const deployment: Built = {
      apiVersion: "apps/v1",
      kind: "Deployment",
      metadata: { name: "shop", namespace: APP_NS },
      spec: { replicas: 2, selector: { matchLabels: { app: "shop" } }, template },
    };
    const stored = await applyForReal<KubeObject & { spec: { template: PodTemplate } }>(deployment);
    // What the controller sees: the template as the server stored it, defaults filled in.
    const classCache = { name: "shop", namespace: APP_NS, uid: "6f1c2c7e-1d0e-4a57-9d43-1a2b3c4d5e6f" };
    for (const input of [
      buildInput({ classCache, podTemplate: stored.spec.template }),
      buildInput({ classCache, podTemplate: stored.spec.template, profile: undefined, profileYAML: "name: custom\nmode: hybrid\n", agent: { image: "a:1", jarPath: "/a.jar" } }),
      buildInput({ classCache, podTemplate: stored.spec.template, agent: undefined, profile: undefined, mode: "none", arch: undefined }),
    ]) {
      await apply(buildJob(input), true);
    }
    const job = await applyForReal<KubeObject & { spec: { template: { spec: { containers: { name: string }[] } } } }>(
      buildJob(buildInput({ classCache, podTemplate: stored.spec.template })),
    );
    assert.equal(job.metadata.name, "classcache-build-0123456789");
    assert.deepEqual(
      job.spec.template.spec.containers.map((c) => c.name),
      ["app"],
    );
    await applyForReal(buildTokenSecret(APP_NS, REF, { token: "build-grant-0123456789abcdef", key: "-----BEGIN PRIVATE KEY-----" }, classCacheOwner(classCache)));
  });
});
