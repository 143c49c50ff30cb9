/**
 * The one way the operator writes by server-side apply: its own field manager, forced (a
 * controller owns what it applies and takes it back from whoever changed it). The object says
 * what the operator wants of it; a second apply of the same object changes nothing, so a pass
 * that changes nothing writes nothing. (JSON patches, where apply cannot do the job, and creates
 * of generated Secrets are the only other writes; their call sites say why.)
 */
import type { KubeClient } from "../kube/client.ts";
import type { ResourceType } from "../kube/resource.ts";
import type { KubeObject } from "../kube/types.ts";
import { FIELD_MANAGER } from "./constants.ts";

export interface ApplyTarget {
  /** For namespaced types; default: the object's namespace. */
  namespace?: string | undefined;
  signal?: AbortSignal | undefined;
  /** "status": apply the status subresource (only `status` of the object counts). */
  subresource?: "status";
}

/** Server-side applies `obj` as the operator, forced. Returns the object as the server stored it. */
export async function apply<T extends KubeObject>(client: KubeClient, rt: ResourceType, obj: T, target: ApplyTarget = {}): Promise<T> {
  const opts = { fieldManager: FIELD_MANAGER, force: true, ...(target.namespace !== undefined ? { namespace: target.namespace } : {}), ...(target.signal ? { signal: target.signal } : {}) };
  return target.subresource === "status" ? client.applyStatus(rt, obj, opts) : client.apply(rt, obj, opts);
}
