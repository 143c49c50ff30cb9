/**
 * What the object builders share: the loose shapes of the pod fields they touch, labels and
 * selectors, owner references and the locked-down security context of the operator's own pods.
 * Builders are pure: input in, plain JSON out, ready for server-side apply.
 */
import { COMPONENT_LABEL, type COMPONENTS, FIELD_MANAGER, MANAGED_BY_LABEL, PART_OF, SYSTEM_NAMESPACE } from "../constants.ts";
import type { KubeObject, OwnerReference } from "../../kube/types.ts";
import { API_VERSION, KIND } from "../api/v1.ts";

export type Component = (typeof COMPONENTS)[keyof typeof COMPONENTS];

export interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: Record<string, unknown>;
}

export interface VolumeMount {
  name: string;
  mountPath: string;
  readOnly?: boolean;
  subPath?: string;
  [field: string]: unknown;
}

export interface Volume {
  name: string;
  hostPath?: { path: string; type?: string };
  csi?: { driver: string; readOnly?: boolean; volumeAttributes?: Record<string, string> };
  emptyDir?: { medium?: string; sizeLimit?: string };
  secret?: { secretName: string; defaultMode?: number; items?: { key: string; path: string }[]; optional?: boolean };
  configMap?: { name: string; defaultMode?: number; items?: { key: string; path: string }[]; optional?: boolean };
  [field: string]: unknown;
}

export interface Container {
  name: string;
  image?: string;
  command?: string[];
  args?: string[];
  env?: EnvVar[];
  volumeMounts?: VolumeMount[];
  /** "Always" on an init container makes it a native sidecar. */
  restartPolicy?: string;
  [field: string]: unknown;
}

export interface PodSpec {
  containers: Container[];
  initContainers?: Container[];
  volumes?: Volume[];
  nodeSelector?: Record<string, string>;
  [field: string]: unknown;
}

export interface PodTemplate {
  metadata?: { labels?: Record<string, string>; annotations?: Record<string, string> };
  spec: PodSpec;
}

/** A ClassCache as its dependents name it. */
export interface ClassCacheRef {
  name: string;
  namespace: string;
  uid: string;
}

/** The labels a controller selects by: stable for the object's life (a selector is immutable). */
export function selectorLabels(component: Component): Record<string, string> {
  return { ...PART_OF, [COMPONENT_LABEL]: component };
}

export function objectLabels(component: Component, extra: Record<string, string> = {}): Record<string, string> {
  return { ...selectorLabels(component), [MANAGED_BY_LABEL]: FIELD_MANAGER, ...extra };
}

/** Makes the ClassCache the controller of a dependent: deleting it deletes the dependent. */
export function classCacheOwner(cc: ClassCacheRef): OwnerReference {
  return { apiVersion: API_VERSION, kind: KIND, name: cc.name, uid: cc.uid, controller: true, blockOwnerDeletion: true };
}

/**
 * The container security context of every pod the operator runs itself (not the workload's):
 * no privilege escalation, no capabilities, a read-only root and the runtime's seccomp profile —
 * what the "restricted" Pod Security Standard asks, so it runs in namespaces that enforce it.
 */
export function lockedDown(user: { runAsUser: number; runAsGroup?: number }): Record<string, unknown> {
  const nonRoot = user.runAsUser !== 0;
  return {
    runAsNonRoot: nonRoot,
    runAsUser: user.runAsUser,
    ...(user.runAsGroup === undefined ? {} : { runAsGroup: user.runAsGroup }),
    allowPrivilegeEscalation: false,
    readOnlyRootFilesystem: true,
    capabilities: { drop: ["ALL"] },
    seccompProfile: { type: "RuntimeDefault" },
  };
}

/** An Opaque Secret of the system namespace, labelled for the component that uses it. */
export function systemSecret(name: string, component: Component, stringData: Record<string, string>): Built {
  return { apiVersion: "v1", kind: "Secret", metadata: { name, namespace: SYSTEM_NAMESPACE, labels: objectLabels(component) }, type: "Opaque", stringData };
}

export function secretEnv(name: string, secretName: string, key: string): EnvVar {
  return { name, valueFrom: { secretKeyRef: { name: secretName, key } } };
}

export function fieldEnv(name: string, fieldPath: string): EnvVar {
  return { name, valueFrom: { fieldRef: { fieldPath } } };
}

/** The objects the builders return: a KubeObject with its type meta always set. */
export type Built = KubeObject & { apiVersion: string; kind: string };
