/**
 * One real kube-apiserver + etcd per integration test file (src/testenv), with a client for it
 * and a CRD that has a status subresource.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLogger, type Logger } from "../../runtime/log.ts";
import { startTestEnv, type TestEnv } from "../../testenv/testenv.ts";
import { KubeClient } from "../client.ts";
import { Namespaces, resourceType } from "../resource.ts";

export const WIDGET_CRD = `
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.test.classcache.dev
spec:
  group: test.classcache.dev
  scope: Namespaced
  names: { plural: widgets, singular: widget, kind: Widget }
  versions:
    - name: v1
      served: true
      storage: true
      subresources: { status: {} }
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                size: { type: integer }
                color: { type: string }
            status:
              type: object
              properties:
                phase: { type: string }
                observedGeneration: { type: integer }
`;

export const Widgets = resourceType("test.classcache.dev/v1", "Widget", "widgets");

export interface KubeTestEnv {
  env: TestEnv;
  dir: string;
  client: KubeClient;
  stop(): Promise<void>;
}

export async function startKubeTestEnv(name: string): Promise<KubeTestEnv> {
  const dir = await mkdtemp(join(tmpdir(), `classcache-${name}-`));
  const crd = join(dir, "widget-crd.yaml");
  await writeFile(crd, WIDGET_CRD);
  let env: TestEnv;
  try {
    env = await startTestEnv({ dir, manifests: [crd] });
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  const client = KubeClient.load({ kubeconfigPath: env.kubeconfigPath });
  return {
    env,
    dir,
    client,
    async stop() {
      await env.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export async function createNamespace(client: KubeClient, name: string): Promise<string> {
  await client.create(Namespaces, { metadata: { name } });
  return name;
}

/** Polls `check` until it returns true (or throws the last assertion error after `timeoutMs`). */
export async function eventually(check: () => boolean | void, timeoutMs = 10_000, what = "condition"): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      if (check() !== false) return;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw last instanceof Error ? last : new Error(`${what} not reached within ${timeoutMs} ms`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Silent, unless CLASSCACHE_TEST_LOG is set: then everything, debug included, goes to stderr. */
export function testLogger(fields: Record<string, unknown> = {}): Logger {
  const on = Boolean(process.env.CLASSCACHE_TEST_LOG);
  return createLogger({ level: "debug", write: on ? (l) => process.stderr.write(`${l}\n`) : () => {} }, fields);
}
