/**
 * The admission webhook against a real kube-apiserver: the API server calls our HTTPS server on
 * 127.0.0.1 with the self-managed certificates (stored in a real Secret) through the registered
 * configurations — mutation stored, exclusions, fail-open in every way it can fail, validation
 * denials reaching the client, and serving-certificate and CA rotation without losing the webhook.
 */
import assert from "node:assert/strict";
import { request } from "node:https";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "node:tls";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import { KubeClient } from "../src/kube/client.ts";
import { ApiError } from "../src/kube/errors.ts";
import { Namespaces, Pods, Secrets } from "../src/kube/resource.ts";
import { testLogger, WIDGET_CRD, Widgets } from "../src/kube/testing/env.ts";
import type { KubeObject } from "../src/kube/types.ts";
import { startTestEnv, type TestEnv } from "../src/testenv/testenv.ts";
import {
  fingerprint,
  fromSecret,
  issueCa,
  issueServing,
  Reasons,
  rotationNeeded,
  SelfManagedCerts,
  splitPem,
  StaticCertSource,
  toSecretData,
  type CertSource,
  type WebhookCertificates,
} from "../src/webhook/certs.ts";
import {
  applyWebhookConfigurations,
  MutatingWebhookConfigurations,
  removeWebhookConfigurations,   ValidatingWebhookConfigurations,
  WebhookRegistrar,
} from "../src/webhook/configuration.ts";
import { WebhookServer, type MutatePod } from "../src/webhook/server.ts";

const OPERATOR_NS = "classcache-system";
const APPS_NS = "apps";
const DAY = 24 * 60 * 60 * 1000;
const log = testLogger({ test: "webhook" });

/** The validating webhook is pointed at the shared test CRD (Widget, with an integer spec.size). */
const VALIDATED = { group: "test.classcache.dev", version: "v1", resource: "widgets" };

interface PodSpec {
  containers: { name: string; image: string; env?: { name: string; value: string }[] }[];
  initContainers?: { name: string; image: string }[];
}
type Pod = KubeObject & { spec: PodSpec };

let behaviour: "inject" | "throw" | "hang" = "inject";
let calls = 0;
/** Stands in for the injection policy: an env var in every container and an init container. */
const mutatePod: MutatePod = async (pod) => {
  calls++;
  if (behaviour === "throw") throw new Error("archive lookup failed");
  if (behaviour === "hang") return new Promise(() => {});
  const spec = (pod as Pod).spec;
  for (const c of spec.containers) {
    if (!c.env?.some((e) => e.name === "CLASSCACHE_ARCHIVE")) c.env = [...(c.env ?? []), { name: "CLASSCACHE_ARCHIVE", value: "demo" }];
  }
  if (!spec.initContainers?.some((c) => c.name === "classcache-init")) {
    spec.initContainers = [...(spec.initContainers ?? []), { name: "classcache-init", image: "classcache:test" }];
  }
  return { pod, warnings: [] };
};
const validate = (obj: unknown): string[] => {
  const size = (obj as { spec?: { size?: number } }).spec?.size;
  return size !== undefined && size < 0 ? ["spec.size must not be negative", `got ${size}`] : [];
};

function podObject(name: string, namespace: string, labelled = true): Pod {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, namespace, ...(labelled ? { labels: { "classcache.dev/inject": "demo" } } : {}) },
    spec: { containers: [{ name: "app", image: "example.com/app:1" }] },
  };
}

function isMutated(pod: Pod): boolean {
  const env = pod.spec.containers[0]?.env ?? [];
  return env.some((e) => e.name === "CLASSCACHE_ARCHIVE") && (pod.spec.initContainers ?? []).some((c) => c.name === "classcache-init");
}

describe("admission webhook with a real kube-apiserver", () => {
  let dir: string;
  let env: TestEnv;
  let client: KubeClient;
  let certs: SelfManagedCerts;
  let registrar: WebhookRegistrar;
  const registrarCtl = new AbortController();
  let registrarRun: Promise<void>;
  let server: RunningServer | undefined;
  let port = 0;
  let podSeq = 0;

  interface RunningServer {
    server: WebhookServer;
    stop(): Promise<void>;
  }

  async function startServer(source: CertSource): Promise<RunningServer> {
    const ctl = new AbortController();
    const s = new WebhookServer({ certs: source, mutatePod, validate, logger: log, port, host: "127.0.0.1" });
    const run = s.start(ctl.signal);
    port = await Promise.race([s.listening(), run.then(() => Promise.reject(new Error("the webhook server stopped")))]);
    return {
      server: s,
      async stop() {
        ctl.abort();
        await run;
      },
    };
  }

  /** A create through plain HTTPS, to see the API server's Warning headers. */
  function createRaw(obj: KubeObject, path: string): Promise<{ status: number; warnings: string; body: KubeObject & { message?: string } }> {
    const url = new URL(env.server + path);
    return new Promise((resolve, reject) => {
      const body = JSON.stringify(obj);
      const req = request(
        url,
        { method: "POST", ca: env.caPem, headers: { Authorization: `Bearer ${env.token}`, "Content-Type": "application/json", Accept: "application/json" } },
        (res) => {
          let text = "";
          res.setEncoding("utf8");
          res.on("data", (c: string) => (text += c));
          res.on("end", () => {
            const w = res.headers.warning;
            resolve({ status: res.statusCode ?? 0, warnings: Array.isArray(w) ? w.join("\n") : (w ?? ""), body: JSON.parse(text) as KubeObject });
          });
        },
      );
      req.on("error", reject);
      req.end(body);
    });
  }

  const nextName = (what: string): string => `${what}-${++podSeq}`;

  /** Creates a labelled pod in dry-run until the API server's answer shows the mutation. */
  async function untilMutating(timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const pod = await client.create<Pod>(Pods, podObject(nextName("probe"), APPS_NS), { dryRun: true });
      if (isMutated(pod)) return;
      if (Date.now() > deadline) throw new Error("the API server did not call the webhook successfully in time");
      await sleep(200);
    }
  }

  async function storeSecret(c: WebhookCertificates): Promise<void> {
    const secret = await client.get<KubeObject>(Secrets, certs.secretName, { namespace: OPERATOR_NS });
    await client.update(Secrets, { ...secret, data: toSecretData(c) });
  }

  function servedFingerprint(): Promise<string> {
    return new Promise((resolve, reject) => {
      const s = connect({ host: "127.0.0.1", port, servername: "classcache-webhook.classcache-system.svc", rejectUnauthorized: false }, () => {
        resolve(fingerprint(s.getPeerX509Certificate()!.toString()));
        s.end();
      });
      s.on("error", reject);
    });
  }

  async function handshakes(): Promise<number> {
    return (await server!.server.metrics.tlsHandshakes.get()).values[0]?.value ?? 0;
  }

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "classcache-webhook-"));
    const crd = join(dir, "widget-crd.yaml");
    await writeFile(crd, WIDGET_CRD);
    env = await startTestEnv({ dir, manifests: [crd] });
    client = KubeClient.load({ kubeconfigPath: env.kubeconfigPath });
    await client.create(Namespaces, { metadata: { name: OPERATOR_NS } });
    await client.create(Namespaces, { metadata: { name: APPS_NS } });

    certs = new SelfManagedCerts({ client, namespace: OPERATOR_NS, extraIps: ["127.0.0.1"], logger: log });
    await certs.sync();
    server = await startServer(certs);
    registrar = new WebhookRegistrar({
      client,
      certs,
      logger: log,
      operatorNamespace: OPERATOR_NS,
      target: { url: `https://127.0.0.1:${port}` },
      classCaches: VALIDATED,
      retryMs: 200,
    });
    registrarRun = registrar.start(registrarCtl.signal);
    await untilMutating();
  });

  after(async () => {
    registrarCtl.abort();
    await registrarRun;
    await server?.stop();
    if (client) await removeWebhookConfigurations(client).catch(() => {});
    await env?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("stores its certificates in a Secret and registers both configurations with that CA", async () => {
    const secret = await client.get<KubeObject & { type?: string; data?: Record<string, string> }>(Secrets, "classcache-webhook-tls", { namespace: OPERATOR_NS });
    assert.equal(secret.type, "kubernetes.io/tls");
    const stored = fromSecret(secret);
    assert.deepEqual(stored, certs.current());
    const mutating = await client.get<KubeObject & { webhooks: { clientConfig: { caBundle: string; url: string } }[] }>(MutatingWebhookConfigurations, "classcache-webhook");
    assert.equal(Buffer.from(mutating.webhooks[0]!.clientConfig.caBundle, "base64").toString(), stored.caPem);
    assert.equal(mutating.webhooks[0]!.clientConfig.url, `https://127.0.0.1:${port}/mutate-pods`);
    assert.ok(mutating.metadata.managedFields?.some((f) => f.manager === "classcache-operator" && f.operation === "Apply"));
    const validating = await client.get<KubeObject>(ValidatingWebhookConfigurations, "classcache-webhook");
    assert.ok(validating.metadata.uid);
  });

  it("mutates a labelled pod and the stored pod carries the mutation", async () => {
    behaviour = "inject";
    const name = nextName("app");
    await client.create(Pods, podObject(name, APPS_NS));
    const stored = await client.get<Pod>(Pods, name, { namespace: APPS_NS });
    assert.ok(isMutated(stored), JSON.stringify(stored.spec));
    assert.deepEqual(stored.spec.containers[0]!.env, [{ name: "CLASSCACHE_ARCHIVE", value: "demo" }]);
  });

  it("is not even called for a pod without the label", async () => {
    const before = calls;
    const name = nextName("plain");
    await client.create(Pods, podObject(name, APPS_NS, false));
    const stored = await client.get<Pod>(Pods, name, { namespace: APPS_NS });
    assert.equal(isMutated(stored), false);
    assert.equal(calls, before);
  });

  it("is not called for a labelled pod in kube-system", async () => {
    const before = calls;
    const name = nextName("system");
    await client.create(Pods, podObject(name, "kube-system"));
    const stored = await client.get<Pod>(Pods, name, { namespace: "kube-system" });
    assert.equal(stored.metadata.name, name);
    assert.equal(isMutated(stored), false);
    assert.equal(calls, before);
  });

  it("lets the pod in unchanged, and the client sees the warning, when the mutation throws", async () => {
    behaviour = "throw";
    try {
      const before = calls;
      const name = nextName("throws");
      const res = await createRaw(podObject(name, APPS_NS), `/api/v1/namespaces/${APPS_NS}/pods`);
      assert.equal(res.status, 201, JSON.stringify(res.body));
      assert.ok(calls > before, "the webhook was called");
      assert.match(res.warnings, /pod admitted without classcache injection \(error\): archive lookup failed/);
      const stored = await client.get<Pod>(Pods, name, { namespace: APPS_NS });
      assert.equal(isMutated(stored), false);
      assert.deepEqual(stored.spec.containers.map((c) => c.env), [undefined]);
    } finally {
      behaviour = "inject";
    }
  });

  it("lets the pod in unchanged, within the API server's timeout, when the mutation hangs", async () => {
    behaviour = "hang";
    try {
      const name = nextName("hangs");
      const t0 = performance.now();
      const res = await createRaw(podObject(name, APPS_NS), `/api/v1/namespaces/${APPS_NS}/pods`);
      const ms = performance.now() - t0;
      assert.equal(res.status, 201, JSON.stringify(res.body));
      assert.ok(ms < 5500, `took ${Math.round(ms)} ms`);
      assert.match(res.warnings, /\(timeout\): no answer within 4000 ms/);
      assert.equal(isMutated(await client.get<Pod>(Pods, name, { namespace: APPS_NS })), false);
      const failed = await server!.server.metrics.failedOpen.get();
      assert.equal(failed.values.find((v) => v.labels.reason === "timeout")?.value, 1);
    } finally {
      behaviour = "inject";
    }
  });

  it("still admits pods, quickly, while the webhook server is down", async () => {
    await server!.stop();
    server = undefined;
    try {
      const name = nextName("down");
      const t0 = performance.now();
      await client.create(Pods, podObject(name, APPS_NS));
      const ms = performance.now() - t0;
      assert.ok(ms < 5500, `took ${Math.round(ms)} ms`);
      assert.equal(isMutated(await client.get<Pod>(Pods, name, { namespace: APPS_NS })), false);
    } finally {
      server = await startServer(certs);
    }
    await untilMutating();
  });

  it("denies an invalid object and the client gets the messages", async () => {
    const obj = { apiVersion: "test.classcache.dev/v1", kind: "Widget", metadata: { name: "bad", namespace: APPS_NS }, spec: { size: -1 } };
    const err = await client.create(Widgets, obj).then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(err instanceof ApiError, String(err));
    assert.equal(err.status, 422);
    assert.match(err.message, /admission webhook "classcaches.classcache.dev" denied the request: spec.size must not be negative; got -1/);
    await client.create(Widgets, { ...obj, metadata: { name: "good", namespace: APPS_NS }, spec: { size: 1 } });
  });

  it("re-issues the serving certificate from the same CA and the API server keeps calling", async () => {
    const before = certs.current()!;
    const ca = { certPem: splitPem(before.caPem)[0]!, keyPem: before.caKeyPem };
    // A serving certificate issued 65 days ago: 25 of its 90 days left, under a third.
    const aged = await issueServing(ca, certs.sans, new Date(Date.now() - 65 * DAY));
    await storeSecret({ ...before, ...aged });
    assert.equal(rotationNeeded({ ...before, ...aged }, new Date(), certs.sans)?.reason, Reasons.ServingExpiring);

    const after = await certs.sync();
    assert.equal(after.caPem, before.caPem, "same CA");
    assert.notEqual(after.certPem, aged.certPem);
    assert.notEqual(after.certPem, before.certPem);
    assert.deepEqual(fromSecret(await client.get<KubeObject & { data?: Record<string, string> }>(Secrets, certs.secretName, { namespace: OPERATOR_NS })), after);
    assert.equal(await servedFingerprint(), fingerprint(after.certPem), "the server swapped its certificate in place");

    const shakes = await handshakes();
    const name = nextName("after-serving-rotation");
    await client.create(Pods, podObject(name, APPS_NS));
    assert.ok(isMutated(await client.get<Pod>(Pods, name, { namespace: APPS_NS })));
    assert.ok((await handshakes()) > shakes, "the API server connected again, so it verified the new certificate");
  });

  it("rotates the CA, keeps the old CA in the bundle, and a replica still serving the old certificate stays trusted", async () => {
    // Start from a CA issued 250 days ago: 115 of its 365 days left, under a third.
    const agedCa = await issueCa(new Date(Date.now() - 250 * DAY));
    const agedServing = await issueServing(agedCa, certs.sans, new Date());
    const aged: WebhookCertificates = { certPem: agedServing.certPem, keyPem: agedServing.keyPem, caPem: agedCa.certPem, caKeyPem: agedCa.keyPem };
    await storeSecret(aged);
    // Until the operator notices, everything runs on the aged CA: the registrar applies it, the server serves it.
    const oldCerts = new StaticCertSource({ certs: aged, logger: log });
    await server!.stop();
    server = await startServer(oldCerts);
    await applyBundle(aged.caPem);
    await untilMutating();

    // The rotation: new CA first, the aged one kept behind it, serving certificate from the new CA.
    await server.stop();
    server = await startServer(certs);
    const rotated = await certs.sync();
    const bundle = splitPem(rotated.caPem);
    assert.equal(bundle.length, 2);
    assert.equal(bundle[1], aged.caPem, "the old CA stays in the bundle");
    assert.notEqual(rotated.caKeyPem, aged.caKeyPem);
    assert.equal(await servedFingerprint(), fingerprint(rotated.certPem));
    await eventuallyBundle(rotated.caPem);
    await untilMutating();
    const name = nextName("after-ca-rotation");
    await client.create(Pods, podObject(name, APPS_NS));
    assert.ok(isMutated(await client.get<Pod>(Pods, name, { namespace: APPS_NS })));

    // A replica that has not reloaded yet still serves the certificate of the old CA: still trusted.
    await server.stop();
    server = await startServer(new StaticCertSource({ certs: { certPem: aged.certPem, keyPem: aged.keyPem, caPem: aged.caPem }, logger: log }));
    const lagging = nextName("lagging-replica");
    await client.create(Pods, podObject(lagging, APPS_NS));
    assert.ok(isMutated(await client.get<Pod>(Pods, lagging, { namespace: APPS_NS })), "the old CA is still in the caBundle");
    await server.stop();
    server = await startServer(certs);
  });

  /** What the registrar does after a rotation, done by hand for the stage before the operator noticed. */
  async function applyBundle(caPem: string): Promise<void> {
    await applyWebhookConfigurations(client, {
      operatorNamespace: OPERATOR_NS,
      target: { url: `https://127.0.0.1:${port}` },
      caBundle: caPem,
      classCaches: VALIDATED,
    });
  }

  async function eventuallyBundle(caPem: string): Promise<void> {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const cfg = await client.get<KubeObject & { webhooks: { clientConfig: { caBundle: string } }[] }>(MutatingWebhookConfigurations, "classcache-webhook");
      if (Buffer.from(cfg.webhooks[0]!.clientConfig.caBundle, "base64").toString() === caPem) return;
      if (Date.now() > deadline) throw new Error("the registrar did not re-apply the caBundle");
      await sleep(50);
    }
  }
});
