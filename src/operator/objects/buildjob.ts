/**
 * The build Job: one training run of a workload's own pod, for one ref, in the workload's
 * namespace. Same image, env, volumes, service account and scheduling as the workload, so the
 * archive is built by the JVM that will map it, over the config the app really starts with; the
 * container's command is swapped for `classcache build`, which publishes through the node agent.
 * What the workload has of the host — host paths, host namespaces, privileged containers,
 * capabilities beyond Pod Security's baseline — stays behind: the operator creates this pod, and
 * the admission policy in deploy/rbac/operator-admission.yaml refuses it otherwise.
 */
import { basename, extname } from "node:path";
import { EXPECTED_TOOL_OPTIONS, KIT_PROBE_JAR, LAUNCH_RECORD, PROBE_DIR } from "../../build/probe.ts";
import type { OwnerReference } from "../../kube/types.ts";
import { AGENT_SOCKET, COMPONENTS, CSI_DRIVER, CSI_VIEW_ATTRIBUTE, KIT_SOURCE, MOUNTS, REF_ANNOTATION, REF_LABEL, SECRET_KEYS, STORE_ROOT, STORE_RUN_DIR, type CsiView, type StoreVolume } from "../constants.ts";
import {
  classCacheOwner,
  lockedDown,
  objectLabels,
  type Built,
  type ClassCacheRef,
  type Container,
  type EnvVar,
  type PodSpec,
  type PodTemplate,
  type Volume,
  type VolumeMount,
} from "./meta.ts";

export type BuildMode = "none" | "hybrid" | "baked";

export interface BuildJobInput {
  classCache: ClassCacheRef;
  /** The digest of the build inputs, e.g. "sha256:<hex>" or bare hex. */
  ref: string;
  /** Whose archive it is: the ClassCache's namespace, or "" for a cluster-shared one. */
  scope?: string;
  /** The workload's pod template as the user wrote it (not one the operator already patched). */
  podTemplate: PodTemplate;
  /** The JVM's container in it. */
  containerName: string;
  /** The application jar inside the workload's image (spec.app.jarPath). */
  jarPath: string;
  agent?: { image: string; jarPath: string; configPath?: string };
  /** A catalog profile name (spec.profile). */
  profile?: string;
  /** An inline AgentProfile (spec.profileYAML); wins over `profile`, as in the CRD. */
  profileYAML?: string;
  mode?: BuildMode;
  training: { exitOnRefresh?: boolean; readyUrl?: string; warmupUrls?: string[]; timeoutSeconds: number };
  /** The classcache image: its runtime at /opt/classcache is copied into the pod. */
  kitImage: string;
  /** GOARCH-style arch (amd64, arm64) the archive is for: the pod runs on such a node. */
  arch?: string;
  /**
   * The app container has no command: its image's ENTRYPOINT starts the JVM. The launch probe
   * then records that launch in an init container, and the build trains with it (--launch-file).
   */
  probeLaunch?: boolean;
  /** The workload's own JVM options (from its command line): they decide GC and compressed oops. */
  jvmOptions?: string[];
  appArgs?: string[];
  /** How the build pod reaches the agent's socket directory: a hostPath, or where the namespace forbids that, the CSI driver (default hostPath). */
  storeVolume?: StoreVolume;
}

/** Volumes and containers the build adds; a workload's own ones with these names are dropped. */
const V = {
  kit: "classcache-kit",
  agent: "classcache-agent",
  work: "classcache-work",
  agentRun: "classcache-agent-run",
  buildToken: "classcache-build-token",
  probe: "classcache-probe",
} as const;
/** Our own paths in the app container: a workload mount at or under one of them is dropped. */
const RESERVED_PATHS = [MOUNTS.kit, MOUNTS.agentJar, STORE_ROOT, MOUNTS.agentRun, MOUNTS.buildToken, PROBE_DIR];
const AGENT_JAR = `${MOUNTS.agentJar}/agent.jar`;
const PROFILE_FILE = `${MOUNTS.kit}/profile.yaml`;
const KIT_UID = 65532;

// Fixed script; the profile arrives as data in an env var, never spliced into the script.
const KIT_SCRIPT =
  `cp -R ${KIT_SOURCE}/. ${MOUNTS.kit}/ && ` +
  `if [ -n "$CLASSCACHE_PROFILE_YAML" ]; then printf '%s' "$CLASSCACHE_PROFILE_YAML" > ${PROFILE_FILE}; fi`;

/** The hex of a ref ("sha256:abc…" or "abc…"), lower-case. */
export function refHex(ref: string): string {
  const hex = ref.slice(ref.lastIndexOf(":") + 1).toLowerCase();
  if (!/^[0-9a-f]{10,}$/.test(hex)) throw new Error(`ref ${JSON.stringify(ref)} is not a digest: expected at least 10 hex digits`);
  return hex;
}

/** classcache-build-<first 10 hex of the ref>: the Job and its token Secret share it. */
export function buildJobName(ref: string): string {
  return `classcache-build-${refHex(ref).slice(0, 10)}`;
}

export function buildLabels(ref: string): Record<string, string> {
  return objectLabels(COMPONENTS.build, { [REF_LABEL]: refHex(ref).slice(0, 63) });
}

/** How long a build Job may run: up to three JVM runs (capture, training, verification) of timeoutSeconds each, plus start-up. */
export function buildDeadlineSeconds(training: { timeoutSeconds: number }): number {
  return training.timeoutSeconds * 3 + 300;
}

/**
 * What the build pod presents to its node agent when it offers its build: the operator's grant
 * for this one scope and ref (`token`), and the build's one-time private key it signs the
 * manifest with (`build.pem`). Owned by the ClassCache, like the Job.
 */
export function buildTokenSecret(namespace: string, ref: string, grant: { token: string; key: string }, owner: OwnerReference): Built {
  return {
    apiVersion: "v1",
    kind: "Secret",
    metadata: {
      name: buildJobName(ref),
      namespace,
      labels: buildLabels(ref),
      annotations: { [REF_ANNOTATION]: ref },
      ownerReferences: [owner],
    },
    type: "Opaque",
    stringData: { [SECRET_KEYS.token]: grant.token, [SECRET_KEYS.buildKey]: grant.key },
  };
}

export function buildJob(input: BuildJobInput): Built {
  const labels = buildLabels(input.ref);
  const annotations = { [REF_ANNOTATION]: input.ref };
  return {
    apiVersion: "batch/v1",
    kind: "Job",
    metadata: {
      name: buildJobName(input.ref),
      namespace: input.classCache.namespace,
      labels,
      annotations,
      ownerReferences: [classCacheOwner(input.classCache)],
    },
    spec: {
      // A failed build is retried twice, then recorded with backoff by the controller: never a loop.
      backoffLimit: 2,
      // Up to three JVM runs (capture, training, verification) of timeoutSeconds each, plus start-up.
      activeDeadlineSeconds: buildDeadlineSeconds(input.training),
      ttlSecondsAfterFinished: 3600,
      template: {
        // Not the workload's labels: its Services would send traffic to the training run, and
        // the webhook would patch it. Meshes are kept out: a classic sidecar never exits, so the Job never ends.
        metadata: { labels, annotations: { ...annotations, "sidecar.istio.io/inject": "false", "linkerd.io/inject": "disabled" } },
        spec: buildPodSpec(input),
      },
    },
  };
}

export function buildPodSpec(input: BuildJobInput): PodSpec {
  const src = input.podTemplate.spec;
  const app = src.containers.find((c) => c.name === input.containerName);
  if (!app) throw new Error(`the pod template has no container ${JSON.stringify(input.containerName)}`);
  const volumes = keptVolumes(src.volumes ?? []);
  const kept = new Set(volumes.map((v) => v.name));
  const affinity = src["affinity"] as Record<string, unknown> | undefined;
  const nodeSelector = { ...src.nodeSelector, ...(input.arch ? { "kubernetes.io/arch": input.arch } : {}) };
  const rest = omit(src, [
    "containers",
    "initContainers",
    "volumes",
    "nodeSelector",
    "affinity",
    "restartPolicy",
    // Spreading rules are about the workload's replicas: for a one-off pod they only make it unschedulable.
    "topologySpreadConstraints",
    "activeDeadlineSeconds",
    "nodeName",
    // No host access from the workload (see unprivileged): the operator would be granting it.
    "hostNetwork",
    "hostPID",
    "hostIPC",
  ]);
  return {
    ...rest,
    restartPolicy: "Never",
    ...(Object.keys(nodeSelector).length ? { nodeSelector } : {}),
    ...(affinity && withoutAntiAffinity(affinity)),
    initContainers: [
      ...ourInitContainers(input),
      ...(src.initContainers ?? []).filter((c) => !c.name.startsWith("classcache-")).map((c) => unprivileged(withMounts(c, kept))),
      // Last: the ENTRYPOINT sees what the workload's own init containers prepared, as the app does.
      ...(input.probeLaunch ? [probeContainer(app, kept)] : []),
    ],
    containers: [buildContainer(input, app, kept)],
    volumes: [...volumes, ...ourVolumes(input)],
  };
}

/**
 * The workload's volumes minus hostPath ones: the operator creates this pod, so a host path in it
 * would be one the operator mounted for whoever wrote the workload. Our own names are dropped too.
 */
function keptVolumes(volumes: Volume[]): Volume[] {
  const ours = new Set<string>(Object.values(V));
  return volumes.filter((v) => v.hostPath === undefined && !ours.has(v.name));
}

function reservedPath(path: string): boolean {
  const p = path.replace(/\/+$/, "");
  return RESERVED_PATHS.some((r) => p === r || p.startsWith(`${r}/`));
}

function withMounts(c: Container, kept: Set<string>): Container {
  if (!c.volumeMounts) return c;
  return { ...c, volumeMounts: c.volumeMounts.filter((m) => kept.has(m.name) && !reservedPath(m.mountPath)) };
}

/** What the Pod Security "baseline" level lets a container add; deploy/rbac/operator-admission.yaml lists the same. */
export const BASELINE_CAPABILITIES: readonly string[] = ["AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"];

/**
 * A workload container as a build pod runs it: never privileged and with no capability beyond the
 * baseline's. The operator creates this pod, so whatever host access it had would be the operator
 * handing it out; the admission policy classcache-operator-writes refuses such a build Job, and
 * a training run, which only starts the app and talks to it on localhost, needs none of it.
 */
function unprivileged(c: Container): Container {
  const sc = c["securityContext"] as { privileged?: boolean; capabilities?: { add?: string[]; drop?: string[] }; [field: string]: unknown } | undefined;
  if (!sc || (sc.privileged !== true && (sc.capabilities?.add ?? []).every((a) => BASELINE_CAPABILITIES.includes(a)))) return c;
  const { privileged, capabilities, ...rest } = sc;
  const add = (capabilities?.add ?? []).filter((a) => BASELINE_CAPABILITIES.includes(a));
  const caps = { ...capabilities, ...(add.length ? { add } : {}) };
  if (!add.length) delete caps.add;
  const securityContext = { ...rest, ...(privileged === false ? { privileged } : {}), ...(Object.keys(caps).length ? { capabilities: caps } : {}) };
  const out: Container = { ...c, securityContext };
  if (!Object.keys(securityContext).length) delete out["securityContext"];
  return out;
}

function withoutAntiAffinity(affinity: Record<string, unknown>): { affinity?: Record<string, unknown> } {
  const rest = omit(affinity, ["podAntiAffinity"]);
  return Object.keys(rest).length ? { affinity: rest } : {};
}

const TERMINATION_LOG = "/dev/termination-log";

/** The probe's init container; the operator reads the recorded launch from its termination message. */
export const PROBE_CONTAINER = V.probe;
/** Where a JAVA_TOOL_OPTIONS from a ConfigMap, Secret or field is kept for the probe run, referenced from JAVA_TOOL_OPTIONS. */
export const USER_TOOL_OPTIONS = "CLASSCACHE_USER_JAVA_TOOL_OPTIONS";

/**
 * The launch probe's run: the app container as the workload has it — image, args, env, mounts,
 * working directory, user, resources — but no command, so the image's own ENTRYPOINT runs, with
 * the probe (src/build/probe/LaunchProbe.java, from the kit) added to JAVA_TOOL_OPTIONS. In the
 * first JVM the ENTRYPOINT starts, before main, the probe writes the launch to the shared
 * emptyDir and to this container's termination message, and ends the JVM with status 0.
 * An ENTRYPOINT that runs no java ends without a record: the build says so.
 */
function probeContainer(app: Container, kept: Set<string>): Container {
  const base = omit(unprivileged(withMounts(app, kept)), ["command", "livenessProbe", "readinessProbe", "startupProbe", "lifecycle", "ports", "stdin", "stdinOnce", "tty", "restartPolicy", "terminationMessagePath"]);
  return {
    ...base,
    name: V.probe,
    env: probeEnv(app.env ?? []),
    volumeMounts: [...(base.volumeMounts ?? []), { name: V.kit, mountPath: MOUNTS.kit, readOnly: true }, { name: V.probe, mountPath: PROBE_DIR }],
    // An ENTRYPOINT that fails before any JVM: its log's tail says why.
    terminationMessagePolicy: "FallbackToLogsOnError",
  };
}

/**
 * The app's env for the probe run: every variable where it is, JAVA_TOOL_OPTIONS as the app gets
 * it with the probe appended (the user's options first, so the probe knows them as the prefix it
 * leaves out of the record), and EXPECTED_TOOL_OPTIONS, the same value again, for the probe to
 * see whether the ENTRYPOINT changed it. A JAVA_TOOL_OPTIONS from a ConfigMap, Secret or field is
 * kept in place as USER_TOOL_OPTIONS and referenced; an optional one (a missing key defines no
 * variable, and the JVM would refuse the literal reference) and one envFrom may hold are not
 * kept: the probe leaves JAVA_TOOL_OPTIONS out of the record anyway, and patched pods keep theirs.
 */
export function probeEnv(env: EnvVar[]): EnvVar[] {
  const agent = `-javaagent:${MOUNTS.kit}/${KIT_PROBE_JAR}=${LAUNCH_RECORD}`;
  const out: EnvVar[] = [];
  let placed = false;
  for (const e of env.filter((v) => !v.name.startsWith("CLASSCACHE_"))) {
    if (e.name !== "JAVA_TOOL_OPTIONS" || placed) {
      if (e.name !== "JAVA_TOOL_OPTIONS") out.push(e);
      continue;
    }
    placed = true;
    if (e.valueFrom === undefined) out.push({ name: e.name, value: e.value ? `${e.value} ${agent}` : agent });
    else if (isOptional(e.valueFrom)) out.push({ name: e.name, value: agent });
    else out.push({ ...e, name: USER_TOOL_OPTIONS }, { name: e.name, value: `$(${USER_TOOL_OPTIONS}) ${agent}` });
  }
  if (!placed) out.push({ name: "JAVA_TOOL_OPTIONS", value: agent });
  out.push({ name: EXPECTED_TOOL_OPTIONS, value: "$(JAVA_TOOL_OPTIONS)" });
  return out;
}

/** A key reference marked optional: when the key is missing, the kubelet defines no variable at all. */
function isOptional(valueFrom: Record<string, unknown>): boolean {
  return Object.values(valueFrom).some((ref) => typeof ref === "object" && ref !== null && (ref as { optional?: unknown }).optional === true);
}

/**
 * classcache in the workload's own image, which may have no shell (distroless) and no glibc
 * (Alpine): the kit's Node started by the kit's own C library loader, not by bin/classcache (a
 * shell script) or the image's loader. --library-path applies to Node alone, not to the JVMs it starts.
 */
export const KIT_COMMAND = [`${MOUNTS.kit}/lib/ld.so`, "--library-path", `${MOUNTS.kit}/lib`, `${MOUNTS.kit}/bin/node`, `${MOUNTS.kit}/app/src/cli.ts`];

/** The app container: same image, env, resources, mounts and security context; another command. */
function buildContainer(input: BuildJobInput, app: Container, kept: Set<string>): Container {
  // Probes would kill or gate a pod that is not serving; ports only matter to Services and could
  // clash as hostPorts with a running replica; lifecycle hooks belong to the app's own start/stop.
  const base = omit(unprivileged(withMounts(app, kept)), ["command", "args", "livenessProbe", "readinessProbe", "startupProbe", "lifecycle", "ports", "stdin", "stdinOnce", "tty"]);
  const env: EnvVar[] = [
    ...(app.env ?? []).filter((e) => !e.name.startsWith("CLASSCACHE_")),
    { name: "CLASSCACHE_REF", value: input.ref },
    { name: "CLASSCACHE_CLASSCACHE", value: `${input.classCache.namespace}/${input.classCache.name}` },
    // Why a build failed, for the operator: classcache's own error in the termination message.
    { name: "CLASSCACHE_TERMINATION_LOG", value: TERMINATION_LOG },
    // The kit's precompiled tools (what bin/classcache sets; the build runs without it, below).
    { name: "CLASSCACHE_CACHE", value: `${MOUNTS.kit}/cache` },
  ];
  const mounts: VolumeMount[] = [
    ...(base.volumeMounts ?? []),
    { name: V.kit, mountPath: MOUNTS.kit, readOnly: true },
    ...(input.agent ? [{ name: V.agent, mountPath: MOUNTS.agentJar, readOnly: true }] : []),
    // The temporary store sits where workloads see the node store, so the training JVM sees the
    // paths the workload will: no mount namespace (CAP_SYS_ADMIN) needed to fake them.
    { name: V.work, mountPath: STORE_ROOT },
    { name: V.agentRun, mountPath: MOUNTS.agentRun, readOnly: true },
    { name: V.buildToken, mountPath: MOUNTS.buildToken, readOnly: true },
    ...(input.probeLaunch ? [{ name: V.probe, mountPath: PROBE_DIR, readOnly: true }] : []),
  ];
  return {
    ...base,
    ...(base.resources ? { resources: withBuildHeadroom(base.resources as Resources) } : {}),
    command: KIT_COMMAND,
    args: buildArgs(input),
    env,
    volumeMounts: mounts,
    terminationMessagePath: TERMINATION_LOG,
    // When classcache never got to write it (the kit cannot start in this image), the log's tail.
    terminationMessagePolicy: "FallbackToLogsOnError",
  };
}

type Resources = { limits?: Record<string, string | number>; requests?: Record<string, string | number>; [field: string]: unknown };

/**
 * What classcache itself uses in the build container, next to the app's JVM: Node and the
 * build's work (copying, hashing). Added to the app's memory limit and request, so a build of an
 * app sized tightly for itself is not killed for the memory classcache needs.
 */
export const BUILD_MEMORY_HEADROOM = 512 * 1024 * 1024;

const QUANTITY = /^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$/;
const FACTOR: Record<string, number> = { "": 1, Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15 };

/** A memory quantity in bytes (768Mi, 1.5Gi, 1G, 1000000); undefined for a form it does not know. */
export function memoryBytes(q: string | number): number | undefined {
  if (typeof q === "number") return q;
  const m = QUANTITY.exec(q.trim());
  return m ? Math.ceil(Number(m[1]) * FACTOR[m[2] ?? ""]!) : undefined;
}

/** The app container's resources with BUILD_MEMORY_HEADROOM on its memory limit and request (in bytes). */
export function withBuildHeadroom(r: Resources): Resources {
  const plus = (q: string | number | undefined): string | number | undefined => {
    const b = q === undefined ? undefined : memoryBytes(q);
    return b === undefined ? q : String(b + BUILD_MEMORY_HEADROOM);
  };
  const out: Resources = { ...r };
  if (r.limits?.["memory"] !== undefined) out.limits = { ...r.limits, memory: plus(r.limits["memory"])! };
  if (r.requests?.["memory"] !== undefined) out.requests = { ...r.requests, memory: plus(r.requests["memory"])! };
  return out;
}

/** `classcache build …` as an argument vector: no shell, and every user value after an `=`. */
export function buildArgs(input: BuildJobInput): string[] {
  const t = input.training;
  const args = [
    "build",
    // The launch the probe recorded names the JDK, the app, its options and arguments.
    ...(input.probeLaunch ? [`--launch-file=${LAUNCH_RECORD}`] : [`--app=${input.jarPath}`, "--java=auto"]),
    `--store=${STORE_ROOT}`,
    `--root=${STORE_ROOT}`,
    `--ref=${input.ref}`,
    `--scope=${input.scope ?? input.classCache.namespace}`,
    `--publish-to=unix:${MOUNTS.agentRun}/${basename(AGENT_SOCKET)}`,
    `--build-token-file=${MOUNTS.buildToken}/${SECRET_KEYS.token}`,
    `--build-key-file=${MOUNTS.buildToken}/${SECRET_KEYS.buildKey}`,
  ];
  if (input.mode) args.push(`--mode=${input.mode}`);
  if (input.agent) {
    args.push(`--agent=${AGENT_JAR}`);
    if (input.agent.configPath) args.push(`--agent-config=${agentConfigFile(input.agent.configPath)}`);
  }
  if (input.profileYAML) args.push(`--profile=${PROFILE_FILE}`);
  else if (input.profile) args.push(`--profile=${input.profile}`);
  if (t.exitOnRefresh !== undefined) args.push(t.exitOnRefresh ? "--exit-on-refresh" : "--no-exit-on-refresh");
  if (!input.probeLaunch) {
    for (const o of input.jvmOptions ?? []) args.push(`--jvm-opt=${o}`);
    for (const a of input.appArgs ?? []) args.push(`--arg=${a}`);
  }
  if (t.readyUrl) args.push(`--ready-url=${t.readyUrl}`);
  for (const u of t.warmupUrls ?? []) args.push(`--warmup-url=${u}`);
  args.push(`--timeout=${t.timeoutSeconds}`, "--json");
  return args;
}

/** The agent's config keeps its extension (agents pick the parser by it) under a fixed name. */
function agentConfigFile(configPath: string): string {
  const ext = extname(configPath);
  return `${MOUNTS.agentJar}/agent-config${/^\.[A-Za-z0-9]{1,16}$/.test(ext) ? ext : ""}`;
}

function initContainer(name: string, image: string, command: string[], mount: VolumeMount, env: EnvVar[] = []): Container {
  return {
    name,
    image,
    command,
    ...(env.length ? { env } : {}),
    volumeMounts: [mount],
    resources: { requests: { cpu: "10m", memory: "32Mi" }, limits: { memory: "128Mi" } },
    // Copies need no privilege; non-root keeps the pod admissible under runAsNonRoot and "restricted".
    securityContext: lockedDown({ runAsUser: KIT_UID, runAsGroup: KIT_UID }),
  };
}

function ourInitContainers(input: BuildJobInput): Container[] {
  const profileEnv = input.profileYAML ? [{ name: "CLASSCACHE_PROFILE_YAML", value: input.profileYAML }] : [];
  const out = [initContainer(V.kit, input.kitImage, ["sh", "-c", KIT_SCRIPT], { name: V.kit, mountPath: MOUNTS.kit }, profileEnv)];
  const agent = input.agent;
  if (agent) {
    const mount = { name: V.agent, mountPath: MOUNTS.agentJar };
    // Plain cp, no shell: agent images are often busybox or distroless-like, and the paths stay data.
    out.push(initContainer(V.agent, agent.image, ["cp", agent.jarPath, AGENT_JAR], mount));
    if (agent.configPath) out.push(initContainer(`${V.agent}-config`, agent.image, ["cp", agent.configPath, agentConfigFile(agent.configPath)], mount));
  }
  return out;
}

function ourVolumes(input: BuildJobInput): Volume[] {
  return [
    { name: V.kit, emptyDir: { sizeLimit: "1Gi" } },
    ...(input.agent ? [{ name: V.agent, emptyDir: { sizeLimit: "512Mi" } }] : []),
    { name: V.work, emptyDir: {} },
    // Only the run/ directory of the node store (the agent's socket), read-only, and only if the
    // agent made it: a build pod neither sees the archives nor creates anything on the host.
    // Where the namespace forbids hostPath, the CSI driver's "build" view is that same directory.
    input.storeVolume === "csi"
      ? { name: V.agentRun, csi: { driver: CSI_DRIVER, readOnly: true, volumeAttributes: { [CSI_VIEW_ATTRIBUTE]: "build" satisfies CsiView } } }
      : { name: V.agentRun, hostPath: { path: STORE_RUN_DIR, type: "Directory" } },
    // 0444: the app container may run as any user; the token is good for this one build only.
    { name: V.buildToken, secret: { secretName: buildJobName(input.ref), defaultMode: 0o444 } },
    ...(input.probeLaunch ? [{ name: V.probe, emptyDir: { sizeLimit: "16Mi" } }] : []),
  ];
}

function omit<T extends object>(obj: T, keys: string[]): T {
  const out = { ...obj } as Record<string, unknown>;
  for (const k of keys) delete out[k];
  return out as T;
}
