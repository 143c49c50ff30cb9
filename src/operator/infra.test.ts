import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { KubeClient } from "../kube/client.ts";
import { discardLogger } from "../runtime/log.ts";
import { Infrastructure } from "./infra.ts";
import type { PodSpec } from "./objects/meta.ts";

const pod = (o: unknown): PodSpec & Record<string, unknown> => (o as { spec: { template: { spec: PodSpec & Record<string, unknown> } } }).spec.template.spec;

void describe("Infrastructure", () => {
  const client = {} as KubeClient; // agents() builds, it does not call the API server

  void it("creates the node agents as the operator's flags say (--observe-jvms, --agent-priority-class, --agents-on-control-plane, --agent-image-pull-policy)", () => {
    const infra = new Infrastructure({ client, image: "registry.example/classcache@sha256:" + "a".repeat(64), log: discardLogger, agents: { observeJvms: true, priorityClassName: "system-node-critical", controlPlane: true, imagePullPolicy: "Always" } });
    const spec = pod(infra.agents({ managed: true }, "0123456789abcdef"));
    assert.equal(spec["hostPID"], true);
    assert.equal(spec["priorityClassName"], "system-node-critical");
    assert.equal(spec["affinity"], undefined, "control-plane nodes are not excluded");
    assert.equal(spec.containers[0]!.image, "registry.example/classcache@sha256:" + "a".repeat(64));
    assert.equal(spec.containers[0]!["imagePullPolicy"], "Always");
  });

  void it("by default: no host PID, no priority class, worker nodes only, Kubernetes' pull policy", () => {
    const spec = pod(new Infrastructure({ client, image: "i", log: discardLogger }).agents({ managed: true }, "0123456789abcdef"));
    assert.equal(spec["hostPID"], undefined);
    assert.equal(spec["priorityClassName"], undefined);
    assert.ok(spec["affinity"], "control-plane nodes are excluded");
    assert.equal(spec.containers[0]!["imagePullPolicy"], undefined);
  });
});
