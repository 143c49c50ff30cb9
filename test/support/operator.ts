/**
 * A cluster for operator tests: a real kube-apiserver + etcd with the project's CRD, RBAC and
 * admission policies, a real Redis as the external directory (its password in a Secret of
 * classcache-system), and the operator running in this process — its controller as the
 * classcache-operator service account, its webhook as classcache-webhook (each with only its
 * own RBAC), the webhook called by the API server over TLS. `split` runs them as two operators,
 * as a cluster does: the webhook then serves the controller's certificate Secret from files, the
 * way the kubelet mounts it.
 */
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { freePort } from "../../src/jvm/launch.ts";
import { KubeClient } from "../../src/kube/client.ts";
import { Namespaces, Secrets } from "../../src/kube/resource.ts";
import { testLogger } from "../../src/kube/testing/env.ts";
import { SYSTEM_NAMESPACE } from "../../src/operator/constants.ts";
import type { KubeObject } from "../../src/kube/types.ts";
import { DEFAULT_SECRET_NAME, FileCerts } from "../../src/webhook/certs.ts";
import { createOperator, type Operator } from "../../src/operator/operator.ts";
import { defaultManifestFiles } from "../../src/testenv/manifests.ts";
import { startRedis, type RunningRedis } from "../../src/testenv/redis.ts";
import { REPO_ROOT, startTestEnv, type TestEnv } from "../../src/testenv/testenv.ts";

/** The Secret in classcache-system that holds the Redis password (valkey.passwordSecretRef). */
export const DIRECTORY_SECRET = { name: "external-valkey", key: "password" };

export interface OperatorCluster {
  dir: string;
  env: TestEnv;
  /** An admin client, for what the test itself does. */
  client: KubeClient;
  redis: RunningRedis;
  /** The operator; with `split`, its controller. */
  op: Operator;
  /** The operator serving the webhook: `op` itself, or with `split` the webhook on its own. */
  webhook: Operator;
  /** spec.valkey of a ClassCache that uses the test's Redis. */
  valkey: { create: false; addr: string; passwordSecretRef: typeof DIRECTORY_SECRET };
  stop(): Promise<void>;
}

/** The identity a pod of the service account `name` in classcache-system has. */
export function serviceAccount(name: string): { user: string; groups: string[] } {
  return { user: `system:serviceaccount:${SYSTEM_NAMESPACE}:${name}`, groups: ["system:serviceaccounts", `system:serviceaccounts:${SYSTEM_NAMESPACE}`, "system:authenticated"] };
}

export async function startOperatorCluster(name: string, namespaces: string[], opts: { split?: boolean } = {}): Promise<OperatorCluster> {
  const dir = await mkdtemp(join(tmpdir(), `classcache-${name}-`));
  const env = await startTestEnv({ dir, manifests: defaultManifestFiles(REPO_ROOT) });
  const client = KubeClient.load({ kubeconfigPath: env.kubeconfigPath });
  const redis = await startRedis({ dir: join(dir, "redis"), password: `${name}-directory-password` });
  for (const ns of namespaces) await client.create(Namespaces, { metadata: { name: ns } });
  await client.create(Secrets, { metadata: { name: DIRECTORY_SECRET.name, namespace: SYSTEM_NAMESPACE }, stringData: { [DIRECTORY_SECRET.key]: redis.password } }, { namespace: SYSTEM_NAMESPACE });
  const port = await freePort();
  // Each part runs as its service account: the RBAC in deploy/rbac must be enough for everything it does.
  const asOperator = KubeClient.load({ kubeconfigPath: env.kubeconfigPath, impersonate: serviceAccount("classcache-operator") });
  const asWebhook = KubeClient.load({ kubeconfigPath: env.kubeconfigPath, impersonate: serviceAccount("classcache-webhook") });
  const common = {
    log: testLogger({ component: "operator" }),
    image: "registry.example/classcache:test",
    webhookPort: port,
    webhookHost: "127.0.0.1",
    metricsPort: 0,
    metricsHost: "127.0.0.1",
    leaderElection: false,
    pollMs: 500,
  };
  const op = createOperator({
    ...common,
    role: opts.split ? "controller" : "all",
    client: asOperator,
    webhookClient: asWebhook,
    webhookTarget: { url: `https://127.0.0.1:${port}` },
    webhookIps: ["127.0.0.1"],
  });
  const stopping = new AbortController();
  const running = [op.manager.start(stopping.signal)];
  let webhook = op;
  if (opts.split) {
    const certDir = await mountWebhookCertificate(client, join(dir, "webhook-tls"));
    webhook = createOperator({ ...common, role: "webhook", client: asWebhook, certs: new FileCerts({ dir: certDir, logger: common.log, pollMs: 200 }) });
    running.push(webhook.manager.start(stopping.signal));
  }
  await until("the webhook is registered", () => Promise.resolve(op.registrar!.registered() && webhook.webhook!.ready()));
  return {
    dir,
    env,
    client,
    redis,
    op,
    webhook,
    valkey: { create: false, addr: `${redis.host}:${redis.port}`, passwordSecretRef: DIRECTORY_SECRET },
    async stop() {
      stopping.abort();
      await Promise.all(running.map((r) => r.catch(() => {})));
      await redis.stop();
      await env.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * What the kubelet does for the webhook's pod (deploy/operator/operator.yaml): the controller's
 * certificate Secret, once it exists, as files — tls.crt, tls.key and ca.crt, never ca.key.
 */
async function mountWebhookCertificate(client: KubeClient, dir: string): Promise<string> {
  const secret = await until("the webhook's certificate Secret", () =>
    client.get<KubeObject & { data?: Record<string, string> }>(Secrets, DEFAULT_SECRET_NAME, { namespace: SYSTEM_NAMESPACE }).catch(() => undefined),
  );
  await mkdir(dir, { recursive: true });
  for (const key of ["tls.crt", "tls.key", "ca.crt"]) await writeFile(join(dir, key), Buffer.from(secret.data?.[key] ?? "", "base64"));
  return dir;
}

/** Polls until `fn` gives a value (not undefined or false); fails with the last error after `timeoutMs`. */
export async function until<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs / 1000} s${last instanceof Error ? ` (last error: ${last.message})` : ""}`);
    await sleep(100);
  }
}
