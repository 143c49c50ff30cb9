/**
 * Does the workload still run the application its archive was built from? Each patched pod's
 * jar check (src/node/check/JarCheck.java) says, in its termination message, whether the app's
 * jars in the pod's image are the ones the node's archive was built from. Pure: pods in, the
 * content they report and how many of them differ out.
 */
import { REF_ANNOTATION } from "../constants.ts";
import { INIT_CONTAINERS } from "../inject.ts";

interface Terminated {
  message?: string;
  finishedAt?: string;
}
export interface PodWithChecks {
  metadata: { annotations?: Record<string, string> };
  status?: { initContainerStatuses?: { name: string; state?: { terminated?: Terminated }; lastState?: { terminated?: Terminated } }[] };
}

export interface AppContent {
  /** Pods of the ref whose check found other jars than the archive's. */
  differing: number;
  /** The sha256 of the app jar those pods run, the most recently reported one. */
  digest: string | undefined;
}

/**
 * What the jar checks of the workload's pods say about the app they run: those patched for `ref`
 * whose jars differ from its archive's, and those of an earlier ref that run `known` (the content
 * already recorded, status.appDigest) and wait for the archive built for it.
 */
export function appContent(pods: PodWithChecks[], ref: string, known?: string): AppContent {
  let differing = 0;
  let latest: { at: string; digest: string } | undefined;
  for (const p of pods) {
    const current = p.metadata.annotations?.[REF_ANNOTATION] === ref;
    const status = p.status?.initContainerStatuses?.find((c) => c.name === INIT_CONTAINERS.check);
    const t = status?.state?.terminated ?? status?.lastState?.terminated;
    const said = parse(t?.message);
    if (said?.reason !== "app-jar-differs" || !/^[0-9a-f]{64}$/.test(said.actual ?? "")) continue;
    if (!current && said.actual !== known) continue;
    differing++;
    const at = t?.finishedAt ?? "";
    if (current && (!latest || at >= latest.at)) latest = { at, digest: said.actual! };
  }
  return { differing, digest: latest?.digest ?? (differing > 0 ? known : undefined) };
}

function parse(text: string | undefined): { reason?: string; actual?: string } | undefined {
  try {
    return text ? (JSON.parse(text) as { reason?: string; actual?: string }) : undefined;
  } catch {
    return undefined;
  }
}
