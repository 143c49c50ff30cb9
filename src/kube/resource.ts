/**
 * Which REST resource a request is about. The client is generic over these, so a CRD needs no
 * code: describe it once and every verb, the informer and the controller work with it.
 */

export interface ResourceType {
  /** "" for the core group (Pods, ConfigMaps, Events in v1). */
  group: string;
  version: string;
  kind: string;
  /** The lower-case plural in the URL: "configmaps", "classcaches". */
  plural: string;
  namespaced: boolean;
}

export function resourceType(
  apiVersion: string,
  kind: string,
  plural: string,
  namespaced = true,
): ResourceType {
  const slash = apiVersion.indexOf("/");
  const group = slash < 0 ? "" : apiVersion.slice(0, slash);
  const version = slash < 0 ? apiVersion : apiVersion.slice(slash + 1);
  return { group, version, kind, plural, namespaced };
}

export function apiVersionOf(rt: ResourceType): string {
  return rt.group === "" ? rt.version : `${rt.group}/${rt.version}`;
}

/** "ConfigMap.v1", "Deployment.v1.apps": for log fields and names. */
export function describeResource(rt: ResourceType): string {
  return rt.group === "" ? `${rt.kind}.${rt.version}` : `${rt.kind}.${rt.version}.${rt.group}`;
}

/**
 * The URL path of a collection (no name) or of one object, optionally of a subresource.
 * A namespaced type without a namespace gives the all-namespaces collection (list and watch only).
 */
export function resourcePath(rt: ResourceType, namespace?: string, name?: string, subresource?: string): string {
  const root = rt.group === "" ? `/api/${rt.version}` : `/apis/${rt.group}/${rt.version}`;
  const ns = rt.namespaced && namespace ? `/namespaces/${encodeURIComponent(namespace)}` : "";
  let path = `${root}${ns}/${rt.plural}`;
  if (name !== undefined) path += `/${encodeURIComponent(name)}`;
  if (subresource !== undefined) {
    if (name === undefined) throw new Error("a subresource needs an object name");
    path += `/${subresource}`;
  }
  return path;
}

export const ConfigMaps = resourceType("v1", "ConfigMap", "configmaps");
export const Secrets = resourceType("v1", "Secret", "secrets");
export const Pods = resourceType("v1", "Pod", "pods");
export const Services = resourceType("v1", "Service", "services");
export const Namespaces = resourceType("v1", "Namespace", "namespaces", false);
export const CSIDrivers = resourceType("storage.k8s.io/v1", "CSIDriver", "csidrivers", false);
/** core/v1 Events. Their watch is not served from the API server's watch cache. */
export const CoreEvents = resourceType("v1", "Event", "events");
export const Events = resourceType("events.k8s.io/v1", "Event", "events");
export const Deployments = resourceType("apps/v1", "Deployment", "deployments");
export const DaemonSets = resourceType("apps/v1", "DaemonSet", "daemonsets");
export const StatefulSets = resourceType("apps/v1", "StatefulSet", "statefulsets");
export const Jobs = resourceType("batch/v1", "Job", "jobs");
export const NetworkPolicies = resourceType("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies");
export const Leases = resourceType("coordination.k8s.io/v1", "Lease", "leases");
export const CustomResourceDefinitions = resourceType(
  "apiextensions.k8s.io/v1",
  "CustomResourceDefinition",
  "customresourcedefinitions",
  false,
);
