/**
 * Names and paths the operator, the webhook, the node agents and the pods they patch agree on.
 * None of them comes from a ClassCache: a user can choose what to cache, never where on a
 * node it lives or which image runs with the node's store.
 */
import { RUN_DIR, viewDir } from "../store/scopes.ts";

/** The operator's namespace: the directory, the node agents and the webhook live here. */
export const SYSTEM_NAMESPACE = "classcache-system";
/** The one field manager for every server-side apply the operator makes. */
export const FIELD_MANAGER = "classcache-operator";

/**
 * The node store, on every node; inside every patched container (read-only there) the path at
 * which that pod sees its scope's view of it (see storeViewHostPath).
 */
export const STORE_ROOT = "/var/lib/classcache";

/**
 * The host directory a patched pod mounts at STORE_ROOT: its scope's view of the node store
 * (`scopes/<namespace>`, or `scopes/_cluster` for archives shared across the cluster), which
 * holds only that scope's archives, jars and the agent's socket for it. Derived from the scope
 * (the namespace), never from anything a user writes.
 */
export function storeViewHostPath(scope: string): string {
  return `${STORE_ROOT}/${viewDir(scope)}`;
}
/** The per-pod emptyDir the init step writes its argument files into. */
export const ARGS_DIR = "/classcache";
export const JVM_ARGS_FILE = `${ARGS_DIR}/jvm.args`;
export const LAUNCH_ARGS_FILE = `${ARGS_DIR}/launch.args`;
/** Where the init step copies the agent jar from the agent image (used when no archive is present). */
export const AGENT_DIR = `${ARGS_DIR}/agent`;
/** The node agent's Unix socket, as a patched pod sees it in its scope's view, for the init step's non-blocking "want" requests. */
export const AGENT_SOCKET = `${STORE_ROOT}/run/agent.sock`;

/** Pods with this label are mutated by the webhook; its value names the ClassCache. */
export const INJECT_LABEL = "classcache.dev/inject";
/**
 * On a workload only while the operator writes it (its value: the ClassCache): every workload
 * write of the operator sets it and the last write of a change removes it. The admission policy
 * classcache-operator-patches-need-a-classcache (deploy/rbac/operator-admission.yaml) finds the
 * operator's workload writes by it, because the API server looks up the policy's parameters (the
 * namespace's ClassCaches) before it asks who is writing; a label that stayed would leave
 * everybody's writes to the workload refused once no ClassCache is left in its namespace.
 */
export const PATCHING_LABEL = "classcache.dev/patching";
/** On patched workloads and build Jobs: the ref (digest of the build inputs) they were patched for. */
export const REF_ANNOTATION = "classcache.dev/ref";
/**
 * On an Owned workload's pod template, once the ref's archive is bound: its key. Its arrival (and
 * a new key after a rebuild) rolls the workload, so pods that started before the archive existed
 * are replaced by pods that start from it.
 */
export const ARCHIVE_ANNOTATION = "classcache.dev/archive";
/** On patched workloads: the container's own command and args before the launch was rewritten. */
export const ORIGINAL_LAUNCH_ANNOTATION = "classcache.dev/original-launch";
export const MANAGED_BY_LABEL = "app.kubernetes.io/managed-by";
/**
 * The Pod Security level a namespace enforces. Patched pods mount their scope's view of the
 * node's store (a hostPath, read-only) and build pods the agent's socket directory: the baseline
 * and restricted levels forbid every hostPath, so in such namespaces the API server would refuse the pods. There
 * they get the same directories through the node agent's CSI driver (storeVolumeFor, ADR 0011); without
 * it, the operator patches nothing and the webhook adds nothing: pods start as before, without an archive.
 */
export const POD_SECURITY_ENFORCE_LABEL = "pod-security.kubernetes.io/enforce";
export const HOSTPATH_FORBIDDEN_LEVELS = ["baseline", "restricted"] as const;

/**
 * The node agent's CSI driver (src/node/csi): an inline, ephemeral `csi` volume of this driver is
 * the pod's scope's view of the node store, read-only, as the hostPath is — and the Pod Security
 * baseline and restricted levels allow it. The plugin takes the scope from the pod's namespace
 * (podInfoOnMount); the one attribute a pod may set is CSI_VIEW_ATTRIBUTE.
 */
export const CSI_DRIVER = "csi.classcache.dev";
/** The one attribute a pod may set on the driver's volume (absent: "scope"). */
export const CSI_VIEW_ATTRIBUTE = "view";
/** "scope": the pod's namespace's view; "cluster": the cluster-wide shared one; "build": the agent's socket directory. */
export const CSI_VIEWS = ["scope", "cluster", "build"] as const;
export type CsiView = (typeof CSI_VIEWS)[number];
/** The kubelet's default --root-dir: where it keeps pods' volumes and finds node plugins. */
export const KUBELET_DIR = "/var/lib/kubelet";

/** How patched pods and build pods reach the node store: a hostPath where allowed, else the CSI driver. */
export type StoreVolume = "hostPath" | "csi";

/**
 * Where a namespace's pods get the store from: the hostPath where its Pod Security level allows
 * it (no moving part on the pod's start path: docs/adr/0011), the CSI driver where the level
 * forbids hostPath and the driver is installed; `forbidden` (the level) where neither is possible.
 */
export function storeVolumeFor(namespace: { metadata: { labels?: Record<string, string> } } | undefined, csiInstalled: boolean): { volume: StoreVolume } | { forbidden: string } {
  const level = hostPathForbiddenBy(namespace);
  if (!level) return { volume: "hostPath" };
  return csiInstalled ? { volume: "csi" } : { forbidden: level };
}

/** The level a namespace enforces if it forbids hostPath volumes, else undefined. */
export function hostPathForbiddenBy(namespace: { metadata: { labels?: Record<string, string> } } | undefined): string | undefined {
  const level = namespace?.metadata.labels?.[POD_SECURITY_ENFORCE_LABEL];
  return (HOSTPATH_FORBIDDEN_LEVELS as readonly string[]).includes(level ?? "") ? level : undefined;
}
export const COMPONENT_LABEL = "app.kubernetes.io/component";
export const PART_OF = { "app.kubernetes.io/part-of": "classcache" } as const;

/** Object names in the system namespace. */
export const NAMES = {
  directory: "classcache-directory",
  directorySecret: "classcache-directory-auth",
  agents: "classcache-agent",
  agentToken: "classcache-agent-token",
  signingKey: "classcache-signing-key",
  trust: "classcache-trust",
  webhook: "classcache-webhook",
} as const;

/** metrics: the plain-HTTP /metrics, /healthz, /readyz of the operator and of each agent. */
export const PORTS = { directory: 6379, peer: 7071, api: 7072, metrics: 8080, webhook: 9443 } as const;

/**
 * app.kubernetes.io/component of classcache's pods. With PART_OF they are the pod selectors of
 * the system namespace's NetworkPolicies, so the operator's own Deployment (the controller) must
 * carry `component: operator` for the directory to accept it, and the webhook's Deployment
 * `component: webhook` for the API server to reach it.
 */
export const COMPONENTS = { directory: "directory", agent: "agent", operator: "operator", webhook: "webhook", build: "build" } as const;
/** On build Jobs and their pods: the hex of the ref (label values stop at 63 characters; REF_ANNOTATION has it whole). */
export const REF_LABEL = "classcache.dev/ref";
/** The ServiceAccount of the node agents (created with the operator's RBAC). */
export const AGENT_SERVICE_ACCOUNT = "classcache-agent";
/** Where the managed directory is reached from the node agents and the operator. */
export const DIRECTORY_HOST = `${NAMES.directory}.${SYSTEM_NAMESPACE}.svc`;
/** Keys of the Secrets and ConfigMaps in the system namespace. */
export const SECRET_KEYS = { password: "password", token: "token", buildKey: "build.pem", signingKey: "signing.pem", trust: "signing.pub", previous: "previous.pub" } as const;
/** Mount points inside the node agent and build pods; constants, never taken from a ClassCache. */
export const MOUNTS = {
  /** The shared token peers and local clients present (agents). */
  agentToken: "/var/run/classcache/token",
  /** The public key whose manifests are accepted (agents). */
  trust: "/var/run/classcache/trust",
  /** The directory's password (agents). */
  directoryPassword: "/var/run/classcache/directory",
  /** The one-build token a build pod presents when it publishes (build pods). */
  buildToken: "/var/run/classcache/build",
  /** The node store's run/ directory (the agent's socket), read-only in build pods. */
  agentRun: "/var/run/classcache/agent",
  /** The classcache runtime copied from the kit image (build pods). */
  kit: "/classcache-kit",
  /** The agent jar (and its config) copied from the agent image (build pods). */
  agentJar: "/classcache-agent",
} as const;
/** The node store directory that holds the agent's socket. */
export const STORE_RUN_DIR = `${STORE_ROOT}/${RUN_DIR}`;
/** Where the classcache image keeps its runtime (copied into build pods as the kit). */
export const KIT_SOURCE = "/opt/classcache";
