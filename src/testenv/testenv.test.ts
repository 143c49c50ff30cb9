import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { CoreV1Api, KubernetesObjectApi, type KubernetesObject } from "@kubernetes/client-node";
import { apiRequest } from "./http.ts";
import { loadKubeConfig, startTestEnv, type TestEnv } from "./testenv.ts";

const CRD_YAML = `
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.testenv.classcache.dev
spec:
  group: testenv.classcache.dev
  scope: Namespaced
  names: { plural: widgets, singular: widget, kind: Widget }
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                size: { type: integer }
---
apiVersion: v1
kind: Namespace
metadata:
  name: from-manifest
`;

interface Widget extends KubernetesObject {
  spec: { size: number };
}

/** The version the build script recorded, independent of what the binary reports. */
function builtKubeVersion(binDir: string): string {
  const line = readFileSync(join(binDir, "..", "versions.txt"), "utf8")
    .split("\n")
    .find((l) => l.startsWith("kubernetes "));
  assert.ok(line, "versions.txt names the kubernetes version");
  return line.slice("kubernetes ".length).trim();
}

function portIsClosed(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve(false);
    });
    socket.once("error", () => resolve(true));
  });
}

void describe("test environment (real kube-apiserver + etcd)", { timeout: 45 * 60_000 }, () => {
  let dir: string;
  let env: TestEnv;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "classcache-testenv-"));
    const crdFile = join(dir, "crd.yaml");
    await writeFile(crdFile, CRD_YAML);
    env = await startTestEnv({ dir, manifests: [crdFile], log: (l) => process.stderr.write(`${l}\n`) });
  });

  after(async () => {
    await env?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  void it("reports the version that was built", async () => {
    const res = await apiRequest(env, "/version");
    assert.equal(res.status, 200);
    const version = JSON.parse(res.body) as { gitVersion: string; major: string; minor: string; gitTreeState: string };
    const built = builtKubeVersion(env.binDir);
    assert.equal(version.gitVersion, built);
    assert.equal(`v${version.major}.${version.minor}`, built.split(".").slice(0, 2).join("."));
    assert.equal(version.gitTreeState, "clean");
  });

  void it("stores a namespace and a ConfigMap", async () => {
    const core = loadKubeConfig(env.kubeconfigPath).makeApiClient(CoreV1Api);
    await core.createNamespace({ body: { metadata: { name: "testenv-a" } } });
    await core.createNamespacedConfigMap({
      namespace: "testenv-a",
      body: { metadata: { name: "settings" }, data: { greeting: "hello" } },
    });
    const cm = await core.readNamespacedConfigMap({ namespace: "testenv-a", name: "settings" });
    assert.equal(cm.data?.greeting, "hello");
  });

  void it("applied the manifests, and serves the CRD they define", async () => {
    const kc = loadKubeConfig(env.kubeconfigPath);
    await kc.makeApiClient(CoreV1Api).readNamespace({ name: "from-manifest" });
    const objects = KubernetesObjectApi.makeApiClient(kc);
    await objects.create<Widget>({
      apiVersion: "testenv.classcache.dev/v1",
      kind: "Widget",
      metadata: { name: "w1", namespace: "from-manifest" },
      spec: { size: 3 },
    });
    const read = await objects.read<Widget>({
      apiVersion: "testenv.classcache.dev/v1",
      kind: "Widget",
      metadata: { name: "w1", namespace: "from-manifest" },
    });
    assert.equal(read.spec.size, 3);
  });

  void it("enforces RBAC: an unprivileged user may not list secrets", async () => {
    const path = "/api/v1/namespaces/testenv-a/secrets";
    assert.equal((await apiRequest(env, path)).status, 200, "the admin may");
    const res = await apiRequest(env, path, { headers: { "Impersonate-User": "alice" } });
    assert.equal(res.status, 403);
    assert.match(res.body, /User \\?"alice\\?" cannot list resource \\?"secrets\\?"/);
  });

  void it("stops both servers and frees their ports", async () => {
    await env.stop();
    for (const [name, port] of Object.entries(env.ports)) {
      assert.ok(await portIsClosed(port), `${name} port ${port} is closed`);
    }
  });
});
