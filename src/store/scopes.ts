/**
 * Where a scope's view lives in the store: `scopes/<namespace>/`, or `scopes/_cluster/` for
 * archives shared across the cluster (scope ""). Pure names, no I/O: the store builds the views
 * (store.ts) and the pod patch mounts one (operator/inject.ts), so both take the name from here.
 * An underscore never appears in a namespace name, so `_cluster` cannot be a namespace's view.
 */
import { SCOPE_PATTERN } from "../archive/key.ts";
import { ClasscacheError } from "../runtime/errors.ts";

/** The store's directory that holds one view per scope. */
export const VIEWS_DIR = "scopes";
/** The directory of the agent's socket, in the store (for build Jobs) and in each view (for the scope's pods). */
export const RUN_DIR = "run";
const CLUSTER = "_cluster";

/** The directory name of a scope's view; throws on anything that is not a scope. */
export function scopeDirName(scope: string): string {
  if (!SCOPE_PATTERN.test(scope)) throw new ClasscacheError("usage", `${JSON.stringify(scope)} is not a scope`, { hint: 'a scope is a namespace name, or "" for archives shared across the cluster' });
  return scope === "" ? CLUSTER : scope;
}

/** The scope a view directory name stands for, or undefined for a name no scope has. */
export function scopeOfDirName(name: string): string | undefined {
  if (name === CLUSTER) return "";
  return name !== "" && SCOPE_PATTERN.test(name) ? name : undefined;
}

/** A scope's view, relative to the store root: `scopes/<dir>`. */
export function viewDir(scope: string): string {
  return `${VIEWS_DIR}/${scopeDirName(scope)}`;
}
