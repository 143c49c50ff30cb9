/**
 * The operator, wired, in two parts that run together or apart (`role`):
 *  - the controller: informers for ClassCaches, their workloads, build Jobs and namespaces; the
 *    ClassCache controller (leader only); the webhook's certificates (self-managed in a Secret,
 *    or cert-manager's files) and its configurations;
 *  - the webhook: the admission server, which only reads ClassCaches and namespaces, and serves
 *    the certificates it is given (in a cluster: the controller's Secret mounted as files).
 * Apart, each runs as its own service account with only what its part needs (deploy/rbac/,
 * docs/adr/0006-webhook-apart-from-controller.md). Each part is a Runnable; the manager starts
 * and stops them as a group.
 */
import { hostname } from "node:os";
import { Gauge, Registry } from "prom-client";
import type { Signer, TrustStore } from "../archive/signing.ts";
import type { Directory } from "../directory/directory.ts";
import { openDirectory } from "../directory/open.ts";
import type { KubeClient } from "../kube/client.ts";
import { CSIDrivers, Jobs, Namespaces, Secrets } from "../kube/resource.ts";
import { EventRecorder } from "../kube/events.ts";
import type { KubeObject } from "../kube/types.ts";
import { HealthServer } from "../runtime/health.ts";
import type { Logger } from "../runtime/log.ts";
import { aborted } from "../runtime/runnable.ts";
import { SelfManagedCerts, type CertSource } from "../webhook/certs.ts";
import { WebhookRegistrar, type WebhookTarget } from "../webhook/configuration.ts";
import { WebhookMetrics } from "../webhook/metrics.ts";
import { WebhookServer, type MutatePod } from "../webhook/server.ts";
import { ClassCaches, resolveSpec, validateClassCache, type ClassCache } from "./api/v1.ts";
import { ClassCacheReconciler } from "./classcache/reconciler.ts";
import { injectionFor, WORKLOAD_TYPES, type Workload } from "./classcache/workload.ts";
import { CSI_DRIVER, INJECT_LABEL, storeVolumeFor, NAMES, REF_ANNOTATION, SYSTEM_NAMESPACE } from "./constants.ts";
import { chooseDirectory, Infrastructure, type AgentSettings } from "./infra.ts";
import { injectPod, INIT_CONTAINERS, type PodSpec } from "./inject.ts";
import { Controller, toControllerOwner, watchSecondary } from "./runtime/controller.ts";
import { Informer } from "./runtime/informer.ts";
import { LeaderElector } from "./runtime/leader.ts";
import { Manager } from "./runtime/manager.ts";
import { ControllerMetrics } from "./runtime/metrics.ts";

/** Which parts run in this process: both (one machine, tests), or one of them (a cluster). */
export const OPERATOR_ROLES = ["all", "controller", "webhook"] as const;
export type OperatorRole = (typeof OPERATOR_ROLES)[number];

export interface OperatorOptions {
  client: KubeClient;
  log: Logger;
  /** The classcache image: node agents, init steps, build kits. Controller and webhook must agree (it is in the pod patch). */
  image: string;
  /** Which parts run here (default all). */
  role?: OperatorRole;
  /** The webhook's reads (ClassCaches, namespaces) go through this client; default `client`. */
  webhookClient?: KubeClient;
  /** Where the API server reaches the webhook; default: the Service classcache-webhook in the system namespace. */
  webhookTarget?: WebhookTarget;
  webhookPort?: number;
  webhookHost?: string;
  /** Plain-HTTP port of /healthz, /readyz and /metrics (0 picks a free one; default 8080). */
  metricsPort?: number;
  metricsHost?: string;
  /**
   * Certificates from files (cert-manager's, or the controller's Secret mounted into the webhook);
   * default: self-managed in a Secret. The webhook role alone needs them given.
   */
  certs?: CertSource;
  /** Extra IPs for the self-managed serving certificate (127.0.0.1 outside the cluster). */
  webhookIps?: string[];
  /** Reach the managed directory here instead of its Service (when running outside the cluster). */
  directoryUrl?: string;
  leaderElection?: boolean;
  identity?: string;
  /** Let `sharing: Cluster` share archives across namespaces (the cluster admin's choice; default off). Controller and webhook must agree. */
  allowClusterSharing?: boolean;
  /**
   * How the node agents run: observeJvms lets them see every JVM on their node (host PID,
   * CAP_SYS_PTRACE: live hit rates and memory sharing); priority class, control-plane nodes, pull policy.
   */
  agents?: AgentSettings;
  pollMs?: number;
}

export interface Operator {
  manager: Manager;
  /** The admission server (roles all and webhook). */
  webhook?: WebhookServer;
  /** The webhook configurations (roles all and controller). */
  registrar?: WebhookRegistrar;
  /** The ClassCache reconciler (roles all and controller). */
  reconciler?: ClassCacheReconciler;
  /** /healthz, /readyz and /metrics: every replica of either part serves them. */
  health: HealthServer;
  metrics: Registry;
}

type Informers = { classCaches: Informer<ClassCache>; namespaces: Informer<KubeObject>; csiDrivers: Informer<KubeObject> };

function informerOf(client: KubeClient, log: Logger) {
  return <T extends KubeObject>(resource: Parameters<typeof client.list>[0], extra: { labelSelector?: string; namespace?: string; fieldSelector?: string } = {}) =>
    new Informer<T>({ client, resource, logger: log, resyncPeriodMs: 10 * 60_000, ...extra });
}

/** The node agent's CSIDriver, watched by name (RBAC grants that one object only). */
function csiDriverInformer(informer: ReturnType<typeof informerOf>): Informer<KubeObject> {
  return informer<KubeObject>(CSIDrivers, { fieldSelector: `metadata.name=${CSI_DRIVER}` });
}

export function createOperator(o: OperatorOptions): Operator {
  const role = o.role ?? "all";
  const { log } = o;
  if (role === "webhook" && !o.certs) throw new Error("the webhook role serves certificates it is given: pass certs (e.g. FileCerts over the mounted Secret)");
  const metrics = new Registry();
  const identity = o.identity ?? `${hostname()}-${process.pid}`;
  const elector = role === "webhook" || o.leaderElection === false ? undefined : new LeaderElector({ client: o.client, namespace: SYSTEM_NAMESPACE, name: "classcache-operator", identity, logger: log });
  const manager = new Manager({ logger: log, ...(elector ? { leaderElection: elector } : {}) });
  const health = new HealthServer({ port: o.metricsPort ?? 8080, ...(o.metricsHost ? { host: o.metricsHost } : {}), logger: log, metrics }).addHealthCheck("ping", () => true);
  const informers: Informer<KubeObject>[] = [];
  // Ready once this replica can do its part: for the webhook, answer admission requests (the Service sends them to ready pods only).
  health.addReadyCheck("informers", () => {
    const pending = informers.filter((i) => !i.hasSynced()).map((i) => i.name);
    if (pending.length) throw new Error(`not synced: ${pending.join(", ")}`);
  });
  manager.add(health, { needLeaderElection: false });

  const controller = role === "webhook" ? undefined : addController(o, { manager, metrics, identity, elector, informers });
  let webhook: WebhookServer | undefined;
  if (role !== "controller") {
    const certs = controller?.certs ?? o.certs!;
    const shared = controller && !o.webhookClient ? controller.informers : undefined;
    webhook = addWebhook(o, { manager, metrics, certs, ownsCerts: !controller, informers, shared });
    health.addReadyCheck("webhook", () => {
      if (!webhook!.ready()) throw new Error("no serving certificate yet");
    });
  }
  return { manager, health, metrics, ...(webhook ? { webhook } : {}), ...(controller ? { registrar: controller.registrar, reconciler: controller.reconciler } : {}) };
}

interface Wiring {
  manager: Manager;
  metrics: Registry;
  /** Every informer of this process, for the ready check. */
  informers: Informer<KubeObject>[];
}

/** The controller part: reconciler, the cluster's shared parts, the webhook's certificates and configurations. */
function addController(
  o: OperatorOptions,
  w: Wiring & { identity: string; elector: LeaderElector | undefined },
): { reconciler: ClassCacheReconciler; registrar: WebhookRegistrar; certs: CertSource; informers: Informers } {
  const { client, log } = o;
  const { manager } = w;
  const informer = informerOf(client, log);
  const classCaches = informer<ClassCache>(ClassCaches);
  const workloads = {
    Deployment: informer<Workload>(WORKLOAD_TYPES.Deployment),
    StatefulSet: informer<Workload>(WORKLOAD_TYPES.StatefulSet),
    DaemonSet: informer<Workload>(WORKLOAD_TYPES.DaemonSet),
  };
  const jobs = informer<KubeObject>(Jobs, { labelSelector: "app.kubernetes.io/part-of=classcache" });
  const namespaces = informer<KubeObject>(Namespaces);
  const csiDrivers = csiDriverInformer(informer);
  // The signing key: a rotation (keys.ts) is picked up at once, and every ClassCache looked at again.
  const signingKey = informer<KubeObject>(Secrets, { namespace: SYSTEM_NAMESPACE, fieldSelector: `metadata.name=${NAMES.signingKey}` });
  const events = new EventRecorder({ client, reportingController: "classcache.dev/operator", reportingInstance: w.identity, logger: log });

  const infra = new Infrastructure({ client, image: o.image, log, directoryUrl: o.directoryUrl, agents: o.agents, metricsPort: o.metricsPort });
  const directories = new Map<string, Directory>();
  let cluster: { at: number; fingerprint: string; directory: Directory | undefined; trust: TrustStore | undefined; signer: Signer | undefined; problems: string[] } | undefined;
  // The cluster's parts are re-applied when the ClassCaches' choice of directory changes, else every 10 min.
  const directory = async (): Promise<{ directory: Directory | undefined; trust: TrustStore | undefined; signer: Signer | undefined; problems: string[] }> => {
    const choice = chooseDirectory(classCaches.list());
    const fingerprint = JSON.stringify({ choice, key: signingKey.list()[0]?.metadata.resourceVersion });
    if (cluster && cluster.fingerprint === fingerprint && Date.now() - cluster.at < 10 * 60_000) return cluster;
    const creds = await infra.reconcile(choice);
    let dir: Directory | undefined;
    if (creds.directoryUrl) {
      dir = directories.get(creds.directoryUrl);
      if (!dir) {
        dir = openDirectory(creds.directoryUrl, { log });
        directories.set(creds.directoryUrl, dir);
      }
    }
    cluster = { at: Date.now(), fingerprint, directory: dir, trust: creds.trust, signer: creds.signer, problems: creds.problems };
    return cluster;
  };

  const controllerMetrics = new ControllerMetrics(w.metrics);
  classCacheMetrics(w.metrics, () => classCaches.list());

  const reconciler = new ClassCacheReconciler({ client, classCaches, workloads, jobs, namespaces, csiDrivers, events, log, image: o.image, directory, allowClusterSharing: o.allowClusterSharing === true, ...(o.pollMs ? { pollMs: o.pollMs, readyPollMs: o.pollMs } : {}) });
  const controller = new Controller<ClassCache>({
    name: "classcache",
    for: classCaches,
    watches: [
      ...Object.entries(workloads).map(([kind, inf]) => watchSecondary(inf, (wl) => reconciler.ownersOf(kind, wl))),
      watchSecondary(jobs, toControllerOwner("ClassCache", "classcache.dev")),
      watchSecondary(namespaces, (ns) => reconciler.inNamespace(ns)),
      watchSecondary(csiDrivers, () => reconciler.all()),
      watchSecondary(signingKey, () => classCaches.list().map((cc) => `${cc.metadata.namespace}/${cc.metadata.name}`)),
    ],
    reconcile: (key, signal) => reconciler.reconcile(key, signal),
    logger: log,
    metrics: controllerMetrics,
  });

  const certs =
    o.certs ??
    new SelfManagedCerts({ client, namespace: SYSTEM_NAMESPACE, service: { name: NAMES.webhook, namespace: SYSTEM_NAMESPACE }, ...(o.webhookIps ? { extraIps: o.webhookIps } : {}), logger: log });
  const registrar = new WebhookRegistrar({
    client,
    certs,
    logger: log,
    operatorNamespace: SYSTEM_NAMESPACE,
    target: o.webhookTarget ?? { service: { namespace: SYSTEM_NAMESPACE, name: NAMES.webhook } },
  });

  controllerMetrics.watchLeader("classcache-operator", () => w.elector?.isLeader() ?? true);
  const all = [classCaches, ...Object.values(workloads), jobs, namespaces, csiDrivers, signingKey];
  w.informers.push(...all);
  for (const inf of all) manager.add(inf, { needLeaderElection: false });
  manager.add(certs, { needLeaderElection: false });
  manager.add(registrar, { needLeaderElection: false });
  manager.add(controller);
  // Directory connections retry forever; they end with the operator.
  manager.add(
    {
      name: "directory-connections",
      start: async (signal: AbortSignal) => {
        await aborted(signal);
        await Promise.all([...directories.values()].map((d) => d.close().catch(() => {})));
      },
    },
    { needLeaderElection: false },
  );
  return { reconciler, registrar, certs, informers: { classCaches, namespaces, csiDrivers } };
}

/**
 * The webhook part: the admission server and the informers it decides from. `shared` are the
 * controller's informers when both parts run here as one identity; otherwise its own, through
 * `webhookClient`.
 */
function addWebhook(o: OperatorOptions, w: Wiring & { certs: CertSource; ownsCerts: boolean; shared: Informers | undefined }): WebhookServer {
  const { log } = o;
  const client = o.webhookClient ?? o.client;
  let { classCaches, namespaces, csiDrivers } = w.shared ?? {};
  if (!classCaches || !namespaces || !csiDrivers) {
    const informer = informerOf(client, log);
    classCaches = informer<ClassCache>(ClassCaches);
    namespaces = informer<KubeObject>(Namespaces);
    csiDrivers = csiDriverInformer(informer);
    w.informers.push(classCaches, namespaces, csiDrivers);
    for (const inf of [classCaches, namespaces, csiDrivers]) w.manager.add(inf, { needLeaderElection: false });
  }
  const mutatePod = podMutator({ client, classCaches, namespaces, csiDrivers, image: o.image, allowClusterSharing: o.allowClusterSharing === true });
  // The webhook sees a Pod with its namespace unset when it comes from a controller: take it from the request.
  const mutate: MutatePod = (pod, ctx) => mutatePod({ ...pod, metadata: { ...pod.metadata, namespace: pod.metadata.namespace ?? ctx.namespace } }, ctx);
  const webhook = new WebhookServer({ certs: w.certs, mutatePod: mutate, validate: validateClassCache, logger: log, metrics: new WebhookMetrics(w.metrics), ...(o.webhookPort !== undefined ? { port: o.webhookPort } : {}), ...(o.webhookHost ? { host: o.webhookHost } : {}) });
  // Alone, the webhook loads its certificates itself; next to the controller, the controller's source runs once for both.
  if (w.ownsCerts) w.manager.add(w.certs, { needLeaderElection: false });
  w.manager.add(webhook, { needLeaderElection: false });
  return webhook;
}

/** The pod patch for a Pod being created, decided from the ClassCache it names and its namespace. */
function podMutator(d: { client: KubeClient; classCaches: Informer<ClassCache>; namespaces: Informer<KubeObject>; csiDrivers: Informer<KubeObject>; image: string; allowClusterSharing: boolean }): MutatePod {
  return async (pod) => {
    const name = pod.metadata.labels?.[INJECT_LABEL];
    const namespace = pod.metadata.namespace;
    const cc = d.classCaches.get(`${namespace}/${name}`) ?? (await d.client.get<ClassCache>(ClassCaches, name ?? "", { namespace: namespace ?? "" }).catch(() => undefined));
    if (!cc) return { warnings: [`classcache: no ClassCache "${name}" in namespace ${namespace}; the pod runs without an archive`] };
    const where = storeVolumeFor(d.namespaces.get(namespace ?? ""), d.csiDrivers.get(CSI_DRIVER) !== undefined);
    if ("forbidden" in where) return { warnings: [`classcache: namespace ${namespace} enforces Pod Security "${where.forbidden}", which forbids the hostPath of the node's archive store, and the node agent's CSI driver (${CSI_DRIVER}) is not installed; the pod runs without an archive`] };
    const spec = (pod as unknown as { spec: PodSpec }).spec;
    if ((spec.initContainers ?? []).some((c) => c.name === INIT_CONTAINERS.init)) return {}; // patched already (Owned mode, or a reinvocation)
    const { spec: resolved } = resolveSpec(cc);
    const { ref, input } = injectionFor(cc, resolved, spec, d.image, d.allowClusterSharing);
    const r = injectPod(spec, { ...input, storeVolume: where.volume });
    if (!r.outcome.patched) return { warnings: [`classcache: ${r.outcome.message}`] };
    const annotations = { ...(pod.metadata.annotations ?? {}), [REF_ANNOTATION]: ref };
    return { pod: { ...pod, metadata: { ...pod.metadata, annotations }, spec: r.spec } };
  };
}

/**
 * What a platform team alerts on, read from the informer's cache when scraped: ClassCaches by
 * phase, and the hit rate each workload's running JVMs get (status.workloadHitRate).
 */
function classCacheMetrics(registry: Registry, list: () => ClassCache[]): void {
  new Gauge({
    name: "classcache_classcaches",
    help: "ClassCache resources, by status.phase.",
    labelNames: ["phase"] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const cc of list()) this.inc({ phase: cc.status?.phase ?? "Pending" });
    },
  });
  new Gauge({
    name: "classcache_workload_hit_ratio",
    help: "Share of classes the workload's running JVMs loaded from the archive (status.workloadHitRate).",
    labelNames: ["namespace", "classcache"] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const cc of list()) {
        const rate = cc.status?.workloadHitRate;
        if (rate !== undefined) this.set({ namespace: cc.metadata.namespace ?? "", classcache: cc.metadata.name ?? "" }, rate);
      }
    },
  });
}
