/**
 * The node agents: one DaemonSet for the cluster, one agent per node, serving every app. The
 * agent is the only writer of the node store; patched pods see their scope's view of it, read-only.
 */
import {
  AGENT_SERVICE_ACCOUNT,
  COMPONENTS,
  CSI_DRIVER,
  DIRECTORY_HOST,
  MOUNTS,
  NAMES,
  PORTS,
  SECRET_KEYS,
  STORE_ROOT,
  SYSTEM_NAMESPACE,
} from "../constants.ts";
import { fieldEnv, lockedDown, objectLabels, selectorLabels, systemSecret, type Built } from "./meta.ts";

/** Owner read-only: the agent runs as root, nobody else in the pod needs these files. */
const SECRET_MODE = 0o400;
/** The zone label a node carries, copied onto pods at binding (Kubernetes ≥ 1.35, PodTopologyLabels). */
const ZONE_LABEL = "topology.kubernetes.io/zone";

/** A directory the operator did not create (spec.valkey.create: false). */
export interface ExternalDirectory {
  /** host:port of the Valkey or Redis. */
  addr: string;
  /** Its password, in a Secret of the system namespace (a pod reads Secrets of its own namespace only). */
  passwordSecret?: { name: string; key: string };
  /** rediss:// instead of redis://. */
  tls?: boolean;
}

export interface AgentsOptions {
  /** The classcache image (the operator's own, pinned by digest in a release). */
  image: string;
  /** The managed directory when absent. */
  directory?: ExternalDirectory;
  /** e.g. system-node-critical; absent by default, because GKE and others quota critical priorities outside kube-system. */
  priorityClassName?: string;
  /**
   * Let the agent see the node's JVMs (host pid namespace, CAP_SYS_PTRACE to read other
   * containers' /proc/<pid>/maps, smaps and perf counters), so status shows the hit rate
   * workloads really get and metrics the memory sharing saves. Opt-in (default false): it is the
   * one privilege an agent needs beyond its store, and a build's verified hit rate is known
   * without it.
   */
  observeJvms?: boolean;
  imagePullPolicy?: "Always" | "IfNotPresent" | "Never";
  /** A digest of the trusted public keys: a change rolls the agents, which read them at start. */
  trustDigest?: string;
  /** Run agents on control-plane nodes too (default false: no app JVMs belong there, and an agent holds keys). */
  controlPlane?: boolean;
  /**
   * Run the CSI node plugin next to each agent (its own privileged container, `classcache
   * csi-node`): pods of namespaces whose Pod Security level forbids hostPath mount their view of
   * the store through it (docs/csi.md). `kubeletDir` is the kubelet's --root-dir on the nodes.
   */
  csi?: { kubeletDir: string };
}

/** On the agents' pod template: which trusted keys they were started with. */
export const TRUST_ANNOTATION = "classcache.dev/trust";

/** The label kubeadm and most distributions put on control-plane nodes. */
export const CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane";

/**
 * The directory URL (without a password) and the Secret key holding its password. The password
 * reaches the agent as a file (`--directory-password-file`): never in the DaemonSet, in the
 * agent's environment or on its command line, where the node's process list would show it.
 */
export function directoryUrl(dir?: ExternalDirectory): { url: string; password?: { secretName: string; key: string } } {
  if (!dir) return { url: `redis://${DIRECTORY_HOST}:${PORTS.directory}`, password: { secretName: NAMES.directorySecret, key: SECRET_KEYS.password } };
  const url = `${dir.tls ? "rediss" : "redis"}://${dir.addr}`;
  return dir.passwordSecret ? { url, password: { secretName: dir.passwordSecret.name, key: dir.passwordSecret.key } } : { url };
}

export function agentsDaemonSet(opts: AgentsOptions): Built {
  const labels = objectLabels(COMPONENTS.agent);
  const directory = directoryUrl(opts.directory);
  const args = [
    "node",
    "--name", "$(NODE_NAME)",
    // Empty when the node has no zone label or the cluster predates pod topology labels: then every
    // such node is in the same (unnamed) zone, and peer choice is simply random.
    "--zone", "$(NODE_ZONE)",
    "--store", STORE_ROOT,
    "--root", STORE_ROOT,
    "--directory", directory.url,
    ...(directory.password ? ["--directory-password-file", `${MOUNTS.directoryPassword}/password`] : []),
    "--token-file", `${MOUNTS.agentToken}/${SECRET_KEYS.token}`,
    "--trust", `${MOUNTS.trust}/${SECRET_KEYS.trust}`,
    // Build Jobs on this node upload their builds with a token derived from this key for their ref.
    "--listen", `0.0.0.0:${PORTS.peer}`,
    "--advertise", `http://$(POD_IP):${PORTS.peer}`,
    // Loopback of the agent's own pod: workloads talk to the agent through the socket in the store.
    "--api", `127.0.0.1:${PORTS.api}`,
    // Probes and Prometheus: a port of its own, which the NetworkPolicies open to every source.
    "--metrics", `0.0.0.0:${PORTS.metrics}`,
    "--log-format", "json",
  ];
  return {
    apiVersion: "apps/v1",
    kind: "DaemonSet",
    metadata: { name: NAMES.agents, namespace: SYSTEM_NAMESPACE, labels },
    spec: {
      selector: { matchLabels: selectorLabels(COMPONENTS.agent) },
      // maxSurge 0: two agents on one node would both write the store.
      updateStrategy: { type: "RollingUpdate", rollingUpdate: { maxUnavailable: "10%", maxSurge: 0 } },
      template: {
        metadata: { labels, annotations: { "prometheus.io/scrape": "true", "prometheus.io/port": String(PORTS.metrics), ...(opts.trustDigest ? { [TRUST_ANNOTATION]: opts.trustDigest } : {}) } },
        spec: {
          serviceAccountName: AGENT_SERVICE_ACCOUNT,
          // The agent never calls the API server: its zone comes from the downward API, its
          // secrets from volumes. No token in the pod, nothing to steal from a node.
          automountServiceAccountToken: false,
          enableServiceLinks: false,
          hostNetwork: false,
          ...(opts.observeJvms === true ? { hostPID: true } : {}),
          ...(opts.priorityClassName ? { priorityClassName: opts.priorityClassName } : {}),
          // Every worker node gets an agent, whatever its taints: a node without one only boots
          // JVMs cold. Control-plane nodes only when asked: no app JVMs belong there, and an
          // agent holds the cluster's keys.
          tolerations: [{ operator: "Exists" }],
          ...(opts.controlPlane ? {} : { affinity: { nodeAffinity: { requiredDuringSchedulingIgnoredDuringExecution: { nodeSelectorTerms: [{ matchExpressions: [{ key: CONTROL_PLANE_LABEL, operator: "DoesNotExist" }] }] } } } }),
          terminationGracePeriodSeconds: 30,
          securityContext: { seccompProfile: { type: "RuntimeDefault" } },
          containers: [
            {
              name: "agent",
              image: opts.image,
              ...(opts.imagePullPolicy ? { imagePullPolicy: opts.imagePullPolicy } : {}),
              args,
              env: [
                fieldEnv("NODE_NAME", "spec.nodeName"),
                fieldEnv("POD_IP", "status.podIP"),
                fieldEnv("NODE_ZONE", `metadata.labels['${ZONE_LABEL}']`),
              ],
              ports: [
                { name: "peer", containerPort: PORTS.peer, protocol: "TCP" },
                { name: "metrics", containerPort: PORTS.metrics, protocol: "TCP" },
              ],
              readinessProbe: { httpGet: { path: "/readyz", port: "metrics" }, periodSeconds: 10, timeoutSeconds: 3, failureThreshold: 3 },
              livenessProbe: { httpGet: { path: "/healthz", port: "metrics" }, initialDelaySeconds: 10, periodSeconds: 20, timeoutSeconds: 5, failureThreshold: 3 },
              resources: { requests: { cpu: "50m", memory: "128Mi" }, limits: { memory: "512Mi" } },
              // Root, because the store on the host belongs to root; but no capability at all:
              // root without CAP_DAC_OVERRIDE writes only what root owns, i.e. the store.
              securityContext: opts.observeJvms === true ? { ...lockedDown({ runAsUser: 0 }), capabilities: { drop: ["ALL"], add: ["SYS_PTRACE"] } } : lockedDown({ runAsUser: 0 }),
              volumeMounts: [
                { name: "store", mountPath: STORE_ROOT },
                { name: "token", mountPath: MOUNTS.agentToken, readOnly: true },
                { name: "trust", mountPath: MOUNTS.trust, readOnly: true },
                ...(directory.password ? [{ name: "directory-password", mountPath: MOUNTS.directoryPassword, readOnly: true }] : []),
                { name: "tmp", mountPath: "/tmp" },
              ],
            },
            ...(opts.csi ? [csiContainer({ ...opts, csi: opts.csi })] : []),
          ],
          volumes: [
            // The only read-write hostPath of the project. A constant: no ClassCache field reaches it.
            { name: "store", hostPath: { path: STORE_ROOT, type: "DirectoryOrCreate" } },
            { name: "token", secret: { secretName: NAMES.agentToken, defaultMode: SECRET_MODE } },
            { name: "trust", configMap: { name: NAMES.trust, defaultMode: 0o444 } },
            ...(directory.password
              ? [{ name: "directory-password", secret: { secretName: directory.password.secretName, defaultMode: SECRET_MODE, items: [{ key: directory.password.key, path: "password" }] } }]
              : []),
            { name: "tmp", emptyDir: { sizeLimit: "64Mi" } },
            ...(opts.csi ? csiVolumes(opts.csi.kubeletDir) : []),
          ],
        },
      },
    },
  };
}

/**
 * The CSI node plugin's container (src/node/csi). Privileged, the one part of classcache that
 * is: the kubelet makes a pod's volume directory, and only a mount made in a privileged
 * container with Bidirectional propagation reaches the host and so the pod. It sees the store
 * (to bind a view), the kubelet's pods directory (where it mounts), and its two sockets'
 * directories — not the rest of the kubelet's state. It holds no key and no token.
 */
function csiContainer(opts: AgentsOptions & { csi: { kubeletDir: string } }): Record<string, unknown> {
  const k = opts.csi.kubeletDir;
  return {
    name: "csi",
    image: opts.image,
    ...(opts.imagePullPolicy ? { imagePullPolicy: opts.imagePullPolicy } : {}),
    args: ["csi-node", "--store", STORE_ROOT, "--kubelet-dir", k, "--node", "$(NODE_NAME)", "--log-format", "json"],
    env: [fieldEnv("NODE_NAME", "spec.nodeName")],
    resources: { requests: { cpu: "10m", memory: "32Mi" }, limits: { memory: "160Mi" } },
    securityContext: { privileged: true, runAsUser: 0, readOnlyRootFilesystem: true },
    volumeMounts: [
      { name: "store", mountPath: STORE_ROOT },
      { name: "kubelet-pods", mountPath: `${k}/pods`, mountPropagation: "Bidirectional" },
      { name: "csi-socket", mountPath: `${k}/plugins/${CSI_DRIVER}` },
      { name: "plugins-registry", mountPath: `${k}/plugins_registry` },
      { name: "tmp", mountPath: "/tmp" },
    ],
  };
}

function csiVolumes(kubeletDir: string): Record<string, unknown>[] {
  return [
    { name: "kubelet-pods", hostPath: { path: `${kubeletDir}/pods`, type: "Directory" } },
    { name: "csi-socket", hostPath: { path: `${kubeletDir}/plugins/${CSI_DRIVER}`, type: "DirectoryOrCreate" } },
    { name: "plugins-registry", hostPath: { path: `${kubeletDir}/plugins_registry`, type: "Directory" } },
  ];
}

/**
 * The token peers present to each other and local clients present to the agent. Build Jobs
 * present grants the operator signs instead (see BuildGrant): no agent holds what mints them.
 */
export function agentTokenSecret(token: string): Built {
  return systemSecret(NAMES.agentToken, COMPONENTS.agent, { [SECRET_KEYS.token]: token });
}

/**
 * The Ed25519 key pair the operator signs manifests, ref bindings and build grants with. Only
 * the operator reads it; agents get the public half from the ConfigMap (trustConfigMap).
 */
export function signingKeySecret(pem: string, pub: string): Built {
  return systemSecret(NAMES.signingKey, COMPONENTS.agent, { [SECRET_KEYS.signingKey]: pem, [SECRET_KEYS.trust]: pub });
}

/** The public key, readable by anyone who verifies manifests (agents, `classcache stats`). */
export function trustConfigMap(pub: string): Built {
  return {
    apiVersion: "v1",
    kind: "ConfigMap",
    metadata: { name: NAMES.trust, namespace: SYSTEM_NAMESPACE, labels: objectLabels(COMPONENTS.agent) },
    data: { [SECRET_KEYS.trust]: pub },
  };
}
