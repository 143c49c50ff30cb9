import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { MOUNTS, NAMES, PORTS, STORE_ROOT, SYSTEM_NAMESPACE } from "../constants.ts";
import { agentsDaemonSet, agentTokenSecret, directoryUrl, signingKeySecret, trustConfigMap } from "./agents.ts";
import { directorySecret, directoryService, directoryStatefulSet, generatePassword } from "./directory.ts";
import type { Container, PodSpec } from "./meta.ts";
import { networkPolicies } from "./networkpolicy.ts";

interface Workload {
  spec: { template: { metadata: { labels: Record<string, string> }; spec: PodSpec }; selector: { matchLabels: Record<string, string> } };
}

const podOf = (o: unknown): PodSpec => (o as Workload).spec.template.spec;
const only = (spec: PodSpec): Container => {
  assert.equal(spec.containers.length, 1);
  return spec.containers[0]!;
};
/** Every string of a container that ends up on a command line or in a probe's command. */
const commandLine = (c: Container): string => JSON.stringify([c.command, c.args, c["readinessProbe"], c["livenessProbe"]]);

void describe("directory", () => {
  void it("generates 256-bit URL-safe passwords", () => {
    const a = generatePassword();
    assert.match(a, /^[A-Za-z0-9_-]{43}$/);
    assert.notEqual(a, generatePassword());
  });

  void it("keeps the password in the Secret: never in arguments or probes, -a never used", () => {
    const secret = directorySecret("s3cret-password");
    assert.deepEqual(secret["stringData"], { password: "s3cret-password" });
    assert.equal(secret.metadata.name, NAMES.directorySecret);
    const c = only(podOf(directoryStatefulSet()));
    assert.ok(!commandLine(c).includes("s3cret"));
    assert.ok(c.args?.includes("$(VALKEY_PASSWORD)"));
    assert.ok(!/\s-a\s/.test(commandLine(c)), "valkey-cli -a would put the password on the process list");
    assert.deepEqual(
      c.env?.map((e) => [e.name, e.valueFrom]),
      ["VALKEY_PASSWORD", "REDISCLI_AUTH"].map((n) => [n, { secretKeyRef: { name: NAMES.directorySecret, key: "password" } }]),
    );
  });

  void it("runs valkey as a non-root user with a read-only root and its data on a claim", () => {
    const sts = directoryStatefulSet({ image: "valkey/valkey:8.0", storageSize: "1Gi", storageClassName: "fast" }) as unknown as {
      spec: Workload["spec"] & { replicas: number; volumeClaimTemplates: { spec: Record<string, unknown> }[] };
    };
    assert.equal(sts.spec.replicas, 1);
    const c = only(sts.spec.template.spec);
    assert.equal(c.image, "valkey/valkey:8.0");
    assert.deepEqual(c["securityContext"], {
      runAsNonRoot: true,
      runAsUser: 999,
      runAsGroup: 1000,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ["ALL"] },
      seccompProfile: { type: "RuntimeDefault" },
    });
    assert.deepEqual(sts.spec.volumeClaimTemplates[0]?.spec, { accessModes: ["ReadWriteOnce"], resources: { requests: { storage: "1Gi" } }, storageClassName: "fast" });
    assert.equal(only(podOf(directoryStatefulSet())).image, "valkey/valkey:7.2-alpine");
  });

  void it("selects its pods with the labels the StatefulSet gives them", () => {
    const svc = directoryService() as unknown as { spec: { selector: Record<string, string>; ports: { port: number }[] } };
    const sts = directoryStatefulSet() as unknown as Workload;
    assert.deepEqual(svc.spec.selector, sts.spec.selector.matchLabels);
    for (const [k, v] of Object.entries(svc.spec.selector)) assert.equal(sts.spec.template.metadata.labels[k], v);
    assert.equal(svc.spec.ports[0]?.port, PORTS.directory);
  });
});

void describe("agents", () => {
  const ds = agentsDaemonSet({ image: "ghcr.io/classcache/classcache:0.1.0" });
  const spec = podOf(ds);
  const c = only(spec);

  void it("mounts one host path, the constant store root, and it is the only read-write one", () => {
    const hostVolumes = (spec.volumes ?? []).filter((v) => v.hostPath);
    assert.deepEqual(hostVolumes, [{ name: "store", hostPath: { path: STORE_ROOT, type: "DirectoryOrCreate" } }]);
    assert.deepEqual(
      c.volumeMounts?.filter((m) => !m.readOnly).map((m) => m.mountPath),
      [STORE_ROOT, "/tmp"],
    );
  });

  void it("reads the directory password from a Secret file, never from its spec, env or command line", () => {
    assert.ok(c.args?.includes(`redis://${NAMES.directory}.${SYSTEM_NAMESPACE}.svc:${PORTS.directory}`));
    assert.ok(c.args?.includes(`${MOUNTS.directoryPassword}/password`));
    assert.equal(c.env?.some((e) => /PASSWORD/.test(e.name)), false);
    const vol = (spec.volumes ?? []).find((v) => v.name === "directory-password");
    assert.deepEqual(vol?.secret, { secretName: NAMES.directorySecret, defaultMode: 0o400, items: [{ key: "password", path: "password" }] });
    const ext = directoryUrl({ addr: "redis.infra:6380", passwordSecret: { name: "redis", key: "pw" }, tls: true });
    assert.deepEqual(ext, { url: "rediss://redis.infra:6380", password: { secretName: "redis", key: "pw" } });
    assert.deepEqual(directoryUrl({ addr: "redis.infra:6379" }), { url: "redis://redis.infra:6379" });
  });

  void it("mounts the secrets read-only and owner-only, and no signing key: an agent signs nothing", () => {
    const secretVolumes = (spec.volumes ?? []).filter((v) => v.secret);
    assert.deepEqual(secretVolumes.map((v) => [v.secret?.secretName, v.secret?.defaultMode]), [
      [NAMES.agentToken, 0o400],
      [NAMES.directorySecret, 0o400],
    ]);
    assert.ok(!JSON.stringify(spec).includes(NAMES.signingKey), "the signing key's Secret is not in the agents' pods");
    assert.ok(!(c.args ?? []).includes("--signing-key"));
    for (const path of [MOUNTS.agentToken, MOUNTS.trust]) {
      assert.equal(c.volumeMounts?.find((m) => m.mountPath === path)?.readOnly, true, path);
    }
  });

  void it("runs on every worker node but not on control-plane nodes unless asked, without API credentials or privilege escalation, and without host PID or any capability unless asked to observe the node's JVMs", () => {
    assert.deepEqual(spec["tolerations"], [{ operator: "Exists" }]);
    const terms = (spec["affinity"] as { nodeAffinity: { requiredDuringSchedulingIgnoredDuringExecution: { nodeSelectorTerms: unknown[] } } }).nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms;
    assert.deepEqual(terms, [{ matchExpressions: [{ key: "node-role.kubernetes.io/control-plane", operator: "DoesNotExist" }] }]);
    assert.equal((agentsDaemonSet({ image: "i", controlPlane: true }) as unknown as { spec: { template: { spec: Record<string, unknown> } } }).spec.template.spec["affinity"], undefined);
    assert.equal(spec["automountServiceAccountToken"], false);
    assert.equal(spec["hostNetwork"], false);
    assert.equal(spec["hostPID"], undefined, "by default it does not see the node's other processes");
    assert.equal(spec["priorityClassName"], undefined);
    const sc = c["securityContext"] as Record<string, unknown>;
    assert.deepEqual(sc["capabilities"], { drop: ["ALL"] });
    const observing = podOf(agentsDaemonSet({ image: "x", observeJvms: true }));
    assert.equal(observing["hostPID"], true, "opted in, it sees the node's JVMs");
    assert.deepEqual(((observing["containers"] as Record<string, unknown>[])[0]!["securityContext"] as Record<string, unknown>)["capabilities"], { drop: ["ALL"], add: ["SYS_PTRACE"] });
    assert.equal(sc["allowPrivilegeEscalation"], false);
    assert.equal(sc["readOnlyRootFilesystem"], true);
    const critical = podOf(agentsDaemonSet({ image: "x", priorityClassName: "system-node-critical" }));
    assert.equal(critical["priorityClassName"], "system-node-critical");
  });

  void it("builds the key material objects with the names the DaemonSet mounts", () => {
    assert.equal(agentTokenSecret("t").metadata.name, NAMES.agentToken);
    assert.deepEqual(signingKeySecret("PRIVATE", "PUBLIC")["stringData"], { "signing.pem": "PRIVATE", "signing.pub": "PUBLIC" });
    assert.deepEqual(trustConfigMap("PUBLIC")["data"], { "signing.pub": "PUBLIC" });
  });
});

void describe("networkPolicies", () => {
  type Rule = { from?: { podSelector: { matchLabels: Record<string, string> } }[]; ports?: { port: number }[] };
  const policies = networkPolicies().map((p) => ({ name: p.metadata.name, spec: p["spec"] as { podSelector: { matchLabels?: Record<string, string> }; ingress: Rule[] } }));
  const byName = (n: string) => policies.find((p) => p.name === n)!.spec;
  const component = (r: Rule) => r.from?.map((f) => f.podSelector.matchLabels["app.kubernetes.io/component"]);

  void it("denies all ingress in the namespace by default", () => {
    assert.deepEqual(byName("classcache-default-deny-ingress"), { podSelector: {}, policyTypes: ["Ingress"] });
  });

  void it("lets only agents and the operator reach the directory, and only agents reach agents", () => {
    const dir = byName("classcache-directory");
    assert.deepEqual(dir.ingress.map(component), [["agent", "operator"]]);
    assert.deepEqual(dir.ingress[0]?.ports, [{ protocol: "TCP", port: PORTS.directory }]);
    const agents = byName("classcache-agent");
    assert.deepEqual(agents.ingress.map(component), [["agent"]]);
    assert.deepEqual(agents.ingress[0]?.ports, [{ protocol: "TCP", port: PORTS.peer }]);
  });

  void it("keeps the webhook port of the webhook's pods open to any source, the API server included", () => {
    const wh = byName("classcache-webhook");
    assert.deepEqual(wh.podSelector.matchLabels, { "app.kubernetes.io/part-of": "classcache", "app.kubernetes.io/component": "webhook" });
    assert.equal(wh.ingress[0]?.from, undefined);
    assert.deepEqual(wh.ingress[0]?.ports, [{ protocol: "TCP", port: PORTS.webhook }]);
  });

  void it("lets any source scrape the metrics port of agents, the operator and the webhook, and no other port", () => {
    const m = byName("classcache-metrics") as unknown as { podSelector: { matchExpressions: { values: string[] }[] }; ingress: Rule[] };
    assert.deepEqual(m.podSelector.matchExpressions[0]?.values, ["agent", "operator", "webhook"]);
    assert.deepEqual(m.ingress, [{ ports: [{ protocol: "TCP", port: PORTS.metrics }] }]);
    assert.notEqual(PORTS.metrics, PORTS.peer, "the peer port, which serves archives, stays closed to all but agents");
  });

  void it("opens the operator's own metrics port too when it serves on another (--metrics-port)", () => {
    const ports = (opts: { metricsPort?: number }) => (networkPolicies(opts).find((p) => p.metadata.name === "classcache-metrics")!["spec"] as { ingress: Rule[] }).ingress[0]?.ports;
    assert.deepEqual(ports({ metricsPort: 9090 }), [{ protocol: "TCP", port: PORTS.metrics }, { protocol: "TCP", port: 9090 }]);
    assert.deepEqual(ports({ metricsPort: PORTS.metrics }), [{ protocol: "TCP", port: PORTS.metrics }]);
    assert.deepEqual(ports({ metricsPort: 0 }), [{ protocol: "TCP", port: PORTS.metrics }], "0 (a free port, outside a cluster) opens nothing more");
  });
});
