/**
 * The real-cluster story's parts, shared by its test (test/cluster.test.ts) and its benchmark
 * (bench/cluster.ts): classcache installed with its chart from its own image, and the demo app
 * as most Java images are — ENTRYPOINT ["java", "-jar", "/app.jar"], no command — with a
 * ClassCache written as for the original project.
 */
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { DEFAULT_IMAGE } from "../../scripts/image/build.ts";
import type { Cluster } from "./cluster.ts";
import { TEST_IMAGES } from "./images.ts";
import { REPO_ROOT } from "./testenv.ts";

export const CHART = join(REPO_ROOT, "deploy/chart/classcache");

export interface Pod {
  metadata: { name: string; uid: string; creationTimestamp?: string; deletionTimestamp?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  spec: { nodeName?: string; containers: { name: string }[] };
  status: {
    podIP?: string;
    phase?: string;
    conditions?: { type: string; status: string; lastTransitionTime?: string }[];
    initContainerStatuses?: { name: string; state?: { terminated?: { message?: string; exitCode?: number } } }[];
  };
}

/** What the pod's jar check said (its termination message): `{"archive":true}` when it switched the pod to the archive. */
export const jarCheckSaid = (p: Pod): string => p.status.initContainerStatuses?.find((s) => s.name === "classcache-check")?.state?.terminated?.message ?? "";

export const ready = (p: Pod): boolean => p.status.conditions?.some((c) => c.type === "Ready" && c.status === "True") === true;

/** helm install of the repo's chart with the image `npm run image` builds; one replica each (the machine is small). */
export async function installClasscache(c: Cluster): Promise<void> {
  const at = DEFAULT_IMAGE.lastIndexOf(":");
  await c.helm([
    "install", "classcache", CHART, "-n", "classcache-system", "--create-namespace",
    "--set", `image.repository=${DEFAULT_IMAGE.slice(0, at)},image.tag=${DEFAULT_IMAGE.slice(at + 1)},operator.replicas=1,webhook.replicas=1`,
    "--wait", "--timeout", "5m",
  ]);
}

export function demoDeployment(namespace: string, replicas: number, image: string = TEST_IMAGES["app-17"]): Record<string, unknown> {
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name: "orders", namespace },
    spec: {
      replicas,
      selector: { matchLabels: { app: "orders" } },
      template: {
        metadata: { labels: { app: "orders" } },
        spec: {
          containers: [
            {
              name: "app",
              image,
              imagePullPolicy: "IfNotPresent",
              ports: [{ containerPort: 8080 }],
              readinessProbe: { httpGet: { path: "/actuator/health", port: 8080 }, periodSeconds: 1 },
              resources: { requests: { cpu: "50m", memory: "256Mi" }, limits: { memory: "768Mi" } },
            },
          ],
        },
      },
    },
  };
}

/** As a user of the original project wrote it: the app image and its jar, an agent, no launch. */
export function demoClassCache(namespace: string, image: string = TEST_IMAGES["app-17"]): Record<string, unknown> {
  return {
    apiVersion: "classcache.dev/v1",
    kind: "ClassCache",
    metadata: { name: "orders", namespace },
    spec: {
      workloadRef: { kind: "Deployment", name: "orders" },
      app: { image, jarPath: "/app.jar" },
      agent: { image: TEST_IMAGES.agent, jarPath: "/agent/agent.jar" },
      profile: "reference",
      mode: "baked",
      training: { readyUrl: "http://localhost:8080/actuator/health", warmupUrls: ["http://localhost:8080/api/owners"] },
    },
  };
}

export async function json<T>(c: Cluster, args: string[]): Promise<T> {
  return JSON.parse(await c.kubectl([...args, "-o", "json"])) as T;
}

/** Polls `probe` every `everyMs` until it returns a value; a throw from it is kept as the reason and retried. */
export async function until<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>, everyMs = 1000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      if (err instanceof StopWaiting) throw err;
      last = err;
    }
    await sleep(everyMs);
  }
  throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}${last instanceof Error ? `: ${last.message}` : ""}`);
}

/** Thrown by an `until` probe: give up now. */
export class StopWaiting extends Error {}

/** Waits for the ClassCache to be Ready; a build that failed or a launch that is not java stops the wait. */
export function classCacheReady(c: Cluster, namespace: string, name: string, timeoutMs: number, log: (l: string) => void = () => {}): Promise<unknown> {
  return until(`ClassCache ${namespace}/${name} to be Ready`, timeoutMs, async () => {
    const o = await json<{ status?: { conditions?: { type: string; status: string; reason: string; message: string }[] } }>(c, ["-n", namespace, "get", "classcache", name]);
    const r = o.status?.conditions?.find((x) => x.type === "Ready");
    log(`Ready: ${r?.status} ${r?.reason} ${r?.message}`);
    if (r?.reason === "BuildFailed" || r?.reason === "LaunchNotJava") throw new StopWaiting(`${r.reason}: ${r.message}`);
    return r?.status === "True" ? o : undefined;
  });
}
