/**
 * A ClassCache's workload and what patching it means, as pure functions: the workload types, the
 * scope and ref of a ClassCache, the injection input (the webhook computes the same), and the
 * writes that patch a template in Owned mode or put it back as its owner wrote it.
 */
import { isDeepStrictEqual } from "node:util";
import { DaemonSets, Deployments, StatefulSets } from "../../kube/resource.ts";
import type { KubeObject } from "../../kube/types.ts";
import type { ClassCache, ResolvedSpec } from "../api/v1.ts";
import { ARCHIVE_ANNOTATION, ORIGINAL_LAUNCH_ANNOTATION, PATCHING_LABEL, REF_ANNOTATION } from "../constants.ts";
import { injectedEnv, INIT_CONTAINERS, stripInjection, VOLUMES, type Container, type injectPod, type InjectionInput, type OriginalLaunch, type PodSpec, type PodTemplate } from "../inject.ts";
import { launchCommandFor } from "../policies/launch.ts";
import { computeRef } from "../ref.ts";

export const WORKLOAD_TYPES = { Deployment: Deployments, StatefulSet: StatefulSets, DaemonSet: DaemonSets } as const;
export type WorkloadKind = keyof typeof WORKLOAD_TYPES;

export interface Workload extends KubeObject {
  spec: { template: PodTemplate; [f: string]: unknown };
}

/** A workload by kind, name and namespace: what a write needs to address it. */
export interface WorkloadRef {
  kind: WorkloadKind;
  name: string;
  namespace: string;
}

/**
 * Whose archives a ClassCache's are: its namespace, or "" (the cluster) where it asks to share
 * and the cluster admin allows it. Archives are executable code: the scope is in the ref, in
 * the archive key and in the build grant, so one scope's builds never serve another's pods.
 */
export function scopeOf(cc: ClassCache, spec: ResolvedSpec, allowClusterSharing: boolean): string {
  return spec.sharing === "Cluster" && allowClusterSharing ? "" : (cc.metadata.namespace ?? "");
}

/** The ref of a ClassCache for the pod spec's app container: every build input the operator can see. */
function refOf(cc: ClassCache, spec: ResolvedSpec, container: Container | undefined, allowClusterSharing: boolean): string {
  const t = spec.training;
  return computeRef({
    scope: scopeOf(cc, spec, allowClusterSharing),
    image: spec.app.image ?? String(container?.image ?? ""),
    jarPath: spec.app.jarPath,
    launch: [...(container?.command ?? spec.launch?.command ?? []), ...(container?.args ?? [])],
    agent: spec.agent ? { image: spec.agent.image, jarPath: spec.agent.jarPath, configPath: spec.agent.configPath ?? "" } : null,
    profile: spec.profile ? JSON.stringify(spec.profile) : "",
    mode: spec.mode,
    training: { exitOnRefresh: t.exitOnRefresh ?? true, readyUrl: t.readyUrl ?? "", warmupUrls: t.warmupUrls, timeoutSeconds: t.timeoutSeconds },
    ...(cc.status?.appDigest ? { appDigest: cc.status.appDigest } : {}),
    ...(fromEntrypoint(spec, container) ? { entrypoint: true } : {}),
  });
}

/** The container's JVM is started by its image's ENTRYPOINT: neither the pod spec nor spec.launch says how. */
export function fromEntrypoint(spec: ResolvedSpec, container: Container | undefined): boolean {
  return container !== undefined && container.command === undefined && !spec.launch?.command;
}

/**
 * The command the patch rewrites for a container started by its ENTRYPOINT: the launch the probe
 * of this ref's build recorded (status.launch), without the container's own args; undefined when
 * none is recorded for the ref, or it cannot be used (decide says why).
 */
function recordedLaunch(cc: ClassCache, ref: string, container: Container): string[] | undefined {
  const launch = cc.status?.launch;
  if (launch?.ref !== ref) return undefined;
  const r = launchCommandFor(launch.command, container);
  return "command" in r ? r.command : undefined;
}

/** What the pod patch needs from a ClassCache and a pod spec: the ref and the injection input. */
export function injectionFor(cc: ClassCache, spec: ResolvedSpec, pod: PodSpec, image: string, allowClusterSharing = false): { ref: string; input: InjectionInput; container: string | undefined } {
  const container = spec.container ? pod.containers.find((c) => c.name === spec.container) : pod.containers[0];
  const ref = refOf(cc, spec, container, allowClusterSharing);
  const runtimeOptions = spec.profile?.runtime.extraJvmOpts ?? [];
  return {
    ref,
    container: container?.name,
    input: {
      ref,
      scope: scopeOf(cc, spec, allowClusterSharing),
      container: spec.container,
      jarPath: spec.app.jarPath,
      mode: spec.mode,
      memorySharing: spec.memorySharing,
      launchCommand: spec.launch?.command ?? (fromEntrypoint(spec, container) ? recordedLaunch(cc, ref, container!) : undefined),
      agent: spec.agent && spec.mode !== "none" ? { image: spec.agent.image, jarPath: spec.agent.jarPath, runtimeOptions } : undefined,
      image,
    },
  };
}

/** The launch the patch replaced, as recorded on the workload; undefined when there is none (or it cannot be read). */
export function originalOf(w: Workload): OriginalLaunch | undefined {
  const text = w.metadata.annotations?.[ORIGINAL_LAUNCH_ANNOTATION];
  if (!text) return undefined;
  try {
    return JSON.parse(text) as OriginalLaunch;
  } catch {
    return undefined;
  }
}

/** Does the template (or the workload) carry anything of an Owned-mode patch? */
export function isPatched(w: Workload): boolean {
  return (w.spec.template.spec.initContainers ?? []).some((c) => c.name === INIT_CONTAINERS.init) || w.metadata.annotations?.[ORIGINAL_LAUNCH_ANNOTATION] !== undefined;
}

/** The template as its owner wrote it: our own earlier patch taken out. */
export function cleanTemplate(w: Workload): PodSpec {
  return stripInjection(w.spec.template.spec, originalOf(w));
}

/**
 * Owned mode's writes for a patched pod spec: `config`, the server-side apply of exactly the
 * fields the patch owns, and `template`, a guarded JSON patch that writes the patched template
 * whole first, while the live env is not as patched yet (else undefined).
 *
 * The env must come out in exactly the patched order (a `$(VAR)` expands only when VAR is
 * defined earlier) and a renamed JDK_JAVA_OPTIONS must lose the valueFrom it had, which apply
 * cannot do: it merges env by name and never drops a field another manager owns (the API server
 * then refuses value next to valueFrom). So when the env is not as patched yet, the patched
 * template is written whole first, in one write guarded by the resourceVersion, as
 * restoreTemplate writes it; the apply then only takes ownership of our fields.
 */
export function ownedPatch(kind: WorkloadKind, w: Workload, ref: string, injected: ReturnType<typeof injectPod>, classCache: string, archiveKey?: string): { template: unknown[] | undefined; config: KubeObject } {
  const app = injected.spec.containers.find((c) => c.name === injected.original!.container)!;
  const ours = new Set<string>(Object.values(VOLUMES));
  const annotations = { [ORIGINAL_LAUNCH_ANNOTATION]: JSON.stringify(injected.original) };
  const templateAnnotations = { [REF_ANNOTATION]: ref, ...(archiveKey ? { [ARCHIVE_ANNOTATION]: archiveKey } : {}) };
  const config = {
    apiVersion: "apps/v1",
    kind,
    // The label the admission policy for the operator's workload writes selects by; the last write of a change removes it (see act.ts).
    metadata: { name: w.metadata.name, namespace: w.metadata.namespace, labels: { [PATCHING_LABEL]: classCache }, annotations },
    spec: {
      template: {
        metadata: { annotations: templateAnnotations },
        spec: {
          initContainers: (injected.spec.initContainers ?? []).filter((c) => Object.values(INIT_CONTAINERS).includes(c.name as never)),
          volumes: (injected.spec.volumes ?? []).filter((v) => ours.has(v.name)),
          containers: [
            {
              name: app.name,
              command: app.command,
              env: injectedEnv(app.env ?? []),
              volumeMounts: (app.volumeMounts ?? []).filter((m) => ours.has(m.name)),
            },
          ],
        },
      },
    },
  };
  const live = w.spec.template.spec.containers.find((c) => c.name === app.name);
  if (isDeepStrictEqual(live?.env ?? [], app.env ?? [])) return { template: undefined, config };
  const template: unknown[] = [
    { op: "test", path: "/metadata/resourceVersion", value: w.metadata.resourceVersion },
    { op: "replace", path: "/spec/template/spec", value: injected.spec },
    { op: "add", path: "/spec/template/metadata/annotations", value: { ...(w.spec.template.metadata?.annotations ?? {}), ...templateAnnotations } },
    { op: "add", path: "/metadata/annotations", value: { ...(w.metadata.annotations ?? {}), ...annotations } },
    { op: "add", path: "/metadata/labels", value: { ...(w.metadata.labels ?? {}), [PATCHING_LABEL]: classCache } },
  ];
  return { template, config };
}

/**
 * The JSON patch that puts a patched template back as its owner wrote it (command, env, init
 * containers, volumes, annotations), guarded by the resourceVersion. Apply cannot do this: it
 * can drop only fields nobody else owns, and it cannot put back values the patch replaced.
 */
export function restoreTemplate(w: Workload, classCache: string): unknown[] {
  const restored = cleanTemplate(w);
  const annotations = { ...(w.spec.template.metadata?.annotations ?? {}) };
  delete annotations[REF_ANNOTATION];
  delete annotations[ARCHIVE_ANNOTATION];
  const ops: unknown[] = [
    { op: "test", path: "/metadata/resourceVersion", value: w.metadata.resourceVersion },
    { op: "replace", path: "/spec/template/spec", value: restored },
    { op: "replace", path: "/spec/template/metadata/annotations", value: annotations },
    { op: "add", path: "/metadata/labels", value: { ...(w.metadata.labels ?? {}), [PATCHING_LABEL]: classCache } },
  ];
  if (w.metadata.annotations?.[ORIGINAL_LAUNCH_ANNOTATION] !== undefined) ops.push({ op: "remove", path: `/metadata/annotations/${pointer(ORIGINAL_LAUNCH_ANNOTATION)}` });
  return ops;
}

/** A JSON Patch path segment (RFC 6901). */
export function pointer(key: string): string {
  return key.replaceAll("~", "~0").replaceAll("/", "~1");
}
