import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { KubeObject } from "../kube/types.ts";
import { mutatingWebhookConfiguration, validatingWebhookConfiguration } from "./configuration.ts";

type Webhook = Record<string, unknown> & { clientConfig: Record<string, unknown> };
const first = (o: KubeObject): Webhook => (o.webhooks as Webhook[])[0]!;
const CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

describe("webhook configurations", () => {
  it("send labelled pods on CREATE, never from kube-system or the operator's namespace (a namespace whose Pod Security forbids hostPath gets the CSI volume), and fail open", () => {
    const cfg = mutatingWebhookConfiguration({ operatorNamespace: "classcache-system", target: { service: { namespace: "classcache-system", name: "classcache-webhook" } }, caBundle: CA });
    assert.equal(cfg.metadata.name, "classcache-webhook");
    assert.deepEqual(first(cfg), {
      name: "pods.classcache.dev",
      admissionReviewVersions: ["v1"],
      clientConfig: { service: { namespace: "classcache-system", name: "classcache-webhook", path: "/mutate-pods", port: 443 }, caBundle: Buffer.from(CA).toString("base64") },
      rules: [{ operations: ["CREATE"], apiGroups: [""], apiVersions: ["v1"], resources: ["pods"], scope: "Namespaced" }],
      objectSelector: { matchExpressions: [{ key: "classcache.dev/inject", operator: "Exists" }] },
      namespaceSelector: {
        matchExpressions: [
          { key: "kubernetes.io/metadata.name", operator: "NotIn", values: ["kube-system", "classcache-system"] },
        ],
      },
      failurePolicy: "Ignore",
      matchPolicy: "Equivalent",
      sideEffects: "None",
      timeoutSeconds: 5,
      reinvocationPolicy: "IfNeeded",
    });
  });

  it("send ClassCaches on CREATE and UPDATE, for the group given", () => {
    const cfg = validatingWebhookConfiguration({
      operatorNamespace: "ns",
      target: { url: "https://127.0.0.1:9443/" },
      caBundle: CA,
      classCaches: { group: "test.classcache.dev", version: "v1", resource: "classcaches" },
    });
    const wh = first(cfg);
    assert.equal(wh.name, "classcaches.classcache.dev");
    assert.deepEqual(wh.clientConfig, { url: "https://127.0.0.1:9443/validate-classcaches", caBundle: Buffer.from(CA).toString("base64") });
    assert.deepEqual(wh.rules, [{ operations: ["CREATE", "UPDATE"], apiGroups: ["test.classcache.dev"], apiVersions: ["v1"], resources: ["classcaches"], scope: "*" }]);
    assert.equal(wh.failurePolicy, "Ignore");
    assert.equal(wh.sideEffects, "None");
    assert.equal(wh.timeoutSeconds, 5);
    assert.deepEqual(first(validatingWebhookConfiguration({ operatorNamespace: "ns", target: { url: "https://x" } })).rules, [
      { operations: ["CREATE", "UPDATE"], apiGroups: ["classcache.dev"], apiVersions: ["v1"], resources: ["classcaches"], scope: "*" },
    ]);
  });

  it("leave caBundle to cert-manager's cainjector when told where the Certificate is", () => {
    const cfg = mutatingWebhookConfiguration({ operatorNamespace: "ns", target: { url: "https://x" }, certManagerInjectFrom: "ns/classcache-webhook" });
    assert.deepEqual(cfg.metadata.annotations, { "cert-manager.io/inject-ca-from": "ns/classcache-webhook" });
    assert.equal("caBundle" in first(cfg).clientConfig, false);
  });
});
