/**
 * What a NodePublishVolume call may mount, decided without I/O: the request in, a plan (which
 * directory of the store, at which target) or a refusal (a reason and a message saying what was
 * wrong and what to do) out.
 *
 * The invariant: a pod mounts only its own namespace's view, the cluster-wide view or the
 * agent's socket directory — never another namespace's. The namespace is read only from the
 * attribute the kubelet sets (`csi.storage.k8s.io/pod.namespace`, with the CSIDriver's
 * `podInfoOnMount: true`); the pod's only attribute is `view`, a word, never a path; any other
 * attribute is refused rather than ignored, so a pod spec that tries to pick a namespace fails
 * loudly. The kubelet's values override a pod's own attributes of the same names, but only when
 * podInfoOnMount is on: the pod UID the kubelet sets must also name the pod directory of
 * target_path, which a pod spec cannot know before the pod exists — so a CSIDriver that lost
 * podInfoOnMount refuses every volume instead of trusting a namespace the pod wrote.
 */
import { isAbsolute, join, normalize } from "node:path";
import { SCOPE_PATTERN } from "../../archive/key.ts";
import { RUN_DIR, viewDir } from "../../store/scopes.ts";
import { CSI_VIEW_ATTRIBUTE, CSI_VIEWS, type CsiView } from "../../operator/constants.ts";

/** The one attribute a pod sets, CSI_VIEW_ATTRIBUTE, names one of CSI_VIEWS (shared with the operator's pod patch). */
export type View = CsiView;

/** Attributes the kubelet sets (podInfoOnMount); every key it sets has this prefix. */
export const KUBELET_ATTRIBUTE_PREFIX = "csi.storage.k8s.io/";
export const POD_NAMESPACE = "csi.storage.k8s.io/pod.namespace";
export const POD_NAME = "csi.storage.k8s.io/pod.name";
export const POD_UID = "csi.storage.k8s.io/pod.uid";
export const EPHEMERAL = "csi.storage.k8s.io/ephemeral";

export type RefusalReason =
  | "VolumeIdMissing"
  | "TargetNotAbsolute"
  | "TargetNotNormal"
  | "TargetOutsidePods"
  | "NotMountCapability"
  | "NotEphemeral"
  | "UnknownAttribute"
  | "UnknownView"
  | "NamespaceInvalid"
  | "PodUidMismatch";

export interface Refusal {
  refused: RefusalReason;
  message: string;
}

/** The parts of csi.v1.NodePublishVolumeRequest this plugin reads (proto-loader, keepCase, oneofs). */
export interface PublishRequest {
  volume_id?: string;
  target_path?: string;
  volume_capability?: { access_type?: string; mount?: unknown; block?: unknown } | null;
  volume_context?: Record<string, string>;
}

export interface PublishPlan {
  view: View;
  namespace: string;
  podName: string;
  podUid: string;
  /** The store directory to bind, as this process sees the store. */
  source: string;
  target: string;
}

export interface PluginPaths {
  store: string;
  kubeletDir: string;
}

const refuse = (refused: RefusalReason, message: string): Refusal => ({ refused, message });

export function isRefusal(x: unknown): x is Refusal {
  return typeof x === "object" && x !== null && "refused" in x;
}

/** The directory under which the kubelet publishes pod volumes. */
export function podsDir(kubeletDir: string): string {
  return join(normalize(kubeletDir), "pods");
}

/**
 * target_path must be an absolute, normal path inside a pod's directory, <kubeletDir>/pods/<x>/… — the kubelet
 * publishes at <kubeletDir>/pods/<pod uid>/volumes/kubernetes.io~csi/<volume>/mount. Returns the
 * pod directory's name (the pod UID).
 */
export function checkTarget(target: string | undefined, kubeletDir: string): { podDir: string } | Refusal {
  const t = target ?? "";
  if (!isAbsolute(t)) return refuse("TargetNotAbsolute", `target_path ${JSON.stringify(t)} is not an absolute path; the kubelet publishes pod volumes at ${podsDir(kubeletDir)}/<pod uid>/volumes/…`);
  if (normalize(t) !== t || t.split("/").includes("..") || (t.length > 1 && t.endsWith("/"))) {
    return refuse("TargetNotNormal", `target_path ${JSON.stringify(t)} is not a normal path (it has "..", ".", "//" or a trailing "/"); give the path the kubelet gave, unchanged`);
  }
  const pods = podsDir(kubeletDir) + "/";
  const [podDir, ...inside] = t.startsWith(pods) ? t.slice(pods.length).split("/") : [];
  if (!podDir || inside.length === 0) {
    return refuse("TargetOutsidePods", `target_path ${JSON.stringify(t)} is not inside a pod's directory under ${pods}: this plugin mounts only into the kubelet's pod volume directories; if the kubelet's --root-dir is not ${normalize(kubeletDir)}, start classcache csi-node with --kubelet-dir set to it`);
  }
  return { podDir };
}

/** The store directory a view mounts, as this process sees the store. */
export function viewSource(view: View, namespace: string, store: string): string {
  if (view === "build") return join(store, RUN_DIR);
  return join(store, viewDir(view === "cluster" ? "" : namespace));
}

function checkAttributes(ctx: Record<string, string>): { view: View } | Refusal {
  for (const key of Object.keys(ctx)) {
    if (key !== CSI_VIEW_ATTRIBUTE && !key.startsWith(KUBELET_ATTRIBUTE_PREFIX)) {
      return refuse("UnknownAttribute", `volume attribute ${JSON.stringify(key)} is not one classcache knows: its only attribute is "view" (${CSI_VIEWS.join(", ")}); the view of "scope" is always the pod's own namespace's — remove ${JSON.stringify(key)} from the volume's volumeAttributes`);
    }
  }
  const view = ctx[CSI_VIEW_ATTRIBUTE] ?? "scope";
  if (!(CSI_VIEWS as readonly string[]).includes(view)) {
    return refuse("UnknownView", `view ${JSON.stringify(view)} is not one of scope (the archives of the pod's namespace; the default), cluster (the archives shared across the cluster) or build (the node agent's socket, for build pods)`);
  }
  return { view: view as View };
}

function checkPodInfo(ctx: Record<string, string>, podDir: string): { namespace: string; podUid: string } | Refusal {
  const namespace = ctx[POD_NAMESPACE] ?? "";
  if (namespace === "" || !SCOPE_PATTERN.test(namespace)) {
    return refuse("NamespaceInvalid", `volume attribute ${POD_NAMESPACE} ${JSON.stringify(namespace)} is missing or not a namespace name (a DNS-1123 label): the kubelet sets it only when the CSIDriver has podInfoOnMount: true`);
  }
  const podUid = ctx[POD_UID] ?? "";
  if (podUid !== podDir) {
    return refuse("PodUidMismatch", `volume attribute ${POD_UID} ${JSON.stringify(podUid)} does not name the pod directory of target_path (${JSON.stringify(podDir)}): the pod's identity must come from the kubelet, which sets it only when the CSIDriver has podInfoOnMount: true`);
  }
  return { namespace, podUid };
}

/** Decides a NodePublishVolume call: what to bind where, or why not. */
export function planPublish(req: PublishRequest, paths: PluginPaths): PublishPlan | Refusal {
  if (!req.volume_id) return refuse("VolumeIdMissing", "volume_id is empty; the kubelet always sets one");
  const target = checkTarget(req.target_path, paths.kubeletDir);
  if (isRefusal(target)) return target;
  const cap = req.volume_capability;
  if (!cap || cap.access_type !== "mount") {
    return refuse("NotMountCapability", `volume_capability is ${cap?.access_type === "block" ? "a raw block device" : "missing or not a filesystem mount"}; a classcache view is a directory: use the volume as a filesystem (volumeMounts), not as a block device (volumeDevices)`);
  }
  const ctx = req.volume_context ?? {};
  if (ctx[EPHEMERAL] !== "true") {
    return refuse("NotEphemeral", `volume_context has no ${JSON.stringify(EPHEMERAL)}: "true": classcache serves only inline ephemeral volumes (a pod's spec.volumes[].csi), not PersistentVolumes, and its CSIDriver must have podInfoOnMount: true and volumeLifecycleModes [Ephemeral]`);
  }
  const attrs = checkAttributes(ctx);
  if (isRefusal(attrs)) return attrs;
  const pod = checkPodInfo(ctx, target.podDir);
  if (isRefusal(pod)) return pod;
  return {
    view: attrs.view,
    namespace: pod.namespace,
    podName: ctx[POD_NAME] ?? "",
    podUid: pod.podUid,
    source: viewSource(attrs.view, pod.namespace, paths.store),
    target: req.target_path!,
  };
}
