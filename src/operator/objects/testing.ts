/** Fixtures for the object builders' tests: a realistic workload and the build input for it. */
import { INJECT_LABEL, STORE_ROOT } from "../constants.ts";
import type { BuildJobInput } from "./buildjob.ts";
import type { PodTemplate } from "./meta.ts";

export const REF = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/** A Spring Boot shop with everything a build must keep, drop or neutralise. */
export function workloadTemplate(): PodTemplate {
  return {
    metadata: { labels: { app: "shop", [INJECT_LABEL]: "shop" }, annotations: { "prometheus.io/scrape": "true" } },
    spec: {
      serviceAccountName: "shop",
      imagePullSecrets: [{ name: "regcred" }],
      nodeSelector: { pool: "jvm" },
      tolerations: [{ key: "dedicated", operator: "Equal", value: "jvm", effect: "NoSchedule" }],
      affinity: {
        nodeAffinity: { requiredDuringSchedulingIgnoredDuringExecution: { nodeSelectorTerms: [{ matchExpressions: [{ key: "disk", operator: "In", values: ["ssd"] }] }] } },
        podAntiAffinity: { requiredDuringSchedulingIgnoredDuringExecution: [{ labelSelector: { matchLabels: { app: "shop" } }, topologyKey: "kubernetes.io/hostname" }] },
      },
      topologySpreadConstraints: [{ maxSkew: 1, topologyKey: "topology.kubernetes.io/zone", whenUnsatisfiable: "DoNotSchedule", labelSelector: { matchLabels: { app: "shop" } } }],
      securityContext: { runAsNonRoot: true, runAsUser: 1000, fsGroup: 1000 },
      initContainers: [{ name: "migrate", image: "shop-migrate:1", volumeMounts: [{ name: "config", mountPath: "/config" }] }],
      containers: [
        {
          name: "app",
          image: "registry.example/shop@sha256:aaaa",
          command: ["java", "-Xmx512m", "-jar", "/app.jar"],
          env: [
            { name: "SPRING_PROFILES_ACTIVE", value: "prod" },
            { name: "DB_PASSWORD", valueFrom: { secretKeyRef: { name: "db", key: "password" } } },
            { name: "CLASSCACHE_STORE", value: "/elsewhere" },
          ],
          envFrom: [{ configMapRef: { name: "shop-env" } }],
          resources: { requests: { cpu: "500m", memory: "1Gi" }, limits: { memory: "1Gi" } },
          ports: [{ name: "http", containerPort: 8080, hostPort: 8080 }],
          livenessProbe: { httpGet: { path: "/actuator/health/liveness", port: 8080 } },
          readinessProbe: { httpGet: { path: "/actuator/health/readiness", port: 8080 } },
          startupProbe: { httpGet: { path: "/actuator/health", port: 8080 } },
          lifecycle: { preStop: { exec: { command: ["sleep", "5"] } } },
          volumeMounts: [
            { name: "config", mountPath: "/config", readOnly: true },
            { name: "host-logs", mountPath: "/logs" },
            { name: "sneaky", mountPath: `${STORE_ROOT}/blobs` },
          ],
        },
        { name: "log-shipper", image: "fluent-bit:3", volumeMounts: [{ name: "host-logs", mountPath: "/logs" }] },
      ],
      volumes: [
        { name: "config", configMap: { name: "shop-config" } },
        { name: "host-logs", hostPath: { path: "/var/log/shop", type: "DirectoryOrCreate" } },
        { name: "sneaky", emptyDir: {} },
        { name: "classcache-work", hostPath: { path: "/", type: "Directory" } },
      ],
    },
  };
}

export function buildInput(over: Partial<BuildJobInput> = {}): BuildJobInput {
  return {
    classCache: { name: "shop", namespace: "shop-ns", uid: "6f1c2c7e-1d0e-4a57-9d43-1a2b3c4d5e6f" },
    ref: REF,
    podTemplate: workloadTemplate(),
    containerName: "app",
    jarPath: "/app.jar",
    mode: "hybrid",
    agent: { image: "otel/agent:2", jarPath: "/javaagent.jar", configPath: "/etc/otel/agent.properties" },
    profile: "otel",
    training: { exitOnRefresh: true, readyUrl: "http://localhost:8080/actuator/health", warmupUrls: ["http://localhost:8080/orders"], timeoutSeconds: 120 },
    kitImage: "ghcr.io/classcache/classcache:0.1.0",
    arch: "arm64",
    ...over,
  };
}

